"""Lightning callbacks of an mrlight run: EMA weights, preemption-safe checkpoints, and reporting.

- `EMA` (Lightning's WeightAveraging with a warmup), `RunGuard` (Ctrl-C / SIGTERM stop after the step
  with a resumable checkpoint) and `StepCheckpoint` (periodic `last.ckpt`, independent of validation);
- `ValidationPanels` (LQ | restored | GT panels as PNGs and W&B images) and `TestReport` (the test
  sweep's CSV, W&B table and PSNR-vs-NFE plot, the trajectories figure), which read what
  `MRDiffusionModule.validation_step` / `test_step` return, so the module computes and the
  callbacks report.
"""

from __future__ import annotations

import csv
import signal
import threading
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


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


class ValidationPanels(Callback):
    """LQ | restored | GT panels of the first `count` validation images: PNGs in <output_dir>/images/val
    and W&B images, at every validation (rank 0, not during the sanity check)."""

    def __init__(self, count: int = 2):
        self.count = count
        self._panels: list[tuple[str, torch.Tensor]] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking or not isinstance(outputs, dict):
            return
        lq, gt, restored = batch["lq"], batch["gt"], outputs["restored"]
        for i in range(lq.shape[0]):
            if len(self._panels) < self.count:
                panel = torch.cat([lq[i].float().clamp(0, 1), restored[i], gt[i].float().clamp(0, 1)], dim=-1)
                self._panels.append((str(batch["name"][i]), panel.cpu()))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        panels, self._panels = self._panels, []
        if not panels:
            return
        from torchvision.utils import save_image

        step = trainer.global_step
        image_dir = Path(pl_module.cfg.get("output_dir") or ".") / "images" / "val"
        image_dir.mkdir(parents=True, exist_ok=True)
        for name, panel in panels:
            save_image(panel, image_dir / f"step{step:07d}_{Path(name).stem}.png")
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(key="val/panel", images=[p for _, p in panels],
                                 caption=[f"{n}: LQ | restored | GT" for n, _ in panels], step=step)


class TestReport(Callback):
    """After `trainer.test`: test_results.csv in the run directory, a W&B table and PSNR-vs-NFE plot,
    and the MR Sampler paper's figure 3 (samplers' trajectories in 2 PCs) for the first test image."""

    def __init__(self, trajectories: bool = True):
        self.trajectories = trajectories
        self._first: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_test_start(self, trainer, pl_module) -> None:
        self._first = None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.global_rank == 0 and self._first is None:
            self._first = (batch["lq"][:1].detach(), batch["gt"][:1].detach())

    def on_test_end(self, trainer, pl_module) -> None:
        rows = getattr(pl_module, "test_results", None)
        if trainer.global_rank != 0 or not rows:
            return
        run_dir = Path(pl_module.cfg.get("output_dir") or ".")
        self._write_table(trainer, rows, run_dir)
        if self.trajectories and self._first is not None:
            self._log_trajectories(trainer, pl_module, run_dir)

    @staticmethod
    def _write_table(trainer, rows: list[dict], run_dir: Path) -> None:
        columns = ["sampler", "nfe"] + sorted({k for r in rows for k in r} - {"sampler", "nfe"})
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "test_results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                import wandb

                data = [[r.get(c) for c in columns] for r in rows]
                logger.log_table(key="test/sweep", columns=columns, data=data)
                series = sorted({r["sampler"] for r in rows})
                xs = [[r["nfe"] for r in rows if r["sampler"] == s] for s in series]
                ys = [[r["psnr"] for r in rows if r["sampler"] == s] for s in series]
                plot = wandb.plot.line_series(xs=xs, ys=ys, keys=series, title="test PSNR vs NFE", xname="NFE")
                logger.experiment.log({"test/psnr_vs_nfe": plot})

    def _log_trajectories(self, trainer, pl_module, run_dir: Path) -> None:
        import matplotlib.pyplot as plt

        from mrlight.trajectories import figure_to_array, trajectory_figure

        lq, gt = self._first
        generator = torch.Generator(device=lq.device).manual_seed(int(pl_module.cfg["seed"]))
        fig = trajectory_figure(pl_module, lq.float(), pl_module.sde, gt=gt.float(), prediction=pl_module.prediction,
                                generator=generator)
        out = run_dir / "images" / "test"
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "trajectories.png", dpi=90)
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(key="test/trajectories", images=[figure_to_array(fig)])
        plt.close(fig)
