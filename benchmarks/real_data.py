"""Real-data benchmark: MR Sampler against posterior sampling and Euler-Maruyama on one checkpoint.

Tasks (the data sets of ../shared/data, see docs/DATA.md):
  denoise  train on clean-train with Gaussian noise sigma 25, test on CBSD68 (+ the same noise)
  derain   Rain100H pairs: train on 11..100, test on 1..10 (task=derain-split)

    python benchmarks/real_data.py --task denoise                 # train 12 min on the CPU, evaluate
    python benchmarks/real_data.py --task derain --quick          # 2 min training, a tiny evaluation
    python benchmarks/real_data.py --task denoise --ckpt path/to/last.ckpt   # evaluate a checkpoint

Training goes through the project's own `train.py` (a subprocess), bounded by wall-clock time
(`trainer.max_time`), with checkpoints under benchmarks/out/ (git-ignored). The evaluation restores
a fixed subset (center crops of the first N test images, named in the output) with every sampler
configuration: MR Sampler ODE orders 1-3 and SDE orders 1-2 (data parameterization, default time
schedule) at NFE 5/10/20, sampler v2 rows at NFE 5/10/20 (optimized steps, the UniC corrector,
`sampler_v2_configurations`), posterior and Euler-Maruyama at NFE 20/50/100, plus the LQ input itself.
Every configuration starts from the same prior noise (one seeded generator per image) and its SDE
noise comes from one fixed seed. Metrics: PSNR/SSIM, RGB and Y (per-image averages, mrlight.metrics),
LPIPS where its AlexNet weights load, and seconds per image (the N crops restored as one batch).

Writes benchmarks/out/real_<task>.{csv,md} and docs/img/real_<task>_{psnr_vs_nfe,examples}.png
(`--quick`: real_<task>_quick.* and the PNGs in --out, so quick runs never replace published numbers).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mrlight.checkpoint import load_checkpoint, network_from_checkpoint  # noqa: E402
from mrlight.config import load_config  # noqa: E402
from mrlight.metrics import RestorationMetrics, load_lpips  # noqa: E402
from mrlight.sampling import MR_DEFAULTS, sample  # noqa: E402
from mrlight.sde import MRSDE  # noqa: E402

# The project's task config per benchmark, and the training settings of the CPU-sized run.
TASKS = {
    "denoise": dict(config="denoise", what="Gaussian denoising sigma 25: train clean-train + noise, test CBSD68 + noise"),
    "derain": dict(config="derain-split", what="deraining: Rain100H pairs 11..100 for training, 1..10 for testing"),
}
MR_NFES = (5, 10, 20)
BASELINE_NFES = (20, 50, 100)


def configurations() -> list[dict]:
    """Every sampler configuration of the table, in order (keyword arguments of `sample` plus a label)."""
    rows = []
    for solver, orders in (("ode", (1, 2, 3)), ("sde", (1, 2))):
        for order in orders:
            for nfe in MR_NFES:
                rows.append(dict(label=f"MR {solver.upper()}-{order}", sampler="mr", solver=solver, order=order,
                                 parameterization="data", nfe=nfe))
    rows += sampler_v2_configurations()
    for name in ("posterior", "euler"):
        for nfe in BASELINE_NFES:
            rows.append(dict(label=name, sampler=name, solver="sde" if name == "euler" else "", order="",
                             parameterization="", nfe=nfe))
    return rows


# Sampler v2 (docs/SAMPLERS.md): optimized steps and the UniC corrector, in the data parameterization.
# (The ER-SDE rows of docs/results/real_*_v2.md came from a solver removed after losing there.)


def sampler_v2_configurations() -> list[dict]:
    rows = []
    for nfe in MR_NFES:
        for order, corrector in ((2, "none"), (2, "unic"), (3, "unic")):
            tag = "+UniC" if corrector == "unic" else ""
            rows.append(dict(label=f"MR ODE-{order} opt{tag}", sampler="mr", solver="ode", order=order,
                             parameterization="data", nfe=nfe, time_schedule="optimized", corrector=corrector))
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# -- training ------------------------------------------------------------------------------------
def train(a, run_dir: Path) -> tuple[Path, str]:
    """Train through train.py for `a.train_minutes` of wall-clock time; returns (last.ckpt, a note on how)."""
    spec = TASKS[a.task]
    seconds = int(round(a.train_minutes * 60))
    args = [f"task={spec['config']}", f"data.root={a.data_root}", f"output_dir={run_dir}", "overwrite=true",
            f"network.name={a.network}", f"network.overrides={json.dumps(a.overrides)}",
            f"objective.prediction={a.prediction}", f"seed={a.seed}",
            f"data.patch_size={a.patch}", f"data.batch_size={a.batch}", "data.num_workers=1",
            "data.samples_per_epoch=1600",
            f"optim.lr={a.lr}", "optim.scheduler=constant", "optim.warmup_steps=20",
            # A short run: with decay 0.999 the average would still hold a third of the random start.
            f"ema.decay={a.ema_decay}",
            "logger.backend=csv", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
            "trainer.limit_val_batches=0",  # no validation: the evaluation below is the validation
            "trainer.max_steps=1000000", f"trainer.max_time={{seconds: {seconds}}}"]
    command = [sys.executable, "train.py", *args]
    print("training:", " ".join(shlex.quote(c) for c in command), flush=True)
    start = time.perf_counter()
    log = run_dir.parent / f"train_{run_dir.name}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
        proc = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-30:]
        sys.exit(f"train.py failed with exit code {proc.returncode}; last lines of {log}:\n" + "\n".join(tail))
    shown = " ".join(shlex.quote(c) for c in ["python", "train.py", *args])
    note = (f"trained for {elapsed / 60:.1f} min wall-clock (train.py, max_time {a.train_minutes:g} min, "
            f"OMP_NUM_THREADS={a.threads}) with `{shown}`")
    (run_dir / "train_command.txt").write_text(note + "\n")
    return run_dir / "checkpoints" / "last.ckpt", note


# -- evaluation ----------------------------------------------------------------------------------
def test_subset(a, task_config: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Center crops of the first `a.images` test images, LQ made by the task's own data code."""
    from mrlight.data import build_datamodule

    cfg = load_config([f"task={task_config}", f"data.root={a.data_root}", f"data.val_crop={a.crop}",
                       "data.num_workers=0", f"seed={seed}"])
    dm = build_datamodule(cfg.data, seed=int(cfg.seed))
    dm.setup("test")
    ds = dm.datasets["test"]
    items = [ds[i] for i in range(min(a.images, len(ds)))]
    lq = torch.stack([it["lq"] for it in items]).float()
    gt = torch.stack([it["gt"] for it in items]).float()
    return lq, gt, [str(it["name"]) for it in items]


