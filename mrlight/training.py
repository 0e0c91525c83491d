"""From a resolved config to a Lightning Trainer run: logger, callbacks, trainer, fit, test.

`train.py` is the command line around `run(cfg)`; tests call `run` with their own DataModule.
"""

from __future__ import annotations

import netrc
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, LearningRateMonitor, ModelCheckpoint, WeightAveraging
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import get_ema_multi_avg_fn

from mrlight.checkpoint import CheckpointError, check_compatible, load_checkpoint
from mrlight.checkpoint_io import AtomicCheckpointIO, remove_stale_temporaries
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


STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class RunGuard(Callback):
    """Ctrl-C and SIGTERM stop training at the end of the current step with a resumable `last.ckpt`.

    SIGTERM is how SLURM, Kubernetes and most schedulers announce preemption (SIGKILL follows after a
    grace period). The handler only sets a flag; after the step every rank agrees on it (an
    all-reduce in `StepCheckpoint`, so one rank receiving the signal is enough), `last.ckpt` is written
    and training stops. A second Ctrl-C aborts at once. The handlers are installed by `run` before the
    Trainer exists and installed again at `on_train_start`, because Lightning's own SIGTERM handler
    (registered in between) would end the run with a SystemExit and no checkpoint. At the end of
    training a `last.ckpt` is written if the last step was not checkpointed yet. Listed before the EMA
    callback so that `on_train_end` saves before EMA copies the averaged weights over the raw ones.
    """

    def __init__(self, ckpt_dir: Path):
        self.last_path = Path(ckpt_dir) / "last.ckpt"
        self.requested: str | None = None  # "Ctrl-C" or "SIGTERM" once a stop was asked for
        self.interrupted_at: int | None = None
        self.saved_step = -1
        self._previous: dict = {}

    def _handler(self, signum, frame):
        name = STOP_SIGNALS.get(signum, str(signum))
        if self.requested and signum == signal.SIGINT:
            self.restore_handlers()
            raise KeyboardInterrupt
        if not self.requested:
            self.requested = name
            extra = " (press Ctrl-C again to abort now)" if signum == signal.SIGINT else ""
            print(f"\n{name}: stopping after this step and writing {self.last_path}{extra}", flush=True)

    def install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._handler)
            self._previous.setdefault(signum, previous)

    def restore_handlers(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.global_rank == 0:
            print(f"training from step {trainer.global_step} to {trainer.max_steps}; Ctrl-C or SIGTERM stops after "
                  f"the current step with a resumable checkpoint ({self.last_path})", flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        connector = trainer._signal_connector  # Lightning's flag: a SIGTERM before this point is ours too
        if connector.received_sigterm and not self.requested:
            self.requested = "SIGTERM"
        connector.received_sigterm = False
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._handler)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.fast_dev_run or self.interrupted_at is not None:
            return
        if trainer.global_step != self.saved_step:
            trainer.save_checkpoint(self.last_path, weights_only=False)


class StepCheckpoint(Checkpoint):
    """Writes `last.ckpt` after a training step, independently of validation, and after each validation.

    After every step the ranks all-reduce two flags: a stop was requested (RunGuard), and a periodic
    save is due (`checkpoint.every_n_steps`, or `checkpoint.every_minutes` since the last write on
    any rank). It also saves at `trainer.max_steps`. Being a `Checkpoint`, Lightning runs it after the
    other callbacks, so the EMA callback has already averaged this step's weights into what is saved.
    """

    def __init__(self, guard: RunGuard, every_n_steps: int | None = None, every_minutes: float | None = None):
        self.guard = guard
        self.every_n_steps = every_n_steps
        self.every_seconds = every_minutes * 60 if every_minutes else None
        self._last_write = time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_write = time.monotonic()

    def _due(self, step: int) -> bool:
        if self.every_n_steps and step % self.every_n_steps == 0:
            return True
        return bool(self.every_seconds) and time.monotonic() - self._last_write >= self.every_seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fast_dev_run:
            return
        step = trainer.global_step
        flags = torch.tensor([float(self.guard.requested is not None), float(self._due(step))],
                             device=pl_module.device)
        if trainer.world_size > 1:
            flags = trainer.strategy.reduce(flags, reduce_op="sum")
        stop, due = (bool(v > 0) for v in flags.tolist())
        last_step = trainer.max_steps > 0 and step >= trainer.max_steps
        if stop or due or last_step:
            trainer.save_checkpoint(self.guard.last_path, weights_only=False)
            self._last_write = time.monotonic()
        if stop and self.guard.interrupted_at is None:
            self.guard.requested = self.guard.requested or "SIGTERM"  # another rank received it
            self.guard.interrupted_at = step
            trainer.should_stop = True
            trainer.limit_val_batches = 0  # Lightning would validate before stopping: no time for that

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.guard.last_path, weights_only=False)
            self._last_write = time.monotonic()


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
        from mrlight.checkpoint import init_network_from

        init_network_from(module.net, cfg.init_from, config["network"], config["objective"]["prediction"])
    callbacks: list[Callback] = [guard]
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
    trainer = build_trainer(cfg, Path(cfg.output_dir), False, [])
    fn = trainer.validate if stage == "validate" else trainer.test
    results = fn(module, datamodule=datamodule, ckpt_path=str(ckpt_path), weights_only=True, verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


__all__ = ["run", "evaluate", "RunResult", "EMA", "RunGuard", "StepCheckpoint", "resolve_ckpt_path", "build_logger", "build_trainer", "wandb_mode",
           "ConfigError", "CheckpointError"]
