"""Few-step sampling on a noise-prediction network, as it learns: PSNR, SSIM and the realism distance.

    python benchmarks/noise_curve.py --runs /work/runs/denoise_noise [--data-run /work/runs/denoise_data]
    python benchmarks/noise_curve.py --ckpt checkpoints/<noise denoiser>.ckpt --table2     # the paper's Table 2

Every checkpoint (step_<N>.ckpt of benchmarks/train_cpu_models.py) restores the same held-out colour
crops (CBSD68 + sigma-25 noise, which the denoisers never train on) from the same prior x_T and the
same SDE noise with each sampler of SAMPLERS: the MR Sampler's data form (the default, ODE-2) at NFE
5/10/20, its noise form at 10/20, the stochastic MR SDE-1/-2 at 10, and IR-SDE posterior sampling at
20/100. Reported per row: PSNR and SSIM (RGB, per-image mean) and `swd`, the set-level sliced
Wasserstein distance over Laplacian-pyramid patches (mrlight.metrics; lower is more realistic;
Karras et al. 2018). The question it answers (issue 16): does MR@10 - posterior@100 close as the
network learns, in PSNR and in swd?

--table2 reproduces the MR Sampler paper's Table 2 on one checkpoint: noise-form vs data-form solver
at NFE 5/10/20/50 and posterior@100.
Writes benchmarks/out/<name>.{csv,md} and docs/img/<name>.png.
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

from real_data import load_average, machine, test_subset  # noqa: E402

from mrlight.checkpoint import load_checkpoint, network_from_checkpoint  # noqa: E402
from mrlight.metrics import RestorationMetrics  # noqa: E402
from mrlight.objectives import output_of  # noqa: E402
from mrlight.sampling import sample  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402

DATA = dict(sampler="mr", solver="ode", order=2, parameterization="data")
NOISE = dict(sampler="mr", solver="ode", order=2, parameterization="noise")
SAMPLERS = [
    ("MR data", 5, DATA), ("MR data", 10, DATA), ("MR data", 20, DATA),
    ("MR noise", 10, NOISE), ("MR noise", 20, NOISE),
    ("MR SDE-1", 10, dict(sampler="mr", solver="sde", order=1)),
    ("MR SDE-2", 10, dict(sampler="mr", solver="sde", order=2)),
    ("posterior", 20, dict(sampler="posterior")), ("posterior", 100, dict(sampler="posterior")),
]
TABLE2 = [(form, nfe, opts) for form, opts in (("MR noise", NOISE), ("MR data", DATA)) for nfe in (5, 10, 20, 50)]
TABLE2 += [("posterior", 100, dict(sampler="posterior"))]
METRICS = ("psnr", "ssim", "swd")


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in run.glob("step_*.ckpt") if (m := re.fullmatch(r"step_(\d+)\.ckpt", p.name))]
    return sorted(found)


def load(path: Path):
    ckpt = load_checkpoint(path)
    cfg = ckpt["hyper_parameters"]["config"]
    net = network_from_checkpoint(ckpt, path).eval().requires_grad_(False)
    sde = MRSDE(**{k: cfg["sde"][k] for k in ("T", "max_sigma", "schedule", "eps")})
    return net, sde, output_of(cfg["objective"]["prediction"]), cfg


@torch.inference_mode()
def evaluate(path: Path, samplers, lq, gt, seed: int, extra: dict | None = None) -> dict[str, dict]:
    """{label@nfe: {psnr, ssim, swd}} for one checkpoint; same x_T and SDE noise for every sampler."""
    net, sde, prediction, _ = load(path)
    x_T = torch.cat([sde.prior_sample(lq[i:i + 1], torch.Generator().manual_seed(seed + i)) for i in range(len(lq))])
    out = {}
    for label, nfe, opts in samplers:
        restored = sample(net, lq, sde, prediction=prediction, x_T=x_T, nfe=nfe,
                          generator=torch.Generator().manual_seed(seed + 10_000), **opts, **(extra or {})).clamp(0, 1)
        m = RestorationMetrics(lpips="off")
        m.update(restored, gt)
        values = m.compute()
        out[f"{label}@{nfe}"] = {k: float(values[k]) for k in METRICS}
    return out


def input_metrics(lq, gt) -> dict:
    m = RestorationMetrics(lpips="off")
    m.update(lq, gt)
    values = m.compute()
    return {k: float(values[k]) for k in METRICS}


def plot(curves: dict, path: Path, title: str) -> None:
    """PSNR and swd against the training step, one line per sampler; one row of panels per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.0 * len(curves)), dpi=90)
    axes = fig.subplots(len(curves), 2, squeeze=False)
    for row, (run, (points, lq_row)) in zip(axes, curves.items()):
        keys = list(points[0][1])
        for ax, metric, label in ((row[0], "psnr", "PSNR (dB, RGB)"), (row[1], "swd", "swd (x1e3, lower is better)")):
            for key in keys:
                style = "-" if key.startswith("MR data") else ("--" if key.startswith("MR noise") else
                                                               "-." if key.startswith("MR SDE") else ":")
                ax.plot([s for s, _ in points], [r[key][metric] for _, r in points], style, marker="o", ms=3, label=key)
            ax.axhline(lq_row[metric], color="gray", lw=1, ls="--", label="noisy input")
            ax.set_xscale("log")
            if metric == "swd":
                ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
            ax.set_title(run, fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def table(rows: list[dict], keys: list[str], lq_row: dict, gap: bool) -> list[str]:
    head = "| run | step | " + " | ".join(keys) + (" | MR@10 - post@100 (dB) | swd MR@10 / post@100 |" if gap else " |")
    lines = [head, "|---" * (2 + len(keys) + 2 * gap) + "|",
             "| noisy input | | " + " | ".join(f"{lq_row['psnr']:.2f} / {lq_row['ssim']:.3f} / {lq_row['swd']:.1f}"
                                                for _ in keys[:1]) + " |" * (len(keys) - 1 + 2 * gap + 1)]
    for r in rows:
        cells = " | ".join(f"{r[k]['psnr']:.2f} / {r[k]['ssim']:.3f} / {r[k]['swd']:.1f}" for k in keys)
        extra = ""
        if gap:
            d = r["MR data@10"]["psnr"] - r["posterior@100"]["psnr"]
            q = r["MR data@10"]["swd"] / r["posterior@100"]["swd"]
            extra = f" | {d:+.2f} | {q:.2f} |"
        lines.append(f"| {r['run']} | {r['step']} | {cells}{extra if gap else ' |'}")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="", help="comma-separated run folders (step_<N>.ckpt files)")
    p.add_argument("--ckpt", type=Path, default=None, help="one checkpoint (with --table2)")
    p.add_argument("--table2", action="store_true", help="the MR Sampler paper's Table 2 on --ckpt")
    p.add_argument("--name", default=None)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", default=None, help="only these steps (comma-separated)")
    p.add_argument("--thresholding", action="store_true", help="dynamic thresholding of x0_hat (data form rows)")
    p.add_argument("--data-root", default=str((REPO / ".." / "shared" / "data").resolve()))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    p.add_argument("--img-dir", type=Path, default=REPO / "docs" / "img")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    name = a.name or ("noise_table2" if a.table2 else "noise_curve")
    invoked = "python benchmarks/noise_curve.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    load_start, t0 = load_average(), time.perf_counter()
    lq, gt, names = test_subset(a, "denoise", 42)
    lq_row = input_metrics(lq, gt)
    samplers = TABLE2 if a.table2 else SAMPLERS
    keys = [f"{label}@{nfe}" for label, nfe, _ in samplers]
    targets = [("ckpt", 0, a.ckpt)] if a.ckpt else []
    only = {int(s) for s in a.steps.split(",")} if a.steps else None
    for run in filter(None, a.runs.split(",")):
        targets += [(Path(run).name, step, path) for step, path in checkpoints(Path(run)) if not only or step in only]
    if not targets:
        sys.exit("nothing to evaluate: give --runs with step_<N>.ckpt files or --ckpt")
    rows, curves = [], {}
    for run, step, path in targets:
        start = time.perf_counter()
        result = evaluate(path, samplers, lq, gt, a.seed)
        rows.append({"run": run, "step": step, **result})
        curves.setdefault(run, ([], lq_row))[0].append((step, result))
        print(f"{run} step {step} ({time.perf_counter() - start:.0f} s): "
              + ", ".join(f"{k} {v['psnr']:.2f}/{v['swd']:.1f}" for k, v in result.items()), flush=True)
    with open(a.out / f"{name}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "step", "sampler", *METRICS])
        w.writerow(["noisy input", "", "", *(lq_row[m] for m in METRICS)])
        for r in rows:
            for k in keys:
                w.writerow([r["run"], r["step"], k, *(r[k][m] for m in METRICS)])
    gap = "MR data@10" in keys and "posterior@100" in keys
    lines = [f"- Command: `{invoked}`",
             f"- Machine: {machine()}; load average {load_start} at the start, {load_average()} at the end; "
             f"evaluation took {(time.perf_counter() - t0) / 60:.1f} min",
             f"- Test crops: {len(names)} center crops of {a.crop} px of CBSD68 ({', '.join(names)}), sigma 25; "
             f"same prior x_T (seed {a.seed}+i per image) and SDE noise (seed {a.seed + 10000}) for every row",
             "- Cells: PSNR (dB) / SSIM / swd (x1e3, lower is more realistic)", "",
             *table(rows, keys, lq_row, gap)]
    (a.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not a.table2 and any(len(points) > 1 for points, _ in curves.values()):
        plot(curves, a.img_dir / f"{name}.png", f"noise-prediction denoiser: {len(names)} CBSD68 crops {a.crop}px, "
                                                  f"sigma 25, same prior per row")


if __name__ == "__main__":
    main()
