"""The reference samplers of IR-SDE / DA-CLIP, kept for comparison with the MR Sampler.

Both take any time schedule. On the full grid (nfe = T, `linspace`) they are step for step
IR-SDE's `reverse_posterior` and `reverse_sde` / `reverse_ode`.
"""

from __future__ import annotations

from typing import Callable

import torch

from mrlight import parameterization as P
from mrlight.sampling.common import Denoiser, check_finite, randn_like


@torch.no_grad()
def sample_posterior(denoiser: Denoiser, x: torch.Tensor, mu: torch.Tensor, times: torch.Tensor, *,
                     generator: torch.Generator | None = None, callback: Callable | None = None,
                     **_) -> torch.Tensor:
    """Posterior sampling (Luo et al., IR-SDE 2023; DA-CLIP 2024): x_s ~ q(x_s | x_t, x0_hat).

    Between arbitrary times s < t it uses the exact Gaussian q(x_s | x_t, x0) of the MR SDE.
    """
    sde = denoiser.sde
    n = len(times) - 1
    coeffs = [c.tolist() for c in sde.posterior_coefficients(times[:-1], times[1:])]  # all steps at once
    for i in range(n):
        t, s = times[i].item(), times[i + 1].item()
        out = denoiser(x, t, i)
        x0_hat = denoiser.data(out, x, t)
        c_x0, c_xt, std = coeffs[0][i], coeffs[1][i], coeffs[2][i]
        x_new = mu + c_x0 * (x0_hat - mu) + c_xt * (x - mu)
        if std > 0:
            x_new.add_(randn_like(x, generator), alpha=std)
        x = x_new
        check_finite(x, i, s)
        if callback is not None:
            callback({"i": i, "t": s, "x": x, "x0_hat": x0_hat})
    return x


def _drift(denoiser: Denoiser, out, x, mu, t: float, probability_flow: bool):
    """Reverse-time drift per grid unit: (theta (mu - x) - c sigma^2 score) dt, c = 1 (SDE) or 1/2 (ODE)."""
    sde = denoiser.sde
    tt = torch.tensor(t, dtype=torch.float64)
    theta, g2 = sde.theta(tt).item(), sde.g2(tt).item()
    a, sb = denoiser.schedule_at(t)
    score = P.score_from_noise(denoiser.noise(out, x, t), sb)
    c = 0.5 if probability_flow else 1.0
    return (theta * (mu - x) - c * g2 * score) * sde.dt, g2


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, mu: torch.Tensor, times: torch.Tensor, *,
                 solver: str = "sde", generator: torch.Generator | None = None,
                 callback: Callable | None = None, **_) -> torch.Tensor:
    """Euler-Maruyama of the reverse SDE (IR-SDE's `reverse_sde`), or Euler of the PF-ODE (`solver="ode"`)."""
    n = len(times) - 1
    ode = solver == "ode"
    for i in range(n):
        t, s = times[i].item(), times[i + 1].item()
        out = denoiser(x, t, i)
        x0_hat = denoiser.data(out, x, t) if callback is not None else None
        drift, g2 = _drift(denoiser, out, x, mu, t, ode)
        step = t - s
        x = x - drift * step
        if not ode:
            x.add_(randn_like(x, generator), alpha=(g2 * denoiser.sde.dt * step) ** 0.5)
        check_finite(x, i, s)
        if callback is not None:
            callback({"i": i, "t": s, "x": x, "x0_hat": x0_hat})
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: torch.Tensor, mu: torch.Tensor, times: torch.Tensor, *,
                solver: str = "ode", generator: torch.Generator | None = None,
                callback: Callable | None = None, **_) -> torch.Tensor:
    """Heun's method on the PF-ODE (Karras et al., 2022), 2 NFE per step; the last step is Euler.

    `times` has one point per two NFE (the caller builds it); the last step is an Euler step, since
    sigma_bar(0) = 0 makes the score undefined at t = 0 (and a grid that ends at a positive time, as
    the official MR Sampler's do, keeps the same number of calls).
    """
    if solver != "ode":
        raise ValueError("heun supports solver='ode' only")
    n = len(times) - 1
    for i in range(n):
        t, s = times[i].item(), times[i + 1].item()
        out = denoiser(x, t, i)
        x0_hat = denoiser.data(out, x, t) if callback is not None else None
        d1, _ = _drift(denoiser, out, x, mu, t, True)
        x_euler = x - d1 * (t - s)
        if i < n - 1:
            out2 = denoiser(x_euler, s, i)
            d2, _ = _drift(denoiser, out2, x_euler, mu, s, True)
            x = x - 0.5 * (d1 + d2) * (t - s)
        else:
            x = x_euler
        check_finite(x, i, s)
        if callback is not None:
            callback({"i": i, "t": s, "x": x, "x0_hat": x0_hat})
    return x
