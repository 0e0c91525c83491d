"""Distillation in the training loop: train.py distill.teacher=CKPT, the student's checkpoint, sample.py on it."""

from __future__ import annotations

import pytest
import torch

from conftest import run_script
from mrlight.checkpoint import load_checkpoint
from mrlight.config import ConfigError
from mrlight.training import run


@pytest.fixture
def teacher(load_tiny, env, tmp_path):
    cfg = load_tiny("trainer.max_steps=2", f"output_dir={tmp_path / 'teacher'}", "objective.prediction=noise")
    return run(cfg).last_checkpoint


def test_student_run_records_what_sample_py_needs_and_validates_beside_the_teacher(load_tiny, env, tmp_path,
                                                                                    teacher, tiny_root):
    cfg = load_tiny(f"distill.teacher={teacher}", "distill.calls=2", "trainer.max_steps=2", "val.every_n_steps=2",
                    f"output_dir={tmp_path / 'student'}")
    assert cfg.sampler.sampler == "distilled" and cfg.sampler.nfe == 2 and cfg.init_from == str(teacher)
    # a noise teacher is solved from its later start (noise_network_defaults): the student starts there too,
    # and its output is the teacher's (noise), so the copy starts as the teacher's own x0 estimate
    from mrlight.sampling import noise_network_defaults
    from mrlight.schema import build_sde

    t_start = noise_network_defaults("noise", build_sde(cfg.sde))["t_start"]
    assert len(cfg.distill.times) == 3 and cfg.distill.times[0] == t_start < 100 and cfg.distill.times[-1] == 0
    assert cfg.distill.student_prediction == "noise"
    result = run(cfg)
    assert {"val/psnr", "val/teacher_mr10/psnr", "val/swd", "val/teacher_mr10/swd"} <= set(result.val_metrics)
    saved = load_checkpoint(result.last_checkpoint)
    config = saved["hyper_parameters"]["config"]
    assert config["sampler"]["sampler"] == "distilled" and config["sampler"]["nfe"] == 2
    assert config["distill"]["teacher"] == str(teacher)
    assert not any(k.startswith("teacher") for k in saved["state_dict"])  # the teacher is not saved with the student
    # sample.py needs no other flag; the student makes exactly 2 network calls per image
    out = tmp_path / "restored"
    proc = run_script("sample.py", [f"ckpt={result.last_checkpoint}", f"input={tiny_root / 'tiny' / 'val' / 'LQ'}",
                                    f"output={out}", "progress=false"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(out.glob("*.png"))) == 3
    bad = run_script("sample.py", [f"ckpt={result.last_checkpoint}", f"input={tiny_root / 'tiny' / 'val' / 'LQ'}",
                                   f"output={tmp_path / 'o2'}", "sampler.nfe=3"], env, tmp_path)
    assert bad.returncode == 2 and "restores in 2 network call(s)" in bad.stderr and "Traceback" not in bad.stderr


def test_student_counts_its_calls_through_the_restorer(load_tiny, env, tmp_path, teacher):
    from mrlight.inference import Restorer

    result = run(load_tiny(f"distill.teacher={teacher}", "distill.calls=1", "trainer.max_steps=1",
                           "val.every_n_steps=100", f"output_dir={tmp_path / 'student1'}"))
    restorer = Restorer.from_checkpoint(result.last_checkpoint)
    calls = []
    original = restorer.net.forward
    restorer.net.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    out = restorer(torch.rand(3, 32, 32), name="x")
    assert out.shape == (3, 32, 32) and len(calls) == 1


@pytest.mark.parametrize("args,match", [
    (["distill.calls=3"], "distill.calls=3 is not valid; valid: 1, 2, 4"),
    (["distill.method=magic"], "distill.method='magic' is not valid"),
    (["sampler.sampler=distilled"], "sampler.sampler='distilled' is the sampler of a distilled student"),
])
def test_bad_distillation_settings_are_refused_at_load(load_tiny, teacher, args, match):
    extra = [f"distill.teacher={teacher}"] if not args[0].startswith("sampler.") else []
    with pytest.raises(ConfigError, match=match):
        load_tiny(*extra, *args)


def test_a_missing_teacher_is_named(load_tiny, tmp_path):
    with pytest.raises(ConfigError, match="distill.teacher: checkpoint not found"):
        load_tiny(f"distill.teacher={tmp_path / 'nope.ckpt'}")


@pytest.mark.slow
def test_sigterm_and_resume_of_a_distillation_run_repeat_the_uninterrupted_losses(load_tiny, env, monkeypatch,
                                                                                   tmp_path, teacher):
    """Like any training run: SIGTERM mid-run writes last.ckpt, ckpt_path=last resumes to the same losses
    and weights (the teacher's trajectories are drawn from the per-batch seeded generator)."""
    from test_reliability import LossRecorder

    common = [f"distill.teacher={teacher}", "distill.calls=2", "trainer.max_steps=5", "val.every_n_steps=100"]
    recorder = LossRecorder(monkeypatch)
    whole = recorder.phase()
    run(load_tiny(*common, f"output_dir={tmp_path / 'whole'}"))
    first = recorder.phase(sigterm_after_step=2)
    stopped = run(load_tiny(*common, f"output_dir={tmp_path / 'cut'}"))
    assert (stopped.interrupted_at, stopped.stop_signal) == (2, "SIGTERM")
    second = recorder.phase()
    resumed = run(load_tiny(*common, f"output_dir={tmp_path / 'cut'}", "ckpt_path=last"))
    assert resumed.global_step == 5 and len(whole) == 5
    assert first + second == pytest.approx(whole, rel=1e-6, abs=1e-7)
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(resumed.last_checkpoint)
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_kill_9_inside_a_checkpoint_write_then_resume_matches_the_uninterrupted_student(env, tmp_path, teacher):
    """A distillation run SIGKILLed halfway through its 3rd checkpoint write keeps the 2nd (step 2);
    `ckpt_path=last` resumes from it to the student an uninterrupted run reaches, weight for weight."""
    import signal

    from mrlight.checkpoint_io import KILL_DURING_SAVE_ENV
    from test_reliability import _start

    def args(out):
        return ["task=tiny", f"output_dir={out}", "trainer.max_steps=5", "val.every_n_steps=1000",
                "checkpoint.every_n_steps=1", f"distill.teacher={teacher}", "distill.calls=2", "ckpt_path=last"]

    whole = run_script("train.py", args(tmp_path / "whole"), env, tmp_path)
    assert whole.returncode == 0, (whole.stdout + whole.stderr)[-3000:]
    proc = _start(args(tmp_path / "cut"), env, tmp_path, **{KILL_DURING_SAVE_ENV: "3"})
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == -signal.SIGKILL, log[-2000:]
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.ckpt")["global_step"] == 2
    resumed = run_script("train.py", args(tmp_path / "cut"), env, tmp_path)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 5
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-5, atol=1e-6, msg=name)
