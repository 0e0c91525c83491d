"""Folders, pairing by name, name selection, crops/augmentation, bad input, the mixed set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrlight.data import DataError, MixedDataset, RestorationDataset, build_degradation
from mrlight.data.datasets import Cycled, collate
from mrlight.data.folders import check_sizes, scan_clean, scan_paired, select


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _textured(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3))


def _pairs(folder: Path, names, h=24, w=32, lq_fn=lambda gt: 255 - gt):
    for i, name in enumerate(names):
        gt = _textured(h, w, i)
        _save(folder / "GT" / f"{name}.png", gt)
        _save(folder / "LQ" / f"{name}.png", lq_fn(gt))


def test_pairs_by_name_not_by_sorted_order(tmp_path):
    # LQ files with other extensions and another sorted order than GT: "10" < "2" as strings
    for i, name in enumerate(["2", "10", "1"]):
        gt = np.full((8, 8, 3), 10 * i + 10)
        _save(tmp_path / "GT" / f"{name}.png", gt)
        _save(tmp_path / "LQ" / f"{name}.{'bmp' if i else 'png'}", gt + 1)
    samples = scan_paired(tmp_path)
    assert [s.name for s in samples] == ["1", "2", "10"]  # natural order
    data = RestorationDataset(samples, train=False)
    for item in data:
        assert torch.allclose(item["lq"], item["gt"] + 1 / 255, atol=1e-6), item["name"]


def test_unpaired_names_are_listed(tmp_path):
    _pairs(tmp_path, ["a", "b"])
    _save(tmp_path / "LQ" / "only_lq.png", _textured(24, 32, 9))
    _save(tmp_path / "GT" / "only_gt.png", _textured(24, 32, 9))
    with pytest.raises(DataError, match=r"only_lq.*only_gt"):
        scan_paired(tmp_path)


def test_duplicate_names_and_empty_or_missing_folders(tmp_path):
    _pairs(tmp_path, ["a"])
    _save(tmp_path / "GT" / "a.jpg", _textured(24, 32, 1))
    with pytest.raises(DataError, match="a.png = a.jpg|a.jpg = a.png"):
        scan_paired(tmp_path)
    (tmp_path / "empty" / "GT").mkdir(parents=True)
    (tmp_path / "empty" / "GT" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty/GT holds no images"):
        scan_clean(tmp_path / "empty")
    with pytest.raises(DataError, match=r"missing folder .*nowhere/GT"):
        scan_clean(tmp_path / "nowhere")


def test_prefix_pairing_sots_and_raindrop_styles(tmp_path):
    _save(tmp_path / "sots" / "GT" / "0001.png", _textured(8, 8, 0))
    _save(tmp_path / "sots" / "LQ" / "0001_0.8_0.2.jpg", _textured(8, 8, 0))
    _save(tmp_path / "sots" / "LQ" / "0001_0.9_0.1.jpg", _textured(8, 8, 0))
    samples = scan_paired(tmp_path / "sots", pair_by="prefix")
    assert [s.name for s in samples] == ["0001_0.8_0.2", "0001_0.9_0.1"]  # two hazy versions of one GT
    assert {s.gt.name for s in samples} == {"0001.png"}
    _save(tmp_path / "drop" / "GT" / "3_clean.png", _textured(8, 8, 0))
    _save(tmp_path / "drop" / "LQ" / "3_rain.png", _textured(8, 8, 0))
    assert [s.name for s in scan_paired(tmp_path / "drop", pair_by="prefix")] == ["3"]
    with pytest.raises(DataError, match="do not pair up"):
        scan_paired(tmp_path / "drop", pair_by="stem")


def test_name_selection_ranges_lists_and_unknown_names(tmp_path):
    _pairs(tmp_path, [str(i) for i in range(1, 16)], h=8, w=8)
    samples = scan_paired(tmp_path)
    assert [s.name for s in select(samples, "11..15", "data.train_names", tmp_path)] == ["11", "12", "13", "14", "15"]
    assert [s.name for s in select(samples, "1..3,7", "k", tmp_path)] == ["1", "2", "3", "7"]
    assert [s.name for s in select(samples, [2, "5"], "k", tmp_path)] == ["2", "5"]
    assert select(samples, None, "k", tmp_path) == samples
    with pytest.raises(DataError, match="data.val_names names not found.*bogus"):
        select(samples, ["1", "bogus"], "data.val_names", tmp_path)
    with pytest.raises(DataError, match="selects no image"):
        select(samples, "100..200", "data.val_names", tmp_path)


def test_training_crops_stay_aligned_through_flips_and_rotations(tmp_path):
    _pairs(tmp_path, ["a", "b"], h=40, w=56)
    data = RestorationDataset(scan_paired(tmp_path), train=True, patch_size=16)
    crops = set()
    for _ in range(20):
        item = data[0]
        assert item["lq"].shape == item["gt"].shape == (3, 16, 16)
        assert torch.allclose(item["lq"], 1 - item["gt"], atol=1e-6)  # LQ = 255 - GT, pixel for pixel
        crops.add(item["gt"].sum().item())
    assert len(crops) > 10, "random crops / augmentations must differ"


def test_super_resolution_crop_is_scale_aware(tmp_path):
    # GT = LQ with every pixel repeated 4x4, so an aligned GT patch is constant on 4x4 blocks matching LQ
    for i in range(2):
        lq = _textured(12, 16, i)
        _save(tmp_path / "GT" / f"{i}.png", np.kron(lq, np.ones((4, 4, 1))))
        _save(tmp_path / "LQ" / f"{i}.png", lq)
    samples = scan_paired(tmp_path)
    check_sizes(samples, scale=4)
    data = RestorationDataset(samples, train=True, patch_size=16, scale=4)
    for _ in range(10):
        item = data[1]
        assert item["lq"].shape == item["gt"].shape == (3, 16, 16)
        blocks = item["gt"].reshape(3, 4, 4, 4, 4).mean(dim=(2, 4))  # GT averaged back to LQ resolution
        lq_small = torch.nn.functional.interpolate(item["lq"][None], size=(4, 4), mode="area")[0]
        assert (blocks - lq_small).abs().mean() < 0.08  # aligned (misalignment by one LQ pixel gives ~0.3)
    full = RestorationDataset(samples, train=False, scale=4)[0]
    assert full["lq"].shape == full["gt"].shape == (3, 48, 64)


def test_size_mismatch_small_images_and_truncated_files(tmp_path):
    _save(tmp_path / "GT" / "x.png", _textured(20, 20, 0))
    _save(tmp_path / "LQ" / "x.png", _textured(20, 24, 0))
    samples = scan_paired(tmp_path)
    with pytest.raises(DataError, match=r"LQ/x.png is 20x24.*GT/x.png is 20x20"):
        check_sizes(samples)
    with pytest.raises(DataError, match="sizes disagree"):
        RestorationDataset(samples, train=False)[0]

    _pairs(tmp_path / "small", ["s"], h=10, w=12)
    small = scan_paired(tmp_path / "small")
    padded = RestorationDataset(small, train=True, patch_size=16, small_images="pad")[0]
    assert padded["gt"].shape == (3, 16, 16) and torch.allclose(padded["lq"], 1 - padded["gt"], atol=1e-6)
    with pytest.raises(DataError, match=r"small/GT/s.png is 10x12, smaller than the patch size 16"):
        RestorationDataset(small, train=True, patch_size=16, small_images="error")[0]

    _pairs(tmp_path / "broken", ["t"])
    gt = tmp_path / "broken" / "GT" / "t.png"
    gt.write_bytes(gt.read_bytes()[:100])
    with pytest.raises(DataError, match="broken/GT/t.png"):
        RestorationDataset(scan_paired(tmp_path / "broken"), train=True, patch_size=8)[0]


def test_clean_layout_validation_is_deterministic_per_image(tmp_path):
    for i in range(3):
        _save(tmp_path / "GT" / f"{i}.png", np.full((16, 16, 3), 128))
    noise = build_degradation({"name": "noise", "sigma": 25})
    val = RestorationDataset(scan_clean(tmp_path), train=False, degradation=noise, seed=7)
    first = [val[i]["lq"] for i in range(3)]
    assert all(torch.equal(a, val[i]["lq"]) for i, a in enumerate(first))  # same every epoch
    assert not torch.equal(first[0], first[1])  # but different per image
    other_seed = RestorationDataset(scan_clean(tmp_path), train=False, degradation=noise, seed=8)
    assert not torch.equal(first[0], other_seed[0]["lq"])
    train = RestorationDataset(scan_clean(tmp_path), train=True, patch_size=8, degradation=noise)
    assert not torch.equal(train[0]["lq"], train[0]["lq"])  # fresh noise every draw
    with pytest.raises(DataError, match="need data.degradation"):
        RestorationDataset(scan_clean(tmp_path), train=True)


def test_center_crop_and_bicubic_multiple(tmp_path):
    _save(tmp_path / "GT" / "a.png", _textured(30, 42, 0))
    bicubic = build_degradation({"name": "bicubic", "scale": 4})
    full = RestorationDataset(scan_clean(tmp_path), train=False, degradation=bicubic)[0]
    assert full["gt"].shape == full["lq"].shape == (3, 28, 40)  # cropped to multiples of 4
    crop = RestorationDataset(scan_clean(tmp_path), train=False, degradation=bicubic, crop=16)[0]
    assert crop["gt"].shape == (3, 16, 16)


def test_mixed_set_samples_types_evenly_and_names_them(tmp_path):
    _pairs(tmp_path / "rainy", [str(i) for i in range(6)], h=8, w=8)
    _pairs(tmp_path / "hazy", ["0"], h=8, w=8)
    parts = {t: RestorationDataset(scan_paired(tmp_path / t), train=True, patch_size=8) for t in ("rainy", "hazy")}
    mixed = MixedDataset(parts, train=True)
    assert len(mixed) == 12
    types = [mixed[i]["name"].split("/")[0] for i in range(len(mixed))]
    assert types.count("rainy") == types.count("hazy") == 6
    parts = {t: RestorationDataset(scan_paired(tmp_path / t), train=False) for t in ("rainy", "hazy")}
    val = MixedDataset(parts, train=False)
    assert len(val) == 7 and [val[i]["name"] for i in range(3)] == ["rainy/0", "hazy/0", "rainy/1"]
    assert len(Cycled(val, 20)) == 20 and Cycled(val, 20)[7]["name"] == "rainy/0"


def test_collate_names_sizes_that_cannot_batch():
    a = {"lq": torch.zeros(3, 4, 4), "gt": torch.zeros(3, 4, 4), "name": "a"}
    b = {"lq": torch.zeros(3, 4, 6), "gt": torch.zeros(3, 4, 6), "name": "b"}
    batch = collate([a, a])
    assert batch["lq"].shape == (2, 3, 4, 4) and batch["name"] == ["a", "a"]
    with pytest.raises(DataError, match=r"a: 4x4, b: 4x6.*val_batch_size=1"):
        collate([a, b])


def test_super_resolution_lq_is_upsampled_as_irsde_does(tmp_path):
    """mu of IR-SDE's SR model: `F.interpolate(LQ, scale_factor=4, mode="bicubic")` (its util.upscale):
    torch's bicubic without antialiasing and without clamping, so sharp edges overshoot [0, 1]."""
    lq = np.zeros((6, 8, 3))
    lq[:, 4:] = 255  # a hard edge: bicubic (a = -0.75) rings below 0 and above 1
    _save(tmp_path / "LQ" / "0.png", lq)
    _save(tmp_path / "GT" / "0.png", np.kron(lq, np.ones((4, 4, 1))))
    item = RestorationDataset(scan_paired(tmp_path), train=False, scale=4)[0]
    small = torch.from_numpy(lq.transpose(2, 0, 1)).float()[None] / 255
    expected = torch.nn.functional.interpolate(small, scale_factor=4, mode="bicubic")[0]
    assert torch.equal(item["lq"], expected)
    assert item["lq"].min() < -0.05 and item["lq"].max() > 1.05  # not clamped
