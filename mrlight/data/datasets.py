"""Map-style data sets over paired or clean-only folders, and the mixed multi-task variant.

Training items are random patches (`patch_size`, at the same place in LQ and GT, scale-aware for
super-resolution) with random flips and 90-degree rotations; validation/test items are full images
or a centre crop. Items are dicts {"lq": [3, H, W], "gt": [3, H, W], "name": str} in [0, 1] (except a
super-resolution LQ, up-sampled as IR-SDE does it: bicubic without clamping, so it overshoots slightly).
"""

from __future__ import annotations

import os

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .degradations import Degradation, image_rng, upsample_bicubic
from .errors import DataError
from .folders import Sample
from .io import read_image


def pad_to(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad bottom/right up to (height, width): reflection where it fits, else edge replication."""
    dh, dw = max(height - image.shape[1], 0), max(width - image.shape[2], 0)
    if not dh and not dw:
        return image
    mode = "reflect" if dh < image.shape[1] and dw < image.shape[2] else "replicate"
    return F.pad(image[None], (0, dw, 0, dh), mode=mode)[0]


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize (anti-aliased when shrinking), clamped to [0, 1]."""
    if tuple(image.shape[1:]) == (height, width):
        return image
    out = F.interpolate(image[None], size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out[0].clamp(0, 1)


def augment(images: Sequence[torch.Tensor], rng: np.random.Generator) -> list[torch.Tensor]:
    """The same random horizontal flip and 90-degree rotation (all 8 dihedral maps) for every image."""
    flip, turns = bool(rng.integers(2)), int(rng.integers(4))
    out = []
    for image in images:
        if flip:
            image = image.flip(-1)
        if turns:
            image = torch.rot90(image, turns, dims=(-2, -1))
        out.append(image.contiguous())
    return out


class TrainDraws:
    """The random crops, flips and degradations of training items: one numpy Generator per process.

    Seeded on first use from `torch.initial_seed()` (base seed + worker id in a DataLoader worker,
    the `seed_everything` seed in the main process). Its state is the data set's `state_dict`, which
    torchdata's StatefulDataLoader snapshots per worker and Lightning stores in the checkpoint, so a
    resumed run draws the same patches as an uninterrupted one.
    """

    def __init__(self):
        self._rng: np.random.Generator | None = None
        self._pid = -1

    def rng(self) -> np.random.Generator:
        # A forked worker must not continue the parent's stream (its state depends on when the
        # parent last saved a checkpoint): each process seeds its own.
        if self._rng is None or self._pid != os.getpid():
            self._rng, self._pid = np.random.default_rng(torch.initial_seed()), os.getpid()
        return self._rng

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng().bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng().bit_generator.state = state["bit_generator"]


class RestorationDataset(Dataset):
    """LQ/GT pairs from `samples` (LQ read from disk, or made from GT by `degradation`).

    Args:
        samples: from `folders.scan_paired` / `scan_clean` (`Sample.lq` None -> degrade GT).
        train: random patches + flips/rotations; otherwise full size or a centre `crop`.
        patch_size: training patch size in GT pixels.
        scale: GT = scale x LQ on disk (super-resolution); LQ is bicubic-upsampled to GT size as IR-SDE
            does (`degradations.upsample_bicubic`: no antialiasing, no clamping).
        degradation: makes LQ from GT for clean-only samples.
        crop: validation centre crop (GT pixels), or None for full size.
        small_images: "pad" (reflect-pad up to the patch) or "error".
        resize_to: resize every image to this square size first (CelebA-HQ 1024 -> 256).
        seed: validation degradations are drawn from (seed, image name): same every epoch/rank.
    """

    def __init__(self, samples: list[Sample], *, train: bool, patch_size: int = 128, scale: int = 1,
                 degradation: Degradation | None = None, crop: int | None = None, small_images: str = "pad",
                 resize_to: int | None = None, seed: int = 0):
        if any(s.lq is None for s in samples) and degradation is None:
            raise DataError("clean-only images need data.degradation to make their LQ inputs")
        self.samples = samples
        self.train, self.patch_size, self.scale = train, int(patch_size), int(scale)
        self.degradation, self.crop, self.small_images = degradation, crop, small_images
        self.resize_to, self.seed = resize_to, seed
        self.multiple = self.scale * (degradation.multiple_of if degradation is not None else 1)
        self.draws = TrainDraws()

    def __len__(self) -> int:
        return len(self.samples)

    def _rng(self, name: str) -> np.random.Generator:
        return self.draws.rng() if self.train else image_rng(self.seed, name)

    def state_dict(self) -> dict:
        return self.draws.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.draws.load_state_dict(state)

    def _load(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor | None]:
        gt = read_image(sample.gt)
        lq = read_image(sample.lq) if sample.lq is not None else None
        if self.resize_to:
            gt = resize(gt, self.resize_to, self.resize_to)
            lq = resize(lq, self.resize_to, self.resize_to) if lq is not None else None
        if lq is not None:
            s = self.scale
            lq_h, lq_w = lq.shape[1:]
            if (gt.shape[1] // s, gt.shape[2] // s) != (lq_h, lq_w):
                expected = "the same size" if s == 1 else f"GT = {s} x LQ"
                raise DataError(f"LQ and GT sizes disagree (expected {expected}): {sample.lq} is {lq_h}x{lq_w}, "
                                f"{sample.gt} is {gt.shape[1]}x{gt.shape[2]}")
            gt = gt[:, :lq_h * s, :lq_w * s]
        return gt, lq

    def _fit(self, sample: Sample, gt: torch.Tensor, lq: torch.Tensor | None, size: int):
        """Pad (or refuse) an image smaller than `size` GT pixels."""
        height, width = gt.shape[1:]
        if height >= size and width >= size:
            return gt, lq
        if self.small_images == "error":
            raise DataError(f"image {sample.gt} is {height}x{width}, smaller than the {'patch' if self.train else 'crop'} "
                            f"size {size}; lower data.patch_size/data.val_crop or set data.small_images=pad")
        gt = pad_to(gt, max(height, size), max(width, size))
        if lq is not None:
            s = self.scale
            lq = pad_to(lq, gt.shape[1] // s, gt.shape[2] // s)
        return gt, lq

    def _crop(self, gt, lq, top: int, left: int, size: int):
        """A GT window and the LQ window at the same place (LQ coordinates / scale)."""
        s = self.scale
        gt = gt[:, top:top + size, left:left + size]
        if lq is not None:
            lq = lq[:, top // s:(top + size) // s, left // s:(left + size) // s]
        return gt, lq

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        rng = self._rng(sample.name)
        gt, lq = self._load(sample)
        if self.train:
            gt, lq = self._fit(sample, gt, lq, self.patch_size)
            m = self.scale  # crop positions on the LQ grid
            top = int(rng.integers((gt.shape[1] - self.patch_size) // m + 1)) * m
            left = int(rng.integers((gt.shape[2] - self.patch_size) // m + 1)) * m
            gt, lq = self._crop(gt, lq, top, left, self.patch_size)
        else:
            if self.crop:
                gt, lq = self._fit(sample, gt, lq, self.crop)
                m = self.multiple
                top = (gt.shape[1] - self.crop) // 2 // m * m
                left = (gt.shape[2] - self.crop) // 2 // m * m
                gt, lq = self._crop(gt, lq, top, left, self.crop)
            m = self.multiple  # e.g. bicubic x4 needs sizes divisible by 4
            height, width = gt.shape[1] // m * m, gt.shape[2] // m * m
            if lq is not None:
                lq = lq[:, :height // self.scale, :width // self.scale]
            gt = gt[:, :height, :width]
        if lq is None:
            lq = self.degradation(gt, rng)
        elif self.scale > 1:  # IR-SDE's SR input: bicubic up-sampling, no antialiasing, no clamping
            lq = upsample_bicubic(lq, gt.shape[1], gt.shape[2])
        if self.train:
            lq, gt = augment((lq, gt), rng)
        return {"lq": lq.contiguous(), "gt": gt.contiguous(), "name": sample.name}


class MixedDataset(Dataset):
    """Several task data sets sampled evenly by type (DA-CLIP's universal training set).

    Training: item i is of type i % K, image (i // K) % len(type), over K x (largest type)
    items, so a shuffled epoch holds every type equally often whatever the type sizes (the
    DataLoader's own sampler, or Lightning's DistributedSampler, does the shuffling).
    Validation: every image once, types interleaved so that the first images cover all types.
    Names are "<type>/<name>".
    """

    def __init__(self, parts: dict[str, Dataset], train: bool):
        if not parts:
            raise DataError("data.subsets is empty")
        self.types = list(parts)
        self.parts = [parts[t] for t in self.types]
        self.train = train
        self.draws = getattr(self.parts[0], "draws", TrainDraws())
        for part in self.parts:  # one stream for every type: the state is one generator
            part.draws = self.draws
        if not train:
            self.order = []
            for rank in range(max(len(p) for p in self.parts)):
                self.order += [(k, rank) for k, p in enumerate(self.parts) if rank < len(p)]

    def __len__(self) -> int:
        return len(self.types) * max(len(p) for p in self.parts) if self.train else len(self.order)

    def __getitem__(self, index: int) -> dict:
        if self.train:
            k = index % len(self.types)
            item = self.parts[k][(index // len(self.types)) % len(self.parts[k])]
        else:
            k, rank = self.order[index]
            item = self.parts[k][rank]
        return {**item, "name": f"{self.types[k]}/{item['name']}"}

    def state_dict(self) -> dict:
        return self.draws.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.draws.load_state_dict(state)


class Cycled(Dataset):
    """A small training set repeated to `length` items per epoch (fewer epoch restarts)."""

    def __init__(self, base: Dataset, length: int):
        self.base, self.length = base, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.base[index % len(self.base)]

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)


def collate(batch: list[dict]) -> dict:
    """Stack a batch; images of different sizes (full-size validation) get a clear error."""
    shapes = {tuple(item["gt"].shape) for item in batch}
    if len(shapes) > 1:
        sizes = ", ".join(f"{item['name']}: {item['gt'].shape[1]}x{item['gt'].shape[2]}" for item in batch)
        raise DataError(f"images in one batch differ in size ({sizes}); use data.val_batch_size=1 or a data.val_crop")
    return {
        "lq": torch.stack([item["lq"] for item in batch]),
        "gt": torch.stack([item["gt"] for item in batch]),
        "name": [item["name"] for item in batch],
    }
