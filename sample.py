"""Restore images with a trained checkpoint.

    python sample.py ckpt=PATH input=DIR_OR_FILE output=DIR [gt=DIR] [sampler.KEY=VALUE ...]
                     [tile=256 tile_overlap=32] [device=auto|cpu|cuda] [seed=0] [lpips=true|false|random]
                     [daclip=ENCODER.pt] [upscale=4]

Writes one PNG per input image to `output` (never into the input or gt folder). With `gt`, prints
a per-image PSNR / SSIM (RGB and Y) / LPIPS table with the mean and the set's realism distance
`swd` (sliced Wasserstein over Laplacian-pyramid patches, Karras et al. 2018; lower is better),
and writes output/metrics.csv.
The sampler defaults to the checkpoint's `sampler.*` config (MR Sampler, NFE 10), e.g.
`sampler.time_schedule=optimized sampler.corrector=unic` or `sampler.time_schedule=steps.yaml`
(times tuned by `python -m mrlight.tune_steps`).
Exit codes: 0 done, 2 bad input (arguments, files, checkpoint, a network that returns NaN/Inf).
Two inputs with one stem (a.png, a.jpg) are written as a_png.png and a_jpg.png.
`daclip=PATH`: the DA-CLIP encoder file of a daclip-unet checkpoint (it records the encoder's
identity, not a path; a file with another weights hash is refused). `upscale=N`: super-resolution
models that restore at the output size (IR-SDE's SR): each input is first upsampled N times with
bicubic interpolation as IR-SDE's test does (no antialiasing, no clamping).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

DEFAULTS = {
    "ckpt": None, "input": None, "output": None, "gt": None,
    "device": "auto", "seed": 0, "tile": None, "tile_overlap": 32, "lpips": True, "progress": True,
    "precision": "32", "compile": False, "channels_last": False, "daclip": None, "upscale": 1,
}


TYPES = {"tile": (int, type(None)), "lpips": (bool, str), "gt": (str, type(None)), "daclip": (str, type(None))}
USAGE = "python sample.py ckpt=PATH input=DIR output=DIR"


def parse(argv: list[str], sampler_defaults: dict | None = None):
    """Validate key=value arguments against DEFAULTS and, once the checkpoint is read, its sampler block.

    The checkpoint's sampler settings belong to its sampler: choosing another one on the command line
    (`sampler.sampler=posterior`) starts from that sampler's defaults, so none of the stored sampler's
    options (an MR order, say) leak into it. The sampler options themselves are checked by a dry run.
    """
    from omegaconf import OmegaConf

    from mrlight.cli import parse_args
    from mrlight.config import load_config

    if sampler_defaults is None:  # first pass: the top-level keys (sampler.* checked once the ckpt is read)
        return parse_args(argv, DEFAULTS, types=TYPES, skip=("sampler",), required=("ckpt", "input", "output"),
                          usage=USAGE)
    blank = OmegaConf.to_container(load_config().sampler)
    chosen = next((a.split("=", 1)[1] for a in argv if a.startswith("sampler.sampler=")), None)
    if chosen is not None and chosen != sampler_defaults.get("sampler", "mr"):
        sampler_defaults = {**blank, "nfe": None}
    else:  # sampler keys added since the checkpoint was written take their defaults
        sampler_defaults = {**blank, **sampler_defaults}
    return parse_args(argv, {**DEFAULTS, "sampler": sampler_defaults}, types=TYPES)


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
    """Run the sampler on a tiny input with a stand-in network: a bad sampler.* value fails here,
    naming the key, before any image is read or written."""
    import torch

    from mrlight.config import ConfigError
    from mrlight.sampling import OptionError, sample, sampler_options, with_network_defaults

    mu = torch.zeros(1, 3, 8, 8)
    model_fn = lambda x, m, t: torch.zeros_like(x)  # noqa: E731
    if sampler.get("sampler") == "distilled":
        if restorer.distill is None:
            raise ConfigError("sampler.sampler=distilled needs a distilled student checkpoint (train.py "
                              "distill.teacher=...); this checkpoint is a diffusion model")
        from mrlight.student import distilled_from_config

        model_fn = distilled_from_config(model_fn, restorer.sde, restorer.distill)
    try:
        sample(model_fn, mu, restorer.sde, prediction=restorer.prediction,
               **with_network_defaults(sampler_options(sampler), restorer.prediction, restorer.sde))
    except OptionError as err:
        value = sampler.get(err.option)
        raise ConfigError(f"sampler.{err.option}{f'={value!r}' if value is not None else ''}: {err}") from None


def _say_network_defaults(restorer, sampler: dict) -> None:
    """Say which options a noise-prediction checkpoint gets added (mrlight.sampling.with_network_defaults)."""
    from mrlight.sampling import noise_network_defaults, sampler_options
    from mrlight.sampling.schedules import DEFAULT_T_MIN

    added = noise_network_defaults(restorer.prediction, restorer.sde, sampler_options(sampler))
    if added:
        print("noise-prediction checkpoint: the MR Sampler adds " + " ".join(f"sampler.{k}={v}" for k, v in added.items())
              + f" (measured for such networks: docs/SAMPLERS.md; sampler.thresholding=false "
                f"sampler.t_start={restorer.sde.T:g} sampler.t_min={DEFAULT_T_MIN:g} turn them off)")


def _output_names(inputs: list[Path]) -> dict[Path, str]:
    """Output file stem per input: the input's stem, or stem_ext when two inputs share a stem (a.png, a.jpg)."""
    from collections import Counter

    counts = Counter(p.stem for p in inputs)
    return {p: p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in inputs}


