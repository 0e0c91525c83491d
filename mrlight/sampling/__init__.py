"""Sampling from MR diffusion models: one entry point, `sample`, over samplers with their own options.

    x0 = sample(model_fn, mu, sde)                                   # MR Sampler, defaults below
    x0 = sample(model_fn, mu, sde, sampler="posterior", nfe=100)     # IR-SDE / DA-CLIP reference

`model_fn(x_t, mu, t)` returns the network output; `t` is a float32 tensor of shape [B] in grid
units. Every sampler makes exactly `nfe` network calls (heun: nfe must be odd, 2 per step and 1
for the last) and keeps its state in float32 whatever the input dtype.

One contract per sampler, as in k-diffusion: each sampler is its own function with its own options
(`SAMPLER_OPTIONS` lists them with their defaults). An option the chosen sampler does not use is an
error naming it, so `sample(..., sampler="posterior", denoise_last=True)` fails instead of quietly
ignoring `denoise_last`; every name means one thing (`euler` is always Euler-Maruyama of the
reverse SDE unless `solver="ode"` is asked for).

MR defaults (see docs/SAMPLERS.md for the measurements behind them): ODE solver, second order, data
parameterization, `karras-t-tmin` times with t_min = 3, order lowered on the final steps, NFE 10. The
baselines default to IR-SDE's settings: nfe = T on the `linspace` grid.

Noise-prediction networks: their data estimate multiplies the error of eps_hat by sigma_bar / alpha
(about 40 at t = T for max_sigma 50), and the ODE carries the early errors to the end;
`noise_network_defaults(prediction)` returns the MR options measured to fix most of that (clipping
x0_hat to [0, 1], a later start `t_start`; docs/results/noise_remedies.md).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from mrlight import parameterization as P
from mrlight.errors import NonFiniteError
from mrlight.sampling.baselines import sample_euler, sample_heun, sample_posterior
from mrlight.sampling.common import Denoiser, dynamic_threshold
from mrlight.sampling.distilled import Distilled, sample_distilled
from mrlight.sampling.mr import CORRECTORS, MAX_ORDER, UNIC_VARIANTS, sample_mr
from mrlight.sampling.optimize import optimize_times as _optimize_times
from mrlight.sampling.schedules import (DEFAULT_T_MIN, OFFICIAL_END_SCHEDULES, T_MIN_SCHEDULES, TIME_SCHEDULE_NAMES,
                                        TIME_SCHEDULES, check_times, get_times)
from mrlight.sampling.step_tables import optimized_times
from mrlight.sampling.times import is_times_file, resolve_times
from mrlight.sde import MRSDE

SAMPLERS: dict[str, Callable] = {
    "mr": sample_mr,
    "posterior": sample_posterior,
    "euler": sample_euler,
    "heun": sample_heun,
    "distilled": sample_distilled,  # a student of mrlight.distill: model_fn is its `Distilled` module
}
SOLVERS = ("ode", "sde")
PARAMETERIZATIONS = ("noise", "data")

# The MR Sampler's defaults, chosen from benchmarks/sampler_quality.py (docs/SAMPLERS.md).
MR_DEFAULTS = dict(nfe=10, solver="ode", order=2, parameterization="data", time_schedule="karras-t-tmin", t_min=DEFAULT_T_MIN)

_SCHEDULE = dict(time_schedule=None, lambda_min=None, t_min=None)
# Added for noise-prediction networks (`noise_network_defaults`), measured in docs/results/noise_remedies.md:
# x0_hat clipped to [0, 1], and the start where sigma_bar / alpha, the factor by which an error of eps_hat
# enters x0_hat, has fallen to NOISE_START_AMPLIFICATION (t_start = 69.2 on IR-SDE's grid, max_sigma 50).
NOISE_NETWORK_DEFAULTS = dict(thresholding=True, threshold_max=1.0)
NOISE_START_AMPLIFICATION = 2.0
# And the last positive time t_min where sigma_bar / alpha = NOISE_END_NOISE (t_min = 16 on IR-SDE's grid,
# max_sigma 50), from which the last step returns x0_hat: the operating point of IR-SDE's posterior
# sampling at 100 steps, in PSNR and realism (docs/SAMPLERS.md "Noise-prediction checkpoints").
NOISE_END_NOISE = 16 / 255
# Every option each sampler takes, with its default (None: decided from the other options).
SAMPLER_OPTIONS: dict[str, dict] = {
    "mr": dict(solver="ode", order=None, parameterization="data", **_SCHEDULE, lower_order_final=True,
               denoise_last=False, final_order=None, corrector="none", unic_variant=None, thresholding=False,
               threshold_ratio=0.995, threshold_max=1.5, t_start=None),
    "posterior": dict(_SCHEDULE),
    "euler": dict(solver="sde", **_SCHEDULE),
    "heun": dict(_SCHEDULE),
    "distilled": {},  # the student's times and step rule are part of the distilled model
}

__all__ = ["sample", "sampler_options", "SAMPLERS", "SAMPLER_OPTIONS", "SOLVERS", "PARAMETERIZATIONS",
           "TIME_SCHEDULES", "TIME_SCHEDULE_NAMES", "CORRECTORS", "MR_DEFAULTS", "NonFiniteError", "OptionError",
           "get_times", "check_times", "optimize_times", "optimized_times", "dynamic_threshold",
           "noise_network_defaults", "with_network_defaults", "NOISE_NETWORK_DEFAULTS", "NOISE_START_AMPLIFICATION",
           "NOISE_END_NOISE"]


class OptionError(ValueError):
    """A sampler option that is invalid or not used by the chosen sampler; `.option` names it."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(message)


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise OptionError(name, f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


def _check_images(name: str, x) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor (images in [0, 1]), got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension first, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")


def sampler_options(cfg_sampler: dict) -> dict:
    """A `sampler.*` config block as keyword arguments of `sample` (null means the sampler's default)."""
    return {k: v for k, v in dict(cfg_sampler).items() if v is not None}


def _options(sampler: str, given: dict) -> dict:
    """The chosen sampler's options: its defaults updated by `given`; an option it does not use is refused."""
    _choice("sampler", sampler, SAMPLERS)
    valid = SAMPLER_OPTIONS[sampler]
    for key in given:
        if key not in valid:
            users = [name for name, opts in SAMPLER_OPTIONS.items() if key in opts]
            if not users:
                raise OptionError(key, f"unknown sampler option {key!r}; sampler {sampler!r} takes: "
                                       f"{', '.join(valid) or '(no options)'}")
            raise OptionError(key, f"option {key!r} is not used by sampler {sampler!r} (it applies to "
                                   f"{', '.join(repr(u) for u in users)}); {sampler!r} takes: {', '.join(valid)}")
    return {**valid, **{k: v for k, v in given.items() if v is not None}}


def _check_schedule(o: dict, sampler: str) -> None:
    ts = o["time_schedule"]
    if isinstance(ts, str) and not is_times_file(ts):
        _choice("time_schedule", ts, TIME_SCHEDULE_NAMES if sampler == "mr" else TIME_SCHEDULES)
    named = isinstance(ts, str) and not is_times_file(ts) and ts != "optimized"
    if o["t_min"] is not None and not (named and ts in T_MIN_SCHEDULES):
        raise OptionError("t_min", f"t_min is the last positive time of the {' and '.join(T_MIN_SCHEDULES)} "
                                   f"schedules; it is not used with time_schedule={ts!r}")
    if o.get("final_order") is not None and named and ts in OFFICIAL_END_SCHEDULES:
        raise OptionError("final_order", f"final_order is the order of the step into t = 0; time_schedule={ts!r} is "
                                         f"the official grid, which stops before t = 0 (use {ts}-tmin to step into it)")
    if o["lambda_min"] is not None and not named:
        raise OptionError("lambda_min", "lambda_min applies to the named time schedules, not to optimized or "
                                        "explicit times")


def _check_mr(o: dict) -> None:
    _choice("solver", o["solver"], SOLVERS)
    _choice("parameterization", o["parameterization"], PARAMETERIZATIONS)
    _choice("corrector", o["corrector"], CORRECTORS)
    if o["order"] is None:
        o["order"] = min(MR_DEFAULTS["order"], MAX_ORDER[o["solver"]])
    valid_orders = range(1, MAX_ORDER[o["solver"]] + 1)
    if isinstance(o["order"], bool) or o["order"] not in valid_orders:
        raise OptionError("order", f"order {o['order']!r} is not supported by the MR {o['solver'].upper()} solver; "
                                   f"valid: {', '.join(map(str, valid_orders))}")
    if o["final_order"] is not None and (isinstance(o["final_order"], bool) or o["final_order"] not in valid_orders):
        raise OptionError("final_order", f"final_order {o['final_order']!r} is not supported by the MR "
                                         f"{o['solver'].upper()} solver; valid: {', '.join(map(str, valid_orders))}")
    if o["unic_variant"] is None:  # measured best per form (docs/SAMPLERS.md): B2 for data, B1 for noise
        o["unic_variant"] = "bh2" if o["parameterization"] == "data" else "bh1"
    elif o["corrector"] == "none":
        raise OptionError("unic_variant", "unic_variant applies with corrector='unic' only")
    _choice("unic_variant", o["unic_variant"], UNIC_VARIANTS)
    if o["thresholding"] and o["parameterization"] != "data":
        raise OptionError("thresholding", "thresholding applies to the MR Sampler's data parameterization only")
    if not o["thresholding"] and (o["threshold_ratio"], o["threshold_max"]) != (0.995, 1.5):
        raise OptionError("threshold_ratio", "threshold_ratio / threshold_max apply with thresholding=True only")
    if o["time_schedule"] is None:
        o["time_schedule"] = MR_DEFAULTS["time_schedule"]


def _check_t_start(o: dict, sde: MRSDE) -> None:
    """`t_start` (mr): a number in (t_min, T] with a named time schedule, not with lambda_min."""
    ts, schedule = o["t_start"], o["time_schedule"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 < ts <= sde.T:
        raise OptionError("t_start", f"t_start must be a time in (0, T={sde.T}], got {ts!r}")
    if not (isinstance(schedule, str) and schedule in TIME_SCHEDULES):
        raise OptionError("t_start", f"t_start applies to the named time schedules ({', '.join(TIME_SCHEDULES)}), "
                                     f"not to time_schedule={schedule!r} (optimized or explicit times set their "
                                     f"own start)")
    if o["lambda_min"] is not None:
        raise OptionError("t_start", "give t_start or lambda_min, not both (each sets the start time)")
    t_min = DEFAULT_T_MIN if o["t_min"] is None else o["t_min"]
    if schedule in T_MIN_SCHEDULES and not 0 < t_min < ts:
        raise OptionError("t_start", f"t_start={ts!r} must be above t_min={t_min!r}, the last positive time of "
                                     f"time_schedule={schedule!r}")


def _time_where_noise_ratio(sde: MRSDE, u: float) -> float:
    """The time (2 decimals) where sigma_bar / alpha = u, i.e. lambda = -ln u."""
    return round(sde.t_from_lambda(torch.tensor(-math.log(u), dtype=torch.float64)).item(), 2)


def noise_network_defaults(prediction: str, sde: MRSDE | None = None, options: dict | None = None) -> dict:
    """Options of the MR Sampler to add for a network that predicts `prediction` (empty unless "noise").

    A noise network's data estimate x0_hat = mu + (x_t - mu - sigma_bar eps_hat) / alpha multiplies the
    error of eps_hat by sigma_bar / alpha (39 at t = T for IR-SDE's cosine grid, eps = 0.005, max_sigma 50),
    and the PF-ODE carries those early errors to the end. Measured to help (docs/results/noise_remedies.md):
    clipping x0_hat to [0, 1] (`thresholding=True, threshold_max=1.0`) and starting at `t_start`, where
    sigma_bar / alpha = NOISE_START_AMPLIFICATION (the `sde`'s time; default `MRSDE()`: t_start = 69.17),
    from the prior moved there.

    `options`: the sampler options the caller will pass to `sample`. Only defaults compatible with them
    are returned, and none the caller set (their choice wins): nothing for a sampler other than "mr", no
    clipping for the noise parameterization, no t_start with optimized or explicit times, lambda_min or a
    t_min at or above it. Use as `sample(..., **{**noise_network_defaults(prediction, sde, opts), **opts})`.
    """
    P.check_prediction(prediction)
    o = dict(options or {})
    if prediction != "noise" or o.get("sampler", "mr") != "mr":
        return {}
    sde = sde if sde is not None else MRSDE()
    data_form = o.get("parameterization", "data") == "data"
    out = dict(NOISE_NETWORK_DEFAULTS) if data_form else {}
    if "thresholding" in o:
        out = {}
    t_start = min(_time_where_noise_ratio(sde, NOISE_START_AMPLIFICATION), float(sde.T))
    schedule = o.get("time_schedule")
    named = schedule is None or (isinstance(schedule, str) and schedule in TIME_SCHEDULES)
    if data_form and "t_min" not in o and (schedule is None or schedule in T_MIN_SCHEDULES):
        out["t_min"] = _time_where_noise_ratio(sde, NOISE_END_NOISE)
    t_min = out.get("t_min", DEFAULT_T_MIN if o.get("t_min") is None else o["t_min"])
    if named and o.get("lambda_min") is None and t_start > t_min:
        out["t_start"] = t_start
    return {k: v for k, v in out.items() if k not in o}


def with_network_defaults(options: dict, prediction: str, sde: MRSDE | None = None) -> dict:
    """`options` (keyword arguments of `sample`) plus `noise_network_defaults` for a network that
    predicts `prediction`; the caller's options win. This is how a checkpoint is sampled by default
    (sample.py, the Restorer, validation and test, the app): a noise-prediction checkpoint gets x0_hat
    clipped to [0, 1] and the later start unless its options say otherwise (`thresholding=False`,
    `t_start=T` turn them off). Plain `sample(...)` adds nothing."""
    return {**noise_network_defaults(prediction, sde, options), **options}


def sample(model_fn: Callable, mu: torch.Tensor, sde: MRSDE, *, sampler: str = "mr", nfe: int | None = None,
           prediction: str = "noise", x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
           callback: Callable | None = None, **options) -> torch.Tensor:
    """Restore `mu` (the degraded images, [B, C, H, W] in [0, 1]) by solving the reverse MR SDE/ODE.

    Args:
        model_fn: network callable `(x_t, mu, t) -> output`, output of type `prediction`.
        mu: degraded images; the prior is N(mu, max_sigma^2).
        sde: the `MRSDE` the network was trained with.
        sampler: one of `SAMPLERS` ("mr", "posterior", "euler", "heun", "distilled": `model_fn` is
            a `Distilled` student of mrlight.distill, restoring in its own `calls` network calls).
        nfe: number of network evaluations (default 10 for "mr", T for the baselines).
        prediction: what the network predicts: "noise", "data" or "velocity".
        x_T: the starting state; None draws N(mu, max_sigma^2) from `generator`.
        generator: torch.Generator for the prior and the SDE noise (reproducible output).
        callback: called after each step with {'i', 't', 'x', 'x0_hat'}.
        **options: the chosen sampler's options (`SAMPLER_OPTIONS[sampler]`); any other is an error.
            Every sampler: `time_schedule` (one of `TIME_SCHEDULES`, default "karras-t-tmin" for mr and
            "linspace" otherwise; for mr also "optimized" (stored tuned steps, `step_tables`), a YAML
            file of times, or an explicit strictly decreasing list of nfe + 1 times from at most T
            to 0), `lambda_min` (named schedules: start where lambda(t) = lambda_min if lambda(T) is
            smaller), `t_min` (last positive time of `uniform-lambda-tmin` and `karras-t-tmin`, default 3;
            `uniform-lambda` and `karras-t` are the official MR Sampler's grids, which end where it stops:
            at a positive time, returning the state with the official noise left).
            mr: `solver` "ode" | "sde"; `order` 1-3 (ODE) or 1-2 (SDE); `parameterization` "data"
            (x0) | "noise"; `lower_order_final` (below 10 steps, cap the order by the steps left,
            DPM-Solver's rule); `final_order` (order of the step into t = 0; default `order`, min(order,
            2) for the noise-form ODE without corrector; above 1 a multistep polynomial for eps in
            u = sigma_bar / alpha, or for the noise-form ODE without corrector a lambda-space step to
            u = 1/510, where it stops; refused with the official grids, which stop before t = 0);
            `corrector` "none" | "unic" (UniC, Zhao et al. 2023, no extra NFE) with `unic_variant` "bh1"
            | "bh2" | "exact" (default bh2 for the data form, bh1 for the noise form); `denoise_last`
            (return x0_hat of the last evaluation);
            `thresholding` (dynamic thresholding of x0_hat, data form) with `threshold_ratio`,
            `threshold_max` (`threshold_max=1.0`: a plain clip of x0_hat to [0, 1]); `t_start` (a time
            in (t_min, T], named schedules only, not with lambda_min: start the sampler there, with the
            prior draw x_T (given or drawn) moved to mu + sigma_bar(t_start)/sigma_bar(T) (x_T - mu), the
            exact first-order step T -> t_start with x0_hat = mu; the schedule runs from t_start and all
            nfe calls are made at t <= t_start; it drops alpha(t_start) (x0 - mu) from the marginal).
            `noise_network_defaults(prediction)` gives the options measured to help noise networks.
            euler: `solver` "sde" (Euler-Maruyama of the reverse SDE, IR-SDE's `reverse_sde`) or
            "ode" (Euler of the probability-flow ODE). posterior and heun: the schedule options only.

    Returns:
        float32 tensor shaped like mu. Raises `OptionError` (a ValueError whose `.option` names the
        option) for invalid or unused options, and `NonFiniteError` naming the step if NaN/Inf appear
        during sampling.
    """
    o = _options(sampler, options)
    P.check_prediction(prediction)
    if sampler == "distilled":
        return _sample_distilled(model_fn, mu, sde, nfe, x_T, generator, callback)
    is_mr = sampler == "mr"
    if is_mr:
        _check_mr(o)
    else:
        o["time_schedule"] = o["time_schedule"] or "linspace"
        if "solver" in o:
            _choice("solver", o["solver"], SOLVERS)
    _check_schedule(o, sampler)
    if is_mr and o["t_start"] is not None:
        _check_t_start(o, sde)
    if nfe is None:
        nfe = MR_DEFAULTS["nfe"] if is_mr else sde.T
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise OptionError("nfe", f"nfe must be an integer >= 1, got {nfe!r}")
    if sampler == "heun" and nfe % 2 == 0:
        raise OptionError("nfe", f"sampler 'heun' uses 2 NFE per step and 1 for the last step: nfe must be odd, "
                                 f"got {nfe}")
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

    steps = (nfe + 1) // 2 if sampler == "heun" else nfe
    t_min = DEFAULT_T_MIN if o["t_min"] is None else o["t_min"]
    t_start = o.get("t_start")
    try:
        if t_start is not None:
            times = TIME_SCHEDULES[o["time_schedule"]](sde, steps, float(t_start), min(t_min, float(t_start)))
        else:
            times = resolve_times(o["time_schedule"], sde, steps, lambda_min=o["lambda_min"], t_min=t_min,
                                  order=o.get("order") or 1, corrector=o.get("corrector", "none"),
                                  settings={k: o[k] for k in ("order", "corrector", "solver", "parameterization")
                                            if k in o})
    except OptionError:
        raise
    except ValueError as err:
        raise OptionError("time_schedule", str(err)) from None
    if t_start is not None:  # the prior moved to t_start by the marginal's noise scale
        x = sde.prior_moved_to(x, mu, float(t_start))
    denoiser = Denoiser(model_fn, mu, sde, prediction, o.get("thresholding", False),
                        o.get("threshold_ratio", 0.995), o.get("threshold_max", 1.5))
    kwargs = {k: v for k, v in o.items() if k not in ("time_schedule", "lambda_min", "t_min", "thresholding",
                                                      "threshold_ratio", "threshold_max", "t_start")}
    out = SAMPLERS[sampler](denoiser, x, mu, times, generator=generator, callback=callback, **kwargs)
    assert denoiser.nfe == nfe, (denoiser.nfe, nfe)
    return out


def _sample_distilled(D, mu, sde, nfe, x_T, generator, callback) -> torch.Tensor:
    """sampler="distilled": the student's own k-call restorer (mrlight.sampling.distilled)."""
    if not isinstance(D, Distilled):
        raise OptionError("sampler", f"sampler 'distilled' restores with a distilled model (mrlight.distill.distill, "
                                     f"or a student checkpoint), got {type(D).__name__}")
    nfe = D.calls if nfe is None else nfe
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe != D.calls:
        raise OptionError("nfe", f"this distilled model restores in {D.calls} network call(s); got nfe={nfe!r} "
                                 f"(use nfe={D.calls})")
    _check_images("mu", mu)
    if x_T is not None:
        _check_images("x_T", x_T)
    return sample_distilled(D, mu, sde, nfe=nfe, x_T=x_T, generator=generator, callback=callback)


def optimize_times(sde: MRSDE, nfe: int, **kwargs):
    """`mrlight.sampling.optimize.optimize_times` with this module's `sample` as the sampler it tunes."""
    return _optimize_times(sde, nfe, sample_fn=sample, **kwargs)