def lpips_status() -> str | None:
    """None when LPIPS(alex) loads, else the reason it does not."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = load_lpips("pretrained")
    if net is not None:
        return None
    reason = str(caught[0].message) if caught else "lpips could not be loaded"
    return reason.split(". Put ")[0].replace("LPIPS is skipped: ", "")


@torch.inference_mode()
def evaluate(net, sde: MRSDE, prediction: str, lq, gt, seed: int, quick_rows: bool = False):
    """Restore the batch with every configuration; returns (rows, outputs by label@nfe)."""
    n = lq.shape[0]
    priors = []
    for i in range(n):  # one generator per image: the same x_T for every sampler
        g = torch.Generator().manual_seed(seed + i)
        priors.append(sde.prior_sample(lq[i:i + 1], g))
    x_T = torch.cat(priors)
    lq_metrics = RestorationMetrics(lpips="pretrained")
    lq_metrics.update(lq, gt)
    rows = [dict(label="LQ input", sampler="input", solver="", order="", parameterization="", nfe=0,
                 **lq_metrics.compute(), sec_per_image="")]
    outputs = {}
    for cfg in configurations():
        opts = {k: v for k, v in cfg.items() if k != "label" and v != ""}
        if cfg["sampler"] != "mr":
            opts.pop("parameterization", None)
        generator = torch.Generator().manual_seed(seed + 10_000)  # SDE noise, identical for every configuration
        start = time.perf_counter()
        out = sample(net, lq, sde, prediction=prediction, x_T=x_T, generator=generator, **opts).clamp(0, 1)
        seconds = time.perf_counter() - start
        m = RestorationMetrics(lpips="pretrained")
        m.update(out, gt, seconds=seconds)
        row = {**cfg, **m.compute()}
        rows.append(row)
        outputs[f"{cfg['label']}@{cfg['nfe']}"] = out
        print(f"  {cfg['label']:>10} NFE {cfg['nfe']:>3}: PSNR {row['psnr']:.3f} dB, SSIM {row['ssim']:.4f}, "
              f"swd {row['swd']:.1f}, {row['sec_per_image']:.2f} s/image", flush=True)
    return rows, outputs


# -- outputs -------------------------------------------------------------------------------------
COLUMNS = ["label", "sampler", "solver", "order", "parameterization", "nfe", "psnr", "ssim", "psnr_y", "ssim_y",
           "lpips", "swd", "sec_per_image"]


def fmt(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_outputs(rows, header: list[str], verdict: list[str], lpips_note: str | None, csv_path: Path, md_path: Path):
    for r in rows:
        if lpips_note is not None:
            r["lpips"] = f"unavailable: {lpips_note}"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = header + [""]
    lines.append("| sampler | NFE | PSNR | SSIM | PSNR-Y | SSIM-Y | LPIPS | swd | s/image |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lp = r.get("lpips", "")
        lp = "n/a" if isinstance(lp, str) and lp.startswith("unavailable") else fmt(lp, 4)
        lines.append(f"| {r['label']} | {r['nfe'] or '-'} | {fmt(r['psnr'], 2)} | {fmt(r['ssim'], 4)} | "
                     f"{fmt(r['psnr_y'], 2)} | {fmt(r['ssim_y'], 4)} | {lp} | {fmt(r.get('swd', ''), 1)} | "
                     f"{fmt(r['sec_per_image'], 2) or '-'} |")
    lines += [""] + verdict
    if lpips_note is not None:
        lines.append(f"\nLPIPS: unavailable: {lpips_note}")
    md_path.write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def plot_psnr(rows, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=100)
    ax = fig.subplots()
    styles = {"MR ODE-1": ("tab:blue", ":", "o"), "MR ODE-2": ("tab:blue", "-", "o"), "MR ODE-3": ("tab:blue", "--", "o"),
              "MR SDE-1": ("tab:orange", ":", "s"), "MR SDE-2": ("tab:orange", "-", "s"),
              "posterior": ("tab:green", "-", "^"), "euler": ("tab:red", "-", "v")}
    for label, (color, ls, marker) in styles.items():
        pts = sorted((r["nfe"], r["psnr"]) for r in rows if r["label"] == label)
        if pts:
            ax.plot(*zip(*pts), color=color, ls=ls, marker=marker, label=label)
    lq = [r["psnr"] for r in rows if r["sampler"] == "input"]
    if lq:
        ax.axhline(lq[0], color="gray", ls="--", lw=1, label="LQ input")
    ax.set_xscale("log")
    ax.set_xticks([5, 10, 20, 50, 100])
    ax.set_xticklabels(["5", "10", "20", "50", "100"])
    ax.set_xlabel("NFE (network evaluations)")
    ax.set_ylabel("PSNR (dB, RGB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)


def plot_examples(lq, gt, outputs: dict, names: list[str], path: Path, k: int = 2) -> None:
    from matplotlib.figure import Figure

    mr_key = f"MR {MR_DEFAULTS['solver'].upper()}-{MR_DEFAULTS['order']}@10"
    cols = [("LQ", lq), (f"MR {MR_DEFAULTS['solver'].upper()}-{MR_DEFAULTS['order']} @10", outputs[mr_key]),
            ("posterior @100", outputs["posterior@100"]), ("GT", gt)]
    k = min(k, lq.shape[0])
    fig = Figure(figsize=(2.0 * len(cols), 2.0 * k + 0.3), dpi=72)
    axes = fig.subplots(k, len(cols), squeeze=False)
    for i in range(k):
        for j, (title, images) in enumerate(cols):
            ax = axes[i][j]
            ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
            if j == 0:
                ax.set_ylabel(names[i], fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    from PIL import Image

    # A 256-colour palette keeps the noisy crops under 300 KB; the metrics come from the float images.
    Image.open(buf).convert("RGB").quantize(colors=256).save(path, optimize=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--quick", action="store_true", help="2 min training, 2 crops of 64 px")
    p.add_argument("--train-minutes", type=float, default=None, help="training wall-clock time (default 12, quick 2)")
    p.add_argument("--ckpt", type=Path, default=None, help="evaluate this checkpoint instead of training")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    p.add_argument("--img-dir", type=Path, default=None, help="PNG folder (default docs/img; quick: --out)")
    p.add_argument("--data-root", default=str((REPO / ".." / "shared" / "data").resolve()))
    p.add_argument("--images", type=int, default=None, help="test images (default 4, quick 2)")
    p.add_argument("--crop", type=int, default=None, help="center crop side (default 128, quick 64)")
    p.add_argument("--network", default="nafnet-tiny")
    p.add_argument("--overrides", type=json.loads, default={}, help='network overrides as JSON, e.g. \'{"width": 32}\'')
    p.add_argument("--prediction", default="noise", help="training objective (noise | data | velocity | matching)")
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema-decay", type=float, default=0.98)
    p.add_argument("--train-only", action="store_true", help="train and stop (evaluate later with --ckpt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training and evaluation (default 1: on a shared 2-core machine, 2 "
                        "OpenMP threads per process spent 50x more CPU per training step spinning)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.train_minutes = a.train_minutes if a.train_minutes is not None else (2.0 if a.quick else 12.0)
    a.images = a.images or (2 if a.quick else 4)
    a.crop = a.crop or (64 if a.quick else 128)
    suffix = "_quick" if a.quick else ""
    img_dir = a.img_dir or (a.out if a.quick else REPO / "docs" / "img")
    a.out.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    spec = TASKS[a.task]
    invoked = "python benchmarks/real_data.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    t0 = time.perf_counter()
    load_start = load_average()

    if a.ckpt is None:
        ckpt_path, train_note = train(a, a.out / f"real_{a.task}{suffix}" / "run")
        if a.train_only:
            print(f"checkpoint: {ckpt_path}")
            return
    else:
        ckpt_path = a.ckpt
        made = a.ckpt.resolve().parent.parent / "train_command.txt"  # written by a training run of this script
        train_note = f"checkpoint {a.ckpt}" + (f", {made.read_text().strip()}" if made.is_file() else "")
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt["hyper_parameters"]["config"]
    net = network_from_checkpoint(ckpt, ckpt_path).eval().requires_grad_(False)
    sde = MRSDE(**{k: cfg["sde"][k] for k in ("T", "max_sigma", "schedule", "eps")})
    prediction = "noise" if cfg["objective"]["prediction"] == "matching" else cfg["objective"]["prediction"]
    params = sum(q.numel() for q in net.parameters())
    steps = ckpt.get("global_step", "?")

    lq, gt, names = test_subset(a, spec["config"], int(cfg.get("seed", 42)))
    print(f"evaluating {len(names)} crops of {a.crop} px: {', '.join(names)}", flush=True)
    note = lpips_status()
    eval_start = time.perf_counter()
    rows, outputs = evaluate(net, sde, prediction, lq, gt, a.seed)
    eval_seconds = time.perf_counter() - eval_start

    by = {(r["label"], r["nfe"]): r for r in rows}
    mr = by[(f"MR {MR_DEFAULTS['solver'].upper()}-{MR_DEFAULTS['order']}", 10)]
    post = by[("posterior", 100)]
    gap = mr["psnr"] - post["psnr"]
    best = max((r for r in rows if r["sampler"] == "mr" and r["nfe"] == 10), key=lambda r: r["psnr"])
    verdict = [
        f"**MR Sampler (default: {mr['label']}, data) at NFE 10 vs posterior at NFE 100, same checkpoint:** "
        f"{mr['psnr']:.2f} vs {post['psnr']:.2f} dB PSNR, difference {gap:+.2f} dB "
        f"({'ahead' if gap > 0.1 else 'within 0.1 dB' if gap >= -0.1 else 'NOT within 0.1 dB'}); SSIM {mr['ssim']:.4f} vs {post['ssim']:.4f}; "
        f"{mr['sec_per_image']:.2f} vs {post['sec_per_image']:.2f} s/image.",
        f"Best MR configuration at NFE 10: {best['label']} ({best['psnr']:.2f} dB).",
    ]
    header = [
        f"## Real data, {a.task}{' (quick)' if a.quick else ''}: {spec['what']}",
        "",
        f"- Command: `{invoked}`",
        f"- Machine: {machine()}; reduced CPU run (no GPU was lent to this run); load average "
        f"{load_start} at the start, {load_average()} at the end (the 2 cores were shared with other jobs, "
        f"so seconds are upper bounds)",
        f"- Network: {cfg['network']['name']} {cfg['network'].get('overrides') or ''} ({params / 1e6:.2f} M parameters), "
        f"objective {cfg['objective']['prediction']}, {steps} training steps, EMA weights; SDE max_sigma "
        f"{cfg['sde']['max_sigma']}, T {cfg['sde']['T']}; {train_note}",
        f"- Test subset: {len(names)} center crops of {a.crop} x {a.crop} px of the first test images "
        f"({', '.join(names)}), LQ made by the task's data code (seed {cfg.get('seed', 42)}); restored as one batch",
        f"- Same prior x_T for every sampler (generator seeded {a.seed}+i per image); SDE noise seed {a.seed + 10000}. "
        f"MR Sampler: data parameterization, default schedule ({MR_DEFAULTS['time_schedule']}, t_min "
        f"{MR_DEFAULTS['t_min']}); posterior and euler on the linspace grid",
        f"- Metrics: per-image averages; PSNR/SSIM on RGB and on BT.601 Y; evaluation took {eval_seconds / 60:.1f} min",
    ]
    csv_path, md_path = a.out / f"real_{a.task}{suffix}.csv", a.out / f"real_{a.task}{suffix}.md"
    table = write_outputs(rows, header, verdict, note, csv_path, md_path)
    plot_psnr(rows, img_dir / f"real_{a.task}{suffix}_psnr_vs_nfe.png",
              f"{a.task}: {len(names)} crops {a.crop}px, {cfg['network']['name']} {steps} steps (CPU run)")
    plot_examples(lq, gt, outputs, names, img_dir / f"real_{a.task}{suffix}_examples.png")
    print("\n" + table)
    print(f"\nwrote {csv_path}, {md_path}, {img_dir}/real_{a.task}{suffix}_*.png; total {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
