"""The Mean-Reverting SDE of IR-SDE, on IR-SDE's discrete grid and at fractional times.

Forward process (Luo et al., "Image Restoration with Mean-Reverting Stochastic Differential
Equations", ICML 2023):

    dx = theta_t (mu - x) dt + sigma_t dw,    sigma_t^2 = 2 s_inf^2 theta_t

Grid t = 0..T. With thetabar_t = sum_{i<=t} theta_i - theta_0 (so thetabar_0 = 0) and
dt = -ln(eps) / thetabar_T (so alpha_T = eps):

    alpha_t = exp(-thetabar_t dt),  sigma_bar_t = s_inf sqrt(1 - alpha_t^2)
    x_t = alpha_t x0 + (1 - alpha_t) mu + sigma_bar_t * noise

Fractional times. theta is piecewise constant, theta(t) = theta_{ceil(t)} on (i-1, i], which
makes thetabar(t) the piecewise-linear interpolation of the grid values. This is the one
definition used everywhere (training, samplers, tests): it agrees with IR-SDE at integer t,
is continuous and strictly monotone (alpha decreasing, sigma_bar increasing, the half log-SNR
lambda decreasing), and has an exact inverse `t_from_lambda`.

All schedule arithmetic is float64; tensors handed out are float64 unless a dtype is asked for.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear", "constant")


def theta_schedule(name: str, T: int) -> torch.Tensor:
    """IR-SDE's theta_0..theta_T (T+1 values, float64)."""
    if name == "cosine":
        # Nichol & Dhariwal's cosine cumulative product over T+2 steps, truncated to T+1 betas.
        steps = T + 2
        x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
        s = 0.008
        abar = torch.cos(((x / steps) + s) / (1 + s) * math.pi * 0.5) ** 2
        abar = abar / abar[0]
        return 1 - abar[1:-1]
    if name == "linear":
        scale = 1000 / (T + 1)
        return torch.linspace(scale * 1e-4, scale * 0.02, T + 1, dtype=torch.float64)
    if name == "constant":
        return torch.ones(T + 1, dtype=torch.float64)
    raise ValueError(f"unknown theta schedule {name!r}; valid: {', '.join(SCHEDULES)}")


