"""Fault tolerance: atomic checkpoints, kill -9 and SIGTERM, exact resume, exact distributed evaluation."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_script
from mrlight.checkpoint import load_checkpoint
from mrlight.data import read_image
from mrlight.checkpoint_io import KILL_DURING_SAVE_ENV, atomic_save, remove_stale_temporaries
from mrlight.module import MRDiffusionModule
from mrlight.training import run


class LossRecorder:
    """Patches the training step to record each loss into `self.phases[-1]`; `sigterm_after_step`
    makes the step that ends at that global step send SIGTERM to this process, as a scheduler would."""

    def __init__(self, monkeypatch):
        self.phases: list[list[float]] = []
        self.sigterm_after_step: int | None = None
        original = MRDiffusionModule.training_step

        def recording(module, batch, batch_idx):
            loss = original(module, batch, batch_idx)
            self.phases[-1].append(loss.item())
            if self.sigterm_after_step is not None and module.global_step + 1 == self.sigterm_after_step:
                os.kill(os.getpid(), signal.SIGTERM)
            return loss

        monkeypatch.setattr(MRDiffusionModule, "training_step", recording)

    def phase(self, sigterm_after_step: int | None = None) -> list[float]:
        self.sigterm_after_step = sigterm_after_step
        self.phases.append([])
        return self.phases[-1]


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_interrupted_and_resumed_run_repeats_the_uninterrupted_losses(load_tiny, env, monkeypatch, tmp_path, workers):
    """8 images, batch 2: 4 steps per epoch; SIGTERM at step 3 (mid-epoch), resume to step 7 (next epoch).
    Validation runs at steps 2, 4, 6 on both runs. Every step's loss and the final weights must match."""
    common = ["trainer.max_steps=7", f"data.num_workers={workers}", "data.persistent_workers=false"]
    recorder = LossRecorder(monkeypatch)
    whole = recorder.phase()
    run(load_tiny(*common, f"output_dir={tmp_path / 'whole'}"))
    assert len(whole) == 7

    first = recorder.phase(sigterm_after_step=3)
    stopped = run(load_tiny(*common, f"output_dir={tmp_path / 'cut'}"))
    assert (stopped.interrupted_at, stopped.stop_signal) == (3, "SIGTERM")
    assert load_checkpoint(stopped.last_checkpoint)["global_step"] == 3
    second = recorder.phase()
    resumed = run(load_tiny(*common, f"output_dir={tmp_path / 'cut'}", "ckpt_path=last"))
    assert resumed.global_step == 7
    assert first + second == pytest.approx(whole, rel=1e-6, abs=1e-7)
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(resumed.last_checkpoint)
    for key in ("state_dict", "current_model_state"):  # EMA and raw weights
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value, rtol=1e-5, atol=1e-6, msg=f"{key}[{name}]")


