"""Inference precision on the CPU: images/s of the shipped denoiser under float32, bf16 and float16
autocast, torch.compile and channels_last, with each one's ratio to float32 measured in the same run
and its PSNR change against float32.

Every setting restores the same 256 x 256 crops of scikit-image photographs (sigma-25 noise, fixed
seeds) with the checkpoint's own sampler (MR Sampler, NFE 10) through `mrlight.inference.Restorer`,
as `sample.py precision=... compile=... channels_last=...` does. The settings are timed in
interleaved rounds (round 1: every setting, round 2: every setting, ...) so that a change in the
machine's load hits all of them alike; images/s is the best round's (the least disturbed by other
jobs on a shared machine), the median round's is shown beside it. A warm-up restore per setting
comes first (it includes torch.compile's compilation, reported apart).

    OMP_NUM_THREADS=1 python benchmarks/inference_precision.py [--threads 1 --rounds 3 --crops 4]
        [--out docs/results/inference_precision.md] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mrlight.inference import PrecisionError, Restorer  # noqa: E402

CKPT = REPO / "checkpoints" / "mrlight-denoise-s25-cpu.ckpt"
# (label, Restorer options)
SETTINGS = [
    ("float32", dict(precision="32")),
    ("bf16 autocast", dict(precision="bf16")),
    ("float16 autocast", dict(precision="16")),
    ("float32 + channels_last", dict(precision="32", channels_last=True)),
    ("bf16 + channels_last", dict(precision="bf16", channels_last=True)),
    ("float32 + compile", dict(precision="32", compile=True)),
    ("bf16 + compile", dict(precision="bf16", compile=True)),
]
PHOTOS = [("astronaut", 20, 140), ("coffee", 40, 160), ("chelsea", 30, 110), ("rocket", 60, 200),
          ("camera", 100, 100), ("cat", 20, 60)]


def crops(n: int, size: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    import skimage.data

    out = []
    for k, (name, top, left) in enumerate(PHOTOS[:n]):
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        gt = torch.from_numpy(np.ascontiguousarray(image[top:top + size, left:left + size]))
        gt = gt.permute(2, 0, 1).float() / 255
        rng = np.random.default_rng(k)
        noisy = (gt + torch.from_numpy(rng.normal(0, 25 / 255, gt.shape).astype(np.float32))).clamp(0, 1)
        noisy = torch.round(noisy * 255) / 255  # as read back from an 8-bit PNG
        out.append((name, gt, noisy))
    return out


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(-10 * torch.log10(torch.mean((x - y) ** 2)))


def quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255  # what sample.py writes


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
        wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16")
        return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"
    except (OSError, StopIteration):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crops", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "inference_precision.md"))
    parser.add_argument("--quick", action="store_true", help="2 crops of 96 px, 1 round, no file written")
    args = parser.parse_args(argv)
    if args.quick:
        args.crops, args.size, args.rounds, args.out = 2, 96, 1, None
    torch.set_num_threads(args.threads)
    data = crops(args.crops, args.size)
    started = dt.datetime.now(dt.timezone.utc)

    restorers, notes, warmup = {}, {}, {}
    for label, opts in SETTINGS:
        try:
            r = Restorer.from_checkpoint(CKPT, **opts)
            start = time.perf_counter()
            r(data[0][2], name=data[0][0])  # warm-up (compiles under compile=True)
            warmup[label] = time.perf_counter() - start
            restorers[label] = r
        except (PrecisionError, RuntimeError) as err:
            notes[label] = str(err).splitlines()[0]
            print(f"{label}: not runnable here: {notes[label]}", flush=True)

    seconds = {label: [] for label in restorers}
    outputs: dict[str, list[torch.Tensor]] = {}
    for rnd in range(args.rounds):
        for label, r in restorers.items():
            start = time.perf_counter()
            outs = [r(noisy, name=name) for name, _, noisy in data]
            seconds[label].append(time.perf_counter() - start)
            outputs.setdefault(label, [quantize(o) for o in outs])
            print(f"round {rnd + 1}: {label}: {len(data) / seconds[label][-1]:.3f} images/s", flush=True)

    base = "float32"
    base_ips = len(data) / min(seconds[base])
    base_median = len(data) / statistics.median(seconds[base])
    base_psnr = statistics.mean(psnr(o, gt) for o, (_, gt, _) in zip(outputs[base], data))
    noisy_psnr = statistics.mean(psnr(noisy, gt) for _, gt, noisy in data)
    rows = []
    for label, _ in SETTINGS:
        if label not in restorers:
            rows.append(f"| {label} | not runnable | | | | | | | {notes[label]} |")
            continue
        ips = len(data) / min(seconds[label])
        median = len(data) / statistics.median(seconds[label])
        p = statistics.mean(psnr(o, gt) for o, (_, gt, _) in zip(outputs[label], data))
        diff = max(float((o - b).abs().max()) for o, b in zip(outputs[label], outputs[base])) * 255
        same = statistics.mean(float((o == b).float().mean()) for o, b in zip(outputs[label], outputs[base]))
        rows.append(f"| {label} | {ips:.3f} | {ips / base_ips:.2f} | {median:.3f} | {median / base_median:.2f} | "
                    f"{p:.2f} | {p - base_psnr:+.3f} | "
                    f"{diff:.0f} ({100 * same:.2f} % equal) | warm-up {warmup[label]:.1f} s |")

    command = "OMP_NUM_THREADS=1 python benchmarks/inference_precision.py " + " ".join(argv if argv is not None
                                                                                          else sys.argv[1:])
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    header = [
        "# Inference precision on the CPU (shipped denoiser)",
        "",
        f"Command: `{command.strip()}` (run {started:%Y-%m-%d %H:%M} UTC; load average at the end "
        f"{load[0]:.1f} on {os.cpu_count()} cores: other jobs shared the machine)",
        "",
        f"Machine: {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores, {args.threads} torch thread(s), "
        f"torch {torch.__version__}, Python {platform.python_version()}, no GPU.",
        f"Work: {len(data)} crops of {args.size} x {args.size} px (scikit-image photographs, sigma-25 noise), "
        f"`{CKPT.relative_to(REPO)}`, its own sampler (MR Sampler ODE order 2, NFE 10); images/s of the best and "
        f"of the median of {args.rounds} interleaved round(s); PSNR is against the clean crops after 8-bit rounding "
        f"(noisy input: {noisy_psnr:.2f} dB). The edge convolutions stay float32 under bf16 / float16 "
        f"(mrlight/inference.py). The warm-up includes torch.compile's compilation, short when inductor's "
        f"on-disk cache holds the kernels of an earlier run.",
        "",
        "| setting | images/s (best) | x float32 | images/s (median) | x float32 | PSNR (dB) | PSNR - float32 "
        "| max pixel diff vs float32 (of 255) | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    gpu = [
        "",
        "## What to use on a GPU",
        "",
        "Not measured here (no GPU on this machine). On recent NVIDIA GPUs the usual wins are, in order: "
        "`precision=bf16` (autocast of the network call; tensor cores, half the activation memory; the "
        "sampler and the edge convolutions stay float32; the PSNR change above should carry over roughly, "
        "bf16 being the same format on every device though GPU kernels accumulate in another order), "
        "`channels_last=true` (NHWC convolutions, which cuDNN prefers under "
        "autocast), and `compile=true` once the image size is fixed (every new size recompiles; the first "
        "call pays the compilation). `precision=16` (float16) is for GPUs without bf16 (before Ampere); "
        "check the output for NaN (the sampler stops and names the step). On the CPU, measure before "
        "choosing: the table above is one machine.",
    ]
    text = "\n".join(header + rows + gpu) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
