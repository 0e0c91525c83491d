"""Conditional NAFNet (Refusion).

Chen et al., "Simple Baselines for Image Restoration" (NAFNet, ECCV 2022), made conditional on the
diffusion time as in Luo et al., "Refusion: Enabling Large-Size Realistic Image Restoration with
Latent-Space Diffusion Models" (CVPRW 2023): input [x_t - mu, mu], and a time MLP that sets the
scale and shift of both halves (spatial mixing and channel FFN) of every NAF block.
"""

from __future__ import annotations

import torch
from torch import nn

from mrlight.models.layers import pad_to_multiple, time_mlp, weight_dtype


class LayerNorm2d(nn.GroupNorm):
    """LayerNorm over the channels of each pixel (NAFNet's LayerNorm2d); GroupNorm only lends its parameters."""

    def __init__(self, ch: int):
        super().__init__(1, ch)
        self.ch = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, (self.ch,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block with time modulation: LN -> (scale, shift) -> conv/dwconv/gate/SCA, then LN -> FFN with gate."""

    def __init__(self, ch: int, time_dim: int, expand: int = 2):
        super().__init__()
        dw = ch * expand
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 4 * ch))
        self.norm1 = LayerNorm2d(ch)
        self.conv1 = nn.Conv2d(ch, dw, 1)
        self.dwconv = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv2 = nn.Conv2d(dw // 2, ch, 1)
        self.norm2 = LayerNorm2d(ch)
        self.ffn1 = nn.Conv2d(ch, 2 * ch, 1)
        self.ffn2 = nn.Conv2d(ch, ch, 1)
        self.beta = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, ch, 1, 1))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        s1, b1, s2, b2 = self.mlp(temb)[:, :, None, None].chunk(4, dim=1)
        h = self.norm1(x) * (s1 + 1) + b1
        h = self.gate(self.dwconv(self.conv1(h)))
        h = self.conv2(h * self.sca(h))
        x = x + h * self.beta
        h = self.norm2(x) * (s2 + 1) + b2
        h = self.ffn2(self.gate(self.ffn1(h)))
        return x + h * self.gamma


class ConditionalNAFNet(nn.Module):
    """Conditional NAFNet `net(x_t, mu, t)`; any H, W (padded to 2**len(enc_blocks), cropped back)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, width: int = 32, enc_blocks=(2, 2, 4, 8),
                 mid_blocks: int = 12, dec_blocks=(2, 2, 2, 2), time_mult: int = 4):
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError("enc_blocks and dec_blocks must have the same length")
        time_dim = width * time_mult
        self.multiple = 2 ** len(enc_blocks)
        self.time_mlp = time_mlp(width, time_dim)
        self.intro = nn.Conv2d(2 * in_ch, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        ch = width
        for n in enc_blocks:
            self.encoders.append(nn.ModuleList(NAFBlock(ch, time_dim) for _ in range(n)))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))
            ch *= 2
        self.middle = nn.ModuleList(NAFBlock(ch, time_dim) for _ in range(mid_blocks))
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(ch, 2 * ch, 1, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(nn.ModuleList(NAFBlock(ch, time_dim) for _ in range(n)))
        self.ending = nn.Conv2d(width, out_ch, 3, padding=1)

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t) or t.dim() != 1:
            raise TypeError("t must be a 1-D tensor [B] of times (a Python float recompiles under torch.compile)")
        dtype = weight_dtype(self)  # a .half() / bfloat16 network runs on float32 inputs
        x_t, mu = x_t.to(dtype), mu.to(dtype)
        x, (h, w) = pad_to_multiple(torch.cat([x_t - mu, mu], dim=1), self.multiple)
        temb = self.time_mlp(t)
        x = self.intro(x)
        skips = []
        for blocks, down in zip(self.encoders, self.downs):
            for block in blocks:
                x = block(x, temb)
            skips.append(x)
            x = down(x)
        for block in self.middle:
            x = block(x, temb)
        for up, blocks in zip(self.ups, self.decoders):
            x = up(x) + skips.pop()
            for block in blocks:
                x = block(x, temb)
        return self.ending(x)[..., :h, :w]
