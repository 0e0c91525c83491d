"""Full-size test images restored by a checkpoint: the default MR Sampler on every image, posterior@100 on a subset.

    python benchmarks/full_size.py --task denoise --ckpt checkpoints/mrlight-denoise-s25-cpu.ckpt
    python benchmarks/full_size.py --task derain --ckpt checkpoints/mrlight-derain-rain100h-cpu.ckpt --paired 10

Every test image of the task (CBSD68 + noise sigma 25 for denoise, Rain100H 1..10 for derain; LQ
made by the task's own data code) is restored at full size, one image at a time, with the
checkpoint's sampler (the MR Sampler default, NFE 10). On the first --paired images the same
prior x_T is also restored with posterior sampling at NFE 100 (IR-SDE's sampler), so the two are
compared image for image. Metrics: per-image PSNR/SSIM (RGB and BT.601 Y) averaged over the images.
Writes benchmarks/out/full_<task>.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from real_data import TASKS, load_average, machine  # noqa: E402

from mrlight.inference import Restorer  # noqa: E402
from mrlight.metrics import RestorationMetrics  # noqa: E402
from mrlight.sampling import sample  # noqa: E402


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR of one image in [0, 1] (for the per-image log lines; the tables use RestorationMetrics)."""
    return float(-10 * torch.log10(torch.mean((x.float() - y.float()) ** 2)))


def test_images(a, task_config: str, seed: int = 42):
    """Every full-size test image of the task, LQ made by the task's own data code (sizes may differ)."""
    from mrlight.config import load_config
    from mrlight.data import build_datamodule

    cfg = load_config([f"task={task_config}", f"data.root={a.data_root}", "data.val_crop=null",
                       "data.num_workers=0", f"seed={seed}"])
    dm = build_datamodule(cfg.data, seed=int(cfg.seed))
    dm.setup("test")
    ds = dm.datasets["test"]
    items = [ds[i] for i in range(min(a.images, len(ds)))]
    return [it["lq"][None].float() for it in items], [it["gt"][None].float() for it in items], [str(it["name"]) for it in items]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--paired", type=int, default=8, help="images also restored with posterior@100")
    p.add_argument("--images", type=int, default=1000, help="at most this many test images")
    p.add_argument("--data-root", default=str((REPO / ".." / "shared" / "data").resolve()))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    invoked = "python benchmarks/full_size.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    load_start, t0 = load_average(), time.perf_counter()
    restorer = Restorer.from_checkpoint(a.ckpt)
    lq_all, gt_all, names = test_images(a, TASKS[a.task]["config"])
    opts = {k: v for k, v in restorer.sampler.items() if v is not None}
    metrics = {"LQ input": RestorationMetrics(lpips="off"), "default": RestorationMetrics(lpips="off")}
    paired = {k: RestorationMetrics(lpips="off") for k in ("LQ input", "default", "posterior@100")}
    seconds = {"default": 0.0, "posterior@100": 0.0}
    for i, name in enumerate(names):
        lq, gt = lq_all[i], gt_all[i]
        x_T = restorer.sde.prior_sample(lq, torch.Generator().manual_seed(a.seed + i))
        start = time.perf_counter()
        with torch.inference_mode():
            out = sample(restorer.net, lq, restorer.sde, prediction=restorer.prediction, x_T=x_T,
                         generator=torch.Generator().manual_seed(a.seed + 10_000 + i),
                         **{k: v for k, v in opts.items() if k not in ("x_T", "generator")}).clamp(0, 1)
        seconds["default"] += time.perf_counter() - start
        metrics["LQ input"].update(lq, gt)
        metrics["default"].update(out, gt)
        line = f"{name}: LQ {psnr(lq, gt):.2f}, default {psnr(out, gt):.2f}"
        if i < a.paired:
            start = time.perf_counter()
            with torch.inference_mode():
                post = sample(restorer.net, lq, restorer.sde, prediction=restorer.prediction, x_T=x_T, sampler="posterior",
                              nfe=100, generator=torch.Generator().manual_seed(a.seed + 10_000 + i)).clamp(0, 1)
            seconds["posterior@100"] += time.perf_counter() - start
            paired["LQ input"].update(lq, gt)
            paired["default"].update(out, gt)
            paired["posterior@100"].update(post, gt)
            line += f", posterior@100 {psnr(post, gt):.2f}"
        print(line, flush=True)
    n, k = len(names), min(a.paired, len(names))
    sampler = ", ".join(f"{key}={val}" for key, val in opts.items())
    res = {key: m.compute() for key, m in metrics.items()}
    pres = {key: m.compute() for key, m in paired.items()} if k else {}
    h, w = lq_all[0].shape[-2:]
    lines = [f"- Command: `{invoked}`",
             f"- Machine: {machine()}; load average {load_start} at the start, {load_average()} at the end; "
             f"took {(time.perf_counter() - t0) / 60:.1f} min",
             f"- Checkpoint: {a.ckpt}; sampler from the checkpoint: {sampler}",
             f"- Images: {n} full-size test images ({h}x{w} or its transpose), LQ made by the task's data code; "
             f"one prior x_T per image (seed {a.seed}+i) shared by both samplers", "",
             f"| images | restored with | NFE | PSNR | SSIM | PSNR-Y | SSIM-Y | s/image |", "|---|---|---|---|---|---|---|---|"]
    row = "| {} | {} | {} | {:.2f} | {:.4f} | {:.2f} | {:.4f} | {} |"
    lines.append(row.format(f"all {n}", "LQ input", "-", *(float(res["LQ input"][c]) for c in ("psnr", "ssim", "psnr_y", "ssim_y")), "-"))
    lines.append(row.format(f"all {n}", "MR Sampler (checkpoint default)", opts.get("nfe", "?"),
                            *(float(res["default"][c]) for c in ("psnr", "ssim", "psnr_y", "ssim_y")), f"{seconds['default'] / n:.2f}"))
    for key in pres:
        nfe = 100 if key == "posterior@100" else ("-" if key == "LQ input" else opts.get("nfe", "?"))
        secs = f"{seconds[key] / (n if key == 'default' else k):.2f}" if key != "LQ input" else "-"
        label = {"default": "MR Sampler (checkpoint default)", "posterior@100": "posterior (IR-SDE)"}.get(key, key)
        lines.append(row.format(f"first {k}", label, nfe, *(float(pres[key][c]) for c in ("psnr", "ssim", "psnr_y", "ssim_y")), secs))
    if pres:
        gap = float(pres["default"]["psnr"] - pres["posterior@100"]["psnr"])
        lines += ["", f"Default MR Sampler minus posterior@100 on the first {k} images: {gap:+.2f} dB PSNR."]
    md = "\n".join(lines) + "\n"
    (a.out / f"full_{a.task}.md").write_text(md)
    print("\n" + md)


if __name__ == "__main__":
    main()
