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

The input is prepared as DA-CLIP's test and training code prepare the LQ image (`clip_transform`:
`Image.fromarray((lq * 255).astype(np.uint8))`, i.e. truncated to uint8, then torchvision's
Resize(224, BICUBIC) on the PIL image, i.e. PIL's bicubic, CenterCrop(224), CLIP mean/std):
`preprocess="official"`, the default, does exactly that on the CPU. `preprocess="tensor"` resizes
the float tensor on its device instead (antialiased bicubic, no uint8 step): on scikit-image's
astronaut / chelsea / coffee it differs by 0.3 uint8 steps on average and up to 15 at sharp edges. DA-CLIP runs the encoder under CUDA fp16 autocast; here it runs in the module's
dtype, so contexts agree with DA-CLIP's to within that rounding, not bit for bit.

An encoder file is known by its identity, `{"model": "ViT-B-32", "sha256": ...}` (`file_identity`):
the CLIP model its shapes describe and a sha256 over its weights (see `weights_sha256`). mrlight
checkpoints record this identity, not the file's path, so the file can move.
"""

from __future__ import annotations

import copy
import hashlib
import os
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


PREPROCESSING = ("official", "tensor")


def clip_preprocess(lq: torch.Tensor, size: int = 224, mode: str = "official") -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> CLIP input: short side to `size` (bicubic), center crop, mean/std.

    mode "official": DA-CLIP's `clip_transform` step for step: `(lq * 255)` truncated to uint8 (as
    numpy's `astype(np.uint8)`; values are clamped to [0, 1] first), PIL bicubic resize through
    torchvision's Resize on the PIL image, center crop, `ToTensor` (/ 255), CLIP mean/std. Runs on the
    CPU, one PIL image per batch item, and returns on `lq`'s device.
    mode "tensor": the float tensor resized on its device (torch's antialiased bicubic, no uint8 step).
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if mode == "official":
        from PIL import Image

        # float32 as DA-CLIP's images are (cv2 / PIL uint8 / 255.), then the C cast: truncation
        pixels = (lq.detach().float().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        crops = [TF.to_tensor(TF.center_crop(TF.resize(Image.fromarray(a), size, interpolation=InterpolationMode.BICUBIC),
                                             size)) for a in pixels]
        x = torch.stack(crops).to(lq.device)
    elif mode == "tensor":
        x = TF.resize(lq.float().clamp(0, 1), size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, size)
    else:
        raise ValueError(f"DA-CLIP preprocess={mode!r} is not valid; valid: {', '.join(PREPROCESSING)}")
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


class DaCLIPEncoder(nn.Module):
    """`encoder(lq) -> (image_features, degradation_features)`, each [B, embed_dim].

    Attribute names follow DA-CLIP's `DaCLIP` module (`clip`, `visual` (the same tower as
    `clip.visual`, so the file's duplicate keys load), `visual_control`, `logit_scale`), so its
    training checkpoints load strictly. `identity` ({"model", "sha256"}) is set by `from_file`
    (None for an encoder built in memory: `encoder_identity` computes it then); `preprocess`
    ("official" | "tensor") selects `clip_preprocess`'s mode.
    """

    identity: dict | None = None
    source: str | None = None  # the file it was loaded from (messages only)
    preprocess: str = "official"

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
            identity = _cached_identity(path, state)
            embed_dim, vision_cfg, text_cfg = config_from_state(state)
        except KeyError as err:
            raise WeightsError(f"{path} is not a DA-CLIP encoder file: no {err.args[0]!r} key "
                               f"(expected DaCLIP's clip.* / visual_control.* keys)") from None
        try:
            encoder = cls.from_config(embed_dim, vision_cfg, text_cfg)
        except ImportError as err:
            raise WeightsError(f"cannot load the DA-CLIP encoder {path}: {err}") from None
        load_into(encoder, state, str(path), "DA-CLIP encoder")
        encoder.identity, encoder.source = identity, str(path)
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
        image = clip_preprocess(lq, mode=self.preprocess).to(self.logit_scale.dtype)
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


# -- identity: what an encoder file is, independent of where it lies ------------------------------
KNOWN_MODELS = {  # (embed_dim, width, layers, patch, image_size) -> open_clip's name
    (512, 768, 12, 32, 224): "ViT-B-32", (512, 768, 12, 16, 224): "ViT-B-16",
    (768, 1024, 24, 14, 224): "ViT-L-14", (768, 1024, 24, 14, 336): "ViT-L-14-336",
}


def model_name(state: dict[str, torch.Tensor]) -> str:
    """The CLIP model a DA-CLIP state dict's shapes describe: "ViT-B-32", "ViT-L-14", or a description."""
    embed_dim, v, _ = config_from_state(state)
    key = (embed_dim, v["width"], v["layers"], v["patch_size"], v["image_size"])
    return KNOWN_MODELS.get(key) or (f"ViT(embed_dim={embed_dim}, width={v['width']}, layers={v['layers']}, "
                                     f"patch={v['patch_size']}, image={v['image_size']})")


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict in sorted key order: each key's name, dtype and shape, then its tensor's bytes.

    Wrappers, DataParallel's `module.` prefix and the file's other entries (epoch, name) do not count:
    the hash is over what `read_state_dict` returns, i.e. the weights the encoder loads.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{str(tensor.dtype).removeprefix('torch.')}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    return digest.hexdigest()


