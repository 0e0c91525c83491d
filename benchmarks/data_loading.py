"""Does the training loader keep up with training? Loader batches/s against unet-tiny steps/s.

    python benchmarks/data_loading.py [--task demo] [--steps 30] [key=value ...]

Three measurements in one run, at the task's patch and batch size and default worker count:
  1. loader alone: batches/s of `train_dataloader()` (after the workers have started);
  2. training step alone: forward + backward + AdamW step of unet-tiny on one fixed batch
     (noise objective, L1), i.e. what training consumes;
  3. both together: the training step fed by the loader, as in `train.py` (workers and the step
     share the CPU cores). Loading keeps up when (3) is close to (2).
Wall-clock rates move with whatever else runs on the machine, so the CPU time of one batch
(loaded in the main process, num_workers=0) and of one step is printed too: their ratio is
what two cores must share, and it barely depends on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mrlight.config import load_config  # noqa: E402
from mrlight.data import build_datamodule, check_data  # noqa: E402
from mrlight.models import build_network  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402


def make_step(cfg):
    net = build_network(cfg.network.name)
    sde = MRSDE(T=cfg.sde.T, max_sigma=cfg.sde.max_sigma, schedule=cfg.sde.schedule, eps=cfg.sde.eps)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step(batch):
        gt, lq = batch["gt"], batch["lq"]
        t = torch.rand(gt.shape[0]) * (sde.T - 1) + 1
        alpha = sde.alpha(t).float().view(-1, 1, 1, 1)
        sigma_bar = sde.sigma_bar(t).float().view(-1, 1, 1, 1)
        noise = torch.randn_like(gt)
        x_t = alpha * gt + (1 - alpha) * lq + sigma_bar * noise
        loss = (net(x_t, lq, t.float()) - noise).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def workers_cpu_seconds() -> float | None:
    """CPU seconds used so far by this process's children (the loader workers); Linux only."""
    try:
        total, tick = 0.0, os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():  # parent pid
                total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        return total
    except (OSError, ValueError, AttributeError):
        return None


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="demo")
    parser.add_argument("--steps", type=int, default=30, help="timed steps/batches per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()
    cfg = load_config([f"task={args.task}", *args.overrides])
    check_data(cfg.data)
    torch.manual_seed(0)
    data = cfg.data
    print(f"task={args.task} patch={data.patch_size} batch={data.batch_size} num_workers={data.num_workers} "
          f"network={cfg.network.name} torch_threads={torch.get_num_threads()} cpus={os.cpu_count()}")

    loader = build_datamodule(data, seed=0).train_dataloader()
    batches = iter(_forever(loader))
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(args.steps):
        next(batches)
    loader_rate = rate(args.steps, time.perf_counter() - start)

    step = make_step(cfg)
    fixed = next(batches)
    for _ in range(args.warmup):
        step(fixed)
    # Alternate short blocks of (2) and (3) so that drifting background load hits both alike.
    alone = fed = 0.0
    block = 5
    workers_before = workers_cpu_seconds()
    for _ in range(max(args.steps // block, 1)):
        start = time.perf_counter()
        for _ in range(block):
            step(fixed)
        alone += time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(block):
            step(next(batches))
        fed += time.perf_counter() - start
    done = max(args.steps // block, 1) * block
    workers_after = workers_cpu_seconds()
    workers_cpu = None if workers_before is None or workers_after is None else (workers_after - workers_before) / done
    step_rate, fed_rate = rate(done, alone), rate(done, fed)

    # CPU cost of a batch, in-process, and of a step (process_time ignores waiting for the CPU)
    single = build_datamodule(OmegaConf.merge(data, {"num_workers": 0}), seed=0).train_dataloader()
    single_batches = iter(_forever(single))
    next(single_batches)
    start = time.process_time()
    for _ in range(args.steps):
        next(single_batches)
    load_cpu = (time.process_time() - start) / args.steps
    start = time.process_time()
    for _ in range(min(args.steps, 5)):
        step(fixed)
    step_cpu = (time.process_time() - start) / min(args.steps, 5)

    print(f"loader alone:            {loader_rate:8.2f} batches/s")
    print(f"training step alone:     {step_rate:8.2f} steps/s")
    print(f"ratio loader / step:     {loader_rate / step_rate:8.2f}  (>= 1: the loader keeps up)")
    print(f"training fed by loader:  {fed_rate:8.2f} steps/s  ({100 * fed_rate / step_rate:.0f}% of the step alone)")
    print(f"CPU time per batch:      {1000 * load_cpu:8.1f} ms   per training step: {1000 * step_cpu:.1f} ms "
          f"(loading costs {100 * load_cpu / step_cpu:.1f}% of a step)")
    if workers_cpu is not None:
        print(f"loader workers' CPU time while training: {1000 * workers_cpu:.1f} ms per step")


def _forever(loader):
    while True:
        yield from loader


if __name__ == "__main__":
    main()