def main(argv: list[str] | None = None) -> int:
    from mrlight.cli import error, help_requested

    argv = sys.argv[1:] if argv is None else argv
    if (code := help_requested(argv, __doc__)) is not None:
        return code
    import torch
    from tqdm import tqdm

    from mrlight.data import read_image
    from mrlight.errors import CheckpointError, ConfigError, DataError, NonFiniteError
    from mrlight.data.io import write_image
    from mrlight.inference import Restorer
    from mrlight.metrics import RestorationMetrics
    from mrlight.module import lpips_mode

    try:
        args = parse(argv)
        input_arg, output = Path(str(args.input)), Path(str(args.output))
        gt = Path(str(args.gt)) if args.gt is not None else None
        inputs = _images(input_arg)
        gt_pairs = _check_paths(inputs, input_arg, output, gt)
        device = str(args.device)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={device} but this machine has no usable CUDA GPU; use device=cpu or auto")
        restorer = Restorer.from_checkpoint(str(args.ckpt), device=device, seed=int(args.seed),
                                            precision=str(args.precision), compile=bool(args.compile),
                                            channels_last=bool(args.channels_last),
                                            daclip=str(args.daclip) if args.daclip is not None else None)
        if int(args.upscale) < 1:
            raise ConfigError(f"upscale={args.upscale}: expected an integer >= 1")
        args = parse(argv, sampler_defaults=restorer.sampler)
        lp = lpips_mode(args.lpips)
        _dry_run(restorer, dict(args.sampler))  # bad sampler.* values fail before any file is written
    except (ConfigError, CheckpointError, DataError, ValueError) as err:
        return error(str(err))

    _say_network_defaults(restorer, dict(args.sampler))
    names = _output_names(inputs)
    sampler = {k: v for k, v in dict(args.sampler).items()}
    output.mkdir(parents=True, exist_ok=True)
    metrics = RestorationMetrics(lpips=lp) if gt is not None else None
    rows = []
    desc = f"{sampler.get('sampler')} nfe={sampler.get('nfe')}"
    for path in tqdm(inputs, desc=desc, unit="img", disable=not args.progress):
        try:
            lq = read_image(path)
            if int(args.upscale) > 1:  # mu at the output size, as IR-SDE's SR test builds it
                from mrlight.data.degradations import upsample_bicubic

                lq = upsample_bicubic(lq, lq.shape[1] * int(args.upscale), lq.shape[2] * int(args.upscale))
            if gt is not None:
                target = read_image(gt_pairs[path.stem])
                if target.shape != lq.shape:
                    raise DataError(f"{path.name}: input {tuple(lq.shape[1:])} and gt {tuple(target.shape[1:])} "
                                    "differ in size")
            start = time.perf_counter()
            restored = restorer(lq, name=path.stem, tile=args.tile, tile_overlap=int(args.tile_overlap), **sampler)
            seconds = time.perf_counter() - start
        except NonFiniteError as err:
            return error(f"{path.name}: {err}; the checkpoint's weights may be broken (NaN) or the network "
                         f"unstable on this input; nothing was written for this image")
        except (DataError, ValueError) as err:
            return error(str(err))
        write_image(restored.cpu(), output / f"{names[path]}.png")
        if metrics is not None:
            one = RestorationMetrics(lpips=lp, swd=False)  # swd is a set-level distance: the mean row only
            one.update(restored[None].cpu(), target[None], lq=lq[None], seconds=seconds)
            metrics.update(restored[None].cpu(), target[None], lq=lq[None], seconds=seconds)
            rows.append({"name": path.name, **one.compute()})
    print(f"restored {len(inputs)} image(s) into {output}")
    if metrics is not None:
        rows.append({"name": "mean", **metrics.compute()})
        columns = ["name"] + [c for c in ("psnr", "psnr_y", "ssim", "ssim_y", "lpips", "swd", "psnr_lq",
                                          "sec_per_image") if c in rows[-1]]
        width = max(len(r["name"]) for r in rows) + 2
        print("".join([f"{'name':<{width}}"] + [f"{c:>14}" for c in columns[1:]]))
        for r in rows:
            print("".join([f"{r['name']:<{width}}"] + [f"{r[c]:>14.4f}" if c in r else f"{'-':>14}"
                                                        for c in columns[1:]]))
        with open(output / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
