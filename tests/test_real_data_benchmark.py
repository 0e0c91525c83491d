"""benchmarks/real_data.py without training: every configuration on a tiny batch with the analytic oracle."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from mrlight.analytic import GaussianMixture, Oracle
from mrlight.sde import MRSDE

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_data_bench", REPO / "benchmarks" / "real_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configurations_cover_the_issue(bench):
    rows = bench.configurations()
    v2 = bench.sampler_v2_configurations()
    mr = [(r["solver"], r["order"], r["nfe"]) for r in rows if r["sampler"] == "mr" and r not in v2]
    assert all(r in rows for r in v2) and {r["nfe"] for r in v2} == {5, 10, 20}
    assert {r.get("time_schedule") for r in v2} >= {"optimized"} and {r.get("corrector") for r in v2} >= {"unic"}
    assert len(mr) == 15 and {n for *_, n in mr} == {5, 10, 20}
    assert {(s, o) for s, o, _ in mr} == {("ode", 1), ("ode", 2), ("ode", 3), ("sde", 1), ("sde", 2)}
    for name in ("posterior", "euler"):
        assert sorted(r["nfe"] for r in rows if r["sampler"] == name) == [20, 50, 100]


def test_evaluate_and_outputs(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "load_lpips", lambda mode="pretrained": None)  # no download attempt in tests
    monkeypatch.setattr(bench, "RestorationMetrics", lambda lpips="pretrained": bench_metrics("off"))
    sde = MRSDE()
    g = torch.Generator().manual_seed(0)
    lq = 0.3 + 0.4 * torch.rand(2, 3, 8, 8, generator=g)
    gt = (lq + GaussianMixture().sample(lq.shape, g).float()).clamp(0, 1)
    rows, outputs = bench.evaluate(Oracle(GaussianMixture(), sde, "noise"), sde, "noise", lq, gt, seed=0)
    assert rows[0]["label"] == "LQ input" and len(rows) == 1 + len(bench.configurations())
    assert all(r["psnr"] > 0 for r in rows) and all(isinstance(r["sec_per_image"], float) for r in rows[1:])
    assert outputs["posterior@100"].shape == lq.shape

    text = bench.write_outputs(rows, ["# header"], ["verdict"], "no weights here", tmp_path / "t.csv", tmp_path / "t.md")
    assert "| MR ODE-2 | 10 |" in text and "LPIPS: unavailable: no weights here" in text
    with open(tmp_path / "t.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    bench.plot_psnr(rows, tmp_path / "p.png", "title")
    bench.plot_examples(lq, gt, outputs, ["a", "b"], tmp_path / "e.png")
    assert (tmp_path / "p.png").stat().st_size > 0 and (tmp_path / "e.png").stat().st_size > 0


def bench_metrics(mode):
    from mrlight.metrics import RestorationMetrics

    return RestorationMetrics(lpips=mode)
