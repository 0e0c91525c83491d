"""Restoring images with a trained checkpoint, whole or in overlapping tiles.

    restorer = Restorer.from_checkpoint("outputs/demo/checkpoints/last.ckpt")
    restored = restorer(lq)                    # [B, 3, H, W] in [0, 1]
    restored = restorer(lq, tile=256, tile_overlap=32, nfe=20)

Tiling splits the network call, not the image: at every sampler step the network runs on
overlapping tiles of (x_t, mu) and the outputs are blended with a weight that ramps down over the
overlap, so all tiles follow one sampling trajectory and no seams are baked in (the idea of
MultiDiffusion, Bar-Tal et al. 2023, applied to the MR Sampler's network calls).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import torch

from mrlight.checkpoint import load_checkpoint, network_from_checkpoint
from mrlight.sampling import sampler_options
from mrlight.sampling import sample
from mrlight.sde import MRSDE


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(n: int, overlap: int, device) -> torch.Tensor:
    w = torch.ones(n, device=device)
    if overlap > 0 and n > 2 * overlap:
        r = torch.linspace(0, 1, overlap + 2, device=device)[1:-1]
        w[:overlap], w[-overlap:] = r, r.flip(0)
    return w


def tiled(model_fn: Callable, tile: int, overlap: int = 32) -> Callable:
    """Wrap `model_fn(x_t, mu, t)` so that it runs on `tile` x `tile` tiles overlapping by `overlap` pixels."""
    if tile < 8 or not 0 <= overlap < tile // 2:
        raise ValueError(f"tile must be >= 8 and 0 <= tile_overlap < tile / 2, got tile={tile}, overlap={overlap}")

    def fn(x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h <= tile and w <= tile:
            return model_fn(x, mu, t)
        th, tw = min(tile, h), min(tile, w)
        out = torch.zeros_like(x, dtype=torch.float32)
        weight = torch.zeros((1, 1, h, w), device=x.device)
        win = _ramp(th, overlap, x.device)[:, None] * _ramp(tw, overlap, x.device)[None, :]
        for i in _starts(h, th, th - overlap):
            for j in _starts(w, tw, tw - overlap):
                sl = (..., slice(i, i + th), slice(j, j + tw))
                out[sl] += model_fn(x[sl], mu[sl], t).float() * win
                weight[sl] += win
        return out / weight

    return fn


class Restorer:
    """A trained network, its SDE and its sampler settings, ready to restore images."""

    def __init__(self, net: torch.nn.Module, sde: MRSDE, prediction: str, sampler: dict, seed: int = 0):
        self.net = net.eval().requires_grad_(False)
        self.sde = sde
        self.prediction = prediction
        self.sampler = dict(sampler)
        self.seed = int(seed)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", seed: int = 0) -> "Restorer":
        ckpt = load_checkpoint(path)
        cfg = ckpt["hyper_parameters"]["config"]
        net = network_from_checkpoint(ckpt, path).to(device)
        sde = MRSDE(**{k: cfg["sde"][k] for k in ("T", "max_sigma", "schedule", "eps")})
        objective = cfg["objective"]["prediction"]
        prediction = "noise" if objective == "matching" else objective
        return cls(net, sde, prediction, cfg["sampler"], seed=seed)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def __call__(self, lq: torch.Tensor, name: str = "", tile: int | None = None, tile_overlap: int = 32,
                 callback: Callable | None = None, **sampler_overrides) -> torch.Tensor:
        """Restore `lq` ([B, 3, H, W] or [3, H, W] in [0, 1]); the prior noise is seeded from `seed` and `name`."""
        single = lq.dim() == 3
        lq = (lq[None] if single else lq).to(self.device, torch.float32)
        opts = sampler_options({**self.sampler, **sampler_overrides})
        model_fn = self.net if not tile else tiled(self.net, int(tile), int(tile_overlap))
        generator = torch.Generator(device=lq.device).manual_seed(self.seed + zlib.crc32(name.encode()))
        out = sample(model_fn, lq, self.sde, prediction=self.prediction, generator=generator,
                     callback=callback, **opts).clamp(0, 1)
        return out[0] if single else out