class MRSDE:
    """The MR SDE with IR-SDE's grid. Times are floats in grid units, 0 <= t <= T.

    Args:
        T: number of grid steps (IR-SDE: 100).
        max_sigma: stationary std s_inf in 8-bit units (IR-SDE's `max_sigma`, e.g. 10, 12.5, 50), any
            positive float; stored divided by 255 (`.max_sigma` is in [0, 1] image units).
        schedule: theta schedule, one of ``SCHEDULES``.
        eps: alpha_T, which fixes dt.
    """

    def __init__(self, T: int = 100, max_sigma: float = 50, schedule: str = "cosine", eps: float = 0.005):
        if int(T) != T or T < 1:
            raise ValueError(f"T must be a positive integer, got {T!r}")
        if not max_sigma > 0:
            raise ValueError(f"max_sigma must be > 0, got {max_sigma!r}")
        if not 0 < eps < 1:
            raise ValueError(f"eps (alpha_T) must be in (0, 1), got {eps!r}")
        self.T = int(T)
        self.max_sigma = float(max_sigma) / 255
        self.schedule = schedule
        self.eps = float(eps)
        self.thetas = theta_schedule(schedule, self.T)
        self.thetas_bar = torch.cumsum(self.thetas, 0) - self.thetas[0]
        self.dt = -math.log(eps) / self.thetas_bar[-1].item()
        # Grid values, float64.
        self.alphas = torch.exp(-self.thetas_bar * self.dt)
        self.sigma_bars = self.max_sigma * torch.sqrt(-torch.expm1(-2 * self.thetas_bar * self.dt))

    def __repr__(self) -> str:
        return (f"MRSDE(T={self.T}, max_sigma={self.max_sigma * 255:g}/255, "
                f"schedule={self.schedule!r}, eps={self.eps:g})")

    # -- schedule at fractional t -------------------------------------------------------------
    def _as_t(self, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        if not torch.is_floating_point(t):
            t = t.to(torch.float64)
        return t

    def theta_bar(self, t) -> torch.Tensor:
        """thetabar(t): piecewise-linear interpolation of the grid's cumulative theta (float64)."""
        t = self._as_t(t)
        tt = t.detach().to("cpu", torch.float64).clamp(0, self.T)
        lo = tt.floor().clamp(max=self.T - 1).long()
        w = tt - lo
        tb = self.thetas_bar
        out = tb[lo] + w * (tb[lo + 1] - tb[lo])
        return out.to(t.device)

    def theta(self, t) -> torch.Tensor:
        """theta(t) = theta_{ceil(t)}, the drift rate on (i-1, i] (per unit of dt)."""
        t = self._as_t(t)
        idx = t.detach().to("cpu", torch.float64).clamp(0, self.T).ceil().long()
        return self.thetas[idx].to(t.device)

    def alpha(self, t) -> torch.Tensor:
        """alpha(t) = exp(-thetabar(t) dt); same shape as t, dtype of t (float64 for ints)."""
        t = self._as_t(t)
        return torch.exp(-self.theta_bar(t) * self.dt).to(t.dtype)

    def sigma_bar(self, t) -> torch.Tensor:
        """sigma_bar(t) = s_inf sqrt(1 - alpha(t)^2); same shape as t."""
        t = self._as_t(t)
        tb = self.theta_bar(t)
        return (self.max_sigma * torch.sqrt(-torch.expm1(-2 * tb * self.dt))).to(t.dtype)

    def half_log_snr(self, t) -> torch.Tensor:
        """lambda(t) = ln alpha(t) - ln sigma_bar(t); decreasing in t, +inf at t = 0."""
        t = self._as_t(t)
        tb = self.theta_bar(t) * self.dt
        lam = -tb - math.log(self.max_sigma) - 0.5 * torch.log(-torch.expm1(-2 * tb))
        return lam.to(t.dtype)

    def t_from_lambda(self, lam) -> torch.Tensor:
        """Exact inverse of `half_log_snr` (float64), clamped to [0, T]."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        # alpha^2 = s^2 e^{2 lam} / (1 + s^2 e^{2 lam}); thetabar dt = -ln alpha.
        z = 2 * (lam + math.log(self.max_sigma))
        tb = 0.5 * torch.nn.functional.softplus(-z) / self.dt  # -ln(alpha) = 0.5 ln(1 + e^{-z})
        tb = tb.clamp(0, self.thetas_bar[-1].item())
        idx = torch.searchsorted(self.thetas_bar, tb).clamp(1, self.T)
        lo, hi = self.thetas_bar[idx - 1], self.thetas_bar[idx]
        return (idx - 1).to(torch.float64) + (tb - lo) / (hi - lo)

    # -- distributions ------------------------------------------------------------------------
    def marginal_params(self, t):
        """(alpha_t, sigma_bar_t) as float64 tensors."""
        t = self._as_t(t).to(torch.float64)
        return self.alpha(t), self.sigma_bar(t)

    def q_sample(self, x0: torch.Tensor, mu: torch.Tensor, t, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x0, mu) = N(alpha_t x0 + (1 - alpha_t) mu, sigma_bar_t^2).

        `t` is a float tensor of shape [B] (one time per image) or a scalar.
        """
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=torch.float32)
        a, s = self._broadcast(t, x0)
        return (mu + a * (x0 - mu) + s * noise).to(x0.dtype)

    def prior_sample(self, mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T ~ N(mu, s_inf^2) (float32), IR-SDE's `noise_state`."""
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=torch.float32)
        return mu.float() + self.max_sigma * noise

    def prior_moved_to(self, x_T: torch.Tensor, mu: torch.Tensor, t: float) -> torch.Tensor:
        """The prior draw x_T moved from T to time t by the exact first-order PF-ODE step with
        x0_hat = mu: mu + sigma_bar(t) / sigma_bar(T) (x_T - mu) (a later start; it drops
        alpha(t) (x0 - mu) from the marginal, small where alpha(t) is). x_T itself at t = T."""
        if float(t) >= float(self.T):
            return x_T
        sb = self.sigma_bar(torch.tensor([float(t), float(self.T)], dtype=torch.float64))
        return mu + (sb[0] / sb[1]).item() * (x_T - mu)

    def posterior_coefficients(self, t, s):
        """Tensor form of `posterior_params`: (c_x0, c_xt, std) float64 tensors for times t > s >= 0.

        mean = mu + c_x0 (x0 - mu) + c_xt (x_t - mu); std of q(x_s | x_t, x0). Broadcasts t and s.
        """
        t = self._as_t(t).to(torch.float64)
        s = self._as_t(s).to(torch.float64)
        a_t, a_s = self.alpha(t), self.alpha(s)
        a = a_t / a_s  # transition alpha from s to t
        v_s = -torch.expm1(-2 * self.theta_bar(s) * self.dt)  # (sigma_bar_s / s_inf)^2
        v_t = -torch.expm1(-2 * self.theta_bar(t) * self.dt)
        c_xt = a * v_s / v_t
        c_x0 = a_s - c_xt * a_t
        var = (v_s * (1 - a * a) / v_t).clamp(min=0)
        return c_x0, c_xt, self.max_sigma * var.sqrt()

    def posterior_params(self, t, s):
        """Coefficients of the exact Gaussian q(x_s | x_t, x0, mu) for 0 <= s < t (Python floats).

        mean = mu + c_x0 (x0 - mu) + c_xt (x_t - mu),  std = std.
        With s = t-1 on the grid these are IR-SDE's `reverse_optimum_step` / `reverse_optimum_std`.
        """
        t, s = float(t), float(s)
        if not 0 <= s < t <= self.T:
            raise ValueError(f"posterior needs 0 <= s < t <= T, got s={s}, t={t}")
        c_x0, c_xt, std = self.posterior_coefficients(torch.tensor(t, dtype=torch.float64),
                                                      torch.tensor(s, dtype=torch.float64))
        return c_x0.item(), c_xt.item(), std.item()

    def g2(self, t) -> torch.Tensor:
        """sigma(t)^2 = 2 s_inf^2 theta(t), the squared diffusion coefficient (per unit of dt)."""
        return 2 * self.max_sigma ** 2 * self.theta(t)

    def _broadcast(self, t, like: torch.Tensor):
        t = self._as_t(t).to(torch.float64)
        a, s = self.alpha(t), self.sigma_bar(t)
        shape = (-1,) + (1,) * (like.dim() - 1) if t.dim() == 1 else ()
        return (a.reshape(shape).to(like.device, torch.float32),
                s.reshape(shape).to(like.device, torch.float32))
