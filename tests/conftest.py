"""Tiny CPU fixtures for the training tests: a paired 32 px data set and a config tree with task=tiny."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

TINY_TASK = """\
data:
  root: {root}
  name: tiny
  patch_size: 16
  batch_size: 2
  val_batch_size: 1
  num_workers: 0
network:
  name: unet-tiny
  overrides: {{nf: 8}}
val:
  every_n_steps: 2
  max_images: 2
  lpips: random
  log_images: 1
sampler:
  nfe: 2
optim:
  lr: 1.0e-3
  warmup_steps: 1
logger:
  backend: csv
trainer:
  max_steps: 2
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
"""


def _write_pairs(folder: Path, n: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (folder / "LQ").mkdir(parents=True, exist_ok=True)
    (folder / "GT").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        phase = rng.uniform(0, 6.28, size=3)
        gt = np.stack([0.5 + 0.4 * np.sin(6 * xx + 4 * yy + p) for p in phase], -1)
        lq = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1)
        Image.fromarray((gt * 255).round().astype(np.uint8)).save(folder / "GT" / f"img{i:02d}.png")
        Image.fromarray((lq * 255).round().astype(np.uint8)).save(folder / "LQ" / f"img{i:02d}.png")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """<root>/tiny/{train,val}/{LQ,GT}/imgNN.png: 8 training and 3 validation pairs of 32 x 32 px."""
    root = tmp_path_factory.mktemp("data")
    _write_pairs(root / "tiny" / "train", 8, 32, seed=0)
    _write_pairs(root / "tiny" / "val", 3, 32, seed=1)
    return root


@pytest.fixture(scope="session")
def config_dir(tmp_path_factory, tiny_root) -> Path:
    """A copy of configs/ with an extra task/tiny.yaml pointing at the tiny data set."""
    target = tmp_path_factory.mktemp("configs")
    shutil.copy(REPO / "configs" / "defaults.yaml", target / "defaults.yaml")
    (target / "task").mkdir()
    for f in (REPO / "configs" / "task").glob("*.yaml"):
        shutil.copy(f, target / "task" / f.name)
    (target / "task" / "tiny.yaml").write_text(TINY_TASK.format(root=tiny_root))
    return target


@pytest.fixture
def env(tmp_path, config_dir, monkeypatch) -> dict:
    """Environment for in-process and subprocess runs: tiny config tree, W&B offline into tmp."""
    values = {"MRLIGHT_CONFIG_DIR": str(config_dir), "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
              "WANDB_SILENT": "true", "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
              "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    full = dict(os.environ)
    full["PYTHONPATH"] = str(REPO)
    return full


@pytest.fixture
def load_tiny(config_dir, tmp_path):
    """load_tiny(*overrides) -> resolved config of task=tiny with output_dir in tmp."""
    from mrlight.config import load_config

    def load(*overrides):
        return load_config(["task=tiny", f"output_dir={tmp_path / 'run'}", *overrides], config_dir)

    return load


def run_script(script: str, args: list[str], env: dict, cwd: Path, timeout: int = 300, **kw):
    import subprocess

    return subprocess.run([sys.executable, str(REPO / script), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kw)


# Two shared cores: one thread per process avoids oversubscription (tests and DDP ranks run side by side).
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
