"""From a resolved config to a Lightning Trainer run: logger, callbacks, trainer, fit, test.

`train.py` is the command line around `run(cfg)`; tests call `run` with their own DataModule.
"""

from __future__ import annotations

import math
import netrc
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, WeightAveraging
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import get_ema_multi_avg_fn

from mrlight.checkpoint import CheckpointError, check_compatible, load_checkpoint
from mrlight.config import ConfigError, to_dict
from mrlight.module import MRDiffusionModule, rank_from_env


class EMA(WeightAveraging):
    """Exponential moving average of the weights through Lightning's WeightAveraging.

    The callback swaps the EMA weights in for validation, copies them into the model when training
    ends (so `trainer.test` after `fit` uses them) and saves them as the checkpoint's `state_dict`
    (raw weights in `current_model_state`, restored on resume). The foreach multi-tensor update
    (`get_ema_multi_avg_fn`) keeps its cost small next to a training step.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True):
        super().__init__(use_buffers=True, multi_avg_fn=ema_warmup_fn(decay) if warmup else get_ema_multi_avg_fn(decay))


def ema_warmup_fn(decay: float):
    """EMA update whose decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates.

    The common warmup (TensorFlow's ExponentialMovingAverage with num_updates, diffusers' EMAModel):
    with a fixed 0.999 the average still holds 37% of the first weights after 1000 steps, so short
    runs and early checkpoints would be judged on a mostly untrained network.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema.decay must be in [0, 1], got {decay}")
    count = []  # updates so far, read once from the (checkpointed) n_averaged, then counted on the host

    @torch.no_grad()
    def update(ema_params, params, num_averaged) -> None:
        if not count:
            count.append(int(num_averaged))
        n = count[0]
        count[0] += 1
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(ema_params, params, 1.0 - d)

    return update


class RunGuard(Callback):
    """Ctrl-C stops at the end of the current step with a resumable checkpoint; the last step is always saved.

    The first SIGINT sets a flag (a second one aborts at once); after the step, every rank agrees
    (an all-reduce under DDP), `last.ckpt` is written and training stops. At the end of training a
    `last.ckpt` is written if the last step was not checkpointed yet. Listed before the EMA callback
    so its `on_train_end` runs before EMA copies the averaged weights over the raw ones.
    """

    def __init__(self, ckpt_dir: Path):
        self.last_path = Path(ckpt_dir) / "last.ckpt"
        self.requested = False
        self.interrupted_at: int | None = None
        self.saved_step = -1
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and writing a checkpoint (press Ctrl-C again to abort now)",
              flush=True)

    def on_fit_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        if trainer.global_rank == 0:
            print(f"training from step {trainer.global_step} to {trainer.max_steps}; Ctrl-C stops after the current "
                  f"step with a resumable checkpoint ({self.last_path})", flush=True)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        flag = self.requested
        if trainer.world_size > 1:
            flag = bool(trainer.strategy.reduce(torch.tensor(float(flag), device=pl_module.device),
                                                reduce_op="sum").item() > 0)
        if flag and self.interrupted_at is None:
            trainer.save_checkpoint(self.last_path, weights_only=False)
            self.interrupted_at = trainer.global_step
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.fast_dev_run or self.interrupted_at is not None:
            return
        if trainer.global_step != self.saved_step:
            trainer.save_checkpoint(self.last_path, weights_only=False)


@dataclass
class RunResult:
    run_dir: Path
    last_checkpoint: Path
    global_step: int
    interrupted_at: int | None = None
    val_metrics: dict = field(default_factory=dict)
    test_metrics: list = field(default_factory=list)
    wandb_dir: str | None = None


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


def resolve_ckpt_path(cfg: DictConfig) -> Path | None:
    if not cfg.ckpt_path:
        return None
    if cfg.ckpt_path == "last":
        return Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    return Path(cfg.ckpt_path)


