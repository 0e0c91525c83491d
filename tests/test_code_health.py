"""Code-health contracts: no tuning inside sample(), steps files read back whole, clear one-line errors,
portable shipped configs (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import run_script
from mrlight.analytic import GaussianMixture, Oracle
from mrlight.checkpoint import absolute_paths, portable_config
from mrlight.sampling import optimize as optimize_module
from mrlight.sampling import sample
from mrlight.sde import MRSDE

LAW = GaussianMixture(weights=[0.5, 0.5], means=[-0.1, 0.1], stds=[0.05, 0.05])


def test_optimized_steps_are_looked_up_never_tuned_inside_sample(monkeypatch):
    def no_search(*a, **k):
        raise AssertionError("sample() started a search")

    monkeypatch.setattr(optimize_module, "optimize_times", no_search)
    sde = MRSDE(max_sigma=50)
    mu = torch.full((1, 1, 4, 4), 0.5)
    sample(Oracle(LAW, sde), mu, sde, nfe=5, time_schedule="optimized")  # a stored table: fine
    odd = MRSDE(max_sigma=12.5)
    with pytest.raises(ValueError, match=r"no stored steps .*python -m mrlight.tune_steps"):
        sample(Oracle(LAW, odd), mu, odd, nfe=5, time_schedule="optimized")


def test_a_steps_file_is_refused_for_settings_it_was_not_tuned_for(tmp_path):
    sde = MRSDE()
    mu = torch.full((1, 1, 4, 4), 0.5)
    steps = tmp_path / "steps.yaml"
    steps.write_text("times: [100, 40, 10, 3, 0]\nnfe: 4\norder: 3\ncorrector: none\nsolver: ode\n"
                     "parameterization: data\n")
    sample(Oracle(LAW, sde), mu, sde, nfe=4, order=3, time_schedule=str(steps))
    with pytest.raises(ValueError, match=r"tuned for order=3, the sampler runs order=2"):
        sample(Oracle(LAW, sde), mu, sde, nfe=4, order=2, time_schedule=str(steps))
    with pytest.raises(ValueError, match=r"tuned for nfe=4, the sampler runs nfe=3"):
        sample(Oracle(LAW, sde), mu, sde, nfe=3, order=3, time_schedule=str(steps))


def test_portable_config_drops_machine_paths():
    config = {"task": "denoise", "output_dir": "/home/me/runs/x", "init_from": "/home/me/a.ckpt",
              "data": {"root": "/data/shared", "train_dir": "/data/shared/clean-train", "val_dir": "/elsewhere/v"},
              "network": {"overrides": {"daclip": "/models/daclip_ViT-B-32.pt"}}, "relative": "runs/x"}
    out = portable_config(config)
    assert absolute_paths(out) == []
    assert out["output_dir"] == "outputs/denoise" and out["init_from"] == "a.ckpt"
    assert out["data"]["train_dir"] == "./data/clean-train" and out["data"]["root"] == "./data"
    assert out["relative"] == "runs/x" and config["init_from"] == "/home/me/a.ckpt"  # the input is untouched
    assert absolute_paths(config)  # the checker sees what it should
    repo = Path(__file__).resolve().parent.parent
    teacher = portable_config({"distill": {"teacher": str(repo / "checkpoints" / "t.ckpt")}})
    assert teacher["distill"]["teacher"] == "checkpoints/t.ckpt"  # inside the repository: relative to it


def test_tune_steps_on_a_cuda_device_without_gpu_is_one_clear_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    import os

    proc = run_script("mrlight/tune_steps.py", ["ckpt=checkpoints/mrlight-denoise-s25-cpu.ckpt", "input=x",
                                                 "output=s.yaml", "device=cuda"], dict(os.environ), tmp_path)
    assert proc.returncode == 2 and "no usable CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr


def test_fast_dev_run_does_not_claim_a_checkpoint(env, tmp_path):
    proc = run_script("train.py", ["task=tiny", f"output_dir={tmp_path / 'run'}", "trainer.fast_dev_run=true"],
                      env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("checkpoint:    "))
    assert "fast_dev_run writes no checkpoint" in line and not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