def test_checkpoint_every_n_steps_without_validation(load_tiny, env, monkeypatch):
    saved = []
    original = torch.save

    def spy(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "global_step" in obj:
            saved.append(obj["global_step"])
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    result = run(load_tiny("trainer.max_steps=5", "val.every_n_steps=1000", "checkpoint.every_n_steps=2",
                           "checkpoint.every_minutes=null"))
    assert saved == [2, 4, 5]  # every 2 steps, and the last step
    assert load_checkpoint(result.last_checkpoint)["global_step"] == 5


def test_ckpt_path_last_without_checkpoint_starts_fresh(load_tiny, env, capsys):
    result = run(load_tiny("trainer.max_steps=1", "ckpt_path=last"))
    assert result.global_step == 1
    assert "ckpt_path=last: no checkpoint in" in capsys.readouterr().out


def test_atomic_save_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"global_step": 1}, path)

    class Boom(RuntimeError):
        pass

    def failing(obj, f, *a, **k):
        f.write(b"partial")
        raise Boom

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(Boom):
        atomic_save({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"global_step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind
    (tmp_path / "last.ckpt.tmp-123").write_bytes(b"torn")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == ["last.ckpt.tmp-123"]


def _train_args(out: Path, steps: int, *extra: str) -> list[str]:
    return ["task=tiny", f"output_dir={out}", f"trainer.max_steps={steps}", "val.every_n_steps=1000",
            "checkpoint.every_n_steps=1", *extra]


def _start(args: list[str], env: dict, cwd: Path, **env_extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], env={**env, **env_extra}, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if last.is_file() and load_checkpoint(last)["global_step"] >= step:
            return
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint at step {step}: {proc.communicate()[0][-2000:] if proc.poll() else ''}")


@pytest.mark.slow
def test_kill_9_at_several_moments_then_resume_to_completion(env, tmp_path):
    """kill -9 during start-up (no checkpoint yet), mid-training, and from inside a checkpoint write;
    every restart passes ckpt_path=last and the run reaches max_steps with a readable last.ckpt."""
    out, steps = tmp_path / "run", 12
    args = _train_args(out, steps, "ckpt_path=last")
    proc = _start(args, env, tmp_path)
    time.sleep(1.0)  # still importing torch: nothing written yet
    proc.kill()
    proc.wait()
    assert not (out / "checkpoints" / "last.ckpt").exists()

    proc = _start(args, env, tmp_path)  # no checkpoint: starts fresh with a notice
    _wait_for_step(out, 3, proc)
    proc.kill()
    proc.wait()
    reached = load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"]
    assert reached >= 3

    proc = _start(args, env, tmp_path, **{KILL_DURING_SAVE_ENV: "2"})  # SIGKILL halfway through the 2nd write
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == -signal.SIGKILL, log[-2000:]
    assert list((out / "checkpoints").glob("last.ckpt.tmp-*")), "the kill should leave a torn temporary"
    survived = load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"]
    assert survived == reached + 1  # the 1st write of this life; the 2nd never replaced it

    final = run_script("train.py", args, env, tmp_path)
    assert final.returncode == 0, (final.stdout + final.stderr)[-3000:]
    assert "removed last.ckpt.tmp-" in final.stdout
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"] == steps
    assert not list((out / "checkpoints").glob("*.tmp-*"))


@pytest.mark.slow
def test_sigterm_mid_run_exits_143_with_checkpoint_without_validation(env, tmp_path):
    out = tmp_path / "run"
    args = ["task=tiny", f"output_dir={out}", "trainer.max_steps=100000", "val.every_n_steps=100000",
            "checkpoint.every_minutes=null"]
    proc = _start(args, env, tmp_path)
    for line in proc.stdout:  # wait until training runs
        if line.startswith("training from step"):
            break
    time.sleep(2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    elapsed = time.monotonic() - sent
    assert proc.returncode == 143, rest[-2000:]
    assert elapsed < 60 and "Traceback" not in rest
    assert "SIGTERM: stopped at step" in rest and "ckpt_path=last" in rest
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] > 0 and not list((out / "checkpoints").glob("best-*.ckpt"))  # no validation ran
    assert f"stopped at step {ckpt['global_step']} " in rest


def _eval_metrics(stdout: str) -> dict[str, float]:
    lines = [line for line in stdout.splitlines() if "=" in line and line.split("=")[0].count("/") >= 1]
    return {k: float(v) for k, v in (line.split("=", 1) for line in lines)}


@pytest.mark.slow
def test_validate_stage_same_metrics_on_one_and_two_ranks_with_three_images(load_tiny, env, tmp_path, tiny_root):
    out = tmp_path / "run"
    run(load_tiny("trainer.max_steps=1", f"output_dir={out}"))
    common = ["task=tiny", f"output_dir={out}", "stage=validate", "ckpt_path=last", "val.max_images=3",
              "val.lpips=false"]
    one = run_script("train.py", common, env, tmp_path)
    two = run_script("train.py", [*common, "trainer.devices=2", "trainer.strategy=ddp"], env, tmp_path, timeout=400)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr + two.stderr)[-3000:]
    assert one.stdout.strip().splitlines()[-1].startswith("val/psnr=")
    m1, m2 = _eval_metrics(one.stdout), _eval_metrics(two.stdout)
    assert m1.keys() == m2.keys() and "val/psnr" in m1
    for key in m1:
        if key != "val/sec_per_image":
            assert m2[key] == pytest.approx(m1[key], rel=1e-5), key
    # The 3-image mean, not a padded 4-image one: the LQ PSNR is the mean over the three images.
    per_image = []
    for name in ("img00.png", "img01.png", "img02.png"):
        lq = read_image(tiny_root / "tiny" / "val" / "LQ" / name)
        gt = read_image(tiny_root / "tiny" / "val" / "GT" / name)
        per_image.append(10 * math.log10(1 / torch.mean((lq - gt) ** 2).item()))
    assert m1["val/psnr_lq"] == pytest.approx(sum(per_image) / 3, rel=1e-5)


def _bad_checkpoint(folder: Path, kind: str, good: Path | None = None) -> Path:
    bad = folder / f"{kind}.ckpt"
    if kind == "truncated":  # a checkpoint cut in half, as a copy interrupted by a kill leaves it
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    else:  # a PyTorch file that is not a Lightning checkpoint
        torch.save({"model": {"w": torch.zeros(2)}}, bad)
    return bad


MESSAGES = {"truncated": "not a readable checkpoint", "foreign": "not a Lightning checkpoint"}


@pytest.mark.slow  # train.py's corrupt-checkpoint path is also covered in test_train.py; messages below
@pytest.mark.parametrize("kind", ["truncated", "foreign"])
def test_train_script_names_a_truncated_or_foreign_checkpoint(env, tmp_path, kind):
    good = tmp_path / "good.ckpt"
    atomic_save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, good)
    bad = _bad_checkpoint(tmp_path, kind, good)
    proc = run_script("train.py", ["task=tiny", f"output_dir={tmp_path / 'run'}", f"ckpt_path={bad}"], env, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{bad} is {MESSAGES[kind]}" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["truncated", "foreign"])
def test_sample_script_names_a_truncated_or_foreign_checkpoint(tmp_path, tiny_root, capsys, kind):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sample_script", REPO / "sample.py")
    sample_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample_script)
    good = tmp_path / "good.ckpt"
    atomic_save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, good)
    bad = _bad_checkpoint(tmp_path, kind, good)
    code = sample_script.main([f"ckpt={bad}", f"input={tiny_root / 'tiny' / 'val' / 'LQ'}",
                               f"output={tmp_path / 'out'}"])
    assert code == 2 and f"{bad} is {MESSAGES[kind]}" in capsys.readouterr().err


