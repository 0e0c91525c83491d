"""Sampling with a distilled student: exactly `calls` network evaluations on a fixed time grid.

A distilled model (`Distilled`, built by `mrlight.distill.distill`) is an `nn.Module` that holds the
student network and what it needs to restore: its `times` (calls + 1 times from T down to 0, a
float64 buffer), what the student's raw output means (`prediction`), the step rule between its
times (`step`) and the MR SDE it was distilled for. Its forward pass is the student's x0 estimate:

    x0_hat = D(x_t, mu, t)            # the student's output converted to data with alpha(t), sigma_bar(t)

so `D` is also a valid data-predicting `model_fn`. `sample_distilled(D, mu, sde, nfe=D.calls)` calls
the student once per time of the grid (t_0 = T, ..., t_{calls-1}) and moves between grid times with

- `step="ode"` (deterministic, the default of the trajectory-regression method): the first-order
  exponential integrator of the PF-ODE in the data form (the MR Sampler's ODE-1 step, DDIM's
  analogue), with the student's x0 in place of the posterior mean:
      x_{i+1} = mu + c (x_i - mu) + (alpha_{i+1} - c alpha_i) (x0_hat - mu),  c = sigma_bar_{i+1} / sigma_bar_i
  At t_{i+1} = 0 this is x0_hat: a 1-call model returns the student's x0 directly.
- `step="renoise"` (stochastic, multistep consistency sampling): the exact MR marginal around the
  student's x0, x_{i+1} = mu + alpha_{i+1} (x0_hat - mu) + sigma_bar_{i+1} z, with z from `generator`.

The lead registers this as `sample(D, mu, sde, sampler="distilled", nfe=D.calls, ...)`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from mrlight import parameterization as P
from mrlight.sampling.common import NonFiniteError, check_finite, randn_like
from mrlight.sampling.schedules import check_times
from mrlight.sde import MRSDE

STEP_RULES = ("ode", "renoise")


def sde_config(sde: MRSDE) -> dict:
    """The MRSDE constructor arguments that reproduce `sde` (max_sigma in 8-bit units, as MRSDE takes it)."""
    return dict(T=sde.T, max_sigma=sde.max_sigma * 255, schedule=sde.schedule, eps=sde.eps)


def ode_step_coefficients(sde: MRSDE, t: float, s: float) -> tuple[float, float]:
    """(c, w) of the first-order data-form PF-ODE step from t to s < t: x_s = mu + c (x_t - mu) + w (x0 - mu).

    c = sigma_bar_s / sigma_bar_t and w = alpha_s - c alpha_t (> 0 since lambda_s > lambda_t); at
    s = 0, c = 0 and w = 1. This is `mr_step_coefficients("ode", "data", ...)` at order 1.
    """
    tt = torch.tensor([t, s], dtype=torch.float64)
    a, sb = sde.alpha(tt).tolist(), sde.sigma_bar(tt).tolist()
    c = sb[1] / sb[0]
    return c, a[1] - c * a[0]


class Distilled(nn.Module):
    """A distilled restorer: the student network plus its time grid, step rule and SDE.

    Args:
        student: the network, called `student(x_t, mu, t)` with `t` a float32 tensor [B] in grid units.
        sde: the MR SDE of the teacher.
        times: calls + 1 strictly decreasing times from T (or a later start t_0 < T) down to 0. With
            t_0 < T the prior draw x_T is first moved to t_0 by the exact first-order step with
            x0_hat = mu, x = mu + sigma_bar(t_0) / sigma_bar(T) (x_T - mu) (no network call), as the MR
            Sampler's `t_start` does for a noise teacher.
        method: how the student was distilled (recorded, e.g. "regression").
        prediction: what the student's raw output means ("data", "velocity" or "noise").
        step: how to move between grid times, one of `STEP_RULES`.

    `calls`, `method`, `prediction`, `step` and the SDE's parameters are kept in the state dict
    (extra state), so a checkpoint of `D` restores with no other information; `times` is a float64 buffer.
    """

    def __init__(self, student: nn.Module, sde: MRSDE, times, *, method: str, prediction: str = "data",
                 step: str = "ode"):
        super().__init__()
        if step not in STEP_RULES:
            raise ValueError(f"unknown step {step!r}; valid: {', '.join(STEP_RULES)}")
        times = times.tolist() if torch.is_tensor(times) else list(times)
        if len(times) < 2:
            raise ValueError(f"times must hold at least 2 times (T ... 0), got {times!r}")
        t = check_times(times, sde, len(times) - 1, "times")
        self.student = student
        self.register_buffer("times", t)
        self.method = str(method)
        self.prediction = P.check_prediction(prediction)
        self.step = step
        self.sde_config = sde_config(sde)
        self._sde = sde

    @property
    def calls(self) -> int:
        return self.times.numel() - 1

    @property
    def sde(self) -> MRSDE:
        if self._sde is None or sde_config(self._sde) != self.sde_config:
            self._sde = MRSDE(**self.sde_config)
        return self._sde

    def extra_repr(self) -> str:
        ts = ", ".join(f"{v:.4g}" for v in self.times.tolist())
        return f"calls={self.calls}, method={self.method!r}, prediction={self.prediction!r}, step={self.step!r}, times=[{ts}]"

    def get_extra_state(self):
        return dict(method=self.method, prediction=self.prediction, step=self.step, sde=dict(self.sde_config),
                    calls=self.calls)

    def set_extra_state(self, state) -> None:
        self.method, self.prediction, self.step = state["method"], state["prediction"], state["step"]
        self.sde_config = dict(state["sde"])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # `times` may hold another number of calls than this instance's: take the checkpoint's.
        key = prefix + "times"
        if key in state_dict and state_dict[key].shape != self.times.shape:
            self.times = torch.empty_like(state_dict[key], dtype=torch.float64)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def check_sde(self, sde: MRSDE) -> None:
        """ValueError if `sde` is not the SDE this model was distilled for."""
        if not isinstance(sde, MRSDE):
            raise TypeError(f"sde must be an mrlight.sde.MRSDE, got {type(sde).__name__}")
        mine = self.sde_config
        theirs = sde_config(sde)
        same = (mine["T"] == theirs["T"] and mine["schedule"] == theirs["schedule"]
                and math.isclose(mine["max_sigma"], theirs["max_sigma"], rel_tol=1e-9)
                and math.isclose(mine["eps"], theirs["eps"], rel_tol=1e-9))
        if not same:
            raise ValueError(f"this distilled model was distilled for MRSDE({mine}), not {sde!r}")

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The student's x0 estimate at times `t` (float tensor [B] or a scalar), float32."""
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device)
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        out = self.student(x_t, mu, t)
        if not torch.is_tensor(out) or out.shape != x_t.shape:
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"the student must return a tensor shaped like x_t {tuple(x_t.shape)}, got {got}")
        out = out.float()
        if self.prediction == "data":
            return out
        t64 = t.detach().double().cpu()
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        a = self.sde.alpha(t64).reshape(shape).to(x_t.device, torch.float32)
        sb = self.sde.sigma_bar(t64).reshape(shape).to(x_t.device, torch.float32)
        return P.to_data(out, self.prediction, x_t.float(), mu.float(), a, sb, self.sde.max_sigma)

    def move(self, x: torch.Tensor, x0_hat: torch.Tensor, mu: torch.Tensor, i: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The state at times[i + 1] from the state x at times[i] and the student's x0 there."""
        t, s = self.times[i].item(), self.times[i + 1].item()
        if self.step == "ode" or s == 0:
            c, w = ode_step_coefficients(self.sde, t, s)
            return mu + c * (x - mu) + w * (x0_hat - mu)
        a, sb = self.sde.alpha(torch.tensor(s, dtype=torch.float64)).item(), \
            self.sde.sigma_bar(torch.tensor(s, dtype=torch.float64)).item()
        return mu + a * (x0_hat - mu) + sb * randn_like(x, generator)


def sample_distilled(D: Distilled, mu: torch.Tensor, sde: MRSDE, *, nfe: int, x_T: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, callback: Callable | None = None) -> torch.Tensor:
    """Restore `mu` with a distilled model in exactly `D.calls` student calls (= nfe).

    `x_T=None` draws the prior N(mu, max_sigma^2) from `generator`; with `step="renoise"` the
    generator also draws the re-noising. Returns a float32 tensor shaped like mu.
    """
    if not isinstance(D, Distilled):
        raise TypeError(f"sampler 'distilled' needs a model from mrlight.distill.distill (a Distilled module), "
                        f"got {type(D).__name__}")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe != D.calls:
        raise ValueError(f"this distilled model restores in calls={D.calls} network calls; got nfe={nfe!r} "
                         f"(use nfe={D.calls})")
    D.check_sde(sde)
    mu = mu.float()
    if x_T is None:
        x = sde.prior_sample(mu, generator)
    else:
        if x_T.shape != mu.shape:
            raise ValueError(f"x_T and mu must have the same shape, got {tuple(x_T.shape)} and {tuple(mu.shape)}")
        x = x_T.to(device=mu.device, dtype=torch.float32)
    times = D.times.tolist()
    x = sde.prior_moved_to(x, mu, times[0])  # a later start (see Distilled); x_T itself at T
    with torch.no_grad():
        for i in range(D.calls):
            t = torch.full((x.shape[0],), times[i], dtype=torch.float32, device=x.device)
            x0_hat = D(x, mu, t)
            if not torch.isfinite(x0_hat).all():
                raise NonFiniteError(f"the student returned non-finite values (NaN/Inf) at call {i} (t={times[i]:.4g})")
            x = D.move(x, x0_hat, mu, i, generator)
            check_finite(x, i, times[i + 1])
            if callback is not None:
                callback({"i": i, "t": times[i + 1], "x": x, "x0_hat": x0_hat})
    return x
