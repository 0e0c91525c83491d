"""`MRDiffusionModule`: training, MR-Sampler validation and testing of a conditional MR diffusion network.

Objectives (`objective.prediction`):
- noise / data / velocity: regress the network output on `parameterization.target(...)` at a
  time t ~ U(0, T] (continuous, because the MR Sampler evaluates the network between grid
  points; `objective.t_sampling=discrete` draws IR-SDE's integer t in 1..T instead);
- matching (IR-SDE, Luo et al. ICML 2023): the network predicts noise; the loss compares one
  reverse-SDE Euler step from x_t, x_t - (theta_t (mu - x_t) - g2_t score) dt with
  score = -eps_hat / sigma_bar_t, with the true posterior mean of x_{t-1} given (x_t, x0);
  integer t in 1..T.

Time and noise draws come from a generator re-seeded at every batch from (seed + global_rank,
batch index), so DDP ranks train on different t and a resumed run draws what an uninterrupted
one would have. Validation restores a fixed subset of images with the
MR Sampler (Li et al., ICLR 2025) on the EMA weights (the EMA callback swaps them in), seeding the
prior per image so numbers are comparable across validations and ranks.
"""

from __future__ import annotations

import csv
import math
import os
import time
import zlib
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from mrlight import parameterization as P
from mrlight.metrics import RestorationMetrics
from mrlight.models import build_network
from mrlight.sampling import sample, sampler_options
from mrlight.sde import MRSDE

