"""Train the CPU models of docs/BENCHMARKS.md section 6 in resumable segments, keeping log-spaced checkpoints.

    python benchmarks/train_cpu_models.py --task denoise --objective data --out /work/runs/denoise_data
    python benchmarks/train_cpu_models.py --task derain  --objective data --out /work/runs/derain_data \
        --milestones 250,500,1000,2000,4000,8000,16000 --until 07:55

Each segment is one `train.py` run up to the next milestone (`trainer.max_steps=<m>`, resumed from
the previous segment's last.ckpt with `ckpt_path=last`); the checkpoint reached is copied to
<out>/step_<m>.ckpt for the learning curves. Rerunning the command continues where it stopped
(a later session resumes it). The learning rate is constant after warmup so that segments add up to
one run. Each segment uses seed + 1000 * segment: the data loader restarts its order at every
segment, and a new seed gives it new crops and noise instead of replaying the first ones (the
diffusion time/noise draws are seeded by step already). All settings are in SETTINGS below and are
printed; --until stops before starting a segment that would end after that time (UTC, HH:MM).

Continuing a shipped model (its training checkpoints are not kept) is a fine-tune: `--init-from`
starts the network from the checkpoint's (EMA) weights with a fresh optimizer, and `--cosine` decays
the learning rate to optim.min_lr_ratio over the last milestone (give a single milestone: the decay
is laid out over trainer.max_steps, so every segment must share it):

    python benchmarks/train_cpu_models.py --task denoise --objective data --out /work/runs/denoise_ft \
        --init-from checkpoints/mrlight-denoise-s25-cpu.ckpt --cosine --milestones 12000

A further fine-tune of an already fine-tuned model can lower the peak rate with --lr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = {"denoise": "denoise", "derain": "derain-split"}
# The networks and patch chosen from benchmarks/cpu_throughput.py (docs/BENCHMARKS.md section 6):
# `nafnet-tiny` for the shipped data models, a scaled-down Refusion NAFNet (the published layers) for
# the noise-prediction denoiser (docs/results/cpu_throughput_noise.md).
NETWORKS = {
    "nafnet-tiny": ["network.name=nafnet-tiny",
                    "network.overrides={enc_blocks: [1, 1, 2], mid_blocks: 2, dec_blocks: [1, 1, 1]}"],
    "refusion-small": ["network.name=refusion-nafnet",
                       "network.overrides={width: 16, enc_blk_nums: [1, 1, 2], middle_blk_num: 2, dec_blk_nums: [1, 1, 1]}"],
}
SETTINGS = [
    "data.patch_size=64", "data.batch_size=8", "data.num_workers=1", "data.samples_per_epoch=100000",
    "optim.lr=1e-3", "optim.scheduler=constant", "optim.warmup_steps=100", "ema.decay=0.999",
    "logger.backend=csv", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    "trainer.limit_val_batches=0", "trainer.log_every_n_steps=25",
]
MILESTONES = "250,500,1000,2000,4000,8000,16000,32000"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), required=True)
    ap.add_argument("--objective", choices=["noise", "data", "velocity", "matching"], required=True)
    ap.add_argument("--out", required=True, help="run folder (outside the repository)")
    ap.add_argument("--network", choices=sorted(NETWORKS), default="nafnet-tiny")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--milestones", default=MILESTONES)
    ap.add_argument("--until", default=None, help="UTC HH:MM: start no segment expected to end after it")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-from", default=None, help="start the network from this checkpoint's weights")
    ap.add_argument("--cosine", action="store_true", help="cosine learning-rate decay over the last milestone")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: SETTINGS' optim.lr)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    milestones = [int(m) for m in args.milestones.split(",")]
    if args.cosine and len(milestones) != 1:
        ap.error("--cosine lays the decay out over trainer.max_steps: give one milestone")
    base = [sys.executable, str(REPO / "train.py"), f"task={TASKS[args.task]}", f"data.root={args.data_root}",
            f"output_dir={out / 'run'}", f"objective.prediction={args.objective}", *NETWORKS[args.network],
            *(s.replace("=constant", "=cosine") if args.cosine and s.startswith("optim.scheduler=") else s
              for s in SETTINGS)]
    if args.lr is not None:
        base = [f"optim.lr={args.lr}" if s.startswith("optim.lr=") else s for s in base]
    if args.init_from:
        base.append(f"init_from={Path(args.init_from).resolve()}")
    print("settings:", " ".join(base[2:]), flush=True)
    deadline = None
    if args.until:
        hh, mm = (int(v) for v in args.until.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    last_rate = None  # seconds per step of the previous segment
    done = 0
    for k, m in enumerate(milestones):
        target = out / f"step_{m}.ckpt"
        if target.exists():
            done = m
            continue
        if deadline is not None and last_rate is not None:
            eta = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=last_rate * (m - done) + 30)
            if eta > deadline:
                print(f"stop: segment to step {m} would end about {eta:%H:%M} UTC, after --until {args.until}", flush=True)
                break
        cmd = base + [f"trainer.max_steps={m}", f"seed={args.seed + 1000 * k}"]
        # ckpt_path=last resumes a segment cut short (or the previous one); with no last.ckpt it starts fresh
        cmd += ["ckpt_path=last"]
        start = time.time()
        log = out / f"segment_{m}.log"
        with open(log, "w") as fh:
            rc = subprocess.call(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
        if rc != 0:
            print(f"segment to step {m} failed with exit code {rc}; see {log}", flush=True)
            return rc
        shutil.copy2(out / "run" / "checkpoints" / "last.ckpt", target)
        last_rate = (time.time() - start) / (m - done)
        print(f"{dt.datetime.now(dt.timezone.utc):%H:%M:%S} step {m}: {time.time() - start:.0f} s "
              f"({1 / last_rate:.2f} steps/s) -> {target}", flush=True)
        done = m
    return 0


if __name__ == "__main__":
    sys.exit(main())
