"""Image reading and writing: every supported file becomes an RGB float tensor in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (sub-folders are not searched)."""
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))


def _to_float(array: np.ndarray) -> np.ndarray:
    """Integer images scaled by their dtype's range; float images assumed to be in [0, 1]."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype.itemsize == 1:
            return array.astype(np.float32) / 255.0
        # 16-bit PNG/TIFF; PIL also hands 16-bit grayscale PNGs out as int32 ("I").
        return np.clip(array.astype(np.float32) / 65535.0, 0.0, 1.0)
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """HW, HW1, HW2 (gray + alpha), HW3, HW4 (RGBA: alpha dropped) -> HW3."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"unsupported image shape {array.shape}")
    channels = array.shape[2]
    if channels in (1, 2):
        return np.repeat(array[:, :, :1], 3, axis=2)
    if channels >= 3:
        return array[:, :, :3]
    raise ValueError(f"unsupported number of channels {channels}")


def _read_pil(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()  # decodes now, so truncated files fail here
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            return np.asarray(image)
        if image.mode != "RGB":
            image = image.convert("RGB")  # palette, CMYK, LA, RGBA (alpha dropped), 1-bit, L
        return np.asarray(image)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile  # a scikit-image dependency; reads 16-bit and float TIFFs that PIL cannot

    array = tifffile.imread(path)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, 2)  # planar (CHW) storage
    return array


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image file as an RGB float32 tensor [3, H, W] in [0, 1].

    Grayscale is repeated to three channels, alpha is dropped, 16-bit values are divided by
    65535, TIFFs (also 16-bit and float) go through tifffile. An unreadable or truncated file
    raises `DataError` naming it.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                array = _read_tiff(path)
            except Exception:
                array = _read_pil(path)
        else:
            array = _read_pil(path)
        array = _to_rgb(_to_float(np.asarray(array)))
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image {path}: {error} (unreadable, truncated or not an image)") from None
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError) as error:
        if path.suffix.lower() in (".tif", ".tiff"):
            return tuple(read_image(path).shape[1:])
        raise DataError(f"cannot read image {path}: {error} (unreadable or not an image)") from None
    return height, width


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> HWC uint8 (rounded), for saving and JPEG coding."""
    array = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def write_image(image: torch.Tensor, path: str | Path) -> None:
    """Save a [3, H, W] tensor in [0, 1] as an 8-bit RGB file (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
