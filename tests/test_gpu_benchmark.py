"""benchmarks/gpu_throughput.py: the same code path runs on CPU (smoke size); on GPU it is the real benchmark."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_throughput  # noqa: E402


def test_cpu_smoke_prints_both_variants(capsys):
    assert gpu_throughput.main(["--device", "cpu", "--network", "unet-tiny", "--patch", "16", "--batch", "2",
                                "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| fp32") or line.startswith("| bf16-mixed |")]
    assert len(rows) == 2 and all(float(r.split("|")[2]) > 0 for r in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_without_gpu_says_so(capsys):
    assert gpu_throughput.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_run(capsys):
    assert gpu_throughput.main(["--network", "unet-tiny", "--patch", "32", "--batch", "2", "--steps", "2"]) == 0
    assert "bf16-mixed + channels_last + compile" in capsys.readouterr().out
