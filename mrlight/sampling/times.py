"""From a `time_schedule` option to the times a sampler visits: a name, "optimized", a YAML file or a list.

Sits above `schedules` (the named grids) and `step_tables` (the stored optimized steps), so that
neither imports the other and nothing here imports `mrlight.sampling` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mrlight.sampling.schedules import DEFAULT_T_MIN, TIME_SCHEDULE_NAMES, check_times, get_times
from mrlight.sampling.step_tables import optimized_times
from mrlight.sde import MRSDE


# Settings a steps file may record (python -m mrlight.tune_steps writes them): times tuned for one
# solver, order and corrector are refused for another.
RECORDED = ("nfe", "order", "corrector", "solver", "parameterization")


def load_times_file(path: str | Path, settings: dict | None = None) -> list[float]:
    """The `times:` list of a YAML file written by `python -m mrlight.tune_steps` (or by hand).

    When the file records the settings it was tuned for (nfe, order, corrector, solver,
    parameterization) and `settings` gives the run's, any difference is a ValueError naming it.
    """
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"time_schedule file not found: {p}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(p))
    except Exception as err:  # noqa: BLE001 -- any parse error becomes one clear message
        raise ValueError(f"time_schedule file {p} is not valid YAML: {err}") from None
    if isinstance(data, dict) and "times" in data:
        for key, value in (settings or {}).items():
            if key in RECORDED and key in data and data[key] != value:
                raise ValueError(f"time_schedule file {p} was tuned for {key}={data[key]!r}, the sampler runs "
                                 f"{key}={value!r}; tune steps for these settings (python -m mrlight.tune_steps) "
                                 f"or set sampler.{key}={data[key]}")
        data = data["times"]
    if not isinstance(data, list):
        raise ValueError(f"time_schedule file {p} must hold a list of times or a 'times:' key with one")
    return data


def is_times_file(value) -> bool:
    return isinstance(value, (str, Path)) and str(value).lower().endswith((".yaml", ".yml"))


def resolve_times(time_schedule, sde: MRSDE, n: int, *, lambda_min: float | None = None,
                  t_min: float = DEFAULT_T_MIN, order: int = 2, corrector: str = "none",
                  settings: dict | None = None) -> torch.Tensor:
    """Times for a schedule name, "optimized", a YAML file of times, or an explicit list.

    `settings` (the sampler's order, corrector, solver, parameterization) are checked against what
    a steps file records; nfe is checked too.
    """
    named = isinstance(time_schedule, str) and not is_times_file(time_schedule)
    if named and time_schedule != "optimized":
        return get_times(time_schedule, sde, n, lambda_min=lambda_min, t_min=t_min)
    if lambda_min is not None:
        raise ValueError("lambda_min applies to the named time schedules, not to optimized or explicit times")
    if named:
        return optimized_times(sde, n, order, corrector)
    if is_times_file(time_schedule):
        return check_times(load_times_file(time_schedule, {**(settings or {}), "nfe": n}), sde, n,
                           f"time_schedule file {time_schedule}")
    if torch.is_tensor(time_schedule):
        time_schedule = time_schedule.tolist()
    if isinstance(time_schedule, Sequence):  # list, tuple, OmegaConf ListConfig
        return check_times(time_schedule, sde, n)
    raise ValueError(f"unknown time_schedule {time_schedule!r}; valid: {', '.join(TIME_SCHEDULE_NAMES)}, "
                     "a .yaml file of times or a list of times")
