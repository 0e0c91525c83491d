"""Inference precision options of `Restorer` and `sample.py` (precision=32|bf16|16, channels_last, compile).

The bar: `sample.py precision=bf16` restores within 0.3 dB of float32, and autocast really runs
(the network computes in bfloat16 and the output differs from float32's), so a precision option
that were silently ignored would fail here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from mrlight.inference import PrecisionError, Restorer, precision_name

DENOISER = REPO / "checkpoints" / "mrlight-denoise-s25-cpu.ckpt"


def _crop() -> tuple[torch.Tensor, torch.Tensor]:
    import skimage.data

    clean = torch.from_numpy(skimage.data.coffee()[120:184, 220:284].copy()).permute(2, 0, 1).float() / 255
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 25 / 255, clean.shape).astype(np.float32))
    return clean, torch.round((clean + noise).clamp(0, 1) * 255) / 255


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(-10 * torch.log10(torch.mean((x - y) ** 2)))


def test_precision_names():
    assert [precision_name(v) for v in (32, "32", "fp32", "bf16", "bfloat16", 16, "16", "fp16")] == \
        ["32", "32", "32", "bf16", "bf16", "16", "16", "16"]
    for bad in ("8", "fp64", True, None):
        with pytest.raises(PrecisionError, match="valid: 32, bf16, 16"):
            precision_name(bad)


def test_bf16_autocast_runs_the_network_in_bf16_and_keeps_the_result_close():
    clean, noisy = _crop()
    fp32 = Restorer.from_checkpoint(DENOISER)
    bf16 = Restorer.from_checkpoint(DENOISER, precision="bf16")
    dtypes = []
    convs = [m for m in bf16.net.modules() if isinstance(m, torch.nn.Conv2d)]
    bf16(noisy[:, :16, :16], name="warm-up", nfe=1)  # the first call finds the edge convolutions (in float32)
    handles = [c.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype)) for c in convs]
    out_bf16 = bf16(noisy, name="coffee")
    for h in handles:
        h.remove()
    out_fp32 = fp32(noisy, name="coffee")
    # 10 network calls: every convolution in bf16 but the first and the last (kept float32 on purpose)
    assert dtypes.count(torch.float32) == 2 * 10 and dtypes.count(torch.bfloat16) == (len(convs) - 2) * 10
    assert out_bf16.dtype == torch.float32 and torch.isfinite(out_bf16).all()
    assert not torch.equal(out_bf16, out_fp32)
    assert abs(psnr(out_bf16, clean) - psnr(out_fp32, clean)) <= 0.3


def test_channels_last_matches_float32():
    _, noisy = _crop()
    out = Restorer.from_checkpoint(DENOISER, channels_last=True)(noisy[:, :32, :32], name="x", nfe=3)
    ref = Restorer.from_checkpoint(DENOISER)(noisy[:, :32, :32], name="x", nfe=3)
    assert torch.allclose(out, ref, atol=1e-4)


def _sample_py(tmp_path, image, gt, *args):
    out = tmp_path / f"out_{'_'.join(a.replace('=', '-') for a in args) or 'default'}"
    run = subprocess.run([sys.executable, str(REPO / "sample.py"), f"ckpt={DENOISER}", f"input={image}",
                          f"output={out}", f"gt={gt}", "lpips=false", "progress=false", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    return run, out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sample_py_bf16_within_0p3_db_of_float32(tmp_path):
    clean, noisy = _crop()
    (tmp_path / "lq").mkdir()
    (tmp_path / "gt").mkdir()
    for folder, image in (("lq", noisy), ("gt", clean)):
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(tmp_path / folder / "coffee.png")
    results = {}
    for precision in ("32", "bf16"):
        run, out = _sample_py(tmp_path, tmp_path / "lq", tmp_path / "gt", f"precision={precision}")
        assert run.returncode == 0, run.stderr[-3000:]
        results[precision] = np.asarray(Image.open(out / "coffee.png")).astype(np.float64)
    gt = np.asarray(Image.open(tmp_path / "gt" / "coffee.png")).astype(np.float64)
    psnr_np = {k: -10 * np.log10(np.mean((v - gt) ** 2) / 255 ** 2) for k, v in results.items()}
    assert not np.array_equal(results["bf16"], results["32"]), "precision=bf16 gave float32's exact output"
    assert abs(psnr_np["bf16"] - psnr_np["32"]) <= 0.3, psnr_np
    assert psnr_np["bf16"] > -10 * np.log10(np.mean((noisy.numpy() - clean.numpy()) ** 2)) + 3

    run, _ = _sample_py(tmp_path, tmp_path / "lq", tmp_path / "gt", "precision=fp8")
    assert run.returncode == 2 and "precision='fp8' is not valid; valid: 32, bf16, 16" in run.stderr, run.stderr


def test_unsupported_autocast_is_a_clear_error(monkeypatch):
    """Where torch would silently drop autocast (an unsupported dtype), Restorer refuses with a message."""
    import mrlight.inference as inference

    monkeypatch.setitem(inference.PRECISIONS, "16", torch.float64)  # autocast never runs in float64
    with pytest.raises(PrecisionError, match="precision=16: .*use precision=bf16 or 32"):
        Restorer.from_checkpoint(DENOISER, precision="16")
