"""The DataModule and check_data over every task config, with tiny fake data sets in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from mrlight.data import DataError, build_datamodule, check_data
from mrlight.data.demo import main as demo_main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TASKS = sorted(p.stem for p in (CONFIGS / "task").glob("*.yaml"))


def data_config(task: str, **overrides):
    """defaults <- task file <- overrides, as train.py merges them; returns the data: node."""
    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / "defaults.yaml"), OmegaConf.load(CONFIGS / "task" / f"{task}.yaml"),
                          OmegaConf.from_dotlist([f"data.{k}={v}" for k, v in overrides.items()]))
    return cfg.data


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def fake_data(options, n: int = 4, size: int = 48) -> None:
    """Lay out small images wherever a resolved data: block expects them."""
    rng = np.random.default_rng(0)
    subsets = options.subsets or [""]
    for split in ("train", "val", "test"):
        for subset in subsets:
            folder = Path(options[f"{split}_dir"]) / subset
            for i in range(1, n + 1):
                gt = rng.integers(0, 256, (size, size, 3))
                _save(folder / options.gt_subdir / f"{i}{'_clean' if options.pair_by == 'prefix' else ''}.png", gt)
                if options.layout == "paired":
                    _save(folder / options.lq_subdir / f"{i}_x.png", 255 - gt)
    for step in [options.degradation] if options.degradation else []:
        if step.get("mask_dir"):
            _save(Path(step.mask_dir) / "0.png", np.where(rng.random((32, 32, 1)) < 0.3, 0, 255).repeat(3, 2))


def _pair_names(options):
    # with pair_by=stem the LQ files must carry the GT names: rename "<i>_x" -> "<i>"
    if options.layout == "paired" and options.pair_by == "stem":
        for split in ("train", "val", "test"):
            for subset in options.subsets or [""]:
                for path in (Path(options[f"{split}_dir"]) / subset / options.lq_subdir).glob("*_x.png"):
                    path.rename(path.with_name(path.name.replace("_x", "")))


@pytest.mark.parametrize("task", [t for t in TASKS if t != "demo"])
def test_every_task_loads_when_present_and_names_the_path_when_absent(task, tmp_path):
    options = data_config(task, root=str(tmp_path), num_workers=0)
    with pytest.raises(DataError) as missing:
        check_data(options)
    message = str(missing.value)
    assert "not found: missing folder" in message and str(tmp_path) in message and "Expected layout" in message
    assert "\n  " in message and "Traceback" not in message

    resolved = OmegaConf.create(OmegaConf.to_container(options, resolve=True))
    fake_data(resolved, n=2 if resolved.subsets else 4)
    _pair_names(resolved)
    options = data_config(task, root=str(tmp_path), num_workers=0, train_names="null", val_names="null")
    check_data(options)
    dm = build_datamodule(options, seed=1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    patch = resolved.patch_size
    assert batch["lq"].shape == batch["gt"].shape == (resolved.batch_size, 3, patch, patch)
    assert batch["lq"].dtype == torch.float32 and batch["gt"].max() <= 1
    assert 0 <= batch["lq"].min() or task == "sr4x"  # sr4x: IR-SDE's unclamped bicubic up-sampling
    assert len(batch["name"]) == resolved.batch_size and all(isinstance(n, str) for n in batch["name"])
    val = next(iter(dm.val_dataloader()))
    assert val["lq"].shape[0] == 1 and val["lq"].shape == val["gt"].shape
    test = next(iter(dm.test_dataloader()))
    assert test["lq"].shape[1] == 3


def _tiny_paired(tmp_path, n=6):
    for split, count in (("train", n), ("val", 2)):
        for i in range(count):
            gt = np.random.default_rng(i).integers(0, 256, (24, 24, 3))
            _save(tmp_path / "tiny" / split / "GT" / f"{i}.png", gt)
            _save(tmp_path / "tiny" / split / "LQ" / f"{i}.png", 255 - gt)
    return dict(root=str(tmp_path), name="tiny", patch_size=16, batch_size=2, num_workers=0, degradation="null",
                samples_per_epoch="null")


def test_datamodule_contract_setup_idempotent_and_workers(tmp_path):
    options = data_config("demo", **_tiny_paired(tmp_path))
    dm = build_datamodule(options, seed=0)
    dm.setup("fit")
    first = dm.datasets["train"]
    dm.setup("fit")
    dm.setup(None)
    assert dm.datasets["train"] is first and dm.datasets["test"] is not None
    assert len(dm.train_dataloader()) == 3 and len(dm.val_dataloader()) == 2

    options = data_config("demo", **{**_tiny_paired(tmp_path), "num_workers": 2})
    loader = build_datamodule(options).train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers and loader.drop_last
    batches = list(loader)
    assert len(batches) == 3 and all(torch.allclose(b["lq"], 1 - b["gt"], atol=1e-6) for b in batches)


def test_batch_size_is_checked_against_world_size(tmp_path):
    options = data_config("demo", **_tiny_paired(tmp_path))
    dm = build_datamodule(options)
    dm.trainer = SimpleNamespace(world_size=4)  # 6 images < 2 per device x 4 devices
    with pytest.raises(DataError, match=r"2 x 4 = 8"):
        dm.setup("fit")
    options = data_config("demo", **{**_tiny_paired(tmp_path), "batch_size": 8})
    with pytest.raises(DataError, match="fewer than data.batch_size"):
        check_data(options)
    check_data(data_config("demo", **{**_tiny_paired(tmp_path), "batch_size": 8, "samples_per_epoch": 16}))


def test_validation_is_identical_across_epochs_and_loaders(tmp_path):
    for i in range(3):
        _save(tmp_path / "c" / "GT" / f"{i}.png", np.full((16, 16, 3), 100 + i))
    options = data_config("denoise", root=str(tmp_path), train_dir=str(tmp_path / "c"), val_dir=str(tmp_path / "c"),
                          num_workers=0, batch_size=2)
    a = [b["lq"] for b in build_datamodule(options, seed=3).val_dataloader()]
    b = [b["lq"] for b in build_datamodule(options, seed=3).val_dataloader()]
    options2 = data_config("denoise", root=str(tmp_path), train_dir=str(tmp_path / "c"), val_dir=str(tmp_path / "c"),
                           num_workers=2, batch_size=2)
    c = [b["lq"] for b in build_datamodule(options2, seed=3).val_dataloader()]
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c))


@pytest.mark.parametrize("key, value, match", [
    ("layout", "pairs", "data.layout='pairs' is not valid; choose one of: paired, clean"),
    ("pair_by", "order", "choose one of: stem, prefix"),
    ("small_images", "crop", "pad, error"),
    ("patch_size", 0, "positive integer"),
    ("degradation", "{name: blur}", "unknown degradation 'blur'"),
])
def test_bad_keys_name_the_key_and_choices(tmp_path, key, value, match):
    options = data_config("demo", **{**_tiny_paired(tmp_path), key: value})
    with pytest.raises(DataError, match=match):
        build_datamodule(options)


def test_config_combinations_are_refused_clearly(tmp_path):
    with pytest.raises(DataError, match="layout=clean needs data.degradation"):
        build_datamodule(data_config("denoise", root=str(tmp_path), degradation="null"))
    with pytest.raises(DataError, match="only used with data.layout=clean"):
        build_datamodule(data_config("derain", root=str(tmp_path), degradation="{name: noise}"))
    with pytest.raises(DataError, match="multiple of 4"):
        build_datamodule(data_config("sr4x", root=str(tmp_path), patch_size=30))


def test_demo_is_built_when_absent_and_rebuilt_for_another_degradation(tmp_path):
    options = data_config("demo", root=str(tmp_path), num_workers=0)
    check_data(options)  # builds it
    demo = tmp_path / "demo"
    assert len(list((demo / "train" / "GT").glob("*.png"))) == 12 and len(list((demo / "val" / "LQ").glob("*.png"))) == 4
    manifest = json.loads((demo / "manifest.json").read_text())
    assert manifest["degradation"] == {"name": "rain"}
    dm = build_datamodule(options)
    val = list(dm.val_dataloader())
    assert len(val) == 4 and val[0]["lq"].shape == (1, 3, 160, 160)
    mse = torch.stack([((b["lq"] - b["gt"]) ** 2).mean() for b in val]).mean()
    assert 12 < -10 * torch.log10(mse) < 30, "rain must be visible but not destroy the image"
    stamp = (demo / "val" / "LQ" / "astronaut_01.png").stat().st_mtime_ns
    check_data(options)  # current: untouched
    assert (demo / "val" / "LQ" / "astronaut_01.png").stat().st_mtime_ns == stamp
    demo_main(["--root", str(tmp_path), "--degradation", "noise"])
    assert json.loads((demo / "manifest.json").read_text())["degradation"] == {"name": "noise"}
    assert not list(tmp_path.glob(".demo-*")), "no staging folders left behind"


def test_unwritable_demo_root_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the data root should be")
    with pytest.raises(DataError, match="cannot write the demo data set"):
        check_data(data_config("demo", root=str(blocker / "sub")))
