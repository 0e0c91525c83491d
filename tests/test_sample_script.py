"""sample.py end to end: restored PNGs, the metrics table with gt, and refusals that lose nothing."""

import hashlib

import pytest

from conftest import run_script
from mrlight.data import read_image
from mrlight.training import run


@pytest.fixture
def ckpt(load_tiny, env):
    return run(load_tiny("trainer.max_steps=1")).last_checkpoint


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_sample_with_gt_prints_table(ckpt, env, tmp_path, tiny_root):
    val = tiny_root / "tiny" / "val"
    out = tmp_path / "restored"
    proc = run_script("sample.py", [f"ckpt={ckpt}", f"input={val / 'LQ'}", f"output={out}", f"gt={val / 'GT'}",
                                    "lpips=random", "sampler.nfe=3"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("img00.png", "img01.png", "img02.png"):
        assert read_image(out / name).shape == read_image(val / "LQ" / name).shape
    header = next(line for line in proc.stdout.splitlines() if line.startswith("name"))
    assert all(c in header for c in ("psnr", "psnr_y", "ssim", "ssim_y", "lpips"))
    assert any(line.startswith("mean") for line in proc.stdout.splitlines())
    assert (out / "metrics.csv").read_text().count("\n") == 5  # header, 3 images, mean
    assert "nfe=3" in proc.stderr  # the progress bar names the sampler


def test_sample_single_file_without_gt_tiled(ckpt, env, tmp_path, tiny_root):
    lq = tiny_root / "tiny" / "val" / "LQ" / "img01.png"
    out = tmp_path / "restored"
    proc = run_script("sample.py", [f"ckpt={ckpt}", f"input={lq}", f"output={out}", "tile=16", "tile_overlap=4",
                                    "sampler.sampler=posterior", "sampler.nfe=4"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in out.iterdir()] == ["img01.png"]
    assert "psnr" not in proc.stdout


@pytest.mark.parametrize("case", ["output_is_input", "unknown_key", "bad_ckpt", "missing_gt", "bad_order"])
def test_sample_refuses_bad_input(ckpt, env, tmp_path, tiny_root, case):
    val = tiny_root / "tiny" / "val"
    before = _digest(val / "LQ")
    args = {"output_is_input": [f"input={val / 'LQ'}", f"output={val / 'LQ'}"],
            "unknown_key": [f"input={val / 'LQ'}", f"output={tmp_path / 'o'}", "sampler.nfee=3"],
            "bad_ckpt": [f"input={val / 'LQ'}", f"output={tmp_path / 'o'}"],
            "missing_gt": [f"input={val / 'LQ'}", f"output={tmp_path / 'o'}", f"gt={tmp_path}"],
            "bad_order": [f"input={val / 'LQ'}", f"output={tmp_path / 'o'}", "sampler.order=7"]}[case]
    path = ckpt
    if case == "bad_ckpt":
        path = tmp_path / "truncated.ckpt"
        path.write_bytes(ckpt.read_bytes()[:4000])
    proc = run_script("sample.py", [f"ckpt={path}", *args], env, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    expected = {"output_is_input": "never overwrites", "unknown_key": "did you mean 'sampler.nfe'",
                "bad_ckpt": "not a readable checkpoint", "missing_gt": "no ground truth",
                "bad_order": "valid: 1, 2, 3"}[case]
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert _digest(val / "LQ") == before
    assert not (tmp_path / "o").exists()  # nothing written
