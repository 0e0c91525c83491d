"""What every sampler shares: one guarded network call and the conversion of its output.

The model callable's output type (noise / data / velocity) is absorbed here, as k-diffusion's
denoiser wrappers do, so no sampler knows what the network was trained to predict.
"""

from __future__ import annotations

from typing import Callable

import torch

from mrlight import parameterization as P
from mrlight.errors import NonFiniteError
from mrlight.sde import MRSDE


class Denoiser:
    """Calls `model_fn(x_t, mu, t)` once per step and converts its output.

    Counts calls (`nfe`), upcasts the output to float32 and stops with `NonFiniteError` naming the
    step when the network returns NaN or Inf.
    """

    def __init__(self, model_fn: Callable, mu: torch.Tensor, sde: MRSDE, prediction: str,
                 thresholding: bool = False, threshold_ratio: float = 0.995, threshold_max: float = 1.5):
        self.model_fn = model_fn
        self.mu = mu
        self.sde = sde
        self.prediction = P.check_prediction(prediction)
        self.thresholding = thresholding
        self.threshold_ratio = threshold_ratio
        self.threshold_max = threshold_max
        self.nfe = 0
        self._schedule_cache: dict[float, tuple[float, float]] = {}

    def schedule_at(self, t: float) -> tuple[float, float]:
        """(alpha(t), sigma_bar(t)) as Python floats, cached: samplers ask for each time several times."""
        if t not in self._schedule_cache:
            tt = torch.tensor(t, dtype=torch.float64)
            self._schedule_cache[t] = (self.sde.alpha(tt).item(), self.sde.sigma_bar(tt).item())
        return self._schedule_cache[t]

    def __call__(self, x: torch.Tensor, t: float, step: int) -> torch.Tensor:
        t_vec = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
        out = self.model_fn(x, self.mu, t_vec)
        self.nfe += 1
        if not torch.is_tensor(out) or out.shape != x.shape:
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"model_fn must return a tensor shaped like x_t {tuple(x.shape)}, got {got}")
        out = out.float()
        if not torch.isfinite(out).all():
            raise NonFiniteError(f"the network returned non-finite values (NaN/Inf) at step {step} (t={t:.4g})")
        return out

    def data(self, out: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
        a, s = self.schedule_at(t)
        x0 = P.to_data(out, self.prediction, x, self.mu, a, s, self.sde.max_sigma)
        return dynamic_threshold(x0, self.threshold_ratio, self.threshold_max) if self.thresholding else x0

    def noise(self, out: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
        a, s = self.schedule_at(t)
        return P.to_noise(out, self.prediction, x, self.mu, a, s, self.sde.max_sigma)


def dynamic_threshold(x0: torch.Tensor, ratio: float = 0.995, max_value: float = 1.5) -> torch.Tensor:
    """Dynamic thresholding of x0_hat (Saharia et al., Imagen, 2022), for images in [0, 1].

    Works in [-1, 1] (y = 2 x0 - 1): s = quantile(|y|, ratio) per image, clamped to [1, max_value];
    y <- clamp(y, -s, s) / s. With s = 1 this is a plain clip to [0, 1].
    """
    b = x0.shape[0]
    y = 2 * x0 - 1
    s = torch.quantile(y.reshape(b, -1).abs(), ratio, dim=1).clamp(1.0, max_value)
    s = s.reshape((b,) + (1,) * (x0.dim() - 1))
    return (torch.maximum(torch.minimum(y, s), -s) / s + 1) / 2


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)


def check_finite(x: torch.Tensor, step: int, t: float) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"the sampler state became non-finite at step {step} (t={t:.4g}); "
                             "try a lower order, lambda_min, or another time_schedule")
