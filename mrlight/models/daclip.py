"""DA-CLIP's conditional UNet, ported key for key so that `universal-ir.pth` / `wild-ir.pth` load strictly.

Luo et al., "Controlling Vision-Language Models for Multi-Task Image Restoration" (DA-CLIP, ICLR 2024),
code: github.com/Algolzw/daclip-uir, `ConditionalUNet` in
`universal-image-restoration/config/daclip-sde/models/modules/DenoisingUNet_arch.py` (+ `attention.py`).
Written from reading that code. It is IR-SDE's UNet (mrlight.models.irsde.UNetCore) with:

- level widths nf * [1] + ch_mult (universal-ir: 64, 64, 128, 256, 512; reflect padding to 2**len(ch_mult));
- the degradation context (DA-CLIP's `degra_features`, [B, context_dim]) turned into a prompt,
  softmax(text_mlp(c)) * prompt -> prompt_mlp, **added to the time embedding**;
- the image context (DA-CLIP's `image_features`, one token) read by cross-attention transformers
  (Rombach et al. 2022's `SpatialTransformer`) at encoder/decoder level 3 and in the middle; the other
  levels keep linear attention.

The published forward needs an image context when `use_image_context` is set (its fallback to
self-attention crashes); this port raises a clear error instead. Given a DA-CLIP encoder
(`daclip=PATH`, mrlight.models.daclip_encoder) the contexts are computed from `mu` when not passed,
once per distinct `mu` (not once per sampler step); `global_conditioning(mu)` hands them out, so that
a tiled restore computes them once from the whole image and passes them to every tile. The encoder
is frozen and is not part of this network's state dict: the network's keys are exactly the published
UNet's. `daclip` may also be an encoder identity ({"model", "sha256"}, what checkpoints record): the
network then expects that encoder, and `attach_encoder` refuses any other one.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mrlight.models.irsde import LinearAttention, UNetCore, downsample, upsample
from mrlight.models.layers import weight_dtype

HEAD_CHANNELS = 32


class CrossAttention(nn.Module):
    """Multi-head attention of pixel tokens over `context` tokens (over themselves when context is None)."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(context)), self._split(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class GEGLU(nn.Module):
    """GELU-gated linear unit (Shazeer 2020)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the context, GEGLU feed-forward; each pre-LayerNorm and residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Latent Diffusion's SpatialTransformer (Rombach et al., CVPR 2022): GroupNorm(32), 1x1 in, one
    transformer block over the pixels, zero-initialised 1x1 out, residual."""

    def __init__(self, ch: int, context_dim: int):
        super().__init__()
        heads = ch // HEAD_CHANNELS
        inner = heads * HEAD_CHANNELS
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, inner, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, HEAD_CHANNELS, context_dim)])
        self.proj_out = nn.Conv2d(inner, ch, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return self.proj_out(tokens.transpose(1, 2).reshape(b, -1, h, w)) + x


class _Shared(list):
    """A list that deep copies to itself: the EMA copy of the network shares the frozen encoder."""

    def __deepcopy__(self, memo):
        return self


class DaCLIPUNet(UNetCore):
    """DA-CLIP's `ConditionalUNet`: `net(x_t, mu, t, text_context=None, image_context=None)` -> predicted noise.

    Released settings: universal-ir nf 64, ch_mult [1, 2, 4, 8], context_dim 512, both contexts
    (48,975,747 parameters); Wild-IR context_dim 768, use_degra_context false, scale 0.5 (a stride-2
    conv after the init conv and an upsampling before the last skip). Cross-attention sits at levels
    >= 3 and in the middle (universal-ir's rule; Wild-IR's "deepest level" is the same level at
    depth 4, the released depth). `daclip`: a DA-CLIP encoder file (`daclip_ViT-B-32.pt`) whose frozen
    encoder computes the contexts from `mu` when they are not given, or the identity of the encoder the
    network expects ({"model": "ViT-B-32", "sha256": ...}; attach it with `attach_encoder`).
    """

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, ch_mult=(1, 2, 4, 8),
                 context_dim: int | None = 512, use_degra_context: bool = True, use_image_context: bool = True,
                 scale: float = 1, daclip: str | dict | None = None):
        if scale not in (1, 0.5):
            raise ValueError(f"scale must be 1 (universal-ir) or 0.5 (Wild-IR), got {scale!r}")
        ch_mult = list(ch_mult)
        depth = len(ch_mult)
        has_context = context_dim is not None and context_dim > 0
        use_image, use_degra = has_context and use_image_context, has_context and use_degra_context

        def attention(level: int, ch: int) -> nn.Module:
            if use_image and (level >= 3 or level == depth):
                return SpatialTransformer(ch, context_dim)
            return LinearAttention(ch)

        super().__init__(in_nc, out_nc, nf, [nf * m for m in [1] + ch_mult], attention)
        self.use_image, self.use_degra = use_image, use_degra
        if scale == 0.5:  # Wild-IR: the levels run at half resolution
            self.downsample, self.upsample = downsample(nf, nf), upsample(nf, nf)
        if use_degra:
            time_dim = 4 * nf
            self.prompt = nn.Parameter(torch.rand(1, time_dim))
            self.text_mlp = nn.Sequential(nn.Linear(context_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            self.prompt_mlp = nn.Linear(time_dim, time_dim)
        # Held outside the module tree: its ~250 M frozen weights stay out of the state dict, the
        # optimizer and the EMA, but follow .to() / .half() through _apply; copies share it.
        self._encoder: _Shared = _Shared()
        self._cached: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.expected_encoder: dict | None = None  # the identity the attached encoder must have
        if isinstance(daclip, dict) or (daclip is not None and not isinstance(daclip, (str, Path))):
            from mrlight.models.daclip_encoder import check_identity

            self.expected_encoder = check_identity(dict(daclip) if hasattr(daclip, "keys") else daclip)
        elif daclip:
            from mrlight.models.daclip_encoder import DaCLIPEncoder

            self.attach_encoder(DaCLIPEncoder.from_file(daclip))

    def enter_levels(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) if hasattr(self, "downsample") else x

    def leave_levels(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x) if hasattr(self, "upsample") else x

    @property
    def encoder(self) -> nn.Module | None:
        return self._encoder[0] if self._encoder else None

    @property
    def encoder_identity(self) -> dict | None:
        """{"model", "sha256"} of the attached encoder, else of the expected one, else None."""
        if self.encoder is not None:
            from mrlight.models.daclip_encoder import encoder_identity

            return encoder_identity(self.encoder)
        return dict(self.expected_encoder) if self.expected_encoder else None

    def attach_encoder(self, encoder: nn.Module) -> None:
        """Compute the contexts from mu with `encoder` (frozen; not part of the state dict).

        With an expected identity (`daclip={model, sha256}`), an encoder whose weights hash differently
        is refused (WeightsError naming both hashes)."""
        if self.expected_encoder is not None:
            from mrlight.errors import WeightsError
            from mrlight.models.daclip_encoder import encoder_identity

            got = encoder_identity(encoder)
            if got["sha256"] != self.expected_encoder["sha256"]:
                where = getattr(encoder, "source", None) or "the given encoder"
                raise WeightsError(
                    f"DA-CLIP encoder {where} is not the one this network was trained with: its weights have "
                    f"sha256 {got['sha256']} ({got['model']}), the network expects sha256 "
                    f"{self.expected_encoder['sha256']} ({self.expected_encoder['model']}); pass daclip= the "
                    f"encoder file the network was converted or trained with")
        self._encoder[:] = [encoder.eval().requires_grad_(False)]
        self._cached = None

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self._encoder:
            self._encoder[0]._apply(fn, recurse)
            self._cached = None
        return self

    def contexts(self, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image_context, degradation_context) of `mu`, recomputed only when mu changes."""
        if self.encoder is None:
            raise ValueError(self._no_encoder_message())
        cached = self._cached
        if cached is not None and cached[0].shape == mu.shape and (cached[0] is mu or torch.equal(cached[0], mu)):
            return cached[1]
        with torch.no_grad():
            result = self.encoder(mu)
        self._cached = (mu.detach(), result)
        return result

    def global_conditioning(self, mu: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keyword arguments of `forward` computed from the whole `mu`: the DA-CLIP contexts (empty without
        an encoder). A tiled call computes them once per image and passes them to every tile."""
        if self.encoder is None:
            return {}
        image_context, text_context = self.contexts(mu)
        return {"image_context": image_context, "text_context": text_context}

    def _no_encoder_message(self) -> str:
        if self.expected_encoder is not None:
            from mrlight.models.daclip_encoder import describe

            return (f"daclip-unet was trained with the DA-CLIP encoder {describe(self.expected_encoder)}: pass "
                    f"daclip=PATH to that encoder file (sample.py / train.py daclip=PATH)")
        return ("daclip-unet needs image_context= / text_context=, or a DA-CLIP encoder: "
                "build_network('daclip-unet', daclip=PATH), or daclip=PATH in train.py / sample.py")

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t, text_context: torch.Tensor | None = None,
                image_context: torch.Tensor | None = None) -> torch.Tensor:
        if text_context is None and image_context is None and self.encoder is not None:
            image_context, text_context = self.contexts(mu)
        if self.use_image and image_context is None:
            if self.expected_encoder is not None:
                raise ValueError(self._no_encoder_message())
            raise ValueError("daclip-unet with use_image_context needs image_context [B, context_dim] "
                             "(or a DA-CLIP encoder attached with daclip=PATH)")
        dtype = weight_dtype(self)  # a .half() / bfloat16 network: inputs and contexts in its dtype
        x_t, mu = x_t.to(dtype), mu.to(dtype)
        image_context = image_context.to(dtype) if image_context is not None else None
        text_context = text_context.to(dtype) if text_context is not None else None
        temb = self.embed_time(t, x_t.shape[0], x_t.device)
        if self.use_degra and text_context is not None:
            prompt = torch.softmax(self.text_mlp(text_context), dim=1) * self.prompt
            temb = temb + self.prompt_mlp(prompt)
        context = image_context[:, None] if self.use_image else None
        return self.run(x_t, mu, temb, context=context)