def state_identity(state: dict[str, torch.Tensor]) -> dict:
    """{"model": CLIP model name, "sha256": weights hash} of a DA-CLIP state dict."""
    return {"model": model_name(state), "sha256": weights_sha256(state)}


_IDENTITIES: dict[tuple, dict] = {}  # (real path, size, mtime_ns) -> identity: each file is hashed once


def _file_key(path: str | Path) -> tuple:
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


def _cached_identity(path: str | Path, state: dict[str, torch.Tensor]) -> dict:
    key = _file_key(path)
    if key not in _IDENTITIES:
        _IDENTITIES[key] = state_identity(state)
    return dict(_IDENTITIES[key])


def file_identity(path: str | Path) -> dict:
    """The identity of the DA-CLIP encoder file `path` (hashed once per file and modification time)."""
    from mrlight.weights import WeightsError, read_state_dict

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"DA-CLIP encoder file not found: {path}")
    key = _file_key(path)
    if key not in _IDENTITIES:
        try:
            _cached_identity(path, read_state_dict(path))
        except KeyError as err:
            raise WeightsError(f"{path} is not a DA-CLIP encoder file: no {err.args[0]!r} key "
                               f"(expected DaCLIP's clip.* / visual_control.* keys)") from None
    return dict(_IDENTITIES[key])


def encoder_identity(encoder: nn.Module) -> dict:
    """An encoder's identity: the one of the file it was loaded from, else computed from its weights."""
    identity = getattr(encoder, "identity", None)
    if identity is None:
        identity = state_identity(encoder.state_dict())
        encoder.identity = identity
    return dict(identity)


def check_identity(value) -> dict:
    """A recorded identity ({"model": str, "sha256": 64 hex digits}) as a plain dict, or a ValueError."""
    ok = (isinstance(value, dict) and set(value) == {"model", "sha256"} and isinstance(value["model"], str)
          and isinstance(value["sha256"], str) and len(value["sha256"]) == 64
          and all(c in "0123456789abcdef" for c in value["sha256"]))
    if not ok:
        raise ValueError(f"daclip={value!r}: expected a DA-CLIP encoder file path, or an encoder identity "
                         "{model: NAME, sha256: 64 hex digits} as mrlight checkpoints record it")
    return {"model": value["model"], "sha256": value["sha256"]}


def describe(identity: dict | None) -> str:
    """"ViT-B-32 (sha256 0123...)" for messages."""
    return "none" if identity is None else f"{identity['model']} (sha256 {identity['sha256']})"
