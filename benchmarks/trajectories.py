"""Sampling trajectories in two principal components (figure 3 of the MR Sampler paper).

    python benchmarks/trajectories.py                       # analytic oracle on a synthetic 32 px image
    python benchmarks/trajectories.py --quick               # 16 px, seconds
    python benchmarks/trajectories.py --ckpt run/checkpoints/last.ckpt --image lq.png [--gt gt.png] [--crop 64]
    python benchmarks/trajectories.py --ckpt denoise.ckpt --image clean.png --noise-sigma 25 --crop 64

MR ODE-2 @10, MR SDE-2 @10, posterior @100 and Euler-Maruyama @100 start from the same x_T; their
states (x_T and one per step) are projected onto two principal components fitted jointly on all of
them (mrlight.trajectories). Without a checkpoint the network is `mrlight.analytic.Oracle`, the exact
E[x0 | x_t] of a Gaussian-mixture law around a smooth synthetic mu, so the plot runs anywhere and
shows the samplers alone. Writes docs/img/trajectories.png (--out to change).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mrlight.trajectories import DEFAULT_SAMPLERS, trajectory_figure  # noqa: E402


def synthetic(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth colour image as mu and a ground truth drawn from the oracle's law around it."""
    from mrlight.analytic import GaussianMixture

    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    mu = torch.stack([0.5 + 0.2 * torch.sin(2 * math.pi * xx), 0.4 + 0.3 * yy, 0.5 - 0.2 * xx * yy])[None]
    gt = mu + GaussianMixture().sample(mu.shape, generator).float()
    return mu, gt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", type=Path, default=None, help="an mrlight checkpoint (default: the analytic oracle)")
    p.add_argument("--image", type=Path, default=None, help="the degraded image (with --ckpt)")
    p.add_argument("--gt", type=Path, default=None, help="its ground truth, marked on the plot (optional)")
    p.add_argument("--noise-sigma", type=float, default=None,
                   help="with --ckpt: --image is clean; add Gaussian noise of this std (0..255 scale) as the input")
    p.add_argument("--crop", type=int, default=None, help="center crop side of the image (default: whole image)")
    p.add_argument("--size", type=int, default=None, help="synthetic image side (default 32, quick 16)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "trajectories.png")
    a = p.parse_args(argv)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(a.seed)
    if a.ckpt is None:
        from mrlight.analytic import GaussianMixture, Oracle
        from mrlight.sde import MRSDE

        sde = MRSDE()
        size = a.size or (16 if a.quick else 32)
        mu, gt = synthetic(size, torch.Generator().manual_seed(a.seed + 1))
        model_fn, prediction = Oracle(GaussianMixture(), sde, "noise"), "noise"
        what = f"analytic oracle (exact E[x0|x_t], Gaussian-mixture law), synthetic {size} px image"
    else:
        from mrlight.data import read_image
        from mrlight.inference import Restorer

        if a.image is None:
            p.error("--ckpt needs --image (the degraded input)")
        restorer = Restorer.from_checkpoint(a.ckpt)
        sde, prediction, model_fn = restorer.sde, restorer.prediction, restorer.net
        mu = read_image(a.image)[None]
        gt = read_image(a.gt)[None] if a.gt else None
        if a.crop:
            h, w = mu.shape[-2:]
            top, left = max(0, (h - a.crop) // 2), max(0, (w - a.crop) // 2)
            mu = mu[..., top:top + a.crop, left:left + a.crop]
            gt = gt[..., top:top + a.crop, left:left + a.crop] if gt is not None else None
        if a.noise_sigma is not None:
            gt = mu
            noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(a.seed + 1))
            mu = (gt + a.noise_sigma / 255 * noise).clamp(0, 1)
        what = (f"checkpoint {a.ckpt}, image {a.image.name} ({mu.shape[-2]}x{mu.shape[-1]})"
                + (f" + noise sigma {a.noise_sigma:g}" if a.noise_sigma is not None else ""))
    invoked = "python benchmarks/trajectories.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    fig = trajectory_figure(model_fn, mu, sde, gt=gt, prediction=prediction, generator=generator,
                            samplers=DEFAULT_SAMPLERS, title=f"Sampling trajectories, 2 PCs: {what}")
    fig.text(0.01, 0.005, f"{invoked} | torch {torch.__version__}, CPU", fontsize=6, color="gray")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out)
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 1024:.0f} KB) in {time.perf_counter() - start:.1f} s: {what}")


if __name__ == "__main__":
    main()
