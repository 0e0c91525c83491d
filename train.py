"""Train an MR diffusion model: `python train.py task=<name> [key=value ...]`.

Config = configs/defaults.yaml <- configs/task/<task>.yaml <- key=value arguments (see
docs/TRAINING.md). `stage=validate ckpt_path=PATH` (or `stage=test`) evaluates a checkpoint and
prints its metrics (`val/psnr=...`) on the last lines. `ckpt_path=last` resumes, or starts fresh
when no checkpoint exists yet. `daclip=PATH` gives network daclip-unet its DA-CLIP encoder file
(checkpoints record the encoder's identity, not the path, so a moved file is simply given again).
Exit codes: 0 done, 1 training failed (e.g. NaN loss), 2 bad input
(config, data, checkpoint), 130 stopped by Ctrl-C, 143 stopped by SIGTERM (preemption); after
130 and 143 a resumable last.ckpt was written at the step reached.
"""

from __future__ import annotations

import os
import sys


def _error(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from omegaconf import OmegaConf

    from mrlight.config import load_config
    from mrlight.errors import CheckpointError, ConfigError, NonFiniteError
    from mrlight.module import NonFiniteLossError, rank_from_env

    try:
        cfg = load_config(argv)
    except ConfigError as err:
        return _error(str(err))
    rank0 = rank_from_env() == 0
    if rank0:
        print(OmegaConf.to_yaml(cfg), flush=True)
    try:
        from mrlight.data import DataError, check_data
    except ImportError as err:
        return _error(f"mrlight.data is not available ({err})")
    try:
        check_data(cfg.data)
    except DataError as err:
        return _error(str(err))

    from mrlight.training import evaluate, run

    if cfg.stage != "fit":
        try:
            metrics = evaluate(cfg)
        except (ConfigError, CheckpointError, DataError) as err:
            return _error(str(err))
        except NonFiniteError as err:
            return _error(f"evaluation stopped: {err}; the checkpoint's weights may be broken", 1)
        if rank0:  # one metric per line, val/psnr (or the test PSNRs) last
            for key in sorted(metrics, key=lambda k: (k.endswith("/psnr"), k)):
                print(f"{key}={metrics[key]:.6f}", flush=True)
        return 0
    try:
        result = run(cfg)
    except (ConfigError, CheckpointError, DataError) as err:
        return _error(str(err))
    except NonFiniteError as err:  # the validation sampler met NaN/Inf from the network
        last = os.path.join(cfg.output_dir, "checkpoints", "last.ckpt")
        return _error(f"validation stopped: {err}; the network diverged. Checkpoint: "
                      f"{last if os.path.exists(last) else 'none written yet'}", 1)
    except NonFiniteLossError as err:
        last = os.path.join(cfg.output_dir, "checkpoints", "last.ckpt")
        kept = f"the last good checkpoint is kept: {last}" if os.path.exists(last) else "no checkpoint had been written yet"
        return _error(f"{err}; training stopped, {kept}. Lower optim.lr, check the data, or enable optim.grad_clip.", 1)
    stop_code = {"Ctrl-C": 130, "SIGTERM": 143}.get(result.stop_signal, 0) if result.interrupted_at is not None else 0
    if not rank0:
        print(f"rank {rank_from_env()}: finished at step {result.global_step}", flush=True)
        return stop_code
    print(f"\nrun directory: {result.run_dir}")
    print(f"checkpoint:    {result.last_checkpoint if result.last_checkpoint.exists() else 'none (fast_dev_run writes no checkpoint)'}")
    if result.wandb_dir:
        print(f"W&B run:       {result.wandb_dir}" + (" (offline: `wandb sync` it to upload)" if "offline" in result.wandb_dir else ""))
    if result.val_metrics:
        print("validation:    " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.val_metrics.items())))
    if result.interrupted_at is not None:
        resume = " ".join(a for a in argv if not a.startswith("ckpt_path=")) + " ckpt_path=last"
        print(f"{result.stop_signal}: stopped at step {result.interrupted_at} (checkpoint written); "
              f"resume with: python train.py {resume}", flush=True)
    return stop_code


if __name__ == "__main__":
    sys.exit(main())
