"""The CPU-trained models shipped in checkpoints/ (docs/BENCHMARKS.md section 6, checkpoints/README.md).

The tests check what the model card states, where that can be checked in seconds: the network (0.59 M
parameters, 2.3 MB of float32 weights), the SDE, objective and stored sampler of each file, that the file
holds the EMA weights and the run config only and loads with weights_only=True, that it holds no absolute
path, and the card's own PSNR numbers, reproduced with its procedure (benchmarks/full_size.py) on the
images the card names when ../shared/data is present (those tests skip cleanly without it).
"""

from __future__ import annotations

import re
import numpy as np
import pytest
import torch

from conftest import REPO
from mrlight.checkpoint import load_checkpoint, network_from_checkpoint
from mrlight.data.degradations import build_degradation
from mrlight.inference import Restorer

SHIPPED = {
    "denoise": REPO / "checkpoints" / "mrlight-denoise-s25-cpu.ckpt",
    "derain": REPO / "checkpoints" / "mrlight-derain-rain100h-cpu.ckpt",
}
CARD = REPO / "checkpoints" / "README.md"
DATA = REPO.parent / "shared" / "data"

# What checkpoints/README.md states. Common to both: the network, objective, EMA and stored sampler.
CARD_NETWORK = {"name": "nafnet-tiny", "overrides": {"enc_blocks": [1, 1, 2], "mid_blocks": 2, "dec_blocks": [1, 1, 1]}}
CARD_OBJECTIVE = {"prediction": "data", "loss": "l1"}
CARD_SAMPLER = {"sampler": "mr", "solver": "ode", "order": 2, "parameterization": "data", "nfe": 10,
                # and nothing else switched on (docs/results/full_*.md list the stored sampler in full)
                "time_schedule": None, "corrector": "none", "thresholding": False, "denoise_last": False}
# Per file: the task, the SDE and the global_step (the last training stage's steps).
CARD_TASK = {
    "denoise": dict(task="denoise", sde={"T": 100, "max_sigma": 50, "schedule": "cosine", "eps": 0.005}, step=16000),
    "derain": dict(task="derain-split", sde={"T": 100, "max_sigma": 10, "schedule": "cosine", "eps": 0.005}, step=4500),
}


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(-10 * torch.log10(torch.mean((x - y) ** 2)))


@pytest.mark.parametrize("task", sorted(SHIPPED))
def test_shipped_file_is_small_safe_and_described(task):
    path = SHIPPED[task]
    assert path.is_file(), f"{path} is missing"
    assert path.stat().st_size <= 5 * 2**20  # the project's limit for files in checkpoints/ (ship_model.py)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "hyper_parameters", "global_step"}  # EMA weights and config only
    assert set(raw["hyper_parameters"]) == {"config"} and raw["global_step"] == CARD_TASK[task]["step"]
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in raw["state_dict"].values())
    assert all(k.startswith("net.") for k in raw["state_dict"])

    ckpt = load_checkpoint(path)  # the project's loader (weights_only=True)
    config = ckpt["hyper_parameters"]["config"]
    assert config["task"] == CARD_TASK[task]["task"]
    assert config["network"] == CARD_NETWORK
    assert {k: config["objective"][k] for k in CARD_OBJECTIVE} == CARD_OBJECTIVE
    assert config["sde"] == CARD_TASK[task]["sde"]
    assert config["ema"]["enabled"] is True and config["ema"]["decay"] == 0.999 and config["ema"]["warmup"] is True
    assert {k: config["sampler"].get(k) for k in CARD_SAMPLER} == CARD_SAMPLER

    net = network_from_checkpoint(ckpt, path)  # strict: every stored weight fits the card's network
    n = sum(p.numel() for p in net.parameters())
    assert n == sum(v.numel() for v in ckpt["state_dict"].values())
    assert f"{n / 1e6:.2f} M" == "0.59 M" and f"{4 * n / 1e6:.1f} MB" == "2.3 MB"  # the card's figures
    assert "0.59 M parameters" in CARD.read_text() and "2.3 MB" in CARD.read_text()

    restorer = Restorer.from_checkpoint(path)  # what sample.py uses: the stored sampler, unchanged
    assert {k: restorer.sampler.get(k) for k in CARD_SAMPLER} == CARD_SAMPLER
    assert restorer.prediction == "data"
    assert path.name in CARD.read_text()


def _strings(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}[{i}]")
    elif isinstance(value, str):
        yield key, value


