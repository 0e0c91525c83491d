"""Synthetic degradations: small functions `f(image, rng, **params) -> image` and a registry.

Every function takes an RGB float tensor [3, H, W] in [0, 1] and a `numpy.random.Generator`,
and returns a new tensor of the same shape in [0, 1]. A parameter given as a pair `[lo, hi]`
is drawn uniformly per image (integers for integer parameters), so one function serves a fixed
and a blind setting. The generator is the only source of randomness: the data sets seed it per
image for validation (same degradation every epoch and on every rank) and from the worker's
torch seed for training.

A spec in the config is a mapping with `name` and parameters, a list of such mappings (applied
in order), or just a name: `{name: noise, sigma: 25}`, `[{name: haze}, {name: jpeg, quality: 30}]`.
"""

from __future__ import annotations

import inspect
import io
import math
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter, zoom
from scipy.signal import fftconvolve

from .errors import DataError
from .io import list_images, read_image, to_uint8

Range = float | tuple[float, float] | list[float]


def draw(rng: np.random.Generator, value: Range, integer: bool = False) -> float:
    """A fixed value, or a uniform draw from `[lo, hi]` (inclusive for integers)."""
    if isinstance(value, (list, tuple)):
        lo, hi = value
        return int(rng.integers(int(lo), int(hi) + 1)) if integer else float(rng.uniform(lo, hi))
    return int(value) if integer else float(value)


def _numpy(image: torch.Tensor) -> np.ndarray:
    return image.detach().cpu().numpy()


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.clip(array, 0.0, 1.0), dtype=np.float32))


def line_kernel(length: int, angle: float, normalize: str = "sum") -> np.ndarray:
    """An anti-aliased straight line through the centre of a square kernel.

    `angle` is in degrees from the vertical axis. Points along the segment are splatted
    bilinearly, so any angle is represented (not only the 8 pixel directions).
    """
    length = max(int(length), 1)
    size = length + 2 + (length % 2 == 0)  # odd, so the centre is a pixel
    kernel = np.zeros((size, size), np.float64)
    centre = (size - 1) / 2
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length)
    rows = centre + t * math.cos(math.radians(angle))
    cols = centre + t * math.sin(math.radians(angle))
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        np.add.at(kernel, (r0 + dr, c0 + dc), weight)
    return kernel / (kernel.sum() if normalize == "sum" else kernel.max())


# --------------------------------------------------------------------------------------------
# The degradations


def noise(image: torch.Tensor, rng: np.random.Generator, sigma: Range = 25) -> torch.Tensor:
    """Additive white Gaussian noise, `sigma` in 0..255 units, clipped to [0, 1].

    The "noisy" setting of DA-CLIP (Luo et al., ICLR 2024) and of the MR Sampler paper: sigma 25
    on CBSD68 / Kodak24 / McMaster.
    """
    sigma = draw(rng, sigma) / 255.0
    return _tensor(_numpy(image) + sigma * rng.standard_normal(image.shape, dtype=np.float32))


def jpeg(image: torch.Tensor, rng: np.random.Generator, quality: Range = 10) -> torch.Tensor:
    """JPEG compression at `quality` (1..100) with Pillow's libjpeg encoder (4:2:0 chroma)."""
    quality = draw(rng, quality, integer=True)
    if not 1 <= quality <= 100:
        raise DataError(f"jpeg quality must be in 1..100, got {quality}")
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        array = np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0
    return _tensor(array.transpose(2, 0, 1))


