"""Sampling from MR diffusion models: one entry point, `sample`, over a registry of samplers.

    x0 = sample(model_fn, mu, sde)                       # MR Sampler, defaults below
    x0 = sample(model_fn, mu, sde, sampler="posterior", nfe=100)   # IR-SDE / DA-CLIP reference

`model_fn(x_t, mu, t)` returns the network output; `t` is a float32 tensor of shape [B] in grid
units. Every sampler makes exactly `nfe` network calls (heun: nfe must be odd, 2 per step and 1
for the last) and keeps its state in float32 whatever the input dtype.

Defaults (see docs/SAMPLERS.md for the measurements behind them): the MR Sampler's ODE solver,
second order, data parameterization, `karras-t` times with t_min = 3, order lowered on the final
steps, NFE 10. The baselines default to IR-SDE's settings: nfe = T on the `linspace` grid.
"""

from __future__ import annotations

from typing import Callable

import torch

from mrlight import parameterization as P
from mrlight.sampling.baselines import sample_euler, sample_heun, sample_posterior
from mrlight.sampling.common import Denoiser, NonFiniteError, dynamic_threshold
from mrlight.sampling.mr import CORRECTORS, MAX_ORDER, UNIC_VARIANTS, sample_mr
from mrlight.sampling.optimize import optimize_times, optimized_times
from mrlight.sampling.schedules import (DEFAULT_T_MIN, TIME_SCHEDULE_NAMES, TIME_SCHEDULES, check_times, get_times,
                                        resolve_times)
from mrlight.sde import MRSDE

SAMPLERS: dict[str, Callable] = {
    "mr": sample_mr,
    "posterior": sample_posterior,
    "euler": sample_euler,
    "heun": sample_heun,
}
SOLVERS = ("ode", "sde")
PARAMETERIZATIONS = ("noise", "data")

# The MR Sampler's defaults, chosen from benchmarks/sampler_quality.py (docs/SAMPLERS.md).
MR_DEFAULTS = dict(nfe=10, solver="ode", order=2, parameterization="data", time_schedule="karras-t", t_min=DEFAULT_T_MIN)

__all__ = ["sample", "SAMPLERS", "SOLVERS", "PARAMETERIZATIONS", "TIME_SCHEDULES", "TIME_SCHEDULE_NAMES",
           "CORRECTORS", "MR_DEFAULTS", "NonFiniteError", "get_times", "check_times", "optimize_times",
           "optimized_times", "dynamic_threshold"]


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


def _check_images(name: str, x) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor (images in [0, 1]), got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension first, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")


