"""CPU throughput of candidate networks for the shipped CPU-trained models (one torch thread).

For each candidate (preset + overrides, patch size) it times the full training step of the project
(`MRDiffusionModule.model_step` under the task's objective, backward, AdamW step) on random
patches, and one network call on a full-size CBSD68 image (481 x 321), the unit of sampling cost.
Training images/s = batch / median step time; the network with the most images/s at a capacity
that can still learn the task is the one to train for two hours.

    python benchmarks/cpu_throughput.py [--steps 12 --batch 8 --threads 1] [--set noise]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from mrlight.config import load_config, to_dict
from mrlight.module import MRDiffusionModule

CANDIDATES = [
    # (label, preset, overrides, patch)
    ("nafnet-tiny w16 [1,1,1]", "nafnet-tiny", {}, 64),
    ("nafnet-tiny w16 [1,1,1]", "nafnet-tiny", {}, 96),
    ("nafnet-tiny w24 [1,1,1]", "nafnet-tiny", {"width": 24}, 64),
    ("nafnet-tiny w16 [1,1,2] mid 2", "nafnet-tiny", {"enc_blocks": [1, 1, 2], "mid_blocks": 2, "dec_blocks": [1, 1, 1]}, 64),
    ("nafnet-tiny w32 [1,1,1]", "nafnet-tiny", {"width": 32}, 64),
    ("unet-tiny nf16", "unet-tiny", {}, 64),
]
# Scaled-down published architectures for the noise-prediction denoiser (issue 16): same layers as the
# released networks, fewer channels and blocks.
NOISE_CANDIDATES = [
    ("refusion-nafnet w16 enc [1,1,2] mid 2", "refusion-nafnet",
     {"width": 16, "enc_blk_nums": [1, 1, 2], "middle_blk_num": 2, "dec_blk_nums": [1, 1, 1]}, 64),
    ("refusion-nafnet w16 enc [1,1,1,2] mid 1", "refusion-nafnet",
     {"width": 16, "enc_blk_nums": [1, 1, 1, 2], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1, 1]}, 64),
    ("refusion-nafnet w24 enc [1,1,2] mid 2", "refusion-nafnet",
     {"width": 24, "enc_blk_nums": [1, 1, 2], "middle_blk_num": 2, "dec_blk_nums": [1, 1, 1]}, 64),
    ("irsde-unet nf8 depth 3", "irsde-unet", {"nf": 8, "depth": 3}, 64),
    ("irsde-unet nf16 depth 3", "irsde-unet", {"nf": 16, "depth": 3}, 64),
    ("nafnet-tiny w16 [1,1,2] mid 2 (shipped)", "nafnet-tiny",
     {"enc_blocks": [1, 1, 2], "mid_blocks": 2, "dec_blocks": [1, 1, 1]}, 64),
]


def params(net: torch.nn.Module) -> float:
    return sum(p.numel() for p in net.parameters()) / 1e6


def time_candidate(preset, overrides, patch, batch, steps, objective="data") -> tuple[float, float, float]:
    cfg = to_dict(load_config(["task=denoise", f"network.name={preset}", f"objective.prediction={objective}"]))
    cfg["network"]["overrides"] = overrides
    module = MRDiffusionModule(cfg)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    data = {"gt": torch.rand(batch, 3, patch, patch), "lq": torch.rand(batch, 3, patch, patch)}
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = module.model_step(data, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:  # first steps allocate
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    net = module.net.eval()
    x = torch.rand(1, 3, 321, 481)
    with torch.no_grad():
        net(x, x, torch.full((1,), 50.0))
        call = []
        for _ in range(3):
            start = time.perf_counter()
            net(x, x, torch.full((1,), 50.0))
            call.append(time.perf_counter() - start)
    return params(net), batch / step, min(call)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", choices=["shipped", "noise"], default="shipped",
                    help="shipped: the data models' candidates; noise: scaled-down published networks, noise objective")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"Machine: {cpu}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
          f"Python {platform.python_version()}, no GPU; batch {args.batch}, median of {args.steps} steps\n")
    candidates, objective = (CANDIDATES, "data") if args.set == "shipped" else (NOISE_CANDIDATES, "noise")
    print(f"Objective: {objective}\n")
    print("| network | params (M) | patch | train images/s | patch-pixels/s (M) | s per call, 481x321 |")
    print("|---|---|---|---|---|---|")
    for label, preset, overrides, patch in candidates:
        p, ips, call = time_candidate(preset, overrides, patch, args.batch, args.steps, objective)
        print(f"| {label} | {p:.2f} | {patch} | {ips:.1f} | {ips * patch * patch / 1e6:.2f} | {call:.3f} |", flush=True)


if __name__ == "__main__":
    main()
