"""Synthetic degradations: shapes and range, what each one does, seeding, and spec errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mrlight.data import DEGRADATIONS, DataError, build_degradation
from mrlight.data.degradations import image_rng, line_kernel


def _image(h=32, w=48, seed=0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.2 + 0.6 * xx, 0.2 + 0.6 * yy, 0.5 + 0.3 * torch.sin(6 * xx)])
    return (base + 0.05 * torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


@pytest.fixture()
def mask_dir(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    keep = np.full((64, 64), 255, np.uint8)
    keep[10:30, 10:30] = 0  # one square hole
    Image.fromarray(keep).save(folder / "000.png")
    return str(folder)


def _params(name, mask_dir):
    return {"mask_dir": mask_dir} if name == "inpaint" else {}


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_shape_range_and_seeding(name, mask_dir):
    image = _image()
    out = DEGRADATIONS[name](image, np.random.default_rng(3), **_params(name, mask_dir))
    again = DEGRADATIONS[name](image, np.random.default_rng(3), **_params(name, mask_dir))
    assert out.shape == image.shape and out.dtype == torch.float32
    if name == "bicubic":  # IR-SDE's SR input is not clamped: bicubic overshoot only
        assert -0.25 <= out.min() and out.max() <= 1.25
    else:
        assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, again), "the same generator state must give the same degradation"
    assert (out - image).abs().mean() > 1e-3, "the degradation must change the image"


def test_noise_sigma_is_in_8bit_units():
    gray = torch.full((3, 128, 128), 0.5)
    out = DEGRADATIONS["noise"](gray, np.random.default_rng(0), sigma=25)
    assert abs((out - gray).std().item() - 25 / 255) < 0.003


def test_jpeg_quality_orders_the_error():
    image = _image(64, 64)
    err = {q: (DEGRADATIONS["jpeg"](image, None, quality=q) - image).pow(2).mean().item() for q in (10, 90)}
    assert err[10] > 2 * err[90]
    with pytest.raises(DataError, match="quality"):
        DEGRADATIONS["jpeg"](image, None, quality=0)


def test_bicubic_keeps_size_and_smooth_content_and_needs_multiples():
    flat = torch.full((3, 16, 16), 0.3)
    assert torch.allclose(DEGRADATIONS["bicubic"](flat, None, scale=4), flat, atol=1e-5)
    sharp = torch.zeros(3, 16, 16)
    sharp[:, :, ::2] = 1  # stripes vanish at 1/4 resolution
    assert DEGRADATIONS["bicubic"](sharp, None, scale=4).std() < 0.1
    with pytest.raises(DataError, match="divisible by 3"):
        DEGRADATIONS["bicubic"](torch.zeros(3, 16, 16), None, scale=3)


def test_inpaint_fills_holes_white_and_keeps_the_rest(mask_dir):
    image = _image(64, 64)
    out = DEGRADATIONS["inpaint"](image, np.random.default_rng(0), mask_dir=mask_dir)
    assert torch.all(out[:, 10:30, 10:30] == 1)
    assert torch.equal(out[:, 40:, 40:], image[:, 40:, 40:])
    small = DEGRADATIONS["inpaint"](_image(32, 32), np.random.default_rng(0), mask_dir=mask_dir)  # mask cropped
    assert small.shape == (3, 32, 32)


def test_rain_adds_light_haze_lifts_toward_airlight_lowlight_darkens():
    image = _image(64, 64)
    rain = DEGRADATIONS["rain"](image, np.random.default_rng(0))
    assert torch.all(rain >= image - 1e-6) and (rain - image).max() > 0.3
    dark = torch.full((3, 64, 64), 0.05)
    hazy = DEGRADATIONS["haze"](dark, np.random.default_rng(0), beta=1.5, airlight=0.9)
    assert hazy.mean() > 0.3
    low = DEGRADATIONS["lowlight"](image, np.random.default_rng(0), sigma=0)
    assert low.mean() < 0.5 * image.mean()


def test_motion_blur_spreads_a_point_along_the_angle():
    point = torch.zeros(3, 31, 31)
    point[:, 15, 15] = 1
    vertical = DEGRADATIONS["motion_blur"](point, np.random.default_rng(0), length=9, angle=0)
    column, row = vertical[0, :, 15], vertical[0, 15, :]
    assert (column > 0.05).sum() >= 8 and (row > 0.05).sum() == 1
    assert abs(vertical.sum().item() - 3) < 1e-3  # energy preserved (kernel sums to 1)
    assert abs(line_kernel(7, 33).sum() - 1) < 1e-9


def test_specs_compose_and_errors_name_the_choices():
    chain = build_degradation([{"name": "noise", "sigma": [5, 10]}, {"name": "jpeg", "quality": 30}])
    assert [name for name, _ in chain.steps] == ["noise", "jpeg"]
    assert build_degradation("haze").steps == [("haze", {})]
    assert build_degradation(None) is None
    assert build_degradation({"name": "bicubic", "scale": 2}).multiple_of == 2
    with pytest.raises(DataError, match="unknown degradation 'snow'.*noise, jpeg"):
        build_degradation({"name": "snow"})
    with pytest.raises(DataError, match="unknown parameter.*sigmaa.*valid: sigma"):
        build_degradation({"name": "noise", "sigmaa": 3})
    with pytest.raises(DataError, match="mask_dir"):
        build_degradation({"name": "inpaint"})
    with pytest.raises(DataError, match=r"\[lo, hi\]"):
        build_degradation({"name": "noise", "sigma": [1, 2, 3]})


def test_ranges_are_drawn_and_image_rng_is_a_function_of_seed_and_name():
    image = torch.full((3, 64, 64), 0.5)
    chain = build_degradation({"name": "noise", "sigma": [0, 50]})
    stds = {round((chain(image, np.random.default_rng(s)) - image).std().item(), 3) for s in range(5)}
    assert len(stds) == 5
    a = chain(image, image_rng(0, "x"))
    assert torch.equal(a, chain(image, image_rng(0, "x")))
    assert not torch.equal(a, chain(image, image_rng(0, "y")))
    assert not torch.equal(a, chain(image, image_rng(1, "x")))


def test_bicubic_upsamples_back_as_irsde_does():
    from mrlight.data.degradations import upsample_bicubic

    image = torch.zeros(3, 16, 16)
    image[:, :, 8:] = 1
    out = DEGRADATIONS["bicubic"](image, None, scale=4)
    small = torch.nn.functional.interpolate(image[None], size=(4, 4), mode="bicubic", antialias=True).clamp(0, 1)
    assert torch.equal(out, torch.nn.functional.interpolate(small, scale_factor=4, mode="bicubic")[0])
    assert torch.equal(out, upsample_bicubic(small[0], 16, 16))
    assert out.min() < 0 and out.max() > 1  # no clamp: the overshoot IR-SDE's SR model was trained on
