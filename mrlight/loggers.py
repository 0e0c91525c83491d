"""Loggers of an mrlight run: W&B (online or offline, one W&B run per run directory), CSV, or none."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig

from mrlight.errors import ConfigError


def wandb_mode(cfg: DictConfig) -> str:
    """'online' or 'offline' from logger.mode (auto: online when an API key is configured)."""
    mode = cfg.logger.mode
    if mode == "auto":
        env = os.environ.get("WANDB_MODE")
        if env in ("online", "offline"):
            return env
        return "online" if _has_wandb_key() else "offline"
    if mode == "online" and not _has_wandb_key():
        raise ConfigError("logger.mode=online needs a W&B API key: run `wandb login` or set WANDB_API_KEY "
                          "(or use logger.mode=offline and `wandb sync` later)")
    return mode


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def build_logger(cfg: DictConfig, run_dir: Path):
    backend = cfg.logger.backend
    save_dir = Path(cfg.logger.save_dir or run_dir)
    if backend == "none":
        return False
    if backend == "csv":
        return pl.loggers.CSVLogger(save_dir=str(save_dir), name="csv")
    mode = wandb_mode(cfg)
    # One W&B run per run directory: a resumed training continues the same W&B run.
    id_file = run_dir / "wandb_run_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() and cfg.ckpt_path else None
    logger = pl.loggers.WandbLogger(project=cfg.logger.project, name=cfg.logger.name or Path(run_dir).name,
                                    save_dir=str(save_dir), offline=mode == "offline", id=run_id,
                                    resume="allow" if run_id else None, log_model=False)
    return logger
