"""The official MR Sampler's rules, re-implemented for comparison (benchmarks only).

The official code (Li et al., ICLR 2025, github.com/grrrute/mr-sampler, `utils/sampler.py`) cannot
run here (hard-coded paths, DA-CLIP dependencies), so this module re-states its behaviour as
facts read from that code, in this project's own code, so that benchmarks compare like with like:

- Grid: DA-CLIP's IRSDE, which does *not* subtract theta_0 from the cumulative sum, so
  sigma_bar(0) = s_inf sqrt(1 - exp(-2 theta_0 dt)) ~ 0.0022 > 0 and lambda(0) is finite. (On the
  grid DESIGN.md fixes, lambda(0) = +inf and its interpolation below gives NaN at t = 0.)
  alpha = exp(-cumsum(theta) dt), lambda = ln alpha - ln sigma_bar.
- Fractional t: alpha, sigma_bar and lambda are each interpolated piecewise-linearly in t
  (so lambda(t) != ln alpha(t) - ln sigma_bar(t) between grid points).
- Times (N steps, N + 1 points): 'linspace' T..0; 'karras-t' rho = 7 from T to t = 1 (the last
  point is t = 1, not 0); 'linear-lambda' uniform in lambda from lambda(T) to lambda(0).
- Orders: the first steps ramp up (order i at step i); the order is lowered near the end only
  when N < 10, and the final step uses the full order.
- Multistep terms as in DPM-Solver++: D1 = (q0 - q1) / r0 with r0 = h_prev / h; third order with
  D1 = D1_0 + (D1_0 - D1_1) r0 / (r0 + r1), D2 = (D1_0 - D1_1) / (r0 + r1) and the phi_3 term
  as written there (half of the exact second-derivative coefficient).
- Output clipped to [0, 1].
"""

from __future__ import annotations

import math

import torch

from mrlight.sde import MRSDE, theta_schedule


