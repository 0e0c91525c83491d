"""Lightning training-step overhead against a plain PyTorch loop doing the same work (CPU).

Both loops run the same network, batch, objective (`MRDiffusionModule.model_step`), AdamW with
the warmup/cosine schedule, gradient-norm clipping and the foreach EMA update; the Lightning
side additionally has its loop, logging and the NaN-loss check. Per-step times are taken
between consecutive step starts; the two loops alternate in rounds so that machine load hits
both alike. Target: Lightning median step <= 1.05 x the plain loop's.

    python benchmarks/training_overhead.py [--steps 30 --rounds 3 --batch 4 --size 64 --threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning.pytorch as pl
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from mrlight.config import load_config, to_dict
from mrlight.module import MRDiffusionModule, warmup_cosine
from mrlight.training import EMA


class FixedBatch(Dataset):
    def __init__(self, batch, n):
        self.batch, self.n = batch, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.batch


class StepTimes(pl.Callback):
    def __init__(self):
        self.starts = []

    def on_train_batch_start(self, *args):
        self.starts.append(time.perf_counter())


def lightning_steps(config, batch, steps):
    module = MRDiffusionModule(config)
    timer = StepTimes()
    trainer = pl.Trainer(max_steps=steps + 1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, gradient_clip_val=config["optim"]["grad_clip"],
                         callbacks=[EMA(decay=config["ema"]["decay"]), timer])
    loader = DataLoader(FixedBatch(batch, steps + 1), batch_size=None, num_workers=0)
    trainer.fit(module, train_dataloaders=loader)
    timer.starts.append(time.perf_counter())  # end of the last step (fit returns right after it)
    return [b - a for a, b in zip(timer.starts[1:-1], timer.starts[2:])]  # skip the first (warm-up) step


def plain_steps(config, batch, steps):
    module = MRDiffusionModule(config)
    o = config["optim"]
    opt = torch.optim.AdamW(module.net.parameters(), lr=o["lr"], betas=tuple(o["betas"]),
                            weight_decay=o["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(o["warmup_steps"], steps + 1, o["min_lr_ratio"]))
    ema = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(config["ema"]["decay"]), use_buffers=True)
    generator = torch.Generator().manual_seed(0)
    starts = []
    for _ in range(steps + 1):
        starts.append(time.perf_counter())
        loss = module.model_step(batch, generator)
        if not torch.isfinite(loss).item():
            raise FloatingPointError("NaN")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.net.parameters(), o["grad_clip"])
        opt.step()
        sched.step()
        ema.update_parameters(module)
    starts.append(time.perf_counter())
    return [b - a for a, b in zip(starts[1:-1], starts[2:])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--network", default="unet-tiny")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = to_dict(load_config(["task=demo", f"network.name={args.network}", "output_dir=/tmp/mrlight-bench"]))
    g = torch.Generator().manual_seed(0)
    batch = {"gt": torch.rand(args.batch, 3, args.size, args.size, generator=g),
             "lq": torch.rand(args.batch, 3, args.size, args.size, generator=g), "name": ["x"] * args.batch}
    lit, plain = [], []
    for r in range(args.rounds):
        plain += plain_steps(config, batch, args.steps)
        lit += lightning_steps(config, batch, args.steps)
        print(f"round {r + 1}: plain median {statistics.median(plain) * 1e3:.1f} ms, "
              f"lightning median {statistics.median(lit) * 1e3:.1f} ms", flush=True)
    p, l = statistics.median(plain), statistics.median(lit)
    print(f"\n{args.network}, batch {args.batch} x {args.size}px, {args.threads} thread(s), "
          f"{len(plain)} steps each")
    print(f"plain PyTorch step : {p * 1e3:8.1f} ms (median)")
    print(f"Lightning step     : {l * 1e3:8.1f} ms (median)")
    print(f"overhead ratio     : {l / p:8.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
