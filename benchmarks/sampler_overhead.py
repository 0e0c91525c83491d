"""Sampler overhead: wall time of `sample(nfe=N)` divided by the time of N bare network calls.

The network is a plain conv net sized to take about 30 ms per call on the machine's CPU (the
issue's yardstick); the calls it is compared with see the same input shape. Timings are
interleaved and the minimum of several repeats is reported (the least-disturbed run; shared
machines are noisy), so the ratio is measured in one run on one machine: compare ratios, not
seconds, and run it on an otherwise idle machine. The last columns time the sampler alone (a
network that costs nothing), which is robust to noise: 1 + own/call is the overhead ratio
expected at the calibrated per-call cost.

    python benchmarks/sampler_overhead.py           # NFE 5, 10, 20; 7 repeats
    python benchmarks/sampler_overhead.py --quick   # NFE 10; 3 repeats
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from mrlight.sampling import sample
from mrlight.sde import MRSDE


class ConvNet(nn.Module):
    def __init__(self, width: int = 48, depth: int = 6):
        super().__init__()
        layers = [nn.Conv2d(6, width, 3, padding=1), nn.SiLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
        layers += [nn.Conv2d(width, 3, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x, mu, t):
        return self.body(torch.cat([x - mu, mu], 1)) * 0.01


def _time_call(net, x, n: int = 5) -> float:
    best = float("inf")
    with torch.no_grad():
        for _ in range(n):
            t0 = time.perf_counter()
            net(x, x, torch.zeros(1))
            best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def calibrate(net, size: int, target_ms: float) -> int:
    """Image side giving about target_ms per call."""
    for _ in range(4):
        x = torch.rand(1, 3, size, size)
        with torch.no_grad():
            net(x, x, torch.zeros(1))
            t0 = time.perf_counter()
            for _ in range(3):
                net(x, x, torch.zeros(1))
            ms = (time.perf_counter() - t0) / 3 * 1e3
        ms = min(ms, _time_call(net, x))
        size = max(32, int(round(size * (target_ms / ms) ** 0.5 / 8)) * 8)
    return size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--target-ms", type=float, default=None,
                   help="calibrate the image size to this many ms per call (default: fixed --size)")
    p.add_argument("--size", type=int, default=120, help="image side; 120 is about 30 ms per call on an idle 2-core CPU")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    net = ConvNet().eval()
    size = calibrate(net, a.size, a.target_ms) if a.target_ms else a.size
    sde = MRSDE()
    mu = torch.rand(1, 3, size, size)
    nfes = [10] if a.quick else [5, 10, 20]
    repeats = 3 if a.quick else 9
    configs = [("mr ode-2 data (default)", dict(sampler="mr")),
               ("mr ode-3 noise", dict(sampler="mr", order=3, parameterization="noise")),
               ("mr sde-2 data", dict(sampler="mr", solver="sde", order=2)),
               ("mr ode-2 data optimized + unic", dict(sampler="mr", time_schedule="optimized", corrector="unic")),
               ("mr ode-3 noise optimized + unic", dict(sampler="mr", order=3, parameterization="noise",
                                                        time_schedule="optimized", corrector="unic")),
               ("mr sde-2 data optimized + unic", dict(sampler="mr", solver="sde", order=2, time_schedule="optimized",
                                                       corrector="unic")),
               ("posterior", dict(sampler="posterior")),
               ("euler", dict(sampler="euler"))]
    x = torch.rand(1, 3, size, size)
    print(f"conv net, input 1x3x{size}x{size} ({_time_call(net, x, 9):.1f} ms per call, minimum of 9), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {repeats} repeats (minimum)")
    call_ms = _time_call(net, x, 9)
    zeros = torch.zeros_like(mu)
    print("| sampler | NFE | bare calls (ms) | sample() (ms) | ratio | sampler's own ms/step | 1 + own/call |")
    print("|---|---|---|---|---|---|---|")
    for nfe in nfes:
        for name, cfg in configs:
            bare, full = [], []
            for r in range(repeats):
                x = torch.rand_like(mu)
                with torch.no_grad():
                    t0 = time.perf_counter()
                    for _ in range(nfe):
                        net(x, mu, torch.full((1,), 50.0))
                    bare.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                sample(net, mu, sde, nfe=nfe, generator=torch.Generator().manual_seed(r), **cfg)
                full.append(time.perf_counter() - t0)
            own = []  # the sampler alone: a network that costs nothing (returns a fixed tensor)
            for r in range(3 * repeats):
                t0 = time.perf_counter()
                sample(lambda x_t, m, t: zeros, mu, sde, nfe=nfe, generator=torch.Generator().manual_seed(r), **cfg)
                own.append((time.perf_counter() - t0) / nfe * 1e3)
            b, f, o = min(bare), min(full), min(own)
            print(f"| {name} | {nfe} | {b * 1e3:.1f} | {f * 1e3:.1f} | {f / b:.3f} | {o:.2f} | {1 + o / call_ms:.3f} |")


if __name__ == "__main__":
    main()