def test_ckpt_path_last_picks_the_newer_of_last_and_lightning_slurm_checkpoint(load_tiny, tmp_path, capsys):
    from mrlight.training import resolve_ckpt_path

    cfg = load_tiny("ckpt_path=last")
    run_dir = Path(cfg.output_dir)
    assert resolve_ckpt_path(cfg) is None and "starting a fresh run" in capsys.readouterr().out
    last = run_dir / "checkpoints" / "last.ckpt"
    atomic_save({"global_step": 1}, last)
    assert resolve_ckpt_path(cfg) == last
    hpc = run_dir / "hpc_ckpt_1.ckpt"  # written by Lightning's SLURM auto-requeue on --signal
    atomic_save({"global_step": 2}, hpc)
    os.utime(hpc, (last.stat().st_mtime + 5,) * 2)
    assert resolve_ckpt_path(cfg) == hpc
    from mrlight.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_ckpt_path(load_tiny("ckpt_path=last", "stage=validate", f"output_dir={tmp_path / 'empty'}"))


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_with_loader_workers_still_stops_cleanly(env, tmp_path):
    """SLURM (and a terminal's Ctrl-C) signal every process of the job, DataLoader workers included. The
    workers leave the signal to the main process, which writes last.ckpt and exits 143 without a
    traceback (a worker killed by the signal used to end the run in "DataLoader worker ... is killed")."""
    out = tmp_path / "run"
    args = ["task=tiny", f"output_dir={out}", "trainer.max_steps=100000", "val.every_n_steps=100000",
            "checkpoint.every_minutes=null", "data.num_workers=1"]
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in proc.stdout:  # wait until training runs
        if line.startswith("training from step"):
            break
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, rest[-2000:]
    assert "Traceback" not in rest and "SIGTERM: stopped at step" in rest, rest[-2000:]
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert f"stopped at step {ckpt['global_step']} " in rest
