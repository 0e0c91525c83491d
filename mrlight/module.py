"""`MRDiffusionModule`: the LightningModule of a conditional MR diffusion network.

One job per room: the module holds the network and SDE, computes the loss of a batch
(`mrlight.objectives`), builds its optimizer (`mrlight.optim`), restores images with the MR Sampler
(Li et al., ICLR 2025) for validation and test and accumulates their metrics. Reporting (panels,
the test table and plots, trajectories) is done by the callbacks of `mrlight.callbacks`, from what
`validation_step` / `test_step` return.

Time and noise draws come from a generator re-seeded at every batch from (seed + global_rank,
batch index), so DDP ranks train on different t and a resumed run draws what an uninterrupted
one would have. Validation restores a fixed subset of images on the EMA weights (the EMA callback
swaps them in), seeding the prior per image so numbers are comparable across validations and ranks.
"""

from __future__ import annotations

import os
import time
import zlib

import lightning.pytorch as pl
import torch

from mrlight.metrics import RestorationMetrics
from mrlight.models import build_configured
from mrlight.objectives import draw_times, loss_function, objective_loss, output_of, train_seed  # noqa: F401
from mrlight.optim import build_optimizer, build_scheduler, warmup_cosine  # noqa: F401  (warmup_cosine: API)
from mrlight.sampling import sample, sampler_options, with_network_defaults
from mrlight.sampling.schedules import DEFAULT_T_MIN
from mrlight.sde import MRSDE

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
        # The DA-CLIP encoder file (`daclip=`, daclip-unet) is a run-time setting: the saved config records
        # the encoder's identity (network.overrides.daclip = {model, sha256}), never the file's path.
        self.net, recorded = build_configured(config["network"], config.get("daclip"))
        self.save_hyperparameters({"config": {**config, "network": recorded,
                                              **({"daclip": None} if "daclip" in config else {})}})
        self.cfg = config
        sde_cfg = config["sde"]
        self.sde = MRSDE(T=sde_cfg["T"], max_sigma=sde_cfg["max_sigma"], schedule=sde_cfg["schedule"],
                         eps=sde_cfg["eps"])
        obj = config["objective"]
        self.objective = obj["prediction"]
        self.prediction = output_of(self.objective)
        self.discrete_t = self.objective == "matching" or obj.get("t_sampling", "continuous") == "discrete"
        self.loss_fn = loss_function(obj["loss"])
        self.channels_last = bool(config.get("channels_last", False))
        lp = lpips_mode(config["val"].get("lpips", True))
        self.val_metrics = RestorationMetrics(lpips=lp)
        self.test_metrics = torch.nn.ModuleDict({name: RestorationMetrics(lpips=lp)
                                                 for name, _ in self.test_samplers()})
        self._generator: torch.Generator | None = None
        # Distillation (mrlight.student, docs/DISTILL.md): self.net is the student; the teacher is loaded
        # in setup, kept out of the module's parameters (not trained, not averaged, not saved).
        distill = config.get("distill") or {}
        self.distill_cfg = distill if distill.get("teacher") else None
        self.distiller = None
        if self.distill_cfg is not None:
            self.teacher_metrics = RestorationMetrics(lpips=lp)

    # -- setup -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self._setup_teacher()
        # After the callbacks' setup, so the EMA copy holds the plain (uncompiled) network.
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.cfg.get("compile") and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    def _setup_teacher(self) -> None:
        """Load the teacher (frozen, eval) and the distillation method's state (mrlight.distill.Distiller)."""
        if self.distill_cfg is None or self.distiller is not None:
            return
        from mrlight.checkpoint import load_checkpoint, network_from_checkpoint
        from mrlight.distill import Distiller
        from mrlight.student import teacher_prediction

        d = self.distill_cfg
        ckpt = load_checkpoint(d["teacher"])
        teacher = network_from_checkpoint(ckpt, d["teacher"]).to(self.device).eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not a submodule
        self.teacher_prediction = teacher_prediction(ckpt["hyper_parameters"]["config"])
        iterations = self.trainer.max_steps if self._trainer is not None and self.trainer.max_steps > 0 else None
        self.distiller = Distiller(self.teacher, self, self.sde, calls=int(d["calls"]), prediction=self.teacher_prediction,
                                   method=d["method"], times=list(d["times"]), student_prediction=d["student_prediction"],
                                   step=d["step"], iterations=iterations, teacher_nfe=int(d["teacher_nfe"]),
                                   # the teacher solved as its checkpoint samples by default (noise teachers:
                                   # x0_hat clipped, later start; mrlight.sampling.with_network_defaults)
                                   teacher_kwargs=with_network_defaults({}, self.teacher_prediction, self.sde))

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
        return draw_times(self.sde, batch_size, generator, self.device, self.discrete_t)

    def model_step(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss of one batch under the configured objective (`mrlight.objectives`)."""
        x0, mu = batch["gt"].float(), batch["lq"].float()
        generator = generator if generator is not None else self._train_generator()
        t = self.draw_times(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_t = self.sde.q_sample(x0, mu, t, noise=noise)
        out = self(x_t, mu, t).float()
        return objective_loss(out, objective=self.objective, loss_fn=self.loss_fn, sde=self.sde, x0=x0, mu=mu,
                              x_t=x_t, t=t, noise=noise)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.distiller is not None:  # the student's loss against the teacher's trajectories
            loss = self.distiller.loss(batch["lq"].float(), generator=self._train_generator(), step=self.global_step)
        else:
            loss = self.model_step(batch)
        bad = (~torch.isfinite(loss.detach())).float()
        if self.trainer.world_size > 1:  # every rank stops at the same step, or DDP would hang
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if bad.item() > 0:
            raise NonFiniteLossError(self.global_step)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["gt"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.distiller is not None:
            self.distiller.after_step(self.global_step)

    def configure_optimizers(self):
        o = self.cfg["optim"]
        opt = build_optimizer([p for p in self.net.parameters() if p.requires_grad], o)
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        return {"optimizer": opt, "lr_scheduler": {"scheduler": build_scheduler(opt, o, int(total)), "interval": "step"}}

    # -- restoration -----------------------------------------------------------------------------
    def restore(self, lq: torch.Tensor, names, sampler_cfg: dict | None = None, **overrides) -> torch.Tensor:
        """Restore a batch with the configured sampler; the prior is seeded from the image names."""
        opts = sampler_options(sampler_cfg if sampler_cfg is not None else self.cfg["sampler"])
        opts.update(overrides)
        key = "|".join(map(str, names)).encode()
        generator = torch.Generator(device=lq.device).manual_seed(int(self.cfg["seed"]) + zlib.crc32(key))
        model = self
        if opts.get("sampler") == "distilled":
            from mrlight.student import distilled_from_config

            model = distilled_from_config(self, self.sde, self.distill_cfg or self.cfg["distill"])
        opts = with_network_defaults(opts, self.prediction, self.sde)  # noise networks: clip + later start
        return sample(model, lq.float(), self.sde, prediction=self.prediction, generator=generator, **opts)

    def _timed_restore(self, lq, names, **kw) -> tuple[torch.Tensor, float]:
        if lq.is_cuda:
            torch.cuda.synchronize(lq.device)
        start = time.perf_counter()
        out = self.restore(lq, names, **kw)
        if lq.is_cuda:
            torch.cuda.synchronize(lq.device)
        return out.clamp(0, 1), time.perf_counter() - start

    # -- validation ------------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        lq, gt = batch["lq"], batch["gt"]
        restored, seconds = self._timed_restore(lq, batch["name"])
        self.val_metrics.update(restored, gt, lq=lq, seconds=seconds)
        if self.distiller is not None:  # the teacher at MR@10 beside the student, same images and prior
            key = "|".join(map(str, batch["name"])).encode()
            generator = torch.Generator(device=lq.device).manual_seed(int(self.cfg["seed"]) + zlib.crc32(key))
            start = time.perf_counter()
            teacher = sample(self.teacher, lq.float(), self.sde, prediction=self.teacher_prediction,
                             generator=generator,
                             # the PF-ODE the student learns (teacher_trajectory: to the default t_min)
                             **with_network_defaults({"nfe": 10, "t_min": DEFAULT_T_MIN}, self.teacher_prediction,
                                                     self.sde)).clamp(0, 1)
            self.teacher_metrics.update(teacher, gt, lq=lq, seconds=time.perf_counter() - start)
        return {"restored": restored}  # for mrlight.callbacks.ValidationPanels

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # reduced over ranks by torchmetrics
        self.val_metrics.reset()
        if not self.trainer.sanity_checking:
            # Identical on every rank already; logged everywhere so ModelCheckpoint can monitor it.
            self.log_dict({f"val/{k}": v for k, v in values.items()}, sync_dist=False)
        if self.distiller is not None:
            teacher = self.teacher_metrics.compute()
            self.teacher_metrics.reset()
            if not self.trainer.sanity_checking:
                self.log_dict({f"val/teacher_mr10/{k}": v for k, v in teacher.items()}, sync_dist=False)

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

    def test_step(self, batch: dict, batch_idx: int) -> None:
        lq, gt = batch["lq"], batch["gt"]
        for name, scfg in self.test_samplers():
            restored, seconds = self._timed_restore(lq, batch["name"], sampler_cfg=scfg)
            self.test_metrics[name].update(restored, gt, lq=lq, seconds=seconds)

    def on_test_epoch_end(self) -> None:
        """Log every sampler's metrics; `test_results` holds the rows for mrlight.callbacks.TestReport."""
        rows = []
        for name, scfg in self.test_samplers():
            values = self.test_metrics[name].compute()
            self.test_metrics[name].reset()
            self.log_dict({f"test/{name}/{k}": v for k, v in values.items()}, sync_dist=False)
            rows.append({"sampler": scfg["sampler"], "nfe": int(scfg["nfe"]), **values})
        self.test_results = rows


def rank_from_env() -> int:
    """Global rank before torch.distributed is initialised (Lightning, torchrun and SLURM conventions)."""
    for var in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    node = int(os.environ.get("NODE_RANK", 0))
    local = int(os.environ.get("LOCAL_RANK", 0))
    return node * int(os.environ.get("LOCAL_WORLD_SIZE", 1)) + local if node else local
