"""Training throughput and peak memory: fp32 vs bf16-mixed vs bf16-mixed + channels_last + compile.

Times the training step of `MRDiffusionModule.model_step` (noise objective, L1) with AdamW on a
fixed batch: images per second (median over steps after warm-up) and peak GPU memory
(torch.cuda.max_memory_allocated). The issue's setting is unet-base, patch 128, batch 16 on a
GPU; on a machine without one it stops with a message (`--device cpu` runs a smoke-sized check
of the same code, without compile).

    python benchmarks/gpu_throughput.py                                   # GPU, unet-base, 128 px, batch 16
    python benchmarks/gpu_throughput.py --device cpu --network unet-tiny --patch 32 --batch 2 --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from mrlight.config import load_config, to_dict
from mrlight.module import MRDiffusionModule

VARIANTS = {
    "fp32": dict(bf16=False, channels_last=False, compile=False),
    "bf16-mixed": dict(bf16=True, channels_last=False, compile=False),
    "bf16-mixed + channels_last + compile": dict(bf16=True, channels_last=True, compile=True),
}


def measure(args, variant: dict) -> tuple[float, float]:
    device = torch.device(args.device)
    cfg = to_dict(load_config([f"network.name={args.network}", "logger.backend=none"]))
    module = MRDiffusionModule(cfg).to(device)
    module.train()
    memory_format = torch.channels_last if variant["channels_last"] else torch.contiguous_format
    module = module.to(memory_format=memory_format)
    if variant["compile"]:
        module.net.compile()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    g = torch.Generator(device="cpu").manual_seed(0)
    batch = {k: torch.rand(args.batch, 3, args.patch, args.patch, generator=g).to(device, memory_format=memory_format)
             for k in ("lq", "gt")}
    batch["name"] = [str(i) for i in range(args.batch)]
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant["bf16"]):
            loss = module.model_step(batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return args.batch / statistics.median(times), peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--network", default="unet-base")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device on this machine: this benchmark needs a GPU "
              "(use --device cpu for a smoke-sized check)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "CPU"
    print(f"{a.network}, patch {a.patch}, batch {a.batch}, {name}, torch {torch.__version__}")
    print("| variant | images/s | peak memory (GiB) |")
    print("|---|---|---|")
    for label, variant in VARIANTS.items():
        if variant["compile"] and a.device == "cpu":
            continue
        ips, peak = measure(a, variant)
        print(f"| {label} | {ips:.1f} | {peak:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
