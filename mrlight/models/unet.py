"""IR-SDE-style conditional UNet.

Luo et al., "Image Restoration with Mean-Reverting Stochastic Differential Equations" (ICML 2023):
the network sees the noisy state relative to the condition and the condition itself,
[x_t - mu, mu], and the diffusion time t through a sinusoidal embedding; residual blocks are
modulated by the time embedding (scale/shift), each level has linear attention, the bottleneck
full attention. Written from the paper's description; layer details are mrlight's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrlight.models.layers import Attention, LinearAttention, ResBlock, pad_to_multiple, time_mlp, weight_dtype


class ConditionalUNet(nn.Module):
    """Conditional UNet `net(x_t, mu, t)`; any H, W (padded to 2**(levels-1), cropped back).

    Args:
        in_ch, out_ch: image channels.
        nf: base width; level i has nf * ch_mult[i] channels.
        ch_mult: width multipliers, one per level (the depth is len(ch_mult)).
        num_res_blocks: residual blocks per level (encoder and decoder).
        attention: linear attention at every level.
        mid_attention: "full" (softmax), "linear" or "none" at the bottleneck.
        time_mult: time-embedding width = nf * time_mult.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, nf: int = 64, ch_mult=(1, 2, 4, 4),
                 num_res_blocks: int = 2, attention: bool = True, mid_attention: str = "full",
                 time_mult: int = 4):
        super().__init__()
        if mid_attention not in ("full", "linear", "none"):
            raise ValueError(f"mid_attention must be full | linear | none, got {mid_attention!r}")
        dims = [nf * m for m in ch_mult]
        self.multiple = 2 ** (len(dims) - 1)
        time_dim = nf * time_mult
        self.time_mlp = time_mlp(nf, time_dim)
        self.init_conv = nn.Conv2d(2 * in_ch, nf, 7, padding=3)

        def attn(ch):
            return LinearAttention(ch) if attention else nn.Identity()

        self.down, skip_chs, ch = nn.ModuleList(), [nf], nf
        for i, d in enumerate(dims):
            level = nn.ModuleDict()
            level["blocks"] = nn.ModuleList()
            for _ in range(num_res_blocks):
                level["blocks"].append(ResBlock(ch, d, time_dim))
                ch = d
                skip_chs.append(ch)
            level["attn"] = attn(ch)
            level["resample"] = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if i < len(dims) - 1 else nn.Identity()
            self.down.append(level)

        self.mid1 = ResBlock(ch, ch, time_dim)
        self.mid_attn = {"full": Attention, "linear": LinearAttention}.get(mid_attention, lambda c: nn.Identity())(ch)
        self.mid2 = ResBlock(ch, ch, time_dim)

        self.up = nn.ModuleList()
        for i, d in reversed(list(enumerate(dims))):
            level = nn.ModuleDict()
            level["blocks"] = nn.ModuleList()
            for _ in range(num_res_blocks):
                level["blocks"].append(ResBlock(ch + skip_chs.pop(), d, time_dim))
                ch = d
            level["attn"] = attn(ch)
            level["resample"] = (nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                               nn.Conv2d(ch, ch, 3, padding=1)) if i > 0 else nn.Identity())
            self.up.append(level)
        self.final_block = ResBlock(ch + skip_chs.pop(), nf, time_dim)
        self.final_conv = nn.Conv2d(nf, out_ch, 3, padding=1)
        assert not skip_chs

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t) or t.dim() != 1:
            raise TypeError("t must be a 1-D tensor [B] of times (a Python float recompiles under torch.compile)")
        dtype = weight_dtype(self)  # a .half() / bfloat16 network runs on float32 inputs
        x_t, mu = x_t.to(dtype), mu.to(dtype)
        x, (h, w) = pad_to_multiple(torch.cat([x_t - mu, mu], dim=1), self.multiple)
        temb = self.time_mlp(t)
        x = self.init_conv(x)
        skips = [x]
        for level in self.down:
            for block in level["blocks"]:
                x = block(x, temb)
                skips.append(x)
            x = level["resample"](level["attn"](x))
        x = self.mid2(self.mid_attn(self.mid1(x, temb)), temb)
        for level in self.up:
            for block in level["blocks"]:
                x = block(torch.cat([x, skips.pop()], dim=1), temb)
            x = level["resample"](level["attn"](x))
        x = self.final_block(torch.cat([x, skips.pop()], dim=1), temb)
        return self.final_conv(x)[..., :h, :w]