def _absolute_paths(text: str) -> list[str]:
    """Absolute POSIX, home (~/), Windows-drive or UNC paths among the words of `text` (also after `=`)."""
    found = []
    for word in re.split(r"[\s=,;'\"()\[\]{}<>]+", text):
        if ((word.startswith("/") and len(word) > 1 and not word.startswith("//"))
                or re.match(r"~[\w.-]*/|[A-Za-z]:[\\/]|\\\\\w", word)):
            found.append(word)
    return found


def test_absolute_path_detector():
    assert _absolute_paths("/work/shared/data") == ["/work/shared/data"]
    assert _absolute_paths("data.root=/home/me/x") == ["/home/me/x"]
    assert _absolute_paths("C:\\data\\x") and _absolute_paths("~/data") and _absolute_paths("\\\\server\\share\\x")
    for relative in ("../shared/data", "checkpoints/a.ckpt", "CBSD68 / Kodak24", "https://github.com/a/b", "a:b",
                     "kuijiang94/MSPFN model/test/test_data/R100H", "11..100", "cosine"):
        assert _absolute_paths(relative) == [], relative


@pytest.mark.parametrize("path", sorted((REPO / "checkpoints").glob("*.ckpt")), ids=lambda p: p.name)
def test_shipped_checkpoints_hold_no_absolute_paths(path):
    """A shipped file's stored config is read back by sample.py and init_from fine-tuning on other machines:
    paths of the machine it was trained on (output_dir, init_from, data.*_dir) must not be in it."""
    config = load_checkpoint(path)["hyper_parameters"]
    offending = {key: value for key, value in _strings(config) if _absolute_paths(value)}
    assert not offending, f"{path.name} stores absolute paths: {offending}"


def test_shipped_denoiser_beats_its_noisy_input():
    """Needs no data folder: a 64-px crop of a scikit-image photograph with sigma-25 noise gains at least the
    card's average gain on CBSD68 (28.20 - 20.53 = 7.67 dB; measured here: about 11.9 dB)."""
    import skimage.data

    gt = torch.from_numpy(skimage.data.coffee()[100:164, 200:264].copy()).permute(2, 0, 1).float() / 255
    noisy = build_degradation({"name": "noise", "sigma": 25})(gt, np.random.default_rng(0)).float()
    out = Restorer.from_checkpoint(SHIPPED["denoise"])(noisy, name="coffee")
    assert out.shape == gt.shape and torch.isfinite(out).all()
    assert psnr(out, gt) > psnr(noisy, gt) + 7.67


def _card_metrics(task: str, config_task: str, images: int) -> dict:
    """benchmarks/full_size.py on the first `images` full-size test images: LQ made by the task's data code
    (seed 42), x_T from seed i, the checkpoint's sampler; mean per-image PSNR / SSIM of LQ and output."""
    from mrlight.config import load_config
    from mrlight.data import build_datamodule
    from mrlight.metrics import RestorationMetrics
    from mrlight.sampling import sample

    cfg = load_config([f"task={config_task}", f"data.root={DATA}", "data.val_crop=null", "data.num_workers=0",
                       "seed=42"], REPO / "configs")
    datamodule = build_datamodule(cfg.data, seed=int(cfg.seed))
    datamodule.setup("test")
    dataset = datamodule.datasets["test"]
    restorer = Restorer.from_checkpoint(SHIPPED[task])
    opts = {k: v for k, v in restorer.sampler.items() if v is not None}
    metrics = {"lq": RestorationMetrics(lpips="off"), "out": RestorationMetrics(lpips="off")}
    for i in range(images):
        item = dataset[i]
        lq, gt = item["lq"][None].float(), item["gt"][None].float()
        x_T = restorer.sde.prior_sample(lq, torch.Generator().manual_seed(i))
        with torch.inference_mode():
            out = sample(restorer.net, lq, restorer.sde, prediction=restorer.prediction, x_T=x_T,
                         generator=torch.Generator().manual_seed(10_000 + i), **opts).clamp(0, 1)
        metrics["lq"].update(lq, gt)
        metrics["out"].update(out, gt)
    return {key: {name: float(v) for name, v in m.compute().items()} for key, m in metrics.items()}


