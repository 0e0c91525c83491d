"""Tune the sampler's time steps for a trained checkpoint on its own images.

    python -m mrlight.tune_steps ckpt=PATH input=DIR_OR_FILE nfe=5 output=steps.yaml
                                 [order=2 corrector=none solver=ode parameterization=data]
                                 [images=4 crop=64 max_evals=300 reference_nfe=100 device=cpu seed=0]

Searches the nfe - 1 interior times (mrlight.sampling.optimize_times) that bring the sampler's
output closest (mean |x - x_ref|) to the network's own PF-ODE solved with `reference_nfe` steps,
on center crops of the first `images` input images (the degraded images; no ground truth needed).
Writes a YAML file with `times:` for `python sample.py ... sampler.time_schedule=steps.yaml`.
Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULTS = {
    "ckpt": None, "input": None, "output": None, "nfe": 5, "order": 2, "corrector": "none", "solver": "ode",
    "parameterization": "data", "images": 4, "crop": 64, "max_evals": 300, "reference_nfe": 100,
    "device": "cpu", "seed": 0,
}


def _load_images(path: Path, count: int, crop: int):
    import torch

    from mrlight.data import read_image
    from mrlight.data.io import list_images

    files = [path] if path.is_file() else (list_images(path) if path.is_dir() else [])
    if not files:
        raise ValueError(f"input={path}: no image file or folder of images found")
    crops = []
    for f in files[:count]:
        img = read_image(f)
        h, w = img.shape[-2:]
        side = min(crop, h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crops.append(img[:, top:top + side, left:left + side])
    side = min(c.shape[-1] for c in crops)
    return torch.stack([c[:, :side, :side] for c in crops])


def main(argv: list[str] | None = None) -> int:
    from mrlight.cli import error, help_requested, parse_args

    argv = sys.argv[1:] if argv is None else argv
    if (code := help_requested(argv, __doc__)) is not None:
        return code
    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from mrlight.data import DataError
    from mrlight.errors import CheckpointError, ConfigError, NonFiniteError
    from mrlight.inference import Restorer
    from mrlight.sampling import optimize_times

    try:
        args = parse_args(argv, DEFAULTS, required=("ckpt", "input", "output"),
                          usage="python -m mrlight.tune_steps ckpt=PATH input=DIR nfe=5 output=steps.yaml")
        if not str(args.output).lower().endswith((".yaml", ".yml")):
            raise ConfigError(f"output={args.output} must be a .yaml file")
        if str(args.device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={args.device} but this machine has no usable CUDA GPU; use device=cpu")
        restorer = Restorer.from_checkpoint(str(args.ckpt), device=str(args.device), seed=int(args.seed))
        mu = _load_images(Path(str(args.input)), int(args.images), int(args.crop)).to(restorer.device)
        bar = tqdm(total=int(args.max_evals), desc=f"tuning {args.nfe} steps", unit="eval")

        def progress(evaluations, best):
            bar.n = min(evaluations, bar.total)
            bar.set_postfix(best=f"{best:.5f}")
            bar.refresh()

        times, info = optimize_times(restorer.sde, int(args.nfe), order=int(args.order), corrector=str(args.corrector),
                                     solver=str(args.solver), parameterization=str(args.parameterization),
                                     model_fn=restorer.net, mu=mu, prediction=restorer.prediction,
                                     max_evals=int(args.max_evals), reference_nfe=int(args.reference_nfe),
                                     seed=int(args.seed), progress=progress)
        bar.close()
    except (ConfigError, CheckpointError, DataError, NonFiniteError, ValueError) as err:
        return error(str(err))
    out = {"times": [round(t, 6) for t in times], "nfe": int(args.nfe), "order": int(args.order),
           "corrector": str(args.corrector), "solver": str(args.solver), "parameterization": str(args.parameterization),
           "tuned_on": f"{args.ckpt}, {len(mu)} crops of {args.input}",
           "distance_before": info["before"], "distance_after": info["after"]}
    Path(str(args.output)).write_text(OmegaConf.to_yaml(OmegaConf.create(out)))
    print(f"distance to the {args.reference_nfe}-step reference solve: karras-t-tmin {info['before']:.5f} -> "
          f"optimized {info['after']:.5f}")
    print(f"wrote {args.output}: times {', '.join(f'{t:.2f}' for t in times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
