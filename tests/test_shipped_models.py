"""The CPU-trained models shipped in checkpoints/ (docs/BENCHMARKS.md section 6, checkpoints/README.md).

Each must be small, load with weights_only=True through the project's own loader, and restore a
small crop it has not seen to a PSNR above the degraded input.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from mrlight.checkpoint import load_checkpoint
from mrlight.data.degradations import build_degradation
from mrlight.inference import Restorer

SHIPPED = {
    "denoise": REPO / "checkpoints" / "mrlight-denoise-s25-cpu.ckpt",
    "derain": REPO / "checkpoints" / "mrlight-derain-rain100h-cpu.ckpt",
}
RAIN100H = REPO.parent / "shared" / "data" / "Rain100H"


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(-10 * torch.log10(torch.mean((x - y) ** 2)))


@pytest.mark.parametrize("task", sorted(SHIPPED))
def test_shipped_file_is_small_safe_and_described(task):
    path = SHIPPED[task]
    assert path.is_file(), f"{path} is missing"
    assert path.stat().st_size <= 5 * 2**20
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "hyper_parameters", "global_step"}  # EMA weights and config only
    ckpt = load_checkpoint(path)
    assert ckpt["hyper_parameters"]["config"]["objective"]["prediction"] in ("noise", "data", "velocity", "matching")
    assert path.name in (REPO / "checkpoints" / "README.md").read_text()


def test_shipped_denoiser_beats_its_noisy_input():
    import skimage.data

    gt = torch.from_numpy(skimage.data.coffee()[100:164, 200:264].copy()).permute(2, 0, 1).float() / 255
    noisy = build_degradation({"name": "noise", "sigma": 25})(gt, np.random.default_rng(0)).float()
    out = Restorer.from_checkpoint(SHIPPED["denoise"])(noisy, name="coffee")
    assert out.shape == gt.shape and torch.isfinite(out).all()
    assert psnr(out, gt) > psnr(noisy, gt) + 3.0


@pytest.mark.skipif(not RAIN100H.is_dir(), reason="Rain100H test pairs not present (../shared/data)")
def test_shipped_derainer_beats_its_rainy_input():
    from PIL import Image

    def crop(folder):  # image 1 is in the held-out split 1..10
        image = np.asarray(Image.open(next((RAIN100H / folder).glob("1.*"))).convert("RGB"))
        return torch.from_numpy(image[100:196, 150:246].copy()).permute(2, 0, 1).float() / 255

    lq, gt = crop("LQ"), crop("GT")
    out = Restorer.from_checkpoint(SHIPPED["derain"])(lq, name="rain-1")
    assert psnr(out, gt) > psnr(lq, gt)
