"""The DA-CLIP encoder: CLIP plus DA-CLIP's control copy of the vision tower, loading `daclip_ViT-B-32.pt`.

Luo et al., "Controlling Vision-Language Models for Multi-Task Image Restoration" (DA-CLIP, ICLR 2024),
code: github.com/Algolzw/daclip-uir, `da-clip/src/open_clip/daclip_model.py` and `transformer.py`.
Written from reading that code, around open-clip-torch's CLIP (Ilharco et al., OpenCLIP), whose
stock ViT state dicts have exactly DA-CLIP's `clip.*` keys. What DA-CLIP adds, and what this
module restates:

- `visual_control`: a copy of the vision tower whose transformer is wrapped so that after each
  residual block a zero-initialised Linear(width, width) produces a "control" hidden state;
- the degradation features are the control tower's own pooled, projected output;
- the image features come from CLIP's vision tower with the control hiddens **added after each
  block in reverse order** (the first block receives the last block's hidden: DA-CLIP pops a list);
- both are returned unnormalised, as the restoration UNet consumes them.

The input is prepared as DA-CLIP prepares the LQ image: short side resized to 224 (bicubic),
center crop 224, CLIP mean/std. DA-CLIP does this on a uint8 PIL image and runs the encoder under
CUDA fp16 autocast; here it runs on the float tensor (antialiased bicubic) in the module's dtype,
so contexts agree with DA-CLIP's to within those roundings, not bit for bit.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTH = 64  # open_clip's default; ViT-B-32 and ViT-L-14 (vision and text) use it


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise ImportError("the DA-CLIP encoder needs open-clip-torch: pip install -c constraints.txt "
                          "'mrlight[daclip]' (or open-clip-torch==3.3.0)") from None
    return open_clip


class ControlledBlocks(nn.Module):
    """DA-CLIP's ControlTransformer: the wrapped tower's blocks plus one zero-initialised Linear per block."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        width = transformer.width
        self.zero_modules = nn.ModuleList(nn.Linear(width, width) for _ in transformer.resblocks)
        for linear in self.zero_modules:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)


def _layout(transformer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, L, D] <-> the blocks' layout (open_clip versions before 2.2x run them sequence-first)."""
    return x if getattr(transformer, "batch_first", True) else x.transpose(0, 1)


def clip_preprocess(lq: torch.Tensor, size: int = 224) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> CLIP input: short side to `size` (bicubic), center crop, mean/std."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = TF.resize(lq.float().clamp(0, 1), size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = TF.center_crop(x, size)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


class DaCLIPEncoder(nn.Module):
    """`encoder(lq) -> (image_features, degradation_features)`, each [B, embed_dim].

    Attribute names follow DA-CLIP's `DaCLIP` module (`clip`, `visual` (the same tower as
    `clip.visual`, so the file's duplicate keys load), `visual_control`, `logit_scale`), so its
    training checkpoints load strictly.
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.clip = clip_model
        self.visual = clip_model.visual
        self.visual_control = copy.deepcopy(clip_model.visual)
        self.visual_control.transformer = ControlledBlocks(self.visual_control.transformer)
        self.logit_scale = nn.Parameter(clip_model.logit_scale.detach().clone())

    @property
    def embed_dim(self) -> int:
        return self.clip.visual.proj.shape[1]

    @classmethod
    def from_config(cls, embed_dim: int, vision_cfg: dict, text_cfg: dict) -> "DaCLIPEncoder":
        clip = _open_clip().model.CLIP(embed_dim=embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg)
        return cls(clip)

    @classmethod
    def from_file(cls, path: str | Path) -> "DaCLIPEncoder":
        """Load a DA-CLIP encoder file (`{'state_dict': ...}` with `module.` keys, or a plain state dict)."""
        from mrlight.weights import WeightsError, load_into, read_state_dict

        state = read_state_dict(path)
        try:
            embed_dim, vision_cfg, text_cfg = config_from_state(state)
        except KeyError as err:
            raise WeightsError(f"{path} is not a DA-CLIP encoder file: no {err.args[0]!r} key "
                               f"(expected DaCLIP's clip.* / visual_control.* keys)") from None
        try:
            encoder = cls.from_config(embed_dim, vision_cfg, text_cfg)
        except ImportError as err:
            raise WeightsError(f"cannot load the DA-CLIP encoder {path}: {err}") from None
        load_into(encoder, state, str(path), "DA-CLIP encoder")
        return encoder.eval().requires_grad_(False)

    def _tokens(self, visual: nn.Module, image: torch.Tensor) -> torch.Tensor:
        return visual._embeds(image)

    def _features(self, visual: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        pooled, _ = visual._pool(tokens)
        return pooled @ visual.proj

    def control_hiddens(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The control tower's (degradation features, per-block zero-Linear outputs)."""
        tower = self.visual_control
        blocks = tower.transformer
        x = _layout(blocks.transformer, self._tokens(tower, image))
        hiddens = []
        for block, zero in zip(blocks.transformer.resblocks, blocks.zero_modules):
            x = block(x)
            hiddens.append(zero(x))
        return self._features(tower, _layout(blocks.transformer, x)), hiddens

    def forward(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = clip_preprocess(lq).to(self.logit_scale.dtype)
        degradation, hiddens = self.control_hiddens(image)
        tower = self.clip.visual
        x = _layout(tower.transformer, self._tokens(tower, image))
        for block, control in zip(tower.transformer.resblocks, reversed(hiddens)):
            x = block(x) + control
        return self._features(tower, _layout(tower.transformer, x)), degradation


def _count(state: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def config_from_state(state: dict[str, torch.Tensor]) -> tuple[int, dict, dict]:
    """open_clip CLIP (embed_dim, vision_cfg, text_cfg) read off a DA-CLIP state dict's shapes."""
    conv = state["clip.visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = round((state["clip.visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vision_cfg = dict(image_size=grid * patch, patch_size=patch, width=width, head_width=HEAD_WIDTH,
                      layers=_count(state, "clip.visual.transformer.resblocks."),
                      mlp_ratio=state["clip.visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width)
    text_width = state["clip.token_embedding.weight"].shape[1]
    text_cfg = dict(context_length=state["clip.positional_embedding"].shape[0],
                    vocab_size=state["clip.token_embedding.weight"].shape[0], width=text_width,
                    heads=max(1, text_width // HEAD_WIDTH), layers=_count(state, "clip.transformer.resblocks."))
    return state["clip.visual.proj"].shape[1], vision_cfg, text_cfg
