"""Optimizer and learning-rate schedule factories of an mrlight run (`optim.*`)."""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "adam", "sgd")
LR_SCHEDULERS = ("cosine", "constant")


def build_optimizer(params, o: dict) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD (momentum 0.9) from an `optim` config block."""
    if o["name"] not in OPTIMIZERS:
        raise ValueError(f"unknown optim.name {o['name']!r}; valid: {', '.join(OPTIMIZERS)}")
    if o["name"] == "adamw":
        return torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"])
    if o["name"] == "adam":
        return torch.optim.Adam(params, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"])
    return torch.optim.SGD(params, lr=o["lr"], momentum=0.9, weight_decay=o["weight_decay"])


def build_scheduler(opt: torch.optim.Optimizer, o: dict, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then constant or cosine decay to `min_lr_ratio` at `total_steps` (per step)."""
    if o["scheduler"] not in LR_SCHEDULERS:
        raise ValueError(f"unknown optim.scheduler {o['scheduler']!r}; valid: {', '.join(LR_SCHEDULERS)}")
    factor = warmup_cosine(int(o["warmup_steps"]), int(total_steps), float(o["min_lr_ratio"]),
                           cosine=o["scheduler"] == "cosine")
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float, cosine: bool = True):
    """LR multiplier: linear warmup over `warmup_steps`, then cosine decay to `min_ratio` at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


__all__ = ["OPTIMIZERS", "LR_SCHEDULERS", "build_optimizer", "build_scheduler", "warmup_cosine"]
