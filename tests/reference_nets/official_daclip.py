"""TEST-ONLY: restatement of DA-CLIP's `ConditionalUNet` (daclip-sde and wild-ir) and `attention.py`,
and of DaCLIP's `encode_image(control=True)`.

Re-stated from reading Algolzw/daclip-uir (universal-image-restoration/config/{daclip-sde,wild-ir}/models/
modules/, da-clip/src/open_clip/{daclip_model,transformer}.py), keeping the published structure and
operation order. The building blocks shared with IR-SDE (module_util.py) come from official_irsde.
Independent of mrlight (see __init__.py).
"""

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import einsum, nn

from reference_nets.official_irsde import (Downsample, LinearAttention, PreNorm, ResBlock, Residual,
                                           SinusoidalPosEmb, Upsample, default_conv)


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        inner_dim = int(dim * mult)
        self.net = nn.Sequential(GEGLU(dim, inner_dim), nn.Dropout(0.0), nn.Linear(inner_dim, dim))

    def forward(self, x):
        return self.net(x)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = context_dim if context_dim is not None else query_dim
        self.scale = dim_head ** -0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        h = self.heads
        q = self.to_q(x)
        context = context if context is not None else x
        k = self.to_k(context)
        v = self.to_v(context)
        q, k, v = map(lambda t: rearrange(t, "b n (h d) -> (b h) n d", h=h), (q, k, v))
        sim = einsum("b i d, b j d -> b i j", q, k) * self.scale
        attn = sim.softmax(dim=-1)
        out = einsum("b i j, b j d -> b i d", attn, v)
        out = rearrange(out, "(b h) n d -> b n (h d)", h=h)
        return self.to_out(out)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, context_dim=None):
        super().__init__()
        self.attn1 = CrossAttention(query_dim=dim, heads=n_heads, dim_head=d_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(query_dim=dim, context_dim=context_dim, heads=n_heads, dim_head=d_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, context=None):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context=context) + x
        x = self.ff(self.norm3(x)) + x
        return x


class SpatialTransformer(nn.Module):
    def __init__(self, in_channels, n_heads, d_head, depth=1, context_dim=None):
        super().__init__()
        inner_dim = n_heads * d_head
        self.norm = nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1, stride=1, padding=0)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner_dim, n_heads, d_head, context_dim=context_dim) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1, stride=1, padding=0)
        for p in self.proj_out.parameters():
            p.detach().zero_()

    def forward(self, x, context=None):
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        x = self.proj_in(x)
        x = rearrange(x, "b c h w -> b (h w) c")
        for block in self.transformer_blocks:
            x = block(x, context=context)
        x = rearrange(x, "b (h w) c -> b c h w", h=h, w=w)
        x = self.proj_out(x)
        return x + x_in


