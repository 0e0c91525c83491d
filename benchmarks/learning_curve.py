"""Learning curve of the sampler gap: PSNR of several samplers on every checkpoint of CPU training runs.

    python benchmarks/learning_curve.py --task denoise --runs /work/runs/denoise_data
    python benchmarks/learning_curve.py --task denoise --name objectives --configs study \
        --runs /work/runs/denoise_noise,/work/runs/denoise_data,/work/runs/denoise_velocity,/work/runs/denoise_matching

A run folder is what benchmarks/train_cpu_models.py writes (step_<N>.ckpt files). Every checkpoint
restores the same test crops (center crops of the first --images test images, LQ made by the
task's data code) from the same prior x_T (one seeded generator per image) with the same SDE
noise seed, so differences between rows are the network's and the sampler's, not the draw's.
Writes benchmarks/out/<name>_<task>.{csv,md} and docs/img/<name>_<task>.png (PSNR vs training
step, one line per sampler; with several runs, one panel per run), and for --configs study the
training-loss curves of the runs (docs/img/<name>_<task>_loss.png).
"""

from __future__ import annotations

import argparse
import csv
import re
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from real_data import TASKS, load_average, machine, test_subset  # noqa: E402

from mrlight.checkpoint import load_checkpoint, network_from_checkpoint  # noqa: E402
from mrlight.metrics import RestorationMetrics  # noqa: E402
from mrlight.sampling import sample  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402

MR = dict(sampler="mr", parameterization="data")
CONFIGS = {
    # The curve: the default MR Sampler (ODE-2, data), the best stochastic MR configuration of
    # the earlier real-data tables (SDE-1), and the IR-SDE baselines.
    "curve": [("MR ODE-2", 5, dict(MR, solver="ode", order=2)), ("MR ODE-2", 10, dict(MR, solver="ode", order=2)),
              ("MR ODE-2", 20, dict(MR, solver="ode", order=2)), ("MR SDE-1", 5, dict(MR, solver="sde", order=1)),
              ("MR SDE-1", 10, dict(MR, solver="sde", order=1)), ("MR SDE-1", 20, dict(MR, solver="sde", order=1)),
              ("MR SDE-2", 10, dict(MR, solver="sde", order=2)),
              ("posterior", 20, dict(sampler="posterior")), ("posterior", 100, dict(sampler="posterior")),
              ("euler", 100, dict(sampler="euler"))],
    # The objective study: the default sampler at 5/10/20 and the reference.
    "study": [("MR ODE-2", 5, dict(MR, solver="ode", order=2)), ("MR ODE-2", 10, dict(MR, solver="ode", order=2)),
              ("MR ODE-2", 20, dict(MR, solver="ode", order=2)), ("posterior", 100, dict(sampler="posterior"))],
}


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in run.glob("step_*.ckpt") if (m := re.fullmatch(r"step_(\d+)\.ckpt", p.name))]
    if not found:
        sys.exit(f"no step_<N>.ckpt in {run} (train it with benchmarks/train_cpu_models.py)")
    return sorted(found)


@torch.inference_mode()
def evaluate(ckpt_path: Path, configs, lq, gt, seed: int) -> tuple[dict, dict]:
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt["hyper_parameters"]["config"]
    net = network_from_checkpoint(ckpt, ckpt_path).eval().requires_grad_(False)
    sde = MRSDE(**{k: cfg["sde"][k] for k in ("T", "max_sigma", "schedule", "eps")})
    prediction = "noise" if cfg["objective"]["prediction"] == "matching" else cfg["objective"]["prediction"]
    x_T = torch.cat([sde.prior_sample(lq[i:i + 1], torch.Generator().manual_seed(seed + i)) for i in range(len(lq))])
    psnr = {}
    for label, nfe, opts in configs:
        out = sample(net, lq, sde, prediction=prediction, x_T=x_T, nfe=nfe,
                     generator=torch.Generator().manual_seed(seed + 10_000), **opts).clamp(0, 1)
        m = RestorationMetrics(lpips="off")
        m.update(out, gt)
        psnr[f"{label}@{nfe}"] = float(m.compute()["psnr"])
    return psnr, cfg


def read_losses(run: Path) -> list[tuple[int, float]]:
    """(step, train/loss) from the CSV logs of every segment of the run."""
    points = {}
    for f in sorted((run / "run" / "csv").glob("version_*/metrics.csv")):
        with open(f) as fh:
            for row in csv.DictReader(fh):
                if row.get("train/loss"):
                    points[int(row["step"])] = float(row["train/loss"])
    return sorted(points.items())