@pytest.mark.skipif(not (DATA / "Rain100H").is_dir(), reason="Rain100H test pairs not present (../shared/data)")
def test_shipped_derainer_reproduces_the_cards_images_1_2():
    """checkpoints/README.md, docs/results/full_derain.md: on full-size Rain100H images 1-2 (held out from
    training) MR@10 scores 25.02 dB PSNR / 0.6548 SSIM against 14.41 dB for the rainy input (~8 s)."""
    got = _card_metrics("derain", "derain-split", 2)
    assert got["lq"]["psnr"] == pytest.approx(14.41, abs=0.01)
    assert got["out"]["psnr"] == pytest.approx(25.02, abs=0.05), got
    assert got["out"]["ssim"] == pytest.approx(0.6548, abs=0.002), got


@pytest.mark.slow  # 8 full-size images at NFE 10: ~35 s on one thread
@pytest.mark.skipif(not (DATA / "CBSD68").is_dir(), reason="CBSD68 not present (../shared/data)")
def test_shipped_denoiser_reproduces_the_cards_first_8_cbsd68_images():
    """checkpoints/README.md, docs/results/full_denoise.md: on the first 8 full-size CBSD68 images with noise
    sigma 25, MR@10 scores 29.02 dB PSNR / 0.8155 SSIM against 20.47 dB for the noisy input."""
    got = _card_metrics("denoise", "denoise", 8)
    assert got["lq"]["psnr"] == pytest.approx(20.47, abs=0.01)
    assert got["out"]["psnr"] == pytest.approx(29.02, abs=0.05), got
    assert got["out"]["ssim"] == pytest.approx(0.8155, abs=0.002), got


def test_noise_prediction_denoiser_is_what_its_card_says():
    """The noise-prediction snapshot: named for what it is, predicts noise with the published Refusion
    layers, no machine paths, weights_only, and restores a real crop well above its noisy input."""
    from skimage import data as skdata

    path = REPO / "checkpoints" / "mrlight-noise-denoise-s25-cpu.ckpt"
    assert "noise" in path.name and "denois" in path.name and path.stat().st_size <= 5 * 2**20
    raw = torch.load(path, map_location="cpu", weights_only=True)
    config = raw["hyper_parameters"]["config"]
    assert config["objective"]["prediction"] == "noise" and config["network"]["name"] == "refusion-nafnet"
    assert path.name in CARD.read_text() and "0.52 M parameters" in CARD.read_text()
    restorer = Restorer.from_checkpoint(path)
    clean = torch.from_numpy(skdata.coffee()[100:164, 200:264].copy()).permute(2, 0, 1).float() / 255
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    out = restorer(noisy, name="coffee", sampler="posterior", nfe=100)

    def psnr(a, b):
        return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))

    assert psnr(out, clean) >= psnr(noisy, clean) + 4.0  # the card: posterior@100 +7.1 dB at step 20000 on held-out CBSD68 crops


@pytest.mark.parametrize("calls", [1, 2])
def test_distilled_noise_denoiser_restores_in_its_calls_as_its_card_says(calls):
    """The distilled students of the noise-prediction denoiser: named for what they are, EMA weights and
    config only (weights_only), no machine paths, `sampler: distilled` with their number of calls, a
    teacher recorded relative to the repository; sample.py's path restores a real crop well above its
    noisy input in exactly `calls` network calls."""
    from skimage import data as skdata

    from mrlight.checkpoint import absolute_paths

    path = REPO / "checkpoints" / f"mrlight-distill{calls}-noise-denoise-s25-cpu.ckpt"
    assert "distill" in path.name and path.stat().st_size <= 5 * 2**20 and path.name in CARD.read_text()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    config = raw["hyper_parameters"]["config"]
    assert config["sampler"]["sampler"] == "distilled" and config["sampler"]["nfe"] == calls
    assert config["distill"]["teacher"] == "checkpoints/mrlight-noise-denoise-s25-cpu.ckpt"
    assert len(config["distill"]["times"]) == calls + 1 and absolute_paths(config) == []
    restorer = Restorer.from_checkpoint(path)
    seen = []
    forward = restorer.net.forward
    restorer.net.forward = lambda *a, **k: seen.append(1) or forward(*a, **k)
    clean = torch.from_numpy(skdata.coffee()[100:164, 200:264].copy()).permute(2, 0, 1).float() / 255
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    out = restorer(noisy, name="coffee")

    def psnr(a, b):
        return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))

    assert len(seen) == calls
    assert psnr(out, clean) >= psnr(noisy, clean) + 4.0  # the card: +6.4 / +6.6 dB on held-out CBSD68 crops (1 / 2 calls)