def build_trainer(cfg: DictConfig, run_dir: Path, logger, callbacks: list) -> pl.Trainer:
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no usable CUDA GPU "
                          f"(torch {torch.__version__}, CUDA available: False); use trainer.accelerator=cpu or auto")
    kwargs = dict(default_root_dir=str(run_dir), logger=logger, callbacks=callbacks,
                  val_check_interval=int(cfg.val.every_n_steps), check_val_every_n_epoch=None,
                  gradient_clip_val=cfg.optim.grad_clip, gradient_clip_algorithm="norm")
    kwargs.update(trainer_cfg)
    try:
        trainer = pl.Trainer(**kwargs)
    except (pl.utilities.exceptions.MisconfigurationException, ValueError, TypeError, RuntimeError) as err:
        raise ConfigError(f"invalid trainer.* settings: {err}") from None
    if "limit_val_batches" not in trainer_cfg and not trainer.fast_dev_run:
        # The fixed validation subset: the first val.max_images images, sharded over the ranks.
        per_batch = int(cfg.data.val_batch_size) * trainer.world_size
        trainer.limit_val_batches = max(1, math.ceil(int(cfg.val.max_images) / per_batch))
    return trainer


def check_run_dir(cfg: DictConfig, ckpt_path: Path | None) -> None:
    """Refuse to start a fresh run over an existing one (its checkpoints would be overwritten)."""
    last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    if ckpt_path is None and last.exists() and not cfg.overwrite:
        raise ConfigError(f"{cfg.output_dir} already holds a run ({last}); resume it with ckpt_path=last, "
                          f"choose another output_dir=..., or pass overwrite=true to train from scratch there")


def run(cfg: DictConfig, datamodule=None, *, stage_test: bool | None = None) -> RunResult:
    """Train (and optionally test) as configured. Raises ConfigError / CheckpointError for user errors."""
    run_dir = Path(cfg.output_dir)
    ckpt_path = resolve_ckpt_path(cfg)
    config = to_dict(cfg)
    if ckpt_path is not None:
        check_compatible(load_checkpoint(ckpt_path), config, ckpt_path)
    if rank_from_env() == 0:
        check_run_dir(cfg, ckpt_path)
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if datamodule is None:
        from mrlight.data import build_datamodule

        datamodule = build_datamodule(cfg.data, seed=int(cfg.seed))
    module = MRDiffusionModule(config)
    if cfg.get("init_from") and ckpt_path is None:  # resuming restores its own weights
        from mrlight.interop import init_network_from

        init_network_from(module.net, cfg.init_from, config["network"])
    ckpt_dir = run_dir / "checkpoints"
    guard = RunGuard(ckpt_dir)
    callbacks: list[Callback] = [guard]
    if cfg.ema.enabled:
        callbacks.append(EMA(decay=float(cfg.ema.decay), warmup=bool(cfg.ema.get("warmup", True))))
    callbacks.append(ModelCheckpoint(dirpath=str(ckpt_dir), filename="best-step{step:07d}", monitor="val/psnr",
                                     mode="max", save_top_k=1, save_last=True, auto_insert_metric_name=False,
                                     enable_version_counter=False))  # last.ckpt is also written by RunGuard
    logger = build_logger(cfg, run_dir)
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = build_trainer(cfg, run_dir, logger, callbacks)
    if isinstance(logger, pl.loggers.WandbLogger) and trainer.global_rank == 0:
        (run_dir / "wandb_run_id.txt").write_text(logger.experiment.id)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                weights_only=True)
    result = RunResult(run_dir=run_dir, last_checkpoint=guard.last_path, global_step=trainer.global_step,
                       interrupted_at=guard.interrupted_at,
                       val_metrics={k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    if (cfg.test.after_fit if stage_test is None else stage_test) and guard.interrupted_at is None:
        trainer.test(module, datamodule=datamodule)
        result.test_metrics = getattr(module, "test_results", [])
    if isinstance(logger, pl.loggers.WandbLogger) and trainer.global_rank == 0:
        result.wandb_dir = str(Path(logger.experiment.dir).parent)
        logger.experiment.finish()
    return result


__all__ = ["run", "RunResult", "EMA", "RunGuard", "build_logger", "build_trainer", "wandb_mode",
           "ConfigError", "CheckpointError"]
