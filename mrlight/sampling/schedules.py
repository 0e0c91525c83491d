"""Time schedules: small functions that return the decreasing times a sampler visits.

Each returns a float64 tensor of n + 1 times in grid units, from `t_start` (the prior's time,
T unless lambda_min clips it) down to exactly 0. Any solver takes any schedule (as in
k-diffusion's `get_sigmas_*`).

The last step always lands on t = 0, where lambda = +inf: every MR solver's exact step into
t = 0 returns x0_hat, so no schedule leaves residual noise. Schedules that need a finite
smallest time (`uniform-lambda`, `karras-t`) place their last positive point at `t_min`.
"""

from __future__ import annotations

import torch

from mrlight.sde import MRSDE


def linspace(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """Uniform in t (DDIM-style 'linspace'): t_start, ..., t_start/n, 0."""
    return torch.linspace(t_start, 0.0, n + 1, dtype=torch.float64)


def uniform_lambda(sde: MRSDE, n: int, t_start: float, t_min: float) -> torch.Tensor:
    """Uniform in the half log-SNR lambda between lambda(t_start) and lambda(t_min), then 0.

    Lu et al. (DPM-Solver, 2022) step uniformly in lambda; the MR Sampler calls it 'linear-lambda'.
    """
    if n == 1:
        return torch.tensor([t_start, 0.0], dtype=torch.float64)
    lam = torch.linspace(sde.half_log_snr(torch.tensor(t_start, dtype=torch.float64)).item(),
                         sde.half_log_snr(torch.tensor(t_min, dtype=torch.float64)).item(), n,
                         dtype=torch.float64)
    t = sde.t_from_lambda(lam)
    t[0], t[-1] = t_start, t_min  # exact end points despite round-off in the inverse
    return torch.cat([t, t.new_zeros(1)])


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