class DaclipGrid:
    """DA-CLIP's IR-SDE arrays (cumulative theta without subtracting theta_0), float64."""

    def __init__(self, T=100, max_sigma=50, schedule="cosine", eps=0.005):
        self.T = T
        self.max_sigma = max_sigma / 255 if max_sigma >= 1 else max_sigma
        thetas = theta_schedule(schedule, T)
        cum = torch.cumsum(thetas, 0)
        self.dt = -math.log(eps) / cum[-1].item()
        self.t = torch.arange(T + 1, dtype=torch.float64)
        self.alpha = torch.exp(-cum * self.dt)
        self.sigma = self.max_sigma * torch.sqrt(1 - torch.exp(-2 * cum * self.dt))
        self.lam = torch.log(self.alpha) - torch.log(self.sigma)

    @staticmethod
    def interp(x, xp, fp):
        """Piecewise-linear interpolation, extrapolating with the outer segments (as DPM-Solver's)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if xp[0] > xp[-1]:
            xp, fp = xp.flip(0), fp.flip(0)
        idx = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
        x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
        return y0 + (x - x0) * (y1 - y0) / (x1 - x0)

    def at(self, t):
        """(alpha, sigma_bar) interpolated at t: the 'perfect network' sees this schedule."""
        return self.interp(t, self.t, self.alpha), self.interp(t, self.t, self.sigma)


def official_times(grid: DaclipGrid, n: int, schedule: str, lambda_min: float = -math.inf) -> torch.Tensor:
    clipped = int(torch.searchsorted(grid.lam.flip(0), torch.tensor(lambda_min, dtype=torch.float64)))
    t_max = float(grid.T - clipped)
    if schedule == "linspace":
        return torch.linspace(t_max, 0, n + 1, dtype=torch.float64)
    if schedule == "karras-t":
        rho, i = 7.0, torch.linspace(0, 1, n + 1, dtype=torch.float64)
        return (grid.T ** (1 / rho) + i * (1.0 - grid.T ** (1 / rho))) ** rho
    if schedule in ("linear-lambda", "uniform-lambda"):
        lam = torch.linspace(max(grid.lam.min().item(), lambda_min), grid.lam.max().item(), n + 1, dtype=torch.float64)
        return grid.interp(lam, grid.lam, grid.t)
    raise ValueError(f"official schedule {schedule!r} not emulated")


@torch.no_grad()
def official_mr_sample(model_fn, mu, grid: DaclipGrid, n: int, *, solver="ode", order=2, parameterization="data",
                       schedule="linspace", lambda_min=-math.inf, denoise_last=False, x_T=None, generator=None):
    """The official MR Sampler's update rules on its own grid; model_fn predicts noise."""
    times = official_times(grid, n, schedule, lambda_min)
    al = grid.interp(times, grid.t, grid.alpha).tolist()
    sg = grid.interp(times, grid.t, grid.sigma).tolist()
    lm = grid.interp(times, grid.t, grid.lam).tolist()
    mu = mu.float()
    x = mu + grid.max_sigma * torch.randn(mu.shape, generator=generator) if x_T is None else x_T.float()
    buf: list[torch.Tensor] = []
    M = n

    def model_q(x, j):
        eps = model_fn(x, mu, torch.full((x.shape[0],), times[j].item(), dtype=torch.float32)).float()
        if parameterization == "data":
            return (x - sg[j] * eps) / al[j] - (1 - al[j]) / al[j] * mu
        return eps

    def step(x, i, k):
        buf.insert(0, model_q(x, i - 1))
        del buf[max(order, 1):]
        h = lm[i] - lm[i - 1]
        if k >= 2:
            r0 = (lm[i - 1] - lm[i - 2]) / h
            D1_0 = (buf[0] - buf[1]) / r0
        if k == 3:
            r1 = (lm[i - 2] - lm[i - 3]) / h
            D1_1 = (buf[1] - buf[2]) / r1
            D1 = D1_0 + (D1_0 - D1_1) * r0 / (r0 + r1)
            D2 = (D1_0 - D1_1) / (r0 + r1)
        elif k == 2:
            D1 = D1_0
        a_s, a_t, s_s, s_t = al[i - 1], al[i], sg[i - 1], sg[i]
        if solver == "ode" and parameterization == "data":
            p1 = math.expm1(-h)
            D = p1 * buf[0]
            if k >= 2:
                p2 = p1 / h + 1
                D = D - p2 * D1
            if k == 3:
                D = D + (p2 / h - 0.5) * D2
            return s_t / s_s * x - a_t * D + mu * (1 - s_t / s_s + s_t / s_s * a_s - a_t)
        if solver == "ode":
            p1 = math.expm1(h)
            D = p1 * buf[0]
            if k >= 2:
                p2 = p1 / h - 1
                D = D + p2 * D1
            if k == 3:
                D = D + (p2 / h - 0.5) * D2
            return a_t / a_s * x - s_t * D + mu * (1 - a_t / a_s)
        z = torch.randn(x.shape, generator=generator)
        if parameterization == "data":
            p1 = -math.expm1(-2 * h)
            out = s_t / s_s * math.exp(-h) * x + a_t * p1 * buf[0] + s_t * math.sqrt(p1) * z
            if k >= 2:
                out = out + a_t * (1 - p1 / (2 * h)) * D1
            return out + mu * (1 - a_t / a_s * math.exp(-2 * h) - a_t * p1)
        p1 = math.expm1(h)
        out = a_t / a_s * x - 2 * s_t * p1 * buf[0] + s_t * math.sqrt(math.expm1(2 * h)) * z
        if k >= 2:
            out = out - 2 * s_t * (p1 / h - 1) * D1
        return out + mu * (1 - a_t / a_s)

    for i in range(1, min(order, M + 1)):
        x = step(x, i, i)
    for i in range(order, M):
        x = step(x, i, min(order, M - i) if M < 10 else order)
    if denoise_last:
        eps = model_fn(x, mu, torch.full((x.shape[0],), times[M - 1].item(), dtype=torch.float32)).float()
        x = (x - sg[M - 1] * eps) / al[M - 1] - (1 - al[M - 1]) / al[M - 1] * mu
    elif M >= order:
        x = step(x, M, order)
    return x.clamp(0, 1)


def grid_as_mrsde_like(grid: DaclipGrid) -> MRSDE:
    """An MRSDE carrying the same s_inf (the oracle uses it only for velocity targets)."""
    return MRSDE(T=grid.T, max_sigma=grid.max_sigma * 255)
