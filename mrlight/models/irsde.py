"""IR-SDE's conditional UNet, ported key for key so that the released weights load strictly.

Luo et al., "Image Restoration with Mean-Reverting Stochastic Differential Equations" (ICML 2023),
code: github.com/Algolzw/image-restoration-sde, `ConditionalUNet` in
`codes/config/<task>/models/modules/DenoisingUNet_arch.py` (+ `module_util.py`). Written from
reading that code; module names follow it because they are the state-dict keys of the released
`.pth` files. The details that decide whether released weights give the published outputs:

- input `[x_t - mu, mu]`, reflect-padded on the right/bottom to a multiple of 2**depth, cropped back;
- time: sinusoid with frequencies exp(-k ln(1e4) / (half - 1)) (sin first), MLP nf -> 4nf -> 4nf with GELU;
- every conv made by the published `default_conv` has no bias (7x7 init conv, block convs, 1x1
  res_conv, the deepest "downsample" and the shallowest "upsample"); Downsample is a 4x4 stride-2
  conv, Upsample nearest x2 + 3x3 conv (both with bias);
- the channel LayerNorm has a gain only and eps 1e-5 in float32, 1e-3 in other dtypes;
- linear attention (4 heads x 32) divides v by the padded pixel count;
- the output is the predicted noise (eps), there is no global residual.

`UNetCore` is shared with the DA-CLIP UNet (mrlight.models.daclip), which is the same network with
other widths, cross-attention on the deepest level and a degradation prompt added to the time embedding.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mrlight.models.layers import FloatFrequencies, pad_to_multiple, weight_dtype


class ChannelLayerNorm(nn.Module):
    """Per-pixel LayerNorm over channels with a gain `g` and no bias (biased variance).

    eps is 1e-5 for float32 and 1e-3 for other dtypes, as in the published code (it matters under bf16).
    """

    def __init__(self, ch: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, ch, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


class SinusoidalEmbedding(FloatFrequencies):
    """IR-SDE's sinusoidal time features [sin, cos] with frequencies exp(-k ln(1e4) / (half - 1)).

    The divisor half - 1 (not half) is the published one; t is in grid units and may be fractional
    (the MR Sampler evaluates between grid points).
    """

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self._set_frequencies(torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1))))


def time_batch(t, batch: int, device) -> torch.Tensor:
    """t as a float tensor [batch]: Python numbers and 0-d tensors (the published code takes ints) are broadcast."""
    t = torch.as_tensor(t, device=device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.dim() != 1:
        raise TypeError(f"t must be a number or a 1-D tensor [B] of times, got shape {tuple(t.shape)}")
    return t.float()


def plain_conv(ch_in: int, ch_out: int, kernel: int = 3) -> nn.Conv2d:
    """The published `default_conv`: same padding and **no bias**."""
    return nn.Conv2d(ch_in, ch_out, kernel, padding=kernel // 2, bias=False)


class ConvSiLU(nn.Module):
    """Conv (no bias), optional time scale/shift, SiLU. `proj` is the published key."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.proj = plain_conv(ch_in, ch_out)

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.proj(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class TimeResBlock(nn.Module):
    """Two ConvSiLU layers; the time embedding gives (scale, shift) for the first, in that chunk order."""

    def __init__(self, ch_in: int, ch_out: int, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * ch_out))
        self.block1 = ConvSiLU(ch_in, ch_out)
        self.block2 = ConvSiLU(ch_out, ch_out)
        self.res_conv = plain_conv(ch_in, ch_out, 1) if ch_in != ch_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale_shift = self.mlp(temb)[:, :, None, None].chunk(2, dim=1)
        h = self.block2(self.block1(x, scale_shift))
        return h + self.res_conv(x)


class PreNorm(nn.Module):
    def __init__(self, ch: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(ch)

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.fn(x, **kwargs) + x


class LinearAttention(nn.Module):
    """Linear attention (Shen et al., "Efficient Attention", WACV 2021) as IR-SDE uses it.

    q is softmaxed over its features, k over the pixels, and v is divided by the pixel count of the
    (padded) input; 4 heads of 32 at every width. `context` is accepted and ignored (DA-CLIP calls
    every attention with it).
    """

    def __init__(self, ch: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(ch, 3 * hidden, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, ch, 1), ChannelLayerNorm(ch))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(x).reshape(b, 3, self.heads, -1, h * w).unbind(1)
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        kv = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", kv, q)
        return self.to_out(out.reshape(b, -1, h, w))


def downsample(ch_in: int, ch_out: int) -> nn.Conv2d:
    return nn.Conv2d(ch_in, ch_out, 4, stride=2, padding=1)


def upsample(ch_in: int, ch_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch_in, ch_out, 3, padding=1))


