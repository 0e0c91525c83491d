"""Training objectives of MR diffusion: time draws and the loss of one batch.

- noise / data / velocity: regress the network output on `parameterization.target(...)` at a time
  t ~ U(0, T] (continuous, because the MR Sampler evaluates the network between grid points;
  `objective.t_sampling=discrete` draws IR-SDE's integer t in 1..T instead);
- matching (IR-SDE, Luo et al., ICML 2023): the network predicts noise; the loss compares one
  reverse-SDE Euler step from x_t, x_t - (theta_t (mu - x_t) - g2_t score) dt with
  score = -eps_hat / sigma_bar_t, with the true posterior mean of x_{t-1} given (x_t, x0);
  integer t in 1..T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mrlight import parameterization as P
from mrlight.sde import MRSDE

OBJECTIVES = ("noise", "data", "velocity", "matching")
LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


def output_of(objective: str) -> str:
    """What a network trained with `objective` predicts (matching trains a noise network)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective.prediction {objective!r}; valid: {', '.join(OBJECTIVES)}")
    return "noise" if objective == "matching" else objective


def loss_function(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown objective.loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]


def draw_times(sde: MRSDE, batch_size: int, generator: torch.Generator, device, discrete: bool) -> torch.Tensor:
    """Training times: integer t in 1..T (discrete, IR-SDE) or t ~ U(0, T] (continuous)."""
    if discrete:
        return torch.randint(1, sde.T + 1, (batch_size,), generator=generator, device=device).float()
    return (1 - torch.rand(batch_size, generator=generator, device=device)) * sde.T  # (0, T]


def objective_loss(out: torch.Tensor, *, objective: str, loss_fn, sde: MRSDE, x0: torch.Tensor, mu: torch.Tensor,
                   x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The loss of the network output `out` at (x_t, t), where x_t = q_sample(x0, mu, t, noise)."""
    shape = (-1, 1, 1, 1)
    if objective == "matching":
        sigma_bar = sde.sigma_bar(t.double()).float().reshape(shape)
        theta = sde.theta(t.double()).float().reshape(shape)
        g2 = sde.g2(t.double()).float().reshape(shape)
        score = P.score_from_noise(out, sigma_bar)
        x_prev_hat = x_t - (theta * (mu - x_t) - g2 * score) * sde.dt
        c_x0, c_xt, _ = sde.posterior_coefficients(t.double(), t.double() - 1)
        c_x0, c_xt = c_x0.float().reshape(shape), c_xt.float().reshape(shape)
        x_prev = mu + c_x0 * (x0 - mu) + c_xt * (x_t - mu)
        return loss_fn(x_prev_hat, x_prev)
    alpha = sde.alpha(t.double()).float().reshape(shape)
    target = P.target(output_of(objective), x0, noise, mu, alpha, sde.max_sigma)
    return loss_fn(out, target)


def train_seed(seed: int, rank: int, batch: int = 0) -> int:
    """Seed of one training batch's time/noise draws: seed + rank, so DDP ranks draw different t
    (DESIGN 7), plus a large multiple of the batch index, so batches never share a stream."""
    return seed + rank + 1_000_003 * batch


__all__ = ["OBJECTIVES", "LOSSES", "output_of", "loss_function", "draw_times", "objective_loss", "train_seed"]