def upsample_bicubic(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[C, h, w] -> [C, height, width]: IR-SDE's super-resolution input, `F.interpolate(LQ, scale_factor=4,
    mode='bicubic')` (its `util.upscale`, `codes/utils/deg_utils.py`): torch's bicubic (a = -0.75),
    no antialiasing and **no clamping** (the overshoot beyond [0, 1] is what the released SR model saw)."""
    return F.interpolate(image[None], size=(height, width), mode="bicubic", align_corners=False)[0]


def bicubic(image: torch.Tensor, rng: np.random.Generator, scale: int = 4) -> torch.Tensor:
    """Bicubic down-scaling by `scale` (anti-aliased), then bicubic up-scaling back to the input size.

    IR-SDE (Luo et al., ICML 2023) feeds super-resolution LQ images up-sampled to the GT size, so
    that mu and x0 share one shape; the up-scaling is IR-SDE's (`upsample_bicubic`: no antialiasing,
    no clamping). The down-scaled image is clamped to [0, 1], as an LR file would be. Sizes must be
    multiples of `scale` (the data set crops them).
    """
    scale = int(scale)
    _, height, width = image.shape
    if height % scale or width % scale:
        raise DataError(f"bicubic x{scale} needs an image size divisible by {scale}, got {height}x{width}")
    small = F.interpolate(image[None], size=(height // scale, width // scale), mode="bicubic",
                          align_corners=False, antialias=True).clamp(0, 1)
    return upsample_bicubic(small[0], height, width)


bicubic.multiple_of = lambda params: int(params.get("scale", 4))  # type: ignore[attr-defined]

_MASKS: dict[str, list[np.ndarray]] = {}


def _masks(mask_dir: str) -> list[np.ndarray]:
    """Boolean "keep" maps of every mask in `mask_dir`, read once per process."""
    if mask_dir not in _MASKS:
        folder = Path(mask_dir)
        if not folder.is_dir():
            raise DataError(f"inpainting mask folder not found: {folder} (expected a folder of mask images, white = keep)")
        files = list_images(folder)
        if not files:
            raise DataError(f"inpainting mask folder {folder} holds no images")
        _MASKS[mask_dir] = [read_image(f).mean(0).numpy() > 0.5 for f in files]
    return _MASKS[mask_dir]


def inpaint(image: torch.Tensor, rng: np.random.Generator, mask_dir: str = "", fill: float = 1.0) -> torch.Tensor:
    """Mask out regions with a mask drawn from `mask_dir` (white = keep); holes are set to `fill`.

    DA-CLIP's "uncompleted" setting (Luo et al., ICLR 2024, scripts/generate_masked_face.py):
    CelebA-HQ faces at 256x256 with its 100 free-form masks, holes filled white. A mask larger
    than the image is cropped at a random place (hole sizes stay those of a 256 image when
    training on 128 patches); a smaller one is resized (nearest) to the image.
    """
    masks = _masks(str(mask_dir))
    keep = masks[int(rng.integers(len(masks)))]
    _, height, width = image.shape
    if keep.shape[0] >= height and keep.shape[1] >= width:
        top = int(rng.integers(keep.shape[0] - height + 1))
        left = int(rng.integers(keep.shape[1] - width + 1))
        keep = keep[top:top + height, left:left + width]
    else:
        keep = np.asarray(Image.fromarray(keep).resize((width, height), Image.NEAREST))
    keep = torch.from_numpy(np.ascontiguousarray(keep, dtype=np.float32))
    return image * keep + fill * (1 - keep)


def rain(image: torch.Tensor, rng: np.random.Generator, density: Range = (0.001, 0.004),
         length: Range = (15, 35), angle: Range = (-20, 20), width: Range = (0.4, 0.9),
         intensity: Range = (0.4, 0.8)) -> torch.Tensor:
    """Additive rain streaks, O = B + S (Yang et al., "Deep Joint Rain Detection and Removal from a
    Single Image", CVPR 2017: the model behind Rain100L/H).

    The streak layer S follows the usual synthesis recipe (Fu et al., CVPR 2017; Zhang & Patel,
    CVPR 2018): sparse random drop seeds (`density` = fraction of pixels, per-drop brightness),
    motion-blurred along one direction (`angle`, degrees from vertical) over `length` pixels,
    softened across the streak by a Gaussian of std `width`, scaled to peak `intensity`.
    """
    _, height, width_px = image.shape
    length = draw(rng, length, integer=True)
    pad = length // 2 + 2  # seeds above/left of the image still leave streaks in it
    seeds = rng.random((height + 2 * pad, width_px + 2 * pad)) < draw(rng, density)
    seeds = seeds * rng.uniform(0.5, 1.0, seeds.shape)
    kernel = gaussian_filter(line_kernel(length, draw(rng, angle), normalize="max"), draw(rng, width))
    streaks = fftconvolve(seeds, kernel / kernel.max(), mode="same")[pad:pad + height, pad:pad + width_px]
    streaks = np.clip(streaks, 0.0, 1.0) * draw(rng, intensity)
    return _tensor(_numpy(image) + streaks[None].astype(np.float32))


def _smooth_field(rng: np.random.Generator, height: int, width: int, cell: int = 32) -> np.ndarray:
    """A smooth random field in [0, 1]: coarse Gaussian noise, blurred and up-sampled."""
    coarse = gaussian_filter(rng.standard_normal((height // cell + 3, width // cell + 3)), 1.0)
    field = zoom(coarse, (height / coarse.shape[0] * 1.0001, width / coarse.shape[1] * 1.0001), order=1)[:height, :width]
    return (field - field.min()) / (np.ptp(field) + 1e-8)


def haze(image: torch.Tensor, rng: np.random.Generator, beta: Range = (0.6, 1.8), airlight: Range = (0.7, 1.0)) -> torch.Tensor:
    """Atmospheric scattering model I = J t + A (1 - t), t = exp(-beta d) (McCartney 1976;
    Narasimhan & Nayar, IJCV 2002). `beta` and `airlight` A default to the ranges RESIDE uses
    (Li et al., TIP 2019). Without a depth sensor the depth d in [0, 1] is synthetic: farther
    toward the top of the frame, plus a smooth random field.
    """
    _, height, width = image.shape
    ramp = np.linspace(1.0, 0.0, height)[:, None] * np.ones((1, width))
    depth = 0.6 * ramp + 0.4 * _smooth_field(rng, height, width)
    transmission = np.exp(-draw(rng, beta) * depth)[None].astype(np.float32)
    atmosphere = draw(rng, airlight)
    return _tensor(_numpy(image) * transmission + atmosphere * (1 - transmission))


def lowlight(image: torch.Tensor, rng: np.random.Generator, gamma: Range = (2.0, 3.0),
             gain: Range = (0.4, 0.8), sigma: Range = (0, 8)) -> torch.Tensor:
    """Low light: gamma darkening, a linear gain and Gaussian sensor noise (`sigma` in 0..255 units).

    The synthesis of LLNet (Lore et al., Pattern Recognition 2017) and of Lv et al. (IJCV 2021):
    y = gain * x^gamma + n. Real low-light pairs (LOL) are preferable where available.
    """
    dark = draw(rng, gain) * _numpy(image) ** draw(rng, gamma)
    return _tensor(dark + draw(rng, sigma) / 255.0 * rng.standard_normal(image.shape, dtype=np.float32))


def motion_blur(image: torch.Tensor, rng: np.random.Generator, length: Range = (5, 21), angle: Range = (0, 180)) -> torch.Tensor:
    """Uniform linear motion blur: convolution with a line of `length` pixels at `angle` degrees
    (the linear-kernel model of Sun et al., CVPR 2015; GoPro's real blur comes from averaging
    video frames, Nah et al., CVPR 2017). Borders are reflected.
    """
    kernel = line_kernel(draw(rng, length, integer=True), draw(rng, angle)).astype(np.float32)
    pad = kernel.shape[0] // 2
    array = np.pad(_numpy(image), ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    blurred = fftconvolve(array, kernel[None], mode="valid")
    return _tensor(blurred)


DEGRADATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "noise": noise,
    "jpeg": jpeg,
    "bicubic": bicubic,
    "inpaint": inpaint,
    "rain": rain,
    "haze": haze,
    "lowlight": lowlight,
    "motion_blur": motion_blur,
}


# --------------------------------------------------------------------------------------------
# Specs -> a composed, seedable callable


class Degradation:
    """A chain of registered degradations with their parameters, applied in order."""

    def __init__(self, steps: list[tuple[str, dict[str, Any]]]):
        self.steps = steps

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        for name, params in self.steps:
            image = DEGRADATIONS[name](image, rng, **params)
        return image

    @property
    def multiple_of(self) -> int:
        """Image sizes must be multiples of this (the product of the bicubic scales)."""
        multiple = 1
        for name, params in self.steps:
            rule = getattr(DEGRADATIONS[name], "multiple_of", None)
            multiple *= rule(params) if rule else 1
        return multiple

    def __repr__(self) -> str:
        return " -> ".join(f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})" for name, params in self.steps)


def _plain(value: Any) -> Any:
    """OmegaConf containers -> Python lists/dicts."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


def _check_step(spec: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise DataError(f"data.degradation: each entry needs a 'name' (one of {', '.join(DEGRADATIONS)}), got {spec!r}")
    params = dict(spec)
    name = params.pop("name")
    if name not in DEGRADATIONS:
        raise DataError(f"data.degradation: unknown degradation {name!r}; valid: {', '.join(DEGRADATIONS)}")
    signature = inspect.signature(DEGRADATIONS[name])
    valid = [p for p in signature.parameters if p not in ("image", "rng")]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise DataError(f"data.degradation {name}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    for key, value in params.items():
        ok = isinstance(value, (int, float, str)) or (
            isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value))
        if not ok:
            raise DataError(f"data.degradation {name}.{key}: expected a number or a [lo, hi] pair, got {value!r}")
    if name == "inpaint" and not params.get("mask_dir"):
        raise DataError("data.degradation inpaint needs mask_dir: a folder of mask images (white = keep)")
    if name == "bicubic" and int(params.get("scale", 4)) < 2:
        raise DataError(f"data.degradation bicubic: scale must be an integer >= 2, got {params.get('scale')}")
    return name, params


def build_degradation(spec: Any) -> Degradation | None:
    """`None`, a name, a `{name: ..., **params}` mapping or a list of them -> `Degradation`."""
    spec = _plain(spec)
    if spec is None or spec == [] or spec == {}:
        return None
    steps = spec if isinstance(spec, list) else [spec]
    return Degradation([_check_step(step) for step in steps])


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The generator for one validation image: a function of (seed, name) only, so the same
    degradation is drawn every epoch, in every worker and on every rank."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])