class ConditionalUNet(nn.Module):
    """DA-CLIP's UNet; wild=True restates the wild-ir file (attention rule `i < depth - 1`, `scale`)."""

    def __init__(self, in_nc, out_nc, nf, ch_mult=(1, 2, 4, 4), context_dim=512, use_degra_context=True,
                 use_image_context=False, scale=1, wild=False):
        super().__init__()
        ch_mult = list(ch_mult)
        self.depth = len(ch_mult)
        self.scale = scale
        self.context_dim = -1 if context_dim is None else context_dim
        self.use_image_context = use_image_context
        self.use_degra_context = use_degra_context
        num_head_channels = 32
        dim_head = num_head_channels
        block_class = functools.partial(ResBlock, conv=default_conv, act=nn.SiLU())
        self.init_conv = default_conv(in_nc * 2, nf, 7)
        if wild and scale == 0.5:
            self.downsample = Downsample(nf, nf)
            self.upsample = Upsample(nf, nf)
        time_dim = nf * 4
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(nf), nn.Linear(nf, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        if self.context_dim > 0 and use_degra_context:
            self.prompt = nn.Parameter(torch.rand(1, time_dim))
            self.text_mlp = nn.Sequential(nn.Linear(context_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            self.prompt_mlp = nn.Linear(time_dim, time_dim)
        self.downs = nn.ModuleList([])
        self.ups = nn.ModuleList([])
        ch_mult = [1] + ch_mult
        first_transformer_level = self.depth - 1 if wild else 3
        for i in range(self.depth):
            dim_in = nf * ch_mult[i]
            dim_out = nf * ch_mult[i + 1]
            num_heads_in = dim_in // num_head_channels
            num_heads_out = dim_out // num_head_channels
            if use_image_context and context_dim > 0:
                att_down = LinearAttention(dim_in) if i < first_transformer_level else SpatialTransformer(
                    dim_in, num_heads_in, dim_head, depth=1, context_dim=context_dim)
                att_up = LinearAttention(dim_out) if i < first_transformer_level else SpatialTransformer(
                    dim_out, num_heads_out, dim_head, depth=1, context_dim=context_dim)
            else:
                att_down = LinearAttention(dim_in)
                att_up = LinearAttention(dim_out)
            self.downs.append(nn.ModuleList([
                block_class(dim_in=dim_in, dim_out=dim_in, time_emb_dim=time_dim),
                block_class(dim_in=dim_in, dim_out=dim_in, time_emb_dim=time_dim),
                Residual(PreNorm(dim_in, att_down)),
                Downsample(dim_in, dim_out) if i != (self.depth - 1) else default_conv(dim_in, dim_out)]))
            self.ups.insert(0, nn.ModuleList([
                block_class(dim_in=dim_out + dim_in, dim_out=dim_out, time_emb_dim=time_dim),
                block_class(dim_in=dim_out + dim_in, dim_out=dim_out, time_emb_dim=time_dim),
                Residual(PreNorm(dim_out, att_up)),
                Upsample(dim_out, dim_in) if i != 0 else default_conv(dim_out, dim_in)]))
        mid_dim = nf * ch_mult[-1]
        num_heads_mid = mid_dim // num_head_channels
        self.mid_block1 = block_class(dim_in=mid_dim, dim_out=mid_dim, time_emb_dim=time_dim)
        if use_image_context and context_dim > 0:
            self.mid_attn = Residual(PreNorm(mid_dim, SpatialTransformer(mid_dim, num_heads_mid, dim_head, depth=1,
                                                                         context_dim=context_dim)))
        else:
            self.mid_attn = Residual(PreNorm(mid_dim, LinearAttention(mid_dim)))
        self.mid_block2 = block_class(dim_in=mid_dim, dim_out=mid_dim, time_emb_dim=time_dim)
        self.final_res_block = block_class(dim_in=nf * 2, dim_out=nf, time_emb_dim=time_dim)
        self.final_conv = nn.Conv2d(nf, out_nc, 3, 1, 1)

    def check_image_size(self, x, h, w):
        s = int(math.pow(2, self.depth))
        mod_pad_h = (s - h % s) % s
        mod_pad_w = (s - w % s) % s
        return F.pad(x, (0, mod_pad_w, 0, mod_pad_h), "reflect")

    def forward(self, xt, cond, time, text_context=None, image_context=None):
        if isinstance(time, (int, float)):
            time = torch.tensor([time]).to(xt.device)
        x = torch.cat([xt - cond, cond], dim=1)
        H, W = x.shape[2:]
        x = self.check_image_size(x, H, W)
        x = self.init_conv(x)
        x_ = x.clone()
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        t = self.time_mlp(time)
        if self.context_dim > 0:
            if self.use_degra_context and text_context is not None:
                prompt_embedding = torch.softmax(self.text_mlp(text_context), dim=1) * self.prompt
                prompt_embedding = self.prompt_mlp(prompt_embedding)
                t = t + prompt_embedding
            if self.use_image_context and image_context is not None:
                image_context = image_context.unsqueeze(1)
        h = []
        for b1, b2, attn, downsample in self.downs:
            x = b1(x, t)
            h.append(x)
            x = b2(x, t)
            x = attn(x, context=image_context)
            h.append(x)
            x = downsample(x)
        x = self.mid_block1(x, t)
        x = self.mid_attn(x, context=image_context)
        x = self.mid_block2(x, t)
        for b1, b2, attn, upsample in self.ups:
            x = torch.cat([x, h.pop()], dim=1)
            x = b1(x, t)
            x = torch.cat([x, h.pop()], dim=1)
            x = b2(x, t)
            x = attn(x, context=image_context)
            x = upsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        x = torch.cat([x, x_], dim=1)
        x = self.final_res_block(x, t)
        x = self.final_conv(x)
        return x[..., :H, :W].contiguous()


def daclip_encode_image(clip_visual, control_visual, zero_modules, image):
    """DaCLIP.encode_image(image, control=True) without normalisation, restated with the published
    control flow: the control tower collects zero-Linear outputs per block (ControlTransformer), then
    the CLIP tower adds `control.pop()` after each of its blocks (VisionTransformer/Transformer).
    `clip_visual` and `control_visual` are open_clip vision towers (their conv1, class_embedding,
    positional_embedding, ln_pre, transformer.resblocks, ln_post, proj are used; tokens are kept
    sequence-first as in the published fork), `zero_modules` the control tower's Linear layers."""

    def embed(v, img):
        x = v.conv1(img)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x).permute(1, 0, 2)  # NLD -> LND

    def run_block(block, x):  # open_clip >= 2.2x blocks are batch-first; the fork's were sequence-first
        return block(x.permute(1, 0, 2)).permute(1, 0, 2)

    def head(v, x):
        x = x.permute(1, 0, 2)
        pooled = v.ln_post(x[:, 0])
        return pooled @ v.proj

    x = embed(control_visual, image)
    hiddens = []
    for z, r in zip(zero_modules, control_visual.transformer.resblocks):
        x = run_block(r, x)
        hiddens.append(z(x))
    degra_features = head(control_visual, x)

    control = hiddens
    x = embed(clip_visual, image)
    for r in clip_visual.transformer.resblocks:
        x = run_block(r, x)
        x += control.pop()
    image_features = head(clip_visual, x)
    return image_features, degra_features
