"""Restore images with a trained checkpoint.

    python sample.py ckpt=PATH input=DIR_OR_FILE output=DIR [gt=DIR] [sampler.KEY=VALUE ...]
                     [tile=256 tile_overlap=32] [device=auto|cpu|cuda] [seed=0] [lpips=true|false|random]

Writes one PNG per input image to `output` (never into the input or gt folder). With `gt`, prints
a per-image PSNR / SSIM (RGB and Y) / LPIPS table with the mean, and writes output/metrics.csv.
The sampler defaults to the checkpoint's `sampler.*` config (MR Sampler, NFE 10), e.g.
`sampler.time_schedule=optimized sampler.corrector=unic` or `sampler.time_schedule=steps.yaml`
(times tuned by `python -m mrlight.tune_steps`).
Exit codes: 0 done, 2 bad input (arguments, files, checkpoint).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

DEFAULTS = {
    "ckpt": None, "input": None, "output": None, "gt": None,
    "device": "auto", "seed": 0, "tile": None, "tile_overlap": 32, "lpips": True, "progress": True,
}


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def parse(argv: list[str], sampler_defaults: dict | None = None):
    """Validate key=value arguments against DEFAULTS and the checkpoint's sampler block."""
    from omegaconf import OmegaConf

    from mrlight.config import ConfigError, MULTI_TYPED, load_config, parse_overrides, validate

    MULTI_TYPED.setdefault("tile", (int, type(None)))
    MULTI_TYPED.setdefault("lpips", (bool, str))
    if sampler_defaults is not None:  # sampler keys added since the checkpoint was written take their defaults
        sampler_defaults = {**OmegaConf.to_container(load_config().sampler), **sampler_defaults}
    schema = OmegaConf.create({**DEFAULTS, "sampler": sampler_defaults or {}})
    try:
        cli = OmegaConf.from_dotlist(parse_overrides(argv))
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"cannot parse the arguments: {err}") from None
    if sampler_defaults is None:  # first pass: only the top-level keys (sampler.* checked once the ckpt is read)
        cli_top = OmegaConf.create({k: v for k, v in cli.items() if k != "sampler"})
        validate(OmegaConf.create(DEFAULTS), cli_top, "command line")
    else:
        validate(schema, cli, "command line")
    return OmegaConf.merge(schema, cli)


def _images(path: Path) -> list[Path]:
    from mrlight.data.io import IMAGE_EXTENSIONS, is_image_file, list_images

    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"input {path} is not an image ({', '.join(IMAGE_EXTENSIONS)})")
        return [path]
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise ValueError(f"input folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return files
    raise ValueError(f"input not found: {path}")


def _check_paths(inputs: list[Path], input_arg: Path, output: Path, gt: Path | None) -> dict[str, Path]:
    """Refuse outputs that would overwrite inputs or ground truth; pair GT files by name."""
    out = output.resolve()
    protected = {input_arg.resolve() if input_arg.is_dir() else input_arg.resolve().parent}
    if gt is not None:
        protected.add(gt.resolve())
    if out in protected:
        raise ValueError(f"output={output} is an input or gt folder; choose another output folder "
                         f"(sample.py never overwrites its inputs)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output={output} exists and is not a folder")
    pairs = {}
    if gt is not None:
        from mrlight.data.io import list_images

        if not gt.is_dir():
            raise ValueError(f"gt folder not found: {gt}")
        by_stem = {p.stem: p for p in list_images(gt)}
        missing = [p.name for p in inputs if p.stem not in by_stem]
        if missing:
            raise ValueError(f"no ground truth in {gt} for: {', '.join(missing[:12])}"
                             + (f" (and {len(missing) - 12} more)" if len(missing) > 12 else ""))
        pairs = {p.stem: by_stem[p.stem] for p in inputs}
    return pairs


def _dry_run(restorer, sampler: dict) -> None:
    import torch

    from mrlight.module import sampler_options
    from mrlight.sampling import sample

    mu = torch.zeros(1, 3, 8, 8)
    sample(lambda x, m, t: torch.zeros_like(x), mu, restorer.sde, prediction=restorer.prediction,
           **sampler_options(sampler))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0 if argv else 2
    import torch
    from tqdm import tqdm

    from mrlight.checkpoint import CheckpointError
    from mrlight.config import ConfigError
    from mrlight.data import DataError, read_image
    from mrlight.data.io import write_image
    from mrlight.inference import Restorer
    from mrlight.metrics import RestorationMetrics
    from mrlight.module import lpips_mode

    try:
        args = parse(argv)
        for key in ("ckpt", "input", "output"):
            if args[key] is None:
                raise ConfigError(f"{key}=... is required (usage: python sample.py ckpt=PATH input=DIR output=DIR)")
        input_arg, output = Path(str(args.input)), Path(str(args.output))
        gt = Path(str(args.gt)) if args.gt is not None else None
        inputs = _images(input_arg)
        gt_pairs = _check_paths(inputs, input_arg, output, gt)
        device = str(args.device)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={device} but this machine has no usable CUDA GPU; use device=cpu or auto")
        restorer = Restorer.from_checkpoint(str(args.ckpt), device=device, seed=int(args.seed))
        args = parse(argv, sampler_defaults=restorer.sampler)
        lp = lpips_mode(args.lpips)
        _dry_run(restorer, dict(args.sampler))  # bad sampler.* values fail before any file is written
    except (ConfigError, CheckpointError, DataError, ValueError) as err:
        return _error(str(err))

    sampler = {k: v for k, v in dict(args.sampler).items()}
    output.mkdir(parents=True, exist_ok=True)
    metrics = RestorationMetrics(lpips=lp) if gt is not None else None
    rows = []
    desc = f"{sampler.get('sampler')} nfe={sampler.get('nfe')}"
    for path in tqdm(inputs, desc=desc, unit="img", disable=not args.progress):
        try:
            lq = read_image(path)
            if gt is not None:
                target = read_image(gt_pairs[path.stem])
                if target.shape != lq.shape:
                    raise DataError(f"{path.name}: input {tuple(lq.shape[1:])} and gt {tuple(target.shape[1:])} "
                                    "differ in size")
            start = time.perf_counter()
            restored = restorer(lq, name=path.stem, tile=args.tile, tile_overlap=int(args.tile_overlap), **sampler)
            seconds = time.perf_counter() - start
        except (DataError, ValueError) as err:
            return _error(str(err))
        write_image(restored.cpu(), output / f"{path.stem}.png")
        if metrics is not None:
            one = RestorationMetrics(lpips=lp)
            one.update(restored[None].cpu(), target[None], lq=lq[None], seconds=seconds)
            metrics.update(restored[None].cpu(), target[None], lq=lq[None], seconds=seconds)
            rows.append({"name": path.name, **one.compute()})
    print(f"restored {len(inputs)} image(s) into {output}")
    if metrics is not None:
        rows.append({"name": "mean", **metrics.compute()})
        columns = ["name"] + [c for c in ("psnr", "psnr_y", "ssim", "ssim_y", "lpips", "psnr_lq", "sec_per_image")
                              if c in rows[-1]]
        width = max(len(r["name"]) for r in rows) + 2
        print("".join([f"{'name':<{width}}"] + [f"{c:>14}" for c in columns[1:]]))
        for r in rows:
            print("".join([f"{r['name']:<{width}}"] + [f"{r[c]:>14.4f}" for c in columns[1:]]))
        with open(output / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
