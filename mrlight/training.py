"""From a resolved config to a Lightning Trainer run: run directory, trainer, fit, validate, test.

`train.py` is the command line around `run(cfg)` and `evaluate(cfg)`; tests call `run` with their
own DataModule. The callbacks (EMA, preemption-safe checkpoints, validation panels, the test report)
live in `mrlight.callbacks`, the loggers in `mrlight.loggers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from mrlight.callbacks import EMA, RunGuard, StepCheckpoint, TestReport, ValidationPanels, ema_warmup_fn  # noqa: F401
from mrlight.checkpoint import check_compatible, init_network_from, load_checkpoint
from mrlight.checkpoint_io import AtomicCheckpointIO, remove_stale_temporaries
from mrlight.config import to_dict
from mrlight.errors import CheckpointError, ConfigError
from mrlight.loggers import build_logger, wandb_mode  # noqa: F401
from mrlight.module import MRDiffusionModule, rank_from_env


@dataclass
class RunResult:
    run_dir: Path
    last_checkpoint: Path
    global_step: int
    interrupted_at: int | None = None
    stop_signal: str | None = None  # "Ctrl-C" or "SIGTERM" when interrupted
    val_metrics: dict = field(default_factory=dict)
    test_metrics: list = field(default_factory=list)
    wandb_dir: str | None = None


def resolve_ckpt_path(cfg: DictConfig) -> Path | None:
    """The checkpoint to start from; `ckpt_path=last` with no checkpoint yet means a fresh run (None).

    `last` is the newer of `checkpoints/last.ckpt` and the `hpc_ckpt_N.ckpt` that Lightning's SLURM
    auto-requeue writes into the run directory on the `--signal` signal, so a requeued job that always
    passes `ckpt_path=last` resumes from whichever was written last.
    """
    if not cfg.ckpt_path:
        return None
    if cfg.ckpt_path != "last":
        return Path(cfg.ckpt_path)
    run_dir = Path(cfg.output_dir)
    candidates = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if candidates:
        return max(candidates, key=lambda p: p.stat().st_mtime)
    if cfg.get("stage", "fit") != "fit":
        raise CheckpointError(f"ckpt_path=last: no checkpoint in {run_dir / 'checkpoints'} to evaluate")
    if rank_from_env() == 0:
        print(f"ckpt_path=last: no checkpoint in {run_dir / 'checkpoints'} yet; starting a fresh run", flush=True)
    return None


def build_trainer(cfg: DictConfig, run_dir: Path, logger, callbacks: list) -> pl.Trainer:
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no usable CUDA GPU "
                          f"(torch {torch.__version__}, CUDA available: False); use trainer.accelerator=cpu or auto")
    kwargs = dict(default_root_dir=str(run_dir), logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
                  val_check_interval=int(cfg.val.every_n_steps), check_val_every_n_epoch=None,
                  gradient_clip_val=cfg.optim.grad_clip, gradient_clip_algorithm="norm")
    kwargs.update(trainer_cfg)
    try:
        trainer = pl.Trainer(**kwargs)
    except (pl.utilities.exceptions.MisconfigurationException, ValueError, TypeError, RuntimeError) as err:
        raise ConfigError(f"invalid trainer.* settings: {err}") from None
    return trainer


def check_run_dir(cfg: DictConfig, ckpt_path: Path | None) -> None:
    """Refuse to start a fresh run over an existing one (its checkpoints would be overwritten)."""
    last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    if ckpt_path is None and last.exists() and not cfg.overwrite:
        raise ConfigError(f"{cfg.output_dir} already holds a run ({last}); resume it with ckpt_path=last, "
                          f"choose another output_dir=..., or pass overwrite=true to train from scratch there")


def reporting_callbacks(cfg: DictConfig) -> list[Callback]:
    """Validation panels (PNG + W&B) and the test report (CSV, W&B table and plot, trajectories)."""
    return [ValidationPanels(int(cfg.val.get("log_images", 0))),
            TestReport(trajectories=bool(cfg.get("test", {}).get("trajectories", True)))]


def _datamodule(cfg: DictConfig):
    from mrlight.data import build_datamodule

    # The fixed validation subset (the first val.max_images images) is cut in the DataModule, so that
    # every rank count shards the same images (trainer.limit_val_batches would count per rank).
    return build_datamodule(cfg.data, seed=int(cfg.seed), val_max_images=int(cfg.val.max_images))


def run(cfg: DictConfig, datamodule=None, *, stage_test: bool | None = None) -> RunResult:
    """Train (and optionally test) as configured. Raises ConfigError / CheckpointError for user errors."""
    guard = RunGuard(Path(cfg.output_dir) / "checkpoints")
    guard.install_handlers()  # from here on a SIGTERM stops after the first step instead of killing
    try:
        return _fit(cfg, guard, datamodule, stage_test)
    finally:
        guard.restore_handlers()


def _fit(cfg: DictConfig, guard: RunGuard, datamodule, stage_test: bool | None) -> RunResult:
    run_dir = Path(cfg.output_dir)
    ckpt_path = resolve_ckpt_path(cfg)
    config = to_dict(cfg)
    if ckpt_path is not None:
        check_compatible(load_checkpoint(ckpt_path), config, ckpt_path)
    if rank_from_env() == 0:
        check_run_dir(cfg, ckpt_path)
        run_dir.mkdir(parents=True, exist_ok=True)
        for tmp in remove_stale_temporaries(guard.last_path.parent):
            print(f"removed {tmp.name}, a checkpoint write cut short by a kill", flush=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = datamodule if datamodule is not None else _datamodule(cfg)
    module = MRDiffusionModule(config)
    if cfg.get("init_from") and ckpt_path is None:  # resuming restores its own weights
        init_network_from(module.net, cfg.init_from, config["network"], config["objective"]["prediction"])
    callbacks: list[Callback] = [guard, *reporting_callbacks(cfg)]
    if cfg.ema.enabled:
        callbacks.append(EMA(decay=float(cfg.ema.decay), warmup=bool(cfg.ema.get("warmup", True))))
    callbacks.append(StepCheckpoint(guard, cfg.checkpoint.every_n_steps, cfg.checkpoint.every_minutes))
    # last.ckpt is StepCheckpoint's alone: ModelCheckpoint's save_last would also write it from its
    # on_train_end, after EMA has copied the averaged weights over the raw ones.
    callbacks.append(ModelCheckpoint(dirpath=str(guard.last_path.parent), filename="best-step{step:07d}",
                                     monitor="val/psnr", mode="max", save_top_k=1, save_last=False,
                                     save_on_train_epoch_end=False, auto_insert_metric_name=False,
                                     enable_version_counter=False))
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
                       stop_signal=guard.requested if guard.interrupted_at is not None else None,
                       val_metrics={k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    if (cfg.test.after_fit if stage_test is None else stage_test) and guard.interrupted_at is None:
        trainer.test(module, datamodule=datamodule)
        result.test_metrics = getattr(module, "test_results", [])
    if isinstance(logger, pl.loggers.WandbLogger) and trainer.global_rank == 0:
        result.wandb_dir = str(Path(logger.experiment.dir).parent)
        logger.experiment.finish()
    return result


def evaluate(cfg: DictConfig, datamodule=None) -> dict[str, float]:
    """`stage=validate|test`: the metrics of checkpoint `ckpt_path` on the validation or test images.

    No training, no logger, nothing written into the run's checkpoints; the checkpoint's `state_dict`
    (the EMA weights when EMA was on) is evaluated. Identical on every rank (torchmetrics reduces).
    """
    stage = cfg.stage
    if not cfg.ckpt_path:
        raise ConfigError(f"stage={stage} evaluates a checkpoint: pass ckpt_path=PATH (or ckpt_path=last)")
    ckpt_path = resolve_ckpt_path(cfg)
    config = to_dict(cfg)
    check_compatible(load_checkpoint(ckpt_path), config, ckpt_path)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = datamodule if datamodule is not None else _datamodule(cfg)
    module = MRDiffusionModule(config)
    trainer = build_trainer(cfg, Path(cfg.output_dir), False, reporting_callbacks(cfg))
    fn = trainer.validate if stage == "validate" else trainer.test
    results = fn(module, datamodule=datamodule, ckpt_path=str(ckpt_path), weights_only=True, verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


__all__ = ["run", "evaluate", "RunResult", "EMA", "RunGuard", "StepCheckpoint", "resolve_ckpt_path", "build_logger", "build_trainer", "wandb_mode",
           "ConfigError", "CheckpointError"]
