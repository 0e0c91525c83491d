"""Distillation on real images (issue 17): quality against network calls, student beside its teacher.

    python benchmarks/distill_real.py --teacher checkpoints/mrlight-noise-denoise-s25-cpu.ckpt \
        --student checkpoints/mrlight-distill2-noise-denoise-s25-cpu.ckpt --images 16 --skip 8 --crop 128

Every row restores the same CBSD68 crops (sigma 25, LQ made by the task's own data code) through
`mrlight.inference.Restorer`, i.e. exactly as `sample.py` would: the teacher with its checkpoint's
default sampler (for a noise checkpoint that includes `noise_network_defaults`) solved to t_min = 3,
the PF-ODE the students learn, at NFE 5/10/20 (and, for a noise teacher, its own default at NFE 10,
which stops at the later t_min of `noise_network_defaults`),
IR-SDE posterior sampling at NFE 100, and each student (`--student`, repeatable) in its own number
of calls, beside the teacher run as that k-call restorer without any training (what a student copied
from the teacher starts as: the measure of what distillation adds). The prior draw x_T is the same for every row (the Restorer seeds it from the image name).
Reported: PSNR / SSIM (RGB, mean over images), `swd` (set-level sliced Wasserstein distance of
Laplacian-pyramid patches, lower is more realistic; mrlight.metrics) and the wall clock per image
(one thread; the machine is shared, so compare rows of one run). The bars of issue 17 are checked
for the best student of at most 2 calls against the teacher's MR@10: PSNR within 0.3 dB (or
better) and swd at most 1.2 x the teacher's.

Writes benchmarks/out/<name>.{md,csv} and docs/img/<name>.png (PSNR and swd against calls).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from real_data import load_average, machine, test_subset  # noqa: E402

from mrlight.inference import Restorer  # noqa: E402
from mrlight.sampling.schedules import DEFAULT_T_MIN  # noqa: E402
from mrlight.metrics import RestorationMetrics  # noqa: E402

TEACHER_NFES = (5, 10, 20)
METRICS = ("psnr", "ssim", "swd")


@torch.inference_mode()
def run_row(restorer: Restorer, lq, gt, names, **sampler) -> dict:
    """Restore every image (one at a time, as sample.py does); metrics and seconds per image."""
    outs, seconds = [], 0.0
    for i, name in enumerate(names):
        start = time.perf_counter()
        outs.append(restorer(lq[i], name=name, **sampler))
        seconds += time.perf_counter() - start
    restored = torch.stack(outs)
    m = RestorationMetrics(lpips="off")
    m.update(restored, gt)
    values = m.compute()
    return {**{k: float(values[k]) for k in METRICS}, "seconds": seconds / len(names),
            "psnr_per_image": -10 * torch.log10((restored - gt).pow(2).flatten(1).mean(1))}


def plot(rows: list[dict], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=90)
    axes = fig.subplots(1, 2)
    teacher = [r for r in rows if r["kind"] == "teacher MR"]
    for ax, metric, label in ((axes[0], "psnr", "PSNR (dB, RGB)"), (axes[1], "swd", "swd (x1e3, lower is better)")):
        ax.plot([r["calls"] for r in teacher], [r[metric] for r in teacher], "-o", label="teacher, MR Sampler")
        for r in rows:
            if r["kind"] == "posterior":
                ax.plot([r["calls"]], [r[metric]], "s", color="gray", label="teacher, posterior@100")
            elif r["kind"] == "student":
                ax.plot([r["calls"]], [r[metric]], "*", ms=14, label=f"student: {r['label']}")
            elif r["kind"] == "copy":
                ax.plot([r["calls"]], [r[metric]], "x", ms=9, color="black", label=r["label"])
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10, 20, 100], ["1", "2", "5", "10", "20", "100"])
        ax.set_xlabel("network calls per image")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--student", type=Path, action="append", default=[], help="a distilled checkpoint (repeatable)")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--skip", type=int, default=8, help="leave out the first K CBSD68 images (used for choices)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--posterior-nfe", type=int, default=100)
    p.add_argument("--data-root", default=str((REPO / ".." / "shared" / "data").resolve()))
    p.add_argument("--name", default="distill_real")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    p.add_argument("--img-dir", type=Path, default=REPO / "docs" / "img")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    for path in [a.teacher, *a.student]:
        if not path.is_file():
            sys.exit(f"error: checkpoint not found: {path}")
    a.out.mkdir(parents=True, exist_ok=True)
    invoked = "python benchmarks/distill_real.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    load_start, t0 = load_average(), time.perf_counter()
    a.images += a.skip
    lq, gt, names = test_subset(a, "denoise", 42)
    lq, gt, names = lq[a.skip:], gt[a.skip:], names[a.skip:]
    m = RestorationMetrics(lpips="off")
    m.update(lq, gt)
    noisy = {k: float(v) for k, v in m.compute().items() if k in METRICS}

    teacher = Restorer.from_checkpoint(str(a.teacher))
    rows = []
    # The teacher's MR rows solve the PF-ODE the students learn (mrlight.distill.teacher_trajectory: to the
    # default t_min = 3); a noise checkpoint's own default stops earlier (noise_network_defaults' t_min),
    # reported in its own row.
    for nfe in TEACHER_NFES:
        rows.append({"kind": "teacher MR", "label": f"teacher MR@{nfe}", "calls": nfe,
                     **run_row(teacher, lq, gt, names, nfe=nfe, t_min=DEFAULT_T_MIN)})
        print(rows[-1]["label"], f"{rows[-1]['psnr']:.2f} / {rows[-1]['swd']:.1f}", flush=True)
    if teacher.prediction == "noise":
        rows.append({"kind": "default", "label": "teacher MR@10, the checkpoint's default (noise_network_defaults)",
                     "calls": 10, **run_row(teacher, lq, gt, names, nfe=10)})
        print(rows[-1]["label"], f"{rows[-1]['psnr']:.2f} / {rows[-1]['swd']:.1f}", flush=True)
    rows.append({"kind": "posterior", "label": f"teacher posterior@{a.posterior_nfe}", "calls": a.posterior_nfe,
                 **run_row(teacher, lq, gt, names, sampler="posterior", nfe=a.posterior_nfe)})
    print(rows[-1]["label"], f"{rows[-1]['psnr']:.2f} / {rows[-1]['swd']:.1f}", flush=True)
    for path in a.student:
        student = Restorer.from_checkpoint(str(path))
        calls = int(student.sampler["nfe"])
        # what distillation adds: the teacher itself run as the student's k-call restorer (the student's
        # starting point when it is a copy of the teacher: same times, output meaning and step rule)
        untrained = Restorer(teacher.net, teacher.sde, teacher.prediction, student.sampler, seed=teacher.seed,
                             distill=student.distill)
        rows.append({"kind": "copy", "label": f"teacher as a {calls}-call restorer (no distillation)",
                     "calls": calls, **run_row(untrained, lq, gt, names)})
        print(rows[-1]["label"], f"{rows[-1]['psnr']:.2f} / {rows[-1]['swd']:.1f}", flush=True)
        rows.append({"kind": "student", "label": f"{path.stem} ({calls} call{'s' if calls > 1 else ''})",
                     "calls": calls, **run_row(student, lq, gt, names)})
        print(rows[-1]["label"], f"{rows[-1]['psnr']:.2f} / {rows[-1]['swd']:.1f}", flush=True)

    ref = next(r for r in rows if r["label"] == "teacher MR@10")
    with open(a.out / f"{a.name}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "calls", *METRICS, "seconds_per_image"])
        w.writerow(["noisy input", 0, *(noisy[k] for k in METRICS), 0])
        for r in rows:
            w.writerow([r["label"], r["calls"], *(r[k] for k in METRICS), r["seconds"]])
    lines = [f"- Command: `{invoked}`",
             f"- Machine: {machine()}; load average {load_start} at the start, {load_average()} at the end; "
             f"took {(time.perf_counter() - t0) / 60:.1f} min",
             f"- Images: {len(names)} center crops of {a.crop} px of CBSD68 ({', '.join(names)}; the first {a.skip} "
             f"left out), sigma 25; the same prior x_T per image in every row (seeded from its name)",
             "- Each row through mrlight.inference.Restorer, as sample.py restores; the teacher's MR rows with its "
             "checkpoint's default sampler solved to t_min = 3 (the PF-ODE the students learn)", "",
             "| row | calls | PSNR (dB) | SSIM | swd (x1e3) | PSNR vs teacher MR@10 (per image, mean +- s.e.) "
             "| swd / teacher MR@10 | s / image |",
             "|---|---|---|---|---|---|---|---|",
             f"| noisy input | 0 | {noisy['psnr']:.2f} | {noisy['ssim']:.4f} | {noisy['swd']:.1f} | | | |"]
    for r in rows:
        d = r["psnr_per_image"] - ref["psnr_per_image"]
        lines.append(f"| {r['label']} | {r['calls']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['swd']:.1f} | "
                     f"{d.mean():+.2f} +- {d.std() / len(d) ** 0.5:.2f} | {r['swd'] / ref['swd']:.2f} | "
                     f"{r['seconds']:.2f} |")
    students = [r for r in rows if r["kind"] == "student" and r["calls"] <= 2]
    if students:
        best = max(students, key=lambda r: r["psnr"])
        dp, q = best["psnr"] - ref["psnr"], best["swd"] / ref["swd"]
        lines += ["", f"Bars of issue 17 for {best['label']} against the teacher's MR@10:", "",
                  f"- PSNR {dp:+.2f} dB (bar: >= -0.3): **{'met' if dp >= -0.3 else 'not met'}**",
                  f"- swd {q:.2f} x the teacher's (bar: <= 1.20): **{'met' if q <= 1.2 else 'not met'}**",
                  f"- wall clock {best['seconds']:.2f} s vs {ref['seconds']:.2f} s per image "
                  f"({ref['seconds'] / best['seconds']:.1f}x faster)"]
    (a.out / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, a.img_dir / f"{a.name}.png",
         f"distilled student vs its teacher: {len(names)} CBSD68 crops {a.crop}px, sigma 25, same prior per row")


if __name__ == "__main__":
    main()