OBJECTIVES = ("noise", "data", "velocity", "matching")
LOSSES = ("l1", "l2")
OPTIMIZERS = ("adamw", "adam", "sgd")
LR_SCHEDULERS = ("cosine", "constant")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; raised on every rank at the same step."""

    def __init__(self, step: int):
        self.step = step
        super().__init__(f"the training loss became NaN/Inf at step {step}")


def lpips_mode(value) -> str:
    """`val.lpips` (true | false | "random") as a `metrics.load_lpips` mode."""
    if value is True:
        return "pretrained"
    if value is False or value is None:
        return "off"
    if value == "random":
        return "random"
    raise ValueError(f"val.lpips must be true, false or 'random', got {value!r}")


class MRDiffusionModule(pl.LightningModule):
    """LightningModule for MR diffusion; built from the resolved run config (a plain dict).

    The config is saved as the checkpoint's hyper-parameters, so `sample.py` can rebuild the
    network and SDE from a checkpoint alone.
    """

    def __init__(self, config: dict):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = config
        net_cfg = config["network"]
        self.net = build_network(net_cfg["name"], **dict(net_cfg.get("overrides") or {}))
        sde_cfg = config["sde"]
        self.sde = MRSDE(T=sde_cfg["T"], max_sigma=sde_cfg["max_sigma"], schedule=sde_cfg["schedule"],
                         eps=sde_cfg["eps"])
        obj = config["objective"]
        if obj["prediction"] not in OBJECTIVES:
            raise ValueError(f"unknown objective.prediction {obj['prediction']!r}; valid: {', '.join(OBJECTIVES)}")
        if obj["loss"] not in LOSSES:
            raise ValueError(f"unknown objective.loss {obj['loss']!r}; valid: {', '.join(LOSSES)}")
        self.objective = obj["prediction"]
        self.prediction = "noise" if self.objective == "matching" else self.objective
        self.discrete_t = self.objective == "matching" or obj.get("t_sampling", "continuous") == "discrete"
        self.loss_fn = F.l1_loss if obj["loss"] == "l1" else F.mse_loss
        self.channels_last = bool(config.get("channels_last", False))
        lp = lpips_mode(config["val"].get("lpips", True))
        self.val_metrics = RestorationMetrics(lpips=lp)
        self.test_metrics = torch.nn.ModuleDict({name: RestorationMetrics(lpips=lp)
                                                 for name, _ in self.test_samplers()})
        self._generator: torch.Generator | None = None
        self._panels: list[tuple[str, torch.Tensor]] = []

    # -- setup -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # After the callbacks' setup, so the EMA copy holds the plain (uncompiled) network.
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.cfg.get("compile") and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    def _train_generator(self) -> torch.Generator:
        """The generator of this batch's time and noise draws, re-seeded from the batch count.

        Seeding per batch (not once per run) makes the draws a function of (seed, rank, batch), so a
        run resumed from any checkpoint draws exactly what the uninterrupted run drew, on every rank,
        with nothing to store in the checkpoint.
        """
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        batch = self.trainer.fit_loop.total_batch_idx if self._trainer is not None else 0
        return self._generator.manual_seed(train_seed(int(self.cfg["seed"]), self.global_rank, int(batch)))

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
            mu = mu.contiguous(memory_format=torch.channels_last)
        return self.net(x_t, mu, t)

    # -- training --------------------------------------------------------------------------------
    def draw_times(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        T = self.sde.T
        if self.discrete_t:
            return torch.randint(1, T + 1, (batch_size,), generator=generator, device=self.device).float()
        return (1 - torch.rand(batch_size, generator=generator, device=self.device)) * T  # (0, T]

    def model_step(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss of one batch under the configured objective."""
        x0, mu = batch["gt"].float(), batch["lq"].float()
        generator = generator if generator is not None else self._train_generator()
        t = self.draw_times(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_t = self.sde.q_sample(x0, mu, t, noise=noise)
        out = self(x_t, mu, t).float()
        shape = (-1, 1, 1, 1)
        if self.objective == "matching":
            sigma_bar = self.sde.sigma_bar(t.double()).float().reshape(shape)
            theta = self.sde.theta(t.double()).float().reshape(shape)
            g2 = self.sde.g2(t.double()).float().reshape(shape)
            score = P.score_from_noise(out, sigma_bar)
            x_prev_hat = x_t - (theta * (mu - x_t) - g2 * score) * self.sde.dt
            c_x0, c_xt, _ = self.sde.posterior_coefficients(t.double(), t.double() - 1)
            c_x0, c_xt = c_x0.float().reshape(shape), c_xt.float().reshape(shape)
            x_prev = mu + c_x0 * (x0 - mu) + c_xt * (x_t - mu)
            return self.loss_fn(x_prev_hat, x_prev)
        alpha = self.sde.alpha(t.double()).float().reshape(shape)
        target = P.target(self.prediction, x0, noise, mu, alpha, self.sde.max_sigma)
        return self.loss_fn(out, target)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model_step(batch)
        bad = (~torch.isfinite(loss.detach())).float()
        if self.trainer.world_size > 1:  # every rank stops at the same step, or DDP would hang
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if bad.item() > 0:
            raise NonFiniteLossError(self.global_step)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["gt"].shape[0])
        return loss

    def configure_optimizers(self):
        o = self.cfg["optim"]
        if o["name"] not in OPTIMIZERS:
            raise ValueError(f"unknown optim.name {o['name']!r}; valid: {', '.join(OPTIMIZERS)}")
        params = [p for p in self.net.parameters() if p.requires_grad]
        if o["name"] == "adamw":
            opt = torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"])
        elif o["name"] == "adam":
            opt = torch.optim.Adam(params, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"])
        else:
            opt = torch.optim.SGD(params, lr=o["lr"], momentum=0.9, weight_decay=o["weight_decay"])
        if o["scheduler"] not in LR_SCHEDULERS:
            raise ValueError(f"unknown optim.scheduler {o['scheduler']!r}; valid: {', '.join(LR_SCHEDULERS)}")
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        lr_lambda = warmup_cosine(int(o["warmup_steps"]), int(total), float(o["min_lr_ratio"]),
                                  cosine=o["scheduler"] == "cosine")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- restoration -----------------------------------------------------------------------------
    def restore(self, lq: torch.Tensor, names, sampler_cfg: dict | None = None, **overrides) -> torch.Tensor:
        """Restore a batch with the configured sampler; the prior is seeded from the image names."""
        opts = sampler_options(sampler_cfg if sampler_cfg is not None else self.cfg["sampler"])
        opts.update(overrides)
        key = "|".join(map(str, names)).encode()
        generator = torch.Generator(device=lq.device).manual_seed(int(self.cfg["seed"]) + zlib.crc32(key))
        return sample(self, lq.float(), self.sde, prediction=self.prediction, generator=generator, **opts)

    def _timed_restore(self, lq, names, **kw) -> tuple[torch.Tensor, float]:
        if lq.is_cuda:
            torch.cuda.synchronize(lq.device)
        start = time.perf_counter()
        out = self.restore(lq, names, **kw)
        if lq.is_cuda:
            torch.cuda.synchronize(lq.device)
        return out.clamp(0, 1), time.perf_counter() - start

    # -- validation ------------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        lq, gt = batch["lq"], batch["gt"]
        restored, seconds = self._timed_restore(lq, batch["name"])
        self.val_metrics.update(restored, gt, lq=lq, seconds=seconds)
        n_log = int(self.cfg["val"].get("log_images", 0))
        if self.global_rank == 0 and not self.trainer.sanity_checking:
            for i in range(lq.shape[0]):
                if len(self._panels) < n_log:
                    panel = torch.cat([lq[i].float().clamp(0, 1), restored[i], gt[i].float().clamp(0, 1)], dim=-1)
                    self._panels.append((str(batch["name"][i]), panel.cpu()))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # reduced over ranks by torchmetrics
        self.val_metrics.reset()
        if not self.trainer.sanity_checking:
            # Identical on every rank already; logged everywhere so ModelCheckpoint can monitor it.
            self.log_dict({f"val/{k}": v for k, v in values.items()}, sync_dist=False)
            self._log_panels()
        self._panels = []

    def _log_panels(self) -> None:
        if not self._panels:
            return
        from torchvision.utils import save_image

        step = self.global_step
        run_dir = Path(self.cfg.get("output_dir") or ".")
        image_dir = run_dir / "images" / "val"
        image_dir.mkdir(parents=True, exist_ok=True)
        for name, panel in self._panels:
            save_image(panel, image_dir / f"step{step:07d}_{Path(name).stem}.png")
        for logger in self.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(key="val/panel", images=[p for _, p in self._panels],
                                 caption=[f"{n}: LQ | restored | GT" for n, _ in self._panels], step=step)

    # -- test ------------------------------------------------------------------------------------
    def test_samplers(self) -> list[tuple[str, dict]]:
        """(name, sampler config) for the test stage: the configured sampler, or the NFE sweep."""
        test = self.cfg.get("test", {})
        base = dict(self.cfg["sampler"])
        if not test.get("sweep"):
            return [(f"{base['sampler']}_nfe{base['nfe']}", base)]
        out = [(f"mr_nfe{n}", {**base, "sampler": "mr", "nfe": int(n)}) for n in test.get("sweep_nfe", [5, 10, 20])]
        for name in ("posterior", "euler"):
            nfe = int(test.get("baseline_nfe", 100))
            out.append((f"{name}_nfe{nfe}", {"sampler": name, "nfe": nfe}))
        return out

    def on_test_epoch_start(self) -> None:
        self._trajectory_image = None

    def test_step(self, batch: dict, batch_idx: int) -> None:
        lq, gt = batch["lq"], batch["gt"]
        if self.global_rank == 0 and getattr(self, "_trajectory_image", None) is None:
            self._trajectory_image = (lq[:1].detach(), gt[:1].detach())
        for name, scfg in self.test_samplers():
            restored, seconds = self._timed_restore(lq, batch["name"], sampler_cfg=scfg)
            self.test_metrics[name].update(restored, gt, lq=lq, seconds=seconds)

    def on_test_epoch_end(self) -> None:
        rows = []
        for name, scfg in self.test_samplers():
            values = self.test_metrics[name].compute()
            self.test_metrics[name].reset()
            self.log_dict({f"test/{name}/{k}": v for k, v in values.items()}, sync_dist=False)
            rows.append({"sampler": scfg["sampler"], "nfe": int(scfg["nfe"]), **values})
        self.test_results = rows
        if self.global_rank == 0:
            self._write_test_table(rows)
            if self.cfg.get("test", {}).get("trajectories", True) and getattr(self, "_trajectory_image", None):
                self._log_trajectories()

    def _log_trajectories(self) -> None:
        """The MR Sampler paper's figure 3 for the first test image: PNG in the run directory and W&B."""
        from mrlight.trajectories import figure_to_array, trajectory_figure

        lq, gt = self._trajectory_image
        generator = torch.Generator(device=lq.device).manual_seed(int(self.cfg["seed"]))
        fig = trajectory_figure(self, lq.float(), self.sde, gt=gt.float(), prediction=self.prediction,
                                generator=generator)
        out = Path(self.cfg.get("output_dir") or ".") / "images" / "test"
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "trajectories.png", dpi=90)
        for logger in self.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(key="test/trajectories", images=[figure_to_array(fig)])
        import matplotlib.pyplot as plt

        plt.close(fig)

    def _write_test_table(self, rows: list[dict]) -> None:
        columns = ["sampler", "nfe"] + sorted({k for r in rows for k in r} - {"sampler", "nfe"})
        run_dir = Path(self.cfg.get("output_dir") or ".")
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "test_results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        for logger in self.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                import wandb

                data = [[r.get(c) for c in columns] for r in rows]
                logger.log_table(key="test/sweep", columns=columns, data=data)
                series = sorted({r["sampler"] for r in rows})
                xs = [[r["nfe"] for r in rows if r["sampler"] == s] for s in series]
                ys = [[r["psnr"] for r in rows if r["sampler"] == s] for s in series]
                plot = wandb.plot.line_series(xs=xs, ys=ys, keys=series, title="test PSNR vs NFE", xname="NFE")
                logger.experiment.log({"test/psnr_vs_nfe": plot})


def train_seed(seed: int, rank: int, batch: int = 0) -> int:
    """Seed of one training batch's time/noise draws: seed + rank, so DDP ranks draw different t
    (DESIGN 7), plus a large multiple of the batch index, so batches never share a stream."""
    return seed + rank + 1_000_003 * batch


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


def rank_from_env() -> int:
    """Global rank before torch.distributed is initialised (Lightning, torchrun and SLURM conventions)."""
    for var in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    node = int(os.environ.get("NODE_RANK", 0))
    local = int(os.environ.get("LOCAL_RANK", 0))
    return node * int(os.environ.get("LOCAL_WORLD_SIZE", 1)) + local if node else local
