"""The embedded demo data set: photographs bundled with scikit-image, synthetically degraded.

`python -m mrlight.data.demo [--root ./data] [--degradation rain] [--force]` writes

    <root>/demo/train/{LQ,GT}/*.png   12 tiles of 160x160
    <root>/demo/val/{LQ,GT}/*.png      4 tiles of 160x160 (other regions of the photographs)
    <root>/demo/manifest.json          what was generated and how

with no download: the photographs ship inside the scikit-image wheel. LQ tiles are made once by a
registered degradation (rain streaks by default) with a per-tile seed, so the set is the same on
every machine. `check_data` and the DataModule's `prepare_data` call `ensure_demo`, which builds it
when absent and rebuilds it when the requested degradation changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .degradations import _plain, build_degradation, image_rng
from .errors import DataError
from .io import write_image

VERSION = 1
TILE = 160
SHORT_SIDE = 320  # photographs are resized to this short side, then cut into TILE x TILE tiles
# (photograph, tile row, tile col) held out for validation; every other tile trains.
VAL_TILES = {("astronaut", 0, 1), ("coffee", 1, 1), ("chelsea", 0, 1), ("rocket", 1, 0)}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
N_TRAIN = 12
DEFAULT_DEGRADATION = {"name": "rain"}


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    height, width = image.shape[:2]
    factor = SHORT_SIDE / min(height, width)
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def tiles() -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """(train, val) lists of (name, HWC uint8 tile), deterministic."""
    train, val = [], []
    for photo in PHOTOS:
        image = _photo(photo)
        for row in range(image.shape[0] // TILE):
            for col in range(image.shape[1] // TILE):
                tile = image[row * TILE:(row + 1) * TILE, col * TILE:(col + 1) * TILE]
                name = f"{photo}_{row}{col}"
                (val if (photo, row, col) in VAL_TILES else train).append((name, tile))
    # an even spread of the photographs among the training tiles
    train.sort(key=lambda item: (int(item[0][-2:]), item[0]))
    return train[:N_TRAIN], val


def _manifest(degradation: Any, seed: int) -> dict:
    return {"version": VERSION, "degradation": degradation, "seed": seed, "tile": TILE}


def is_current(folder: Path, degradation: Any, seed: int = 0) -> bool:
    """True if `folder` holds a complete demo set made with this degradation."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    expected = {**_manifest(degradation, seed), "files": manifest.get("files")}
    if manifest != expected or not manifest.get("files"):
        return False
    return all((folder / f).is_file() for f in manifest["files"])


def make_demo(root: str | Path, degradation: Any = None, seed: int = 0) -> Path:
    """Write the demo set under `<root>/demo` (replacing an older one) and return that folder."""
    degradation = _plain(degradation) or DEFAULT_DEGRADATION
    degrade = build_degradation(degradation)
    root = Path(root)
    target = root / "demo"
    staging = root / f".demo-staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    files = []
    train, val = tiles()
    for split, items in (("train", train), ("val", val)):
        for name, tile in items:
            gt = torch.from_numpy(tile.astype(np.float32) / 255).permute(2, 0, 1).contiguous()
            lq = degrade(gt, image_rng(seed, f"demo/{name}"))
            for kind, image in (("GT", gt), ("LQ", lq)):
                relative = f"{split}/{kind}/{name}.png"
                write_image(image, staging / relative)
                files.append(relative)
    (staging / "manifest.json").write_text(json.dumps({**_manifest(degradation, seed), "files": files}, indent=1))
    # Swap in whole folders, so a concurrent reader (another DDP rank) never sees half a set.
    old = root / f".demo-old-{os.getpid()}"
    if is_current(target, degradation, seed):  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
        return target
    if target.exists():
        if not (target / "manifest.json").exists():
            shutil.rmtree(staging)
            raise DataError(f"{target} exists but was not made by mrlight (no manifest.json); move it away "
                            "to regenerate the demo set, or point data.root elsewhere")
        target.rename(old)
    try:
        staging.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return target


def ensure_demo(root: str | Path, degradation: Any = None, seed: int = 0) -> Path:
    """The demo folder under `root`, built first if absent or made with another degradation.

    A `demo/` folder without a manifest (laid out by hand) is used as it is.
    """
    degradation = _plain(degradation) or DEFAULT_DEGRADATION
    folder = Path(root) / "demo"
    if folder.is_dir() and not (folder / "manifest.json").exists():
        return folder
    if is_current(folder, degradation, seed):
        return folder
    return make_demo(root, degradation, seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mrlight.data.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.environ.get("MRLIGHT_DATA", "./data"), help="data root (default: $MRLIGHT_DATA or ./data)")
    parser.add_argument("--degradation", default="rain", help="a registered degradation name (default: rain)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the set is current")
    args = parser.parse_args(argv)
    spec = {"name": args.degradation}
    try:
        folder = make_demo(args.root, spec) if args.force else ensure_demo(args.root, spec)
    except DataError as error:
        raise SystemExit(f"error: {error}")
    print(f"demo data set ({args.degradation}) at {folder}")


if __name__ == "__main__":
    main()
