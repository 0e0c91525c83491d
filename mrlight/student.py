"""Distillation inside mrlight's training loop and checkpoints (docs/DISTILL.md).

    python train.py task=denoise distill.teacher=TEACHER.ckpt distill.calls=2 [distill.method=regression]

`apply_teacher(cfg)` turns a run config with `distill.teacher` into the student's: the teacher's SDE
(and, unless `distill.init=scratch`, its network, with `init_from` = the teacher), the student's
sampler (`sampler.sampler: distilled`, `sampler.nfe: calls`) and everything a checkpoint needs to
rebuild the k-call restorer (`distill.times`, `distill.student_prediction`, `distill.step`). So the
student's checkpoint records `sampler.sampler: distilled`, its `nfe` and `distill.teacher`, and
`python sample.py ckpt=STUDENT.ckpt` needs no other flag.

`distilled_from_config(student, sde, distill_cfg)` wraps a network (or any `(x_t, mu, t)` callable:
the Restorer passes its tiled, autocast call) into the `Distilled` restorer that
`sample(D, mu, sde, sampler="distilled", nfe=calls)` runs.
"""

from __future__ import annotations

from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mrlight.errors import CheckpointError, ConfigError
from mrlight.sampling.distilled import Distilled
from mrlight.sde import MRSDE

INITS = ("teacher", "scratch")


class CallModule(nn.Module):
    """An `nn.Module` around a plain `(x_t, mu, t)` callable (a tiled or autocast network call)."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.fn(x_t, mu, t)


def distilled_from_config(student: nn.Module | Callable, sde: MRSDE, distill_cfg: dict) -> Distilled:
    """The k-call restorer of a student: its network (or call) with the recorded times and step rule."""
    missing = [k for k in ("times", "method", "student_prediction", "step") if distill_cfg.get(k) is None]
    if missing:
        raise CheckpointError(f"the distillation settings lack {', '.join('distill.' + k for k in missing)} "
                              f"(written by train.py distill.teacher=...)")
    module = student if isinstance(student, nn.Module) else CallModule(student)
    return Distilled(module, sde, list(distill_cfg["times"]), method=distill_cfg["method"],
                     prediction=distill_cfg["student_prediction"], step=distill_cfg["step"])


def teacher_prediction(teacher_cfg: dict) -> str:
    objective = teacher_cfg["objective"]["prediction"]
    return "noise" if objective == "matching" else objective


def apply_teacher(cfg: DictConfig) -> None:
    """Make `cfg` (resolved, with `distill.teacher` set) the config of a student run, in place."""
    from mrlight.checkpoint import load_checkpoint
    from mrlight.distill import CALLS, DEFAULT_STUDENT_PREDICTION, METHODS, student_times
    from mrlight.sampling import with_network_defaults

    d = cfg.distill
    if d.calls not in CALLS:
        raise ConfigError(f"distill.calls={d.calls!r} is not valid; valid: {', '.join(map(str, CALLS))}")
    if d.method not in METHODS:
        raise ConfigError(f"distill.method={d.method!r} is not valid; valid: {', '.join(METHODS)}")
    if d.init not in INITS:
        raise ConfigError(f"distill.init={d.init!r} is not valid; valid: {', '.join(INITS)}")
    try:
        teacher = load_checkpoint(str(d.teacher))["hyper_parameters"]["config"]
    except CheckpointError as err:
        raise ConfigError(f"distill.teacher: {err}") from None
    if teacher.get("sampler", {}).get("sampler") == "distilled":
        raise ConfigError(f"distill.teacher={d.teacher} is itself a distilled student; give a diffusion checkpoint")
    cfg.sde = OmegaConf.create(teacher["sde"])
    if d.init == "teacher":
        cfg.network = OmegaConf.create(teacher["network"])
        if cfg.get("init_from") is None:
            cfg.init_from = str(d.teacher)
    prediction = teacher_prediction(teacher)
    cfg.objective.prediction = teacher["objective"]["prediction"]  # the network's output, as the teacher's
    if d.student_prediction is None:
        d.student_prediction = DEFAULT_STUDENT_PREDICTION[prediction]
    if d.step is None:
        d.step = "renoise" if d.method == "consistency" else "ode"
    sde = MRSDE(**{k: teacher["sde"][k] for k in ("T", "max_sigma", "schedule", "eps")})
    if d.times is None:  # a noise teacher is solved from its later start t_start: the student starts there too
        t_start = with_network_defaults({}, prediction, sde).get("t_start")
        d.times = [float(t) for t in student_times(sde, int(d.calls), t_start=t_start)]
    elif len(d.times) != d.calls + 1:
        raise ConfigError(f"distill.times has {len(d.times)} times; distill.calls={d.calls} needs {d.calls + 1}")
    cfg.sampler = OmegaConf.create({**{k: None for k in cfg.sampler}, "sampler": "distilled", "nfe": int(d.calls)})


__all__ = ["apply_teacher", "distilled_from_config", "teacher_prediction", "CallModule", "INITS"]