class UNetCore(nn.Module):
    """The IR-SDE / DA-CLIP UNet body: levels of widths[i] -> widths[i+1], two blocks + attention each.

    `attention(level, ch)` builds the attention module of a level (level == depth: the middle).
    Encoder levels keep width and resample to the next width (a plain conv at the deepest level);
    decoder levels concatenate one skip before each of their two blocks.
    """

    def __init__(self, in_nc: int, out_nc: int, nf: int, widths: list[int],
                 attention: Callable[[int, int], nn.Module]):
        super().__init__()
        depth = len(widths) - 1
        self.multiple = 2 ** depth
        time_dim = 4 * nf
        self.init_conv = plain_conv(2 * in_nc, nf, 7)
        self.time_mlp = nn.Sequential(SinusoidalEmbedding(nf), nn.Linear(nf, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i in range(depth):
            ch_in, ch_out = widths[i], widths[i + 1]
            self.downs.append(nn.ModuleList([
                TimeResBlock(ch_in, ch_in, time_dim), TimeResBlock(ch_in, ch_in, time_dim),
                Residual(PreNorm(ch_in, attention(i, ch_in))),
                downsample(ch_in, ch_out) if i < depth - 1 else plain_conv(ch_in, ch_out)]))
            self.ups.insert(0, nn.ModuleList([
                TimeResBlock(ch_out + ch_in, ch_out, time_dim), TimeResBlock(ch_out + ch_in, ch_out, time_dim),
                Residual(PreNorm(ch_out, attention(i, ch_out))),
                upsample(ch_out, ch_in) if i > 0 else plain_conv(ch_out, ch_in)]))
        mid = widths[-1]
        self.mid_block1 = TimeResBlock(mid, mid, time_dim)
        self.mid_attn = Residual(PreNorm(mid, attention(depth, mid)))
        self.mid_block2 = TimeResBlock(mid, mid, time_dim)
        self.final_res_block = TimeResBlock(2 * nf, nf, time_dim)
        self.final_conv = nn.Conv2d(nf, out_nc, 3, padding=1)

    def enter_levels(self, x: torch.Tensor) -> torch.Tensor:
        """Between the init conv and the first level (Wild-IR halves the resolution here)."""
        return x

    def leave_levels(self, x: torch.Tensor) -> torch.Tensor:
        """Between the last level and the final block (Wild-IR doubles the resolution back here)."""
        return x

    def embed_time(self, t, batch: int, device) -> torch.Tensor:
        return self.time_mlp(time_batch(t, batch, device))

    def run(self, x_t: torch.Tensor, mu: torch.Tensor, temb: torch.Tensor,
            context: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet on `[x_t - mu, mu]` with a ready time embedding; returns eps_hat at the input size."""
        dtype = weight_dtype(self)  # a .half() / bfloat16 network runs on float32 inputs
        x_t, mu = x_t.to(dtype), mu.to(dtype)
        x, (h, w) = pad_to_multiple(torch.cat([x_t - mu, mu], dim=1), self.multiple)
        x = self.init_conv(x)
        first = x
        x = self.enter_levels(x)
        skips = []
        for block1, block2, attn, resample in self.downs:
            x = block1(x, temb)
            skips.append(x)
            x = attn(block2(x, temb), context=context)
            skips.append(x)
            x = resample(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, temb), context=context), temb)
        for block1, block2, attn, resample in self.ups:
            x = block1(torch.cat([x, skips.pop()], dim=1), temb)
            x = block2(torch.cat([x, skips.pop()], dim=1), temb)
            x = resample(attn(x, context=context))
        x = self.final_res_block(torch.cat([self.leave_levels(x), first], dim=1), temb)
        return self.final_conv(x)[..., :h, :w]


class IRSDEUNet(UNetCore):
    """IR-SDE's `ConditionalUNet(in_nc, out_nc, nf, depth)`: `net(x_t, mu, t)` -> predicted noise.

    Level i maps nf * 2**i -> nf * 2**(i+1); linear attention everywhere, the middle included.
    Released settings: nf 64 / depth 4 (137,147,523 parameters); deshadowing nf 32 / depth 5.
    """

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, depth: int = 4):
        super().__init__(in_nc, out_nc, nf, [nf * 2 ** i for i in range(depth + 1)],
                         attention=lambda level, ch: LinearAttention(ch))

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t) -> torch.Tensor:
        return self.run(x_t, mu, self.embed_time(t, x_t.shape[0], x_t.device))
