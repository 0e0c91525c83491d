"""Refusion's conditional NAFNet, ported key for key so that the released weights load strictly.

Luo et al., "Refusion: Enabling Large-Size Realistic Image Restoration with Latent-Space Diffusion
Models" (CVPRW 2023), on NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022);
code: github.com/Algolzw/image-restoration-sde, `ConditionalNAFNet` in
`codes/config/<task>/models/modules/DenoisingNAFNet_arch.py`. Written from reading that code; module
names follow it because they are the state-dict keys of the released `.pth` files. What matters:

- input `[x_t - mu, mu]`, **zero**-padded on the right/bottom to a multiple of 2**len(enc_blk_nums);
  the channel attention then pools over the padded image, so padding changes interior outputs;
- time: IR-SDE's sinusoid (divisor half - 1) -> Linear(w, 8w) -> SimpleGate -> Linear(4w, 4w);
- each block's time MLP is SimpleGate -> Linear(2w, 4c), chunked as (shift, scale) for the spatial
  half, then (shift, scale) for the FFN half, applied as x * (scale + 1) + shift after the norm;
- the norm is IR-SDE's channel LayerNorm (gain only), not NAFNet's LayerNorm2d;
- the output is the predicted noise; there is no global residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrlight.models.irsde import ChannelLayerNorm, SinusoidalEmbedding, time_batch
from mrlight.models.layers import weight_dtype
from mrlight.models.nafnet import SimpleGate


class TimeNAFBlock(nn.Module):
    """NAFNet block (DW expansion 2, FFN expansion 2) whose two halves are modulated by the time embedding."""

    def __init__(self, c: int, time_dim: int):
        super().__init__()
        dw = 2 * c
        self.mlp = nn.Sequential(SimpleGate(), nn.Linear(time_dim // 2, 4 * c))
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1 = ChannelLayerNorm(c)
        self.norm2 = ChannelLayerNorm(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift_att, scale_att, shift_ffn, scale_ffn = self.mlp(temb)[:, :, None, None].chunk(4, dim=1)
        h = self.norm1(x) * (scale_att + 1) + shift_att
        h = self.sg(self.conv2(self.conv1(h)))
        h = self.conv3(h * self.sca(h))
        y = x + h * self.beta
        h = self.norm2(y) * (scale_ffn + 1) + shift_ffn
        h = self.conv5(self.sg(self.conv4(h)))
        return y + h * self.gamma


class RefusionNAFNet(nn.Module):
    """Refusion's `ConditionalNAFNet`: `net(x_t, mu, t)` -> predicted noise.

    Released setting (every task): width 64, enc_blk_nums [1, 1, 1, 28], middle_blk_num 1,
    dec_blk_nums [1, 1, 1, 1] (76,608,387 parameters). Encoder skips are added, not concatenated.
    """

    def __init__(self, img_channel: int = 3, width: int = 64, middle_blk_num: int = 1,
                 enc_blk_nums=(1, 1, 1, 28), dec_blk_nums=(1, 1, 1, 1)):
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(f"enc_blk_nums and dec_blk_nums must have the same length, got "
                             f"{list(enc_blk_nums)} and {list(dec_blk_nums)}")
        time_dim = 4 * width
        self.multiple = 2 ** len(enc_blk_nums)
        self.time_mlp = nn.Sequential(SinusoidalEmbedding(width), nn.Linear(width, 2 * time_dim), SimpleGate(),
                                      nn.Linear(time_dim, time_dim))
        self.intro = nn.Conv2d(2 * img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        ch = width
        for n in enc_blk_nums:
            self.encoders.append(nn.ModuleList(TimeNAFBlock(ch, time_dim) for _ in range(n)))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))
            ch *= 2
        self.middle_blks = nn.ModuleList(TimeNAFBlock(ch, time_dim) for _ in range(middle_blk_num))
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(ch, 2 * ch, 1, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(nn.ModuleList(TimeNAFBlock(ch, time_dim) for _ in range(n)))

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t) -> torch.Tensor:
        temb = self.time_mlp(time_batch(t, x_t.shape[0], x_t.device))
        dtype = weight_dtype(self)  # a .half() / bfloat16 network runs on float32 inputs
        x = torch.cat([x_t.to(dtype) - mu.to(dtype), mu.to(dtype)], dim=1)
        h, w = x.shape[-2:]
        x = self.intro(F.pad(x, (0, (-w) % self.multiple, 0, (-h) % self.multiple)))
        skips = []
        for blocks, down in zip(self.encoders, self.downs):
            x = _run(blocks, x, temb)
            skips.append(x)
            x = down(x)
        x = _run(self.middle_blks, x, temb)
        for up, blocks in zip(self.ups, self.decoders):
            x = _run(blocks, up(x) + skips.pop(), temb)
        return self.ending(x)[..., :h, :w]


def _run(blocks: nn.ModuleList, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        x = block(x, temb)
    return x
