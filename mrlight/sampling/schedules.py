"""Time schedules: small functions that return the decreasing times a sampler visits.

Each returns a float64 tensor of n + 1 decreasing times in grid units, from `t_start` (the
prior's time, T unless lambda_min clips it) down to its end. Any solver takes any schedule (as in
k-diffusion's `get_sigmas_*`).

mrlight's grids end at t = 0, where lambda = +inf: every MR solver's exact step into t = 0 returns
x0_hat, so they leave no residual noise. `uniform-lambda` and `karras-t` are the official MR
Sampler's grids of those names, exactly as its code builds them, including where they end: at a
positive time (lambda 6.11, t = 0.362; t = 1), where the official sampler stops and returns a state
with noise left in it, and so does every sampler here (`OFFICIAL_END_SCHEDULES`). `uniform-lambda-tmin` and
`karras-t-tmin` are mrlight's variants: their last positive point is `t_min`, then t = 0
(`karras-t-tmin` is the MR Sampler default, docs/SAMPLERS.md).
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


def official_end_lambda(sde: MRSDE) -> float:
    """lambda where the official MR Sampler stops: its grid's lambda(0) (finite: 6.11 for MRSDE())."""
    return official_half_log_snr(sde)[0].item()


def _uniform_in_lambda(sde: MRSDE, n: int, t_start: float, lam_end: float) -> torch.Tensor:
    """n + 1 times equally spaced in mrlight's lambda from lambda(t_start) to lam_end."""
    lam_start = sde.half_log_snr(torch.tensor(t_start, dtype=torch.float64)).item()
    t = sde.t_from_lambda(torch.linspace(lam_start, lam_end, n + 1, dtype=torch.float64))
    t[0] = t_start  # exact start despite round-off in the inverse
    return t


def uniform_lambda(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """The official MR Sampler's grid (its 'linear-lambda'): n equal steps in lambda from lambda(t_start)
    to the official end lambda(0) = 6.11, where the sampler stops with noise left in the state.

    The official code spaces its lambda, ln alpha - ln sigma_bar tabulated on its own grid
    (`official_half_log_snr`, DA-CLIP's IRSDE), equally from lambda(T) (or lambda_min) to its
    lambda(0), which is finite there because that grid keeps theta_0 in the cumulative sum; its last
    step is an ordinary step to that lambda and returns the state, which still holds noise of std
    sigma_bar = 0.0022 (max_sigma 50). Here the steps are the same steps in lambda, on mrlight's
    lambda, so every evaluation is at the official noise level and the last point is the time where
    mrlight's lambda reaches the official end (t = 0.362 for MRSDE()); samplers stop there, as the
    official one does. The grid is defined by its lambdas, not its times: on DA-CLIP's grid the same
    t is a noisier point (its theta_0), and only equal lambdas make the same discretisation.
    `t_min` does not apply; `uniform_lambda_tmin` is mrlight's variant, which steps on into t = 0.
    """
    lam_end = official_end_lambda(sde)
    t = _uniform_in_lambda(sde, n, t_start, lam_end)
    if t_start <= t[-1].item():
        raise ValueError(f"uniform-lambda (the official grid) ends at t = {t[-1].item():.3f} (lambda {lam_end:.2f}, "
                         f"where the official sampler stops); it cannot start at t = {t_start:g}")
    return t


def uniform_lambda_tmin(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """n equal steps in mrlight's lambda from lambda(t_start) to lambda(t_min); the last lands on 0.

    mrlight's variant of uniform-lambda (named `uniform-lambda` until issue 18). Lu et al.
    (DPM-Solver, 2022) step uniformly in lambda; here lambda(0) = inf, so the grid ends at
    lambda(t_min) and that last point is replaced by t = 0: every step but the last has the same
    h, and the last takes the solver's exact limit to t = 0 (docs/SAMPLERS.md: n - 1 equal steps
    plus a jump from t_min was worse at NFE 5-10).
    """
    t = _uniform_in_lambda(sde, n, t_start, sde.half_log_snr(torch.tensor(t_min, dtype=torch.float64)).item())
    t[-1] = 0.0
    return t


# The official karras-t's last point: its code spaces n steps from T down to t = 1 and stops there.
OFFICIAL_KARRAS_T_END = 1.0


def karras_t(sde: MRSDE, n: int, t_start: float, t_min: float, rho: float = 7.0) -> torch.Tensor:
    """The official MR Sampler's 'karras-t': Karras et al. (2022) rho = 7 spacing applied to t.

    As its code builds it: n + 1 points (t_start^(1/rho) + i/n (1 - t_start^(1/rho)))^rho from t_start
    down to t = 1, where the official sampler stops and returns the state (noise of sigma_bar(1) left
    in it); samplers stop there too. The grid is defined in t, so these are the official times
    (calls at the same t; the noise left at t = 1 is sigma_bar(1) of mrlight's grid, 0.0037 for
    MRSDE(), where DA-CLIP's grid, with its theta_0, has 0.0043). The official code starts at T even
    when lambda_min clips its other grids; here the grid starts at `t_start`.
    `t_min` does not apply; `karras_t_tmin` is mrlight's variant that ends at t_min.
    """
    if t_start <= OFFICIAL_KARRAS_T_END:
        raise ValueError(f"karras-t spaces its steps down to t = {OFFICIAL_KARRAS_T_END:g}; it cannot start at "
                         f"t = {t_start:g} (use karras-t-tmin with a smaller t_min)")
    i = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    t = (t_start ** (1 / rho) + i * (OFFICIAL_KARRAS_T_END ** (1 / rho) - t_start ** (1 / rho))) ** rho
    t[0], t[-1] = t_start, OFFICIAL_KARRAS_T_END  # exact end points despite round-off
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
# The official MR Sampler's grids: they end at a positive time, where samplers stop with noise left.
OFFICIAL_END_SCHEDULES = ("uniform-lambda", "karras-t")
# Schedules whose last positive time is `t_min` (the option is refused with any other schedule).
T_MIN_SCHEDULES = ("karras-t-tmin", "uniform-lambda-tmin")
