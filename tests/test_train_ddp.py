"""DDP on two CPU processes (gloo), launched the way users launch it: a subprocess of train.py."""

import csv
import math

import pytest
import torch

from conftest import run_script
from mrlight.data import read_image


@pytest.mark.slow
def test_ddp_two_cpu_ranks_train_and_reduce_validation(env, tmp_path, tiny_root):
    out = tmp_path / "run"
    args = ["task=tiny", f"output_dir={out}", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2",
            "val.every_n_steps=2", "val.max_images=2", "val.lpips=false"]
    proc = run_script("train.py", args, env, tmp_path, timeout=400)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "rank 1: finished at step 2" in log  # the second rank trained to the end
    assert "checkpoint:" in proc.stdout and (out / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader(open(next((out / "csv").rglob("metrics.csv")))))
    val = [r for r in rows if r.get("val/psnr_lq")]
    assert val, rows
    # Rank 0 restores val image 0 and rank 1 image 1: the logged LQ PSNR is the mean over both.
    per_image = []
    for name in ("img00.png", "img01.png"):
        lq = read_image(tiny_root / "tiny" / "val" / "LQ" / name)
        gt = read_image(tiny_root / "tiny" / "val" / "GT" / name)
        per_image.append(10 * math.log10(1 / torch.mean((lq - gt) ** 2).item()))
    assert float(val[-1]["val/psnr_lq"]) == pytest.approx(sum(per_image) / 2, rel=1e-4)
    assert float(val[-1]["val/psnr_lq"]) != pytest.approx(per_image[0], rel=1e-4)
