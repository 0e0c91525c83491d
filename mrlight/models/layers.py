"""Building blocks shared by the conditional networks: time embedding, modulated residual blocks, attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def weight_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a network's weights (its first floating parameter; float32 without parameters).

    Networks cast x_t, mu (and contexts) to it, so a `.half()` / bfloat16 network runs on float32 inputs."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class FloatFrequencies(nn.Module):
    """Sinusoidal time features [sin(t f), cos(t f)] computed in float32, handed out in the module's dtype.

    The frequencies stay float32 whatever the network is cast to (`.half()` would round them to 11 bits,
    a bfloat16 cast to 8, i.e. a phase error of about 0.4 rad at t = 100); t is taken in float32 too.
    The features are cast to the dtype the module was last cast to (float32 unless `.half()`,
    `.bfloat16()` or `.to(dtype)` changed it), so the time MLP that reads them runs in its weights' dtype.
    """

    out_dtype: torch.dtype = torch.float32

    def _set_frequencies(self, freqs: torch.Tensor) -> None:
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self._freqs32 = self.freqs.clone()

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.out_dtype = fn(torch.zeros((), dtype=self.out_dtype)).dtype  # where a dtype cast sends the features
        self.freqs = self._freqs32.to(self.freqs.device)
        return self

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1).to(self.out_dtype)


class SinusoidalTimeEmbedding(FloatFrequencies):
    """Transformer-style sinusoidal features of a real time t (grid units, any float, shape [B]).

    Vaswani et al. 2017; used for diffusion time by Ho et al. 2020 and IR-SDE. Fractional t is
    meaningful here: the MR Sampler evaluates the network between grid points.
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        half = dim // 2
        self._set_frequencies(torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half))


def time_mlp(nf: int, time_dim: int) -> nn.Sequential:
    return nn.Sequential(SinusoidalTimeEmbedding(nf), nn.Linear(nf, time_dim), nn.GELU(),
                         nn.Linear(time_dim, time_dim))


def group_norm(ch: int) -> nn.GroupNorm:
    for groups in (8, 4, 2, 1):
        if ch % groups == 0:
            return nn.GroupNorm(groups, ch)
    raise AssertionError


class ResBlock(nn.Module):
    """Two conv-norm-SiLU layers; the time embedding sets a per-channel scale and shift after the first norm."""

    def __init__(self, ch_in: int, ch_out: int, time_dim: int | None):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * ch_out)) if time_dim else None
        self.conv1 = nn.Conv2d(ch_in, ch_out, 3, padding=1)
        self.norm1 = group_norm(ch_out)
        self.conv2 = nn.Conv2d(ch_out, ch_out, 3, padding=1)
        self.norm2 = group_norm(ch_out)
        self.skip = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(self.conv1(x))
        if self.mlp is not None and temb is not None:
            scale, shift = self.mlp(temb)[:, :, None, None].chunk(2, dim=1)
            h = h * (scale + 1) + shift
        h = F.silu(h)
        h = F.silu(self.norm2(self.conv2(h)))
        return h + self.skip(x)


class LinearAttention(nn.Module):
    """Linear attention (Katharopoulos et al. 2020; Shen et al. 2021), cost linear in the pixel count.

    Pre-normalised and residual, as in the IR-SDE UNet.
    """

    def __init__(self, ch: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        inner = heads * dim_head
        self.norm = group_norm(ch)
        self.to_qkv = nn.Conv2d(ch, 3 * inner, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(inner, ch, 1), group_norm(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, -1, h * w).unbind(1)
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b, -1, h, w)
        return x + self.to_out(out)


class Attention(nn.Module):
    """Full softmax self-attention over pixels (for the lowest resolution), via scaled_dot_product_attention."""

    def __init__(self, ch: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.norm = group_norm(ch)
        self.to_qkv = nn.Conv2d(ch, 3 * inner, 1, bias=False)
        self.to_out = nn.Conv2d(inner, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, -1, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # [b, heads, hw, d]
        return x + self.to_out(out.transpose(-1, -2).reshape(b, -1, h, w))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad H and W up to a multiple (replicate where the image is too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