def sample(model_fn: Callable, mu: torch.Tensor, sde: MRSDE, *, sampler: str = "mr", nfe: int | None = None,
           solver: str | None = None, order: int | None = None, parameterization: str | None = None,
           prediction: str = "noise", time_schedule: str | None = None, lambda_min: float | None = None,
           t_min: float | None = None, lower_order_final: bool = True, denoise_last: bool = False, final_order: int | None = None,
           corrector: str = "none", unic_variant: str | None = None,
           thresholding: bool = False, threshold_ratio: float = 0.995, threshold_max: float = 1.5,
           x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
           callback: Callable | None = None) -> torch.Tensor:
    """Restore `mu` (the degraded images, [B, C, H, W] in [0, 1]) by solving the reverse MR SDE/ODE.

    Args:
        model_fn: network callable `(x_t, mu, t) -> output`, output of type `prediction`.
        mu: degraded images; the prior is N(mu, max_sigma^2).
        sde: the `MRSDE` the network was trained with.
        sampler: one of `SAMPLERS` ("mr", "posterior", "euler", "heun").
        nfe: number of network evaluations (default 10 for "mr", T for the baselines).
        solver: "ode" or "sde" (mr, euler; posterior is stochastic by definition, heun is ODE-only).
        order: MR Sampler order, 1-3 for the ODE, 1-2 for the SDE.
        parameterization: MR Sampler form, "data" (x0) or "noise".
        prediction: what the network predicts: "noise", "data" or "velocity".
        time_schedule: one of `TIME_SCHEDULES` (default "karras-t" for mr, "linspace" otherwise);
            "optimized" (mr: stored tuned steps, `mrlight.sampling.optimize`); a YAML file of times;
            or an explicit strictly decreasing list of nfe + 1 times from at most T down to 0.
        lambda_min: start where lambda(t) = lambda_min if lambda(T) is smaller (numerical stability).
        t_min: last positive time of the `uniform-lambda` and `karras-t` schedules (default 3).
        lower_order_final: below 10 steps, cap the MR order by the number of steps left (DPM-Solver's rule).
        final_order: order of the step into t = 0 (default: `order`; min(order, 2) for the ODE in
            the noise form without corrector). Above 1 it is a multistep polynomial for eps in
            u = sigma_bar / alpha (t = 0 is u = 0), or for the noise-form ODE without corrector a
            lambda-space step to u = 1/510 and the newest eps from there; 1 is the first-order
            step, whose limit is x0_hat.
        corrector: "none" or "unic" (mr): UniC corrector (Zhao et al., 2023), no extra NFE.
        unic_variant: UniC's B(h) for its one-point case: "bh1", "bh2" or "exact" (default: bh2 for
            the data form, bh1 for the noise form, where bh2 and exact diverge at NFE 5).
        denoise_last: return x0_hat of the last evaluation instead of the last solver step.
        thresholding: dynamic thresholding of x0_hat (data parameterization).
        x_T: the starting state; None draws N(mu, max_sigma^2) from `generator`.
        generator: torch.Generator for the prior and the SDE noise (reproducible output).
        callback: called after each step with {'i', 't', 'x', 'x0_hat'}.

    Returns:
        float32 tensor shaped like mu. Raises ValueError for invalid options (naming the valid
        ones) and `NonFiniteError` naming the step if NaN/Inf appear during sampling.
    """
    _choice("sampler", sampler, SAMPLERS)
    is_mr = sampler == "mr"
    if solver is None:
        solver = MR_DEFAULTS["solver"] if is_mr else ("ode" if sampler == "heun" else "sde")
    _choice("solver", solver, SOLVERS)
    if parameterization is None:
        parameterization = MR_DEFAULTS["parameterization"]
    _choice("parameterization", parameterization, PARAMETERIZATIONS)
    P.check_prediction(prediction)
    if time_schedule is None:
        time_schedule = MR_DEFAULTS["time_schedule"] if is_mr else "linspace"
    if isinstance(time_schedule, str) and not time_schedule.lower().endswith((".yaml", ".yml")):
        _choice("time_schedule", time_schedule, TIME_SCHEDULE_NAMES if is_mr else TIME_SCHEDULES)
    _choice("corrector", corrector, CORRECTORS)
    if unic_variant is None:  # measured best per form (docs/SAMPLERS.md): B2 for data, B1 for noise
        unic_variant = "bh2" if parameterization == "data" else "bh1"
    _choice("unic_variant", unic_variant, UNIC_VARIANTS)
    if corrector != "none" and not is_mr:
        raise ValueError(f"corrector applies to sampler='mr' only, not {sampler!r}")
    if nfe is None:
        nfe = MR_DEFAULTS["nfe"] if is_mr else sde.T
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be an integer >= 1, got {nfe!r}")
    if is_mr:
        if order is None:
            order = min(MR_DEFAULTS["order"], MAX_ORDER[solver])
        if isinstance(order, bool) or order not in range(1, MAX_ORDER[solver] + 1):
            raise ValueError(f"order {order!r} is not supported by the MR {solver.upper()} solver; "
                             f"valid: {', '.join(map(str, range(1, MAX_ORDER[solver] + 1)))}")
    elif order is not None:
        raise ValueError(f"order applies to sampler='mr' only, not {sampler!r}")
    if thresholding and not (is_mr and parameterization == "data"):
        raise ValueError("thresholding applies to the MR Sampler's data parameterization only")
    if sampler == "heun":
        if solver != "ode":
            raise ValueError("sampler 'heun' supports solver='ode' only")
        if nfe % 2 == 0:
            raise ValueError(f"sampler 'heun' uses 2 NFE per step and 1 for the last step: nfe must be odd, got {nfe}")
    if not isinstance(sde, MRSDE):
        raise TypeError(f"sde must be an mrlight.sde.MRSDE, got {type(sde).__name__}")

    _check_images("mu", mu)
    mu = mu.float()
    if x_T is None:
        x = sde.prior_sample(mu, generator)
    else:
        _check_images("x_T", x_T)
        if x_T.shape != mu.shape:
            raise ValueError(f"x_T and mu must have the same shape, got {tuple(x_T.shape)} and {tuple(mu.shape)}")
        x = x_T.to(device=mu.device, dtype=torch.float32)

    if t_min is None:
        t_min = DEFAULT_T_MIN
    steps = (nfe + 1) // 2 if sampler == "heun" else nfe
    times = resolve_times(time_schedule, sde, steps, lambda_min=lambda_min, t_min=t_min,
                          order=order or 1, corrector=corrector)
    denoiser = Denoiser(model_fn, mu, sde, prediction, thresholding, threshold_ratio, threshold_max)
    opts = dict(generator=generator, callback=callback)
    if is_mr:
        opts.update(solver=solver, order=order, parameterization=parameterization,
                    lower_order_final=lower_order_final, denoise_last=denoise_last,
                    final_order=final_order, corrector=corrector,
                    unic_variant=unic_variant)
    elif sampler in ("euler", "heun"):
        opts.update(solver=solver)
    out = SAMPLERS[sampler](denoiser, x, mu, times, **opts)
    assert denoiser.nfe == nfe, (denoiser.nfe, nfe)
    return out
