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


def test_a_network_that_returns_nan_ends_in_one_clear_line(ckpt, env, tmp_path, tiny_root):
    import torch

    broken = torch.load(ckpt, map_location="cpu", weights_only=True)
    broken["state_dict"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in broken["state_dict"].items()}
    path = tmp_path / "nan.ckpt"
    torch.save(broken, path)
    proc = run_script("sample.py", [f"ckpt={path}", f"input={tiny_root / 'tiny' / 'val' / 'LQ'}",
                                    f"output={tmp_path / 'o'}", "sampler.nfe=3", "progress=false"], env, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the network returned non-finite values" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "o").glob("*.png"))


def test_inputs_sharing_a_stem_get_distinct_outputs(ckpt, env, tmp_path, tiny_root):
    import shutil

    from PIL import Image

    src = tiny_root / "tiny" / "val" / "LQ" / "img00.png"
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(src, folder / "a.png")
    Image.open(src).convert("RGB").save(folder / "a.jpg", quality=95)
    proc = run_script("sample.py", [f"ckpt={ckpt}", f"input={folder}", f"output={tmp_path / 'o'}", "sampler.nfe=2",
                                    "progress=false"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_jpg.png", "a_png.png"]


def test_choosing_another_sampler_drops_the_checkpoints_sampler_options(ckpt, env, tmp_path, tiny_root):
    """The checkpoint stores MR options (order, solver...); sampler.sampler=posterior must not inherit
    them (they would be refused), and a posterior-only run takes the posterior's own default NFE."""
    args = [f"ckpt={ckpt}", f"input={tiny_root / 'tiny' / 'val' / 'LQ' / 'img00.png'}", f"output={tmp_path / 'o'}",
            "sampler.sampler=posterior", "sampler.nfe=3"]
    ok = run_script("sample.py", args, env, tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = run_script("sample.py", [*args, "sampler.denoise_last=true"], env, tmp_path)
    assert bad.returncode == 2 and "sampler.denoise_last" in bad.stderr and "Traceback" not in bad.stderr


def test_upscale_feeds_irsde_bicubic_mu(ckpt, env, tmp_path, monkeypatch):
    """upscale=4: each LR input becomes IR-SDE's SR mu, F.interpolate(LQ, scale_factor=4, mode="bicubic")
    (no antialiasing, no clamping), before restoring; gt is compared at the output size."""
    import numpy as np
    import torch
    from PIL import Image

    import sample
    from mrlight.inference import Restorer

    seen = []
    restore = Restorer.__call__

    def recording(self, lq, **kwargs):
        seen.append(lq.clone())
        return restore(self, lq, **kwargs)

    monkeypatch.setattr(Restorer, "__call__", recording)
    small = np.zeros((8, 6, 3), dtype=np.uint8)
    small[:, 3:] = 255
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(small).save(tmp_path / "in" / "a.png")
    Image.fromarray(np.kron(small, np.ones((4, 4, 1), dtype=np.uint8))).save(tmp_path / "gt" / "a.png")
    assert sample.main([f"ckpt={ckpt}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
                        f"gt={tmp_path / 'gt'}", "upscale=4", "sampler.nfe=2", "lpips=false", "progress=false"]) == 0
    expected = torch.nn.functional.interpolate(read_image(tmp_path / "in" / "a.png")[None], scale_factor=4,
                                               mode="bicubic")[0]
    assert len(seen) == 1 and torch.equal(seen[0], expected) and seen[0].min() < 0 < 1 < seen[0].max()
    assert read_image(tmp_path / "out" / "a.png").shape == (3, 32, 24)


@pytest.mark.parametrize("prediction", ["noise", "data"])
def test_sample_py_says_what_it_adds_for_a_noise_checkpoint(load_tiny, env, tmp_path, tiny_root, capsys, prediction):
    """A noise-prediction checkpoint is sampled with mrlight.sampling.noise_network_defaults added, and
    sample.py says so (with how to turn them off); a data checkpoint gets nothing added."""
    import sample

    path = run(load_tiny("trainer.max_steps=1", f"objective.prediction={prediction}")).last_checkpoint
    capsys.readouterr()
    assert sample.main([f"ckpt={path}", f"input={tiny_root / 'tiny' / 'val' / 'LQ' / 'img00.png'}",
                        f"output={tmp_path / 'o'}", "sampler.nfe=4", "lpips=false", "progress=false"]) == 0
    out = capsys.readouterr().out
    said = ("sampler.thresholding=True sampler.threshold_max=1.0 sampler.t_min=16.02 sampler.t_start=" in out
            and "turn them off" in out)
    assert said == (prediction == "noise"), out
    assert (tmp_path / "o" / "img00.png").exists()
