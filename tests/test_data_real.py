"""The real benchmark images in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mrlight.data import build_datamodule, check_data
from mrlight.data.folders import check_sizes, scan_paired

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO.parent / "shared" / "data").resolve()
CONFIGS = REPO / "configs"

pytestmark = pytest.mark.skipif(not (SHARED / "README.md").is_file(), reason=f"real data not present at {SHARED}")


def data_config(task: str, *overrides: str):
    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / "defaults.yaml"), OmegaConf.load(CONFIGS / "task" / f"{task}.yaml"),
                          OmegaConf.from_dotlist([f"data.root={SHARED}", "data.num_workers=0", *overrides]))
    return cfg.data


def test_denoise_cbsd68_sigma25_after_clean_train():
    options = data_config("denoise")
    check_data(options)
    dm = build_datamodule(options, seed=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 98 and len(dm.datasets["val"]) == 68
    batch = next(iter(dm.val_dataloader()))
    assert batch["gt"].shape[-2:] in {(321, 481), (481, 321)}
    residual = batch["lq"] - batch["gt"]
    interior = residual[(batch["gt"] > 0.2) & (batch["gt"] < 0.8)]  # away from clipping
    assert abs(interior.std().item() * 255 - 25) < 1.0
    again = next(iter(build_datamodule(options, seed=0).val_dataloader()))
    assert torch.equal(again["lq"], batch["lq"])  # the same noisy test set every time


def test_derain_rain100h_split_by_name():
    options = data_config("derain-split")
    check_data(options)
    dm = build_datamodule(options)
    dm.setup("fit")
    train_names = {s.name for s in dm.datasets["train"].samples}
    val_names = [s.name for s in dm.datasets["val"].samples]
    assert train_names == {str(i) for i in range(11, 101)}
    assert val_names == [str(i) for i in range(1, 11)]
    batch = next(iter(dm.train_dataloader()))
    assert batch["lq"].shape == (4, 3, 128, 128)
    assert (batch["lq"] - batch["gt"]).mean() > 0  # rain streaks are bright


def test_sots_pairs_by_prefix_and_set5_stored_lr_x4():
    samples = scan_paired(SHARED / "SOTS-outdoor", pair_by="prefix")
    assert [(s.gt.name, s.lq.name) for s in samples] == [("0001.png", "0001_0.8_0.2.jpg"), ("0002.png", "0002_0.8_0.08.jpg")]
    options = data_config("sr4x", "data.layout=paired", "data.scale=4", "data.degradation=null",
                          "data.lq_subdir=LQ/X4", "data.train_dir=${data.root}/Set14", "data.val_dir=${data.root}/Set5")
    check_sizes(scan_paired(SHARED / "Set5", "LQ/X4"), scale=4)
    dm = build_datamodule(options)
    val = next(iter(dm.val_dataloader()))
    assert val["lq"].shape == val["gt"].shape  # LR upsampled to the HR size
    psnr = -10 * torch.log10(((val["lq"] - val["gt"]) ** 2).mean())
    assert 20 < psnr < 40, "aligned bicubic LR of Set5 is 25-35 dB from its HR"