def plot(results: dict, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    runs = list(results)
    fig = Figure(figsize=(5.2 * len(runs), 4.2), dpi=90)
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, run in zip(axes, runs):
        rows = results[run]
        keys = [k for k in rows[0][1] if k != "LQ input"]
        for key in keys:
            style = "-" if key.startswith("MR ODE") else ("--" if key.startswith("MR SDE") else ":")
            ax.plot([s for s, _ in rows], [r[key] for _, r in rows], style, marker="o", ms=3, label=key)
        ax.axhline(rows[0][1]["LQ input"], color="gray", lw=1, ls="--", label="LQ input")
        ax.set_xscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("PSNR (dB, RGB)")
        ax.set_title(f"{run}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def plot_losses(losses: dict, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0 * len(losses), 3.4), dpi=90)
    axes = fig.subplots(1, len(losses), squeeze=False)[0]
    for ax, (run, pts) in zip(axes, losses.items()):
        steps, vals = zip(*pts)
        ax.plot(steps, vals, lw=0.6, alpha=0.5)
        k = 8  # running mean over 8 logged points
        if len(vals) > k:
            smooth = [sum(vals[i - k:i]) / k for i in range(k, len(vals) + 1)]
            ax.plot(steps[k - 1:], smooth, lw=1.5)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(f"{run}: train/loss", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--runs", required=True, help="comma-separated run folders of benchmarks/train_cpu_models.py")
    p.add_argument("--configs", choices=sorted(CONFIGS), default="curve")
    p.add_argument("--name", default="learning_curve")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", default=None, help="only these steps (comma-separated)")
    p.add_argument("--data-root", default=str((REPO / ".." / "shared" / "data").resolve()))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    p.add_argument("--img-dir", type=Path, default=REPO / "docs" / "img")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    invoked = "python benchmarks/learning_curve.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    load_start, t0 = load_average(), time.perf_counter()
    runs = [Path(r) for r in a.runs.split(",")]
    only = {int(s) for s in a.steps.split(",")} if a.steps else None
    configs = CONFIGS[a.configs]
    lq = gt = names = None
    results, objectives, rows_csv = {}, {}, []
    for run in runs:
        results[run.name] = []
        for step, path in checkpoints(run):
            if only and step not in only:
                continue
            if lq is None:
                cfg0 = load_checkpoint(path)["hyper_parameters"]["config"]
                lq, gt, names = test_subset(a, TASKS[a.task]["config"], int(cfg0.get("seed", 42)))
                base = RestorationMetrics(lpips="off")
                base.update(lq, gt)
                lq_psnr = float(base.compute()["psnr"])
            start = time.perf_counter()
            psnr, cfg = evaluate(path, configs, lq, gt, a.seed)
            psnr["LQ input"] = lq_psnr
            objectives[run.name] = cfg["objective"]["prediction"]
            results[run.name].append((step, psnr))
            rows_csv.append({"run": run.name, "objective": cfg["objective"]["prediction"], "step": step, **psnr})
            print(f"{run.name} step {step} ({time.perf_counter() - start:.0f} s): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in psnr.items()), flush=True)
    keys = [f"{label}@{nfe}" for label, nfe, _ in configs]
    with open(a.out / f"{a.name}_{a.task}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["run", "objective", "step", "LQ input", *keys])
        w.writeheader()
        w.writerows(rows_csv)
    lines = [f"- Command: `{invoked}`",
             f"- Machine: {machine()}; load average {load_start} at the start, {load_average()} at the end; "
             f"evaluation took {(time.perf_counter() - t0) / 60:.1f} min",
             f"- Test crops: {len(names)} center crops of {a.crop} px of the first test images ({', '.join(names)}); "
             f"same prior x_T (seed {a.seed}+i per image) and SDE noise (seed {a.seed + 10000}) for every row; "
             f"PSNR in dB (RGB, per-image average), LQ input {lq_psnr:.2f} dB", ""]
    gap = "MR ODE-2@10" in keys and "posterior@100" in keys
    lines.append("| run | objective | step | " + " | ".join(keys) + (" | MR@10 - post@100 |" if gap else " |"))
    lines.append("|---" * (3 + len(keys) + gap) + "|")
    for r in rows_csv:
        cells = " | ".join(f"{r[k]:.2f}" for k in keys)
        extra = f" | {r['MR ODE-2@10'] - r['posterior@100']:+.2f} |" if gap else " |"
        lines.append(f"| {r['run']} | {r['objective']} | {r['step']} | {cells}{extra}")
    md = "\n".join(lines) + "\n"
    (a.out / f"{a.name}_{a.task}.md").write_text(md)
    title = f"{a.task}: {len(names)} crops {a.crop}px, CPU-trained checkpoints"
    plot(results, a.img_dir / f"{a.name}_{a.task}.png", title)
    if a.configs == "study":
        losses = {run.name: pts for run in runs if (pts := read_losses(run))}
        if losses:
            plot_losses(losses, a.img_dir / f"{a.name}_{a.task}_loss.png", f"{a.task}: training loss per objective")
    print("\n" + md)
    print(f"wrote {a.out / f'{a.name}_{a.task}'}.{{csv,md}} and {a.img_dir / f'{a.name}_{a.task}'}*.png")


if __name__ == "__main__":
    main()
