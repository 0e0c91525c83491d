"""Restoring images with a trained checkpoint, whole or in overlapping tiles.

    restorer = Restorer.from_checkpoint("outputs/demo/checkpoints/last.ckpt")
    restored = restorer(lq)                    # [B, 3, H, W] in [0, 1]
    restored = restorer(lq, tile=256, tile_overlap=32, nfe=20)
    restorer = Restorer.from_checkpoint(path, precision="bf16", channels_last=True, compile=True)

`precision` ("32", "bf16" or "16") runs the network call, and only it, under `torch.autocast`; the
sampler's state stays float32 (`mrlight.sampling.sample` upcasts every network output). The first
and the last convolution (the one that reads the image and the one that writes the prediction) stay
float32, as mixed-precision practice keeps a network's edges: in bf16 they cost the shipped denoiser
0.1-0.4 dB (its input rounded to 8 mantissa bits), in float32 the loss is about 0.02 dB.
`channels_last` stores the weights and the network inputs in NHWC order, `compile` wraps the
network in `torch.compile` (compiled on the first call).

Tiling splits the network call, not the image: at every sampler step the network runs on
overlapping tiles of (x_t, mu) and the outputs are blended with a weight that ramps down over the
overlap, so all tiles follow one sampling trajectory and no seams are baked in (the idea of
MultiDiffusion, Bar-Tal et al. 2023, applied to the MR Sampler's network calls). A network's
whole-image conditioning (`global_conditioning(mu)`: DA-CLIP's contexts) is computed from the whole
mu, once per image, and passed to every tile.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from pathlib import Path
from typing import Callable

import torch

from mrlight.checkpoint import load_checkpoint, network_from_checkpoint
from mrlight.sampling import sampler_options, with_network_defaults
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


def tiled(model_fn: Callable, tile: int, overlap: int = 32, conditioning: Callable | None = None) -> Callable:
    """Wrap `model_fn(x_t, mu, t)` so that it runs on `tile` x `tile` tiles overlapping by `overlap` pixels.

    `conditioning(mu) -> dict`: keyword arguments computed from the whole `mu` and passed to every tile's
    call (DA-CLIP's contexts, `DaCLIPUNet.global_conditioning`: encoded once per image, not per tile)."""
    if tile < 8 or not 0 <= overlap < tile // 2:
        raise ValueError(f"tile must be >= 8 and 0 <= tile_overlap < tile / 2, got tile={tile}, overlap={overlap}")

    def fn(x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h <= tile and w <= tile:
            return model_fn(x, mu, t)
        th, tw = min(tile, h), min(tile, w)
        extra = conditioning(mu) if conditioning is not None else {}
        out = torch.zeros_like(x, dtype=torch.float32)
        weight = torch.zeros((1, 1, h, w), device=x.device)
        win = _ramp(th, overlap, x.device)[:, None] * _ramp(tw, overlap, x.device)[None, :]
        for i in _starts(h, th, th - overlap):
            for j in _starts(w, tw, tw - overlap):
                sl = (..., slice(i, i + th), slice(j, j + tw))
                out[sl] += model_fn(x[sl], mu[sl], t, **extra).float() * win
                weight[sl] += win
        return out / weight

    return fn


# Inference precisions: the network call runs under torch.autocast with this dtype (None: float32).
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
_PRECISION_ALIASES = {"32": "32", "fp32": "32", "float32": "32", "32-true": "32",
                      "bf16": "bf16", "bfloat16": "bf16", "bf16-mixed": "bf16",
                      "16": "16", "fp16": "16", "float16": "16", "16-mixed": "16"}


class PrecisionError(ValueError):
    """An inference option (precision, compile) that this machine or torch build cannot run."""


def precision_name(value) -> str:
    """32 / "32" / "fp32" -> "32", "bf16" / "bfloat16" -> "bf16", 16 / "fp16" -> "16"; anything else is an error."""
    key = str(value).strip().lower()
    if isinstance(value, bool) or key not in _PRECISION_ALIASES:
        raise PrecisionError(f"precision={value!r} is not valid; valid: {', '.join(PRECISIONS)}")
    return _PRECISION_ALIASES[key]


def _check_autocast(precision: str, device: torch.device) -> None:
    """Fail now, with a clear message, where autocast to `precision` would be ignored or unsupported."""
    dtype = PRECISIONS[precision]
    kind = device.type
    available = getattr(torch.amp, "is_autocast_available", lambda _: True)(kind)
    if not available:
        raise PrecisionError(f"precision={precision}: torch {torch.__version__} has no autocast on {kind}; "
                             "use precision=32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast(kind, dtype=dtype), torch.no_grad():
                probe = torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4, device=device),
                                                   torch.ones(1, 1, 3, 3, device=device))
        except Exception as err:  # noqa: BLE001 - any failure here means this precision cannot run
            raise PrecisionError(f"precision={precision}: {dtype} autocast fails on {kind} with torch "
                                 f"{torch.__version__} ({type(err).__name__}: {err}); "
                                 "use precision=bf16 or 32") from None
    if probe.dtype != dtype:
        why = "; ".join(" ".join(str(w.message).split()) for w in caught) or f"the network would run in {probe.dtype}"
        raise PrecisionError(f"precision={precision}: {dtype} autocast is not supported on {kind} with torch "
                             f"{torch.__version__} ({why}); use precision=bf16 or 32")


_CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d)


def _edge_convs(net: torch.nn.Module, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> list[torch.nn.Module]:
    """The first and the last convolution that a forward pass runs (traced once, in float32)."""
    order: list[torch.nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _args: order.append(mod))
             for m in net.modules() if isinstance(m, _CONVS)]
    try:
        with torch.no_grad():
            net(x, mu, t)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys([order[0], order[-1]])) if order else []


