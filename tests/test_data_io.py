"""read_image: every supported file becomes RGB float [3, H, W] in [0, 1]; bad files name themselves."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from mrlight.data import DataError, read_image, write_image


def _rgb(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path):
    array = _rgb()
    Image.fromarray(array).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 6, 5) and image.dtype == torch.float32
    assert torch.allclose(image, torch.from_numpy(array).permute(2, 0, 1).float() / 255)
    write_image(image, tmp_path / "b.png")
    assert torch.equal(read_image(tmp_path / "b.png"), image)


def test_grayscale_rgba_palette_become_rgb(tmp_path):
    gray = _rgb()[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    image = read_image(tmp_path / "gray.png")
    assert image.shape == (3, 6, 5)
    assert torch.equal(image[0], image[2]) and torch.allclose(image[1], torch.from_numpy(gray).float() / 255)

    rgba = np.concatenate([_rgb(), np.full((6, 5, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert torch.allclose(read_image(tmp_path / "rgba.png"), torch.from_numpy(rgba[:, :, :3]).permute(2, 0, 1).float() / 255)

    Image.fromarray(_rgb()).convert("P").save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png").shape == (3, 6, 5)


def test_16bit_png_and_tiff(tmp_path):
    gray16 = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert image.shape == (3, 2, 2)
    assert torch.allclose(image[0], torch.from_numpy(gray16.astype(np.float32) / 65535), atol=1e-6)

    rgb16 = np.random.default_rng(1).integers(0, 65536, (4, 3, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", rgb16)
    image = read_image(tmp_path / "c16.tif")
    assert torch.allclose(image, torch.from_numpy(rgb16.astype(np.float32) / 65535).permute(2, 0, 1), atol=1e-6)

    tifffile.imwrite(tmp_path / "f.tiff", np.full((3, 3), 0.25, np.float32))
    assert torch.allclose(read_image(tmp_path / "f.tiff"), torch.full((3, 3, 3), 0.25))

    Image.fromarray(_rgb()).save(tmp_path / "c8.tif")  # an ordinary 8-bit TIFF
    assert read_image(tmp_path / "c8.tif").shape == (3, 6, 5)


def test_truncated_unreadable_and_missing_files_are_named(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png"):
        read_image(tmp_path / "cut.png")

    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")

    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match="text.png"):
        read_image(tmp_path / "text.png")
    with pytest.raises(DataError, match="absent.png"):
        read_image(tmp_path / "absent.png")
    assert issubclass(DataError, ValueError)
