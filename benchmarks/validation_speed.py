"""Validation time: the MR Sampler at NFE 10 against posterior sampling at NFE 100 (same images).

Runs Lightning's validation loop (`trainer.validate`) of `MRDiffusionModule` twice on the same
images, once per sampler, and reports the wall time and seconds per image. The network is
untrained (speed does not depend on the weights). Target: MR@10 <= 1/9 of posterior@100.

    python benchmarks/validation_speed.py [--images 4 --size 160 --threads 1]
"""

from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from mrlight.config import load_config, to_dict
from mrlight.module import MRDiffusionModule


def validate_seconds(config, images) -> tuple[float, dict]:
    module = MRDiffusionModule(config)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(images, batch_size=None)
    start = time.perf_counter()
    metrics = trainer.validate(module, dataloaders=loader, verbose=False)[0]
    return time.perf_counter() - start, metrics


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--network", default="unet-tiny")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    images = [{"gt": torch.rand(1, 3, args.size, args.size, generator=g),
               "lq": torch.rand(1, 3, args.size, args.size, generator=g), "name": [f"img{i}"]}
              for i in range(args.images)]
    base = ["task=demo", f"network.name={args.network}", "val.lpips=false", "output_dir=/tmp/mrlight-bench"]
    runs = {}
    for label, overrides in [("mr@10", ["sampler.sampler=mr", "sampler.nfe=10"]),
                             ("posterior@100", ["sampler.sampler=posterior", "sampler.nfe=100"])]:
        config = to_dict(load_config(base + overrides))
        validate_seconds(config, images[:1])  # warm-up
        runs[label] = validate_seconds(config, images)
        seconds, metrics = runs[label]
        print(f"{label:>14}: {seconds:7.2f} s for {args.images} images ({seconds / args.images:.3f} s/image, "
              f"logged val/sec_per_image {metrics['val/sec_per_image']:.3f})", flush=True)
    ratio = runs["mr@10"][0] / runs["posterior@100"][0]
    print(f"\n{args.network}, {args.images} images of {args.size}px, {args.threads} thread(s)")
    print(f"MR@10 / posterior@100 time ratio: {ratio:.3f}  (target <= {1 / 9:.3f})")


if __name__ == "__main__":
    main()