def _keep_float32(module: torch.nn.Module, device_type: str) -> None:
    """Run `module` in float32 with autocast off (its inputs upcast), like autocast's own float32 ops."""
    inner = module.forward

    def forward(*args, **kwargs):
        args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        with torch.autocast(device_type, enabled=False):
            return inner(*args, **kwargs)

    module.forward = forward


class Restorer:
    """A trained network, its SDE and its sampler settings, ready to restore images.

    `precision` ("32" | "bf16" | "16", also 32 / 16 as ints), `compile` and `channels_last` only
    change how the network is called; the sampler runs in float32 in every case.
    """

    def __init__(self, net: torch.nn.Module, sde: MRSDE, prediction: str, sampler: dict, seed: int = 0,
                 precision: str | int = "32", compile: bool = False, channels_last: bool = False,
                 distill: dict | None = None):
        self.net = net.eval().requires_grad_(False)
        self.distill = dict(distill) if distill else None  # a distilled student's times and step rule
        self.sde = sde
        self.prediction = prediction
        self.sampler = dict(sampler)
        self.seed = int(seed)
        self.precision = precision_name(precision)
        self.compile = bool(compile)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if self.precision != "32":
            _check_autocast(self.precision, self.device)
        self._compiled: Callable | None = None
        self._edges_kept = self.precision == "32"  # reduced precision: the edge convolutions stay float32

    def _keep_edges_float32(self, channels: int) -> None:
        if self._edges_kept:
            return
        x = torch.rand(1, channels, 64, 64, device=self.device)
        t = torch.full((1,), float(self.sde.T) / 2, device=self.device)
        for module in _edge_convs(self.net, x, x.clone(), t):
            _keep_float32(module, self.device.type)
        self._edges_kept = True

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", seed: int = 0,
                        precision: str | int = "32", compile: bool = False, channels_last: bool = False,
                        daclip: str | Path | None = None) -> "Restorer":
        """`daclip`: the DA-CLIP encoder file of a daclip-unet checkpoint (checked against the identity it records)."""
        ckpt = load_checkpoint(path)
        cfg = ckpt["hyper_parameters"]["config"]
        net = network_from_checkpoint(ckpt, path, daclip=daclip, require_encoder=True).to(device)
        sde = MRSDE(**{k: cfg["sde"][k] for k in ("T", "max_sigma", "schedule", "eps")})
        objective = cfg["objective"]["prediction"]
        prediction = "noise" if objective == "matching" else objective
        return cls(net, sde, prediction, cfg["sampler"], seed=seed, precision=precision, compile=compile,
                   channels_last=channels_last, distill=cfg.get("distill") if cfg.get("distill", {}).get("times") else None)

    def _forward(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        """One network call with the inference options (autocast, channels_last, compile)."""
        net = self.net
        if self.compile:
            if self._compiled is None:
                self._compiled = torch.compile(self.net)
            net = self._compiled
        if self.channels_last:
            x, mu = x.contiguous(memory_format=torch.channels_last), mu.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        ctx = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with ctx:
            return net(x, mu, t, **kwargs)

    def _conditioning(self, mu: torch.Tensor) -> dict:
        """The network's whole-image conditioning of `mu` (DA-CLIP contexts), under the same autocast as its calls."""
        dtype = PRECISIONS[self.precision]
        with torch.autocast(mu.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            return self.net.global_conditioning(mu)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def __call__(self, lq: torch.Tensor, name: str = "", tile: int | None = None, tile_overlap: int = 32,
                 callback: Callable | None = None, seed: int | None = None, **sampler_overrides) -> torch.Tensor:
        """Restore `lq` ([B, 3, H, W] or [3, H, W] in [0, 1]); the prior noise is seeded from `seed`
        (default: the Restorer's) plus crc32(`name`), so an image restores the same under the same name."""
        single = lq.dim() == 3
        lq = (lq[None] if single else lq).to(self.device, torch.float32)
        base = self.sampler  # the stored settings belong to the stored sampler: another one starts from its defaults
        if sampler_overrides.get("sampler", base.get("sampler", "mr")) != base.get("sampler", "mr"):
            base = {}
        opts = with_network_defaults(sampler_options({**base, **sampler_overrides}), self.prediction, self.sde)
        self._keep_edges_float32(lq.shape[1])
        conditioning = self._conditioning if hasattr(self.net, "global_conditioning") else None
        model_fn = self._forward if not tile else tiled(self._forward, int(tile), int(tile_overlap), conditioning)
        if opts.get("sampler") == "distilled":  # the student's k-call restorer around the (tiled, autocast) call
            if self.distill is None:
                raise ValueError("sampler.sampler=distilled needs a distilled student checkpoint (train.py "
                                 "distill.teacher=...); this checkpoint is a diffusion model")
            from mrlight.student import distilled_from_config

            model_fn = distilled_from_config(model_fn, self.sde, self.distill)
        seed = self.seed if seed is None else int(seed)
        generator = torch.Generator(device=lq.device).manual_seed(seed + zlib.crc32(name.encode()))
        try:
            out = sample(model_fn, lq, self.sde, prediction=self.prediction, generator=generator,
                         callback=callback, **opts).clamp(0, 1)
        except (RuntimeError, ArithmeticError) as err:
            if self.precision == "32" and not self.compile:
                raise
            options = ", ".join(([f"precision={self.precision}"] if self.precision != "32" else [])
                                + (["compile=true"] if self.compile else []))
            first_line = (str(err).strip().splitlines() or [""])[0]
            raise PrecisionError(f"restoring with {options} failed on {lq.device.type} "
                                 f"({type(err).__name__}: {first_line}); run with precision=32 compile=false") from err
        return out[0] if single else out
