"""Folder scanning: list the samples of a split, pair LQ with GT by name, select names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import DataError, name_list
from .io import image_size, list_images

LAYOUTS = ("paired", "clean")
PAIR_BY = ("stem", "prefix")


@dataclass(frozen=True)
class Sample:
    """One item of a split: `lq` is None for clean-only folders (LQ made on the fly)."""

    name: str
    gt: Path
    lq: Path | None = None


def pair_key(path: Path, pair_by: str) -> str:
    """`stem`: the file name without extension; `prefix`: the stem up to its first "_"
    (RESIDE/SOTS "0001_0.8_0.2.jpg" <-> "0001.png"; RainDrop "3_rain.png" <-> "3_clean.png")."""
    return path.stem.split("_", 1)[0] if pair_by == "prefix" else path.stem


def layout_help(layout: str, split_dir: str | Path, lq_subdir: str = "LQ", gt_subdir: str = "GT", subsets=None) -> str:
    """The expected layout of one split, for error messages."""
    root = f"{split_dir}/<type>" if subsets else str(split_dir)
    lines = []
    if layout == "paired":
        lines += [f"  {root}/{lq_subdir}/<name>.png   degraded inputs",
                  f"  {root}/{gt_subdir}/<name>.png   clean targets with the same names (any image extension)"]
    else:
        lines += [f"  {root}/{gt_subdir}/<name>.png   clean images; LQ made on the fly by data.degradation"]
    if subsets:
        lines.append(f"  with <type> in: {', '.join(subsets)}")
    return "\n".join(lines)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"missing folder {folder}")
    files = list_images(folder)
    if not files:
        raise DataError(f"folder {folder} holds no images (looked for .png, .jpg, .bmp, .tif, .webp)")
    return files


def _by_key(files: Iterable[Path], pair_by: str, folder: Path) -> dict[str, list[Path]]:
    table: dict[str, list[Path]] = {}
    for path in files:
        table.setdefault(pair_key(path, pair_by), []).append(path)
    return table


def _unique(table: dict[str, list[Path]], folder: Path, pair_by: str) -> dict[str, Path]:
    clashes = {k: v for k, v in table.items() if len(v) > 1}
    if clashes:
        shown = "; ".join(" = ".join(p.name for p in v) for v in list(clashes.values())[:6])
        raise DataError(f"{folder}: several files share one name for pairing (pair_by={pair_by}): {shown}")
    return {k: v[0] for k, v in table.items()}


def scan_paired(split_dir: str | Path, lq_subdir: str = "LQ", gt_subdir: str = "GT", pair_by: str = "stem") -> list[Sample]:
    """Pairs `<split_dir>/<lq_subdir>/*` with `<split_dir>/<gt_subdir>/*` by name, never by order.

    With `pair_by=prefix` several LQ files may share one GT (RESIDE ITS: ten hazy versions of a
    clean image). Unmatched names on either side are an error that lists them.
    """
    split_dir = Path(split_dir)
    lq_dir, gt_dir = split_dir / lq_subdir, split_dir / gt_subdir
    gt = _unique(_by_key(_images(gt_dir), pair_by, gt_dir), gt_dir, pair_by)
    lq = _by_key(_images(lq_dir), pair_by, lq_dir)
    if pair_by == "stem":
        _unique(lq, lq_dir, pair_by)
    lq_only, gt_only = sorted(set(lq) - set(gt)), sorted(set(gt) - set(lq))
    if lq_only or gt_only:
        parts = []
        if lq_only:
            parts.append(f"in {lq_dir} but not in {gt_dir}: {name_list(lq_only)}")
        if gt_only:
            parts.append(f"in {gt_dir} but not in {lq_dir}: {name_list(gt_only)}")
        raise DataError(f"LQ and GT file names do not pair up (pair_by={pair_by}): " + "; ".join(parts))
    samples = []
    for key in sorted(gt, key=natural_key):
        for lq_path in lq[key]:
            name = key if len(lq[key]) == 1 else lq_path.stem
            samples.append(Sample(name=name, gt=gt[key], lq=lq_path))
    return samples


def scan_clean(split_dir: str | Path, gt_subdir: str = "GT") -> list[Sample]:
    """Every image of `<split_dir>/<gt_subdir>`, as clean-only samples."""
    gt_dir = Path(split_dir) / gt_subdir
    gt = _unique(_by_key(_images(gt_dir), "stem", gt_dir), gt_dir, "stem")
    return [Sample(name=key, gt=gt[key]) for key in sorted(gt, key=natural_key)]


def natural_key(name: str) -> list:
    """"2" before "10": numbers inside names compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------------------------
# Name selection: data.train_names / val_names / test_names


def parse_names(spec: Any) -> tuple[set[str], list[tuple[int, int]]] | None:
    """`None` (all), a list of names/ranges, or a comma-separated string; a range is "11..100"
    (inclusive) and matches names that are numbers (so "011" matches too)."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names, ranges = set(), []
    for item in items:
        text = str(item).strip()
        match = re.fullmatch(r"(\d+)\s*\.\.\s*(\d+)", text)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if lo > hi:
                raise DataError(f"name range {text!r} is empty (start after end)")
            ranges.append((lo, hi))
        elif text:
            names.add(text)
    return names, ranges


def select(samples: list[Sample], spec: Any, key: str, where: str | Path) -> list[Sample]:
    """The samples whose name (pairing key) is selected by `spec`; an unknown name is an error."""
    parsed = parse_names(spec)
    if parsed is None:
        return samples
    names, ranges = parsed

    def selected(name: str) -> bool:
        return name in names or (name.isdigit() and any(lo <= int(name) <= hi for lo, hi in ranges))

    chosen = [s for s in samples if selected(s.name) or selected(s.gt.stem)]
    present = {s.name for s in samples} | {s.gt.stem for s in samples}
    missing = sorted(names - present)
    if missing:
        raise DataError(f"{key} names not found in {where}: {name_list(missing)}")
    if not chosen:
        raise DataError(f"{key}={spec!r} selects no image in {where}")
    return chosen


def check_sizes(samples: list[Sample], scale: int = 1) -> None:
    """LQ and GT sizes must agree (GT = scale x LQ for super-resolution); read from headers only."""
    bad = []
    for sample in samples:
        if sample.lq is None:
            continue
        lq_h, lq_w = image_size(sample.lq)
        gt_h, gt_w = image_size(sample.gt)
        if (gt_h // scale, gt_w // scale) != (lq_h, lq_w):
            bad.append(f"{sample.lq} is {lq_h}x{lq_w} but {sample.gt} is {gt_h}x{gt_w}")
    if bad:
        expected = "the same size" if scale == 1 else f"GT = {scale} x LQ (data.scale={scale})"
        raise DataError(f"LQ and GT sizes disagree (expected {expected}): " + "; ".join(bad[:5])
                        + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""))
