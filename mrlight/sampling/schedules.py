"""Time schedules: small functions that return the decreasing times a sampler visits.

Each returns a float64 tensor of n + 1 times in grid units, from `t_start` (the prior's time,
T unless lambda_min clips it) down to exactly 0. Any solver takes any schedule (as in
k-diffusion's `get_sigmas_*`).

The last step always lands on t = 0, where lambda = +inf: every MR solver's exact step into
t = 0 returns x0_hat, so no schedule leaves residual noise. `karras-t` places its last
positive point at `t_min`; `uniform-lambda` ends its uniform lambda grid there (see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mrlight.sde import MRSDE


def linspace(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """Uniform in t (DDIM-style 'linspace'): t_start, ..., t_start/n, 0."""
    return torch.linspace(t_start, 0.0, n + 1, dtype=torch.float64)


def uniform_lambda(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """n equal steps in the half log-SNR lambda from lambda(t_start) to lambda(t_min); the last lands on 0.

    Lu et al. (DPM-Solver, 2022) step uniformly in lambda; the MR Sampler calls it 'linear-lambda'
    and ends its uniform grid at its own finite lambda(0). Here lambda(0) = inf, so the grid ends at
    lambda(t_min) and that last point is replaced by t = 0: every step but the last has the same
    h, and the last takes the solver's exact limit to t = 0 (docs/SAMPLERS.md: n - 1 equal steps
    plus a jump from t_min was worse at NFE 5-10).
    """
    lam = torch.linspace(sde.half_log_snr(torch.tensor(t_start, dtype=torch.float64)).item(),
                         sde.half_log_snr(torch.tensor(t_min, dtype=torch.float64)).item(), n + 1,
                         dtype=torch.float64)
    t = sde.t_from_lambda(lam)
    t[0], t[-1] = t_start, 0.0  # exact start despite round-off in the inverse
    return t


def karras_t(sde: MRSDE, n: int, t_start: float, t_min: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) rho-spacing applied to t: dense near t_min, then 0."""
    if n == 1:
        return torch.tensor([t_start, 0.0], dtype=torch.float64)
    i = torch.linspace(0, 1, n, dtype=torch.float64)
    t = (t_start ** (1 / rho) + i * (t_min ** (1 / rho) - t_start ** (1 / rho))) ** rho
    t[0], t[-1] = t_start, t_min  # exact end points despite round-off
    return torch.cat([t, t.new_zeros(1)])


def quadratic_t(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """t = t_start * (1 - i/n)^2: denser near 0 than linspace, gentler than karras-t."""
    i = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    return t_start * (1 - i) ** 2


# Last positive time of uniform-lambda / karras-t, chosen in docs/SAMPLERS.md.
DEFAULT_T_MIN = 3.0

TIME_SCHEDULES = {
    "linspace": linspace,
    "uniform-lambda": uniform_lambda,
    "karras-t": karras_t,
    "quadratic-t": quadratic_t,
}


def get_times(name: str, sde: MRSDE, n: int, *, lambda_min: float | None = None,
              t_min: float = DEFAULT_T_MIN) -> torch.Tensor:
    """The n + 1 sampling times for schedule `name`, clipped at `lambda_min` (start time)."""
    if name not in TIME_SCHEDULES:
        raise ValueError(f"unknown time_schedule {name!r}; valid: {', '.join(TIME_SCHEDULES)}")
    if not 0 < t_min < sde.T:
        raise ValueError(f"t_min must be in (0, T={sde.T}), got {t_min!r}")
    t_start = float(sde.T)
    if lambda_min is not None:
        lam_T = sde.half_log_snr(torch.tensor(float(sde.T), dtype=torch.float64)).item()
        if lam_T < lambda_min:  # start where lambda reaches lambda_min, never earlier than t_min
            t_start = max(sde.t_from_lambda(torch.tensor(lambda_min)).item(), t_min)
    times = TIME_SCHEDULES[name](sde, n, t_start, min(t_min, t_start))
    return times


def check_times(times, sde: MRSDE, n: int, source: str = "time_schedule") -> torch.Tensor:
    """An explicit list of times as a float64 tensor, or a ValueError saying what is wrong with it.

    It must hold n + 1 strictly decreasing times in [0, T] that end at 0 (the first is the prior's time).
    """
    try:
        t = torch.as_tensor([float(v) for v in times], dtype=torch.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be a list of numbers (times in [0, T]), got {times!r}") from None
    if t.numel() != n + 1:
        raise ValueError(f"{source} has {t.numel()} times; nfe={n} steps need {n + 1} (from T={sde.T} down to 0)")
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > sde.T:
        raise ValueError(f"{source}: every time must be in [0, T={sde.T}], got {t.tolist()}")
    if not bool((t[:-1] > t[1:]).all()):
        raise ValueError(f"{source}: times must be strictly decreasing, got {t.tolist()}")
    if t[-1] != 0:
        raise ValueError(f"{source}: the last time must be 0 (the clean image), got {t[-1].item():g}")
    return t


def load_times_file(path: str | Path) -> list[float]:
    """The `times:` list of a YAML file written by `python -m mrlight.tune_steps` (or by hand)."""
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"time_schedule file not found: {p}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(p))
    except Exception as err:  # noqa: BLE001 -- any parse error becomes one clear message
        raise ValueError(f"time_schedule file {p} is not valid YAML: {err}") from None
    if isinstance(data, dict) and "times" in data:
        data = data["times"]
    if not isinstance(data, list):
        raise ValueError(f"time_schedule file {p} must hold a list of times or a 'times:' key with one")
    return data


def is_times_file(value) -> bool:
    return isinstance(value, (str, Path)) and str(value).lower().endswith((".yaml", ".yml"))


def resolve_times(time_schedule, sde: MRSDE, n: int, *, lambda_min: float | None = None,
                  t_min: float = DEFAULT_T_MIN, order: int = 2, corrector: str = "none") -> torch.Tensor:
    """Times for a schedule name, "optimized", a YAML file of times, or an explicit list."""
    named = isinstance(time_schedule, str) and not is_times_file(time_schedule)
    if named and time_schedule != "optimized":
        return get_times(time_schedule, sde, n, lambda_min=lambda_min, t_min=t_min)
    if lambda_min is not None:
        raise ValueError("lambda_min applies to the named time schedules, not to optimized or explicit times")
    if named:
        from mrlight.sampling.optimize import optimized_times

        return optimized_times(sde, n, order, corrector)
    if is_times_file(time_schedule):
        return check_times(load_times_file(time_schedule), sde, n, f"time_schedule file {time_schedule}")
    if torch.is_tensor(time_schedule):
        time_schedule = time_schedule.tolist()
    if isinstance(time_schedule, Sequence):  # list, tuple, OmegaConf ListConfig
        return check_times(time_schedule, sde, n)
    raise ValueError(f"unknown time_schedule {time_schedule!r}; valid: {', '.join(TIME_SCHEDULE_NAMES)}, "
                     "a .yaml file of times or a list of times")


TIME_SCHEDULE_NAMES = tuple(TIME_SCHEDULES) + ("optimized",)
