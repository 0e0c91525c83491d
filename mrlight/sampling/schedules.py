"""Time schedules: small functions that return the decreasing times a sampler visits.

Each returns a float64 tensor of n + 1 times in grid units, from `t_start` (the prior's time,
T unless lambda_min clips it) down to exactly 0. Any solver takes any schedule (as in
k-diffusion's `get_sigmas_*`).

The last step always lands on t = 0, where lambda = +inf: every MR solver's exact step into
t = 0 returns x0_hat, so no schedule leaves residual noise. `uniform-lambda` and `karras-t` are the
official MR Sampler's grids of those names, exactly as its code builds them (network calls at the
official times; the official last point, where it stops with noise left, becomes t = 0).
`uniform-lambda-tmin` and `karras-t-tmin` are mrlight's variants: their last positive point is
`t_min`, then t = 0 (`karras-t-tmin` is the MR Sampler default, docs/SAMPLERS.md).
"""

from __future__ import annotations

import math

import torch

from mrlight.sde import MRSDE


def linspace(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """Uniform in t (DDIM-style 'linspace'): t_start, ..., t_start/n, 0."""
    return torch.linspace(t_start, 0.0, n + 1, dtype=torch.float64)


def official_half_log_snr(sde: MRSDE) -> torch.Tensor:
    """lambda at t = 0..T on the grid the official MR Sampler steps on (DA-CLIP's IRSDE), float64.

    That grid is IR-SDE's without its `- theta_0`: thetabar_t = sum_{i<=t} theta_i and
    dt = -ln(eps) / thetabar_T, alpha = exp(-thetabar dt), sigma_bar = s_inf sqrt(1 - alpha^2),
    lambda = ln alpha - ln sigma_bar; so lambda(0) is finite (6.11 for the cosine schedule,
    max_sigma 50, eps 0.005), where mrlight's is +inf.
    """
    cum = torch.cumsum(sde.thetas.to(torch.float64), 0)
    dt = -math.log(sde.eps) / cum[-1].item()
    alpha = torch.exp(-cum * dt)
    return torch.log(alpha) - torch.log(sde.max_sigma * torch.sqrt(-torch.expm1(-2 * cum * dt)))


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x, xp increasing, x within its range (float64)."""
    idx = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def uniform_lambda(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """The official MR Sampler's grid (its 'linear-lambda'): n equal steps in its lambda, to t = 0.

    Built exactly as the official code builds it: lambda is tabulated at t = 0..T on the official
    grid (`official_half_log_snr`, finite at t = 0), n + 1 equally spaced values are taken from
    lambda(t_start) (lambda(T) unless lambda_min clips the start) to lambda(0), and each is mapped
    back to t by piecewise-linear interpolation of that table. The times are the official ones, so
    a network is called at the same t; on mrlight's schedule, where lambda(0) = inf, the last step
    is the solver's step into t = 0 rather than the official step to a finite lambda.
    `t_min` does not apply; `uniform_lambda_tmin` is the variant that ends at t_min.
    """
    lam = official_half_log_snr(sde)
    t_grid = torch.arange(sde.T + 1, dtype=torch.float64)
    lam_start = _interp(torch.tensor([float(t_start)], dtype=torch.float64), t_grid, lam).item()
    targets = torch.linspace(lam_start, lam[0].item(), n + 1, dtype=torch.float64)
    t = _interp(targets, lam.flip(0), t_grid.flip(0))  # lambda decreases in t
    t[0], t[-1] = t_start, 0.0  # exact end points despite round-off
    return t


def uniform_lambda_tmin(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """n equal steps in mrlight's lambda from lambda(t_start) to lambda(t_min); the last lands on 0.

    mrlight's variant of uniform-lambda (named `uniform-lambda` until issue 18). Lu et al.
    (DPM-Solver, 2022) step uniformly in lambda; here lambda(0) = inf, so the grid ends at
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


# The official karras-t's last point: its code spaces n steps from T down to t = 1 and stops there.
OFFICIAL_KARRAS_T_END = 1.0


def karras_t(sde: MRSDE, n: int, t_start: float, t_min: float, rho: float = 7.0) -> torch.Tensor:
    """The official MR Sampler's 'karras-t': Karras et al. (2022) rho = 7 spacing applied to t.

    As its code builds it: n + 1 points (t_start^(1/rho) + i/n (1 - t_start^(1/rho)))^rho from t_start
    down to t = 1, where the official sampler stops and returns the state (noise of sigma_bar(1) left
    in it). The network is called at the same n times here; the last point is replaced by t = 0, the
    solver's exact step into the clean image (as for `uniform_lambda`). The official code starts at T
    even when lambda_min clips its other grids; here the grid starts at `t_start`.
    `t_min` does not apply; `karras_t_tmin` is mrlight's variant that ends at t_min.
    """
    if t_start <= OFFICIAL_KARRAS_T_END:
        raise ValueError(f"karras-t spaces its steps down to t = {OFFICIAL_KARRAS_T_END:g}; it cannot start at "
                         f"t = {t_start:g} (use karras-t-tmin with a smaller t_min)")
    i = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    t = (t_start ** (1 / rho) + i * (OFFICIAL_KARRAS_T_END ** (1 / rho) - t_start ** (1 / rho))) ** rho
    t[0], t[-1] = t_start, 0.0  # exact start despite round-off; the official end point becomes t = 0
    return t


def karras_t_tmin(sde: MRSDE, n: int, t_start: float, t_min: float, rho: float = 7.0) -> torch.Tensor:
    """mrlight's variant of karras-t (named `karras-t` until issue 18): Karras et al. (2022) rho = 7
    spacing applied to t over n - 1 steps from t_start down to t_min, then one step to t = 0.

    With t_min = 3 it is the MR Sampler's default: over the 90 cells the official code runs on its
    karras-t grid (benchmarks/official_cells.py section 12, perfect network, three laws) summed W1
    1.77 against 1.89 for the official grid, better than the official rules in 30 cells against 14
    (docs/SAMPLERS.md)."""
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


# Last positive time of karras-t-tmin / uniform-lambda-tmin, chosen in docs/SAMPLERS.md.
DEFAULT_T_MIN = 3.0

TIME_SCHEDULES = {
    "linspace": linspace,
    "uniform-lambda": uniform_lambda,
    "karras-t": karras_t,
    "karras-t-tmin": karras_t_tmin,
    "quadratic-t": quadratic_t,
    "uniform-lambda-tmin": uniform_lambda_tmin,
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


TIME_SCHEDULE_NAMES = tuple(TIME_SCHEDULES) + ("optimized",)
# Schedules whose last positive time is `t_min` (the option is refused with any other schedule).
T_MIN_SCHEDULES = ("karras-t-tmin", "uniform-lambda-tmin")
