"""The LightningDataModule for every restoration task, and the pre-flight `check_data`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler as StatefulRandomSampler

from .datasets import Cycled, MixedDataset, RestorationDataset, collate
from .degradations import Degradation, _masks, _plain, build_degradation
from .demo import ensure_demo
from .errors import DataError
from .folders import LAYOUTS, PAIR_BY, Sample, check_sizes, layout_help, scan_clean, scan_paired, select

# torchdata 0.11 calls torch.set_vital, which torch >= 2.9 deprecates: one warning per epoch, not ours to fix.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

SPLITS = ("train", "val", "test")
SMALL_IMAGES = ("pad", "error")
DOCS = "docs/DATA.md"


class MissingData(DataError):
    """A split folder is missing or empty (the message carries the expected layout)."""


def _options(data_cfg: Any) -> dict:
    """The `data:` node as a plain, resolved dict (interpolations such as ${data.root} resolved)."""
    options = _plain(data_cfg)
    if not isinstance(options, dict):
        raise DataError(f"expected the data: config block (a mapping), got {type(data_cfg).__name__}")
    return options


def _validate(options: dict) -> Degradation | None:
    """Config-level checks: valid choices, and sizes the degradation needs."""
    def choice(key: str, valid: tuple) -> None:
        if options.get(key) not in valid:
            raise DataError(f"data.{key}={options.get(key)!r} is not valid; choose one of: {', '.join(valid)}")

    choice("layout", LAYOUTS)
    choice("pair_by", PAIR_BY)
    choice("small_images", SMALL_IMAGES)
    for key in ("patch_size", "batch_size", "val_batch_size", "scale"):
        value = options.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataError(f"data.{key} must be a positive integer, got {value!r}")
    for key in ("val_crop", "resize", "samples_per_epoch"):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise DataError(f"data.{key} must be null or a positive integer, got {value!r}")
    if not isinstance(options.get("num_workers"), int) or options["num_workers"] < 0:
        raise DataError(f"data.num_workers must be an integer >= 0, got {options.get('num_workers')!r}")
    degradation = build_degradation(options.get("degradation"))
    layout, name = options["layout"], options.get("name")
    if layout == "clean" and degradation is None:
        raise DataError("data.layout=clean needs data.degradation, e.g. data.degradation={name: noise, sigma: 25}")
    if layout == "paired" and degradation is not None and name != "demo":
        raise DataError("data.degradation is only used with data.layout=clean (paired folders already hold the LQ "
                        "images; for task=demo it makes the demo set); set data.degradation=null or data.layout=clean")
    if layout == "clean" and options["scale"] != 1:
        raise DataError("data.scale is the LQ/GT size ratio of paired folders; for clean folders use "
                        "data.degradation={name: bicubic, scale: N} and data.scale=1")
    multiple = options["scale"] * (degradation.multiple_of if layout == "clean" and degradation else 1)
    for key in ("patch_size", "val_crop"):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or value % multiple):
            raise DataError(f"data.{key}={value} must be a multiple of {multiple} (the super-resolution scale)")
    subsets = options.get("subsets")
    if subsets is not None and (not isinstance(subsets, list) or not subsets):
        raise DataError(f"data.subsets must be a non-empty list of sub-folder names, got {subsets!r}")
    return degradation if layout == "clean" else None


def _split_dir(options: dict, split: str) -> Path:
    return Path(str(options[f"{split}_dir"])).expanduser()


def _scan(options: dict, split: str) -> dict[str, list[Sample]]:
    """{type: samples} for a split ({"": samples} without subsets)."""
    folder = _split_dir(options, split)
    subsets = options.get("subsets") or [""]
    out = {}
    for subset in subsets:
        where = folder / subset if subset else folder
        try:
            if options["layout"] == "paired":
                samples = scan_paired(where, options["lq_subdir"], options["gt_subdir"], options["pair_by"])
            else:
                samples = scan_clean(where, options["gt_subdir"])
        except DataError as error:
            if "missing folder" in str(error) or "holds no images" in str(error):
                raise MissingData(_missing_message(options, split, str(error))) from None
            raise
        out[subset] = select(samples, options.get(f"{split}_names"), f"data.{split}_names", where)
    return out


def _missing_message(options: dict, split: str, problem: str) -> str:
    folder = _split_dir(options, split).resolve()
    lines = [
        f"data set {options.get('name')!r} not found: {problem} (data.{split}_dir={options[f'{split}_dir']}).",
        f"Expected layout (data.layout={options['layout']}):",
        layout_help(options["layout"], folder, options["lq_subdir"], options["gt_subdir"], options.get("subsets")),
    ]
    if options.get("source"):
        lines.append(f"Source: {options['source']}")
    lines.append(f"Set data.root (or $MRLIGHT_DATA) to the folder that holds the data sets, or data.train_dir / "
                 f"data.val_dir / data.test_dir to the split folders; see {DOCS}.")
    return "\n".join(lines)


def _splits_to_check(options: dict) -> list[str]:
    """train and val always; test when it differs from val."""
    same_test = options.get("test_dir") == options.get("val_dir") and options.get("test_names") == options.get("val_names")
    return ["train", "val"] + ([] if same_test else ["test"])


def _prepare_demo(options: dict) -> None:
    if options.get("name") == "demo":
        try:
            ensure_demo(options["root"], options.get("degradation"))
        except OSError as error:
            raise DataError(f"cannot write the demo data set under data.root={options['root']}: {error}") from None


def check_data(data_cfg: Any) -> None:
    """Fail fast, before training, with one clear `DataError` if the data are missing or broken.

    Checks the `data:` keys, builds the demo set when `data.name == demo` and it is absent, then
    scans every split: folders exist and hold images, LQ/GT names pair up, selected names exist,
    LQ/GT sizes agree (from file headers), the inpainting mask folder exists.
    """
    options = _options(data_cfg)
    degradation = _validate(options)
    _prepare_demo(options)
    for split in _splits_to_check(options):
        parts = _scan(options, split)
        for samples in parts.values():
            check_sizes(samples, options["scale"]) if options["layout"] == "paired" else None
        if split == "train":
            size = len(parts) * max(len(samples) for samples in parts.values())
            _check_epoch(max(size, options.get("samples_per_epoch") or 0), options["batch_size"], 1)
    if degradation is not None:
        for name, params in degradation.steps:
            if name == "inpaint":
                _masks(str(params["mask_dir"]))


def _check_epoch(size: int, batch: int, world: int) -> None:
    """An epoch must hold one full batch per device (training batches drop the remainder)."""
    if size < batch * world:
        raise DataError(f"the training set has {size} samples per epoch, fewer than data.batch_size x world size "
                        f"= {batch} x {world} = {batch * world} (one full batch per device); lower data.batch_size "
                        "or set data.samples_per_epoch (the set is cycled)")


class RestorationDataModule(L.LightningDataModule):
    """Paired / clean-only folders (plus the mixed multi-task variant) behind one DataModule.

    Batches are dicts {"lq": [B, 3, H, W], "gt": [B, 3, H, W], "name": list[str]} in [0, 1].
    `data.batch_size` is per device; Lightning adds the distributed sampler itself.
    """

    def __init__(self, data_cfg: Any, seed: int = 0, val_max_images: int | None = None):
        super().__init__()
        self.options = _options(data_cfg)
        self.degradation = _validate(self.options)
        self.seed = int(seed)
        self.val_max_images = val_max_images
        self.datasets: dict[str, Dataset | None] = {split: None for split in SPLITS}

    # --- Lightning hooks ------------------------------------------------------------------
    def prepare_data(self) -> None:
        _prepare_demo(self.options)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage, SPLITS):
            if self.datasets[split] is None:
                self.datasets[split] = self._build(split)
        if self.datasets["train"] is not None:
            self._check_world_size()

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.options["batch_size"])

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.options["val_batch_size"])

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.options["val_batch_size"])

    # --- internals --------------------------------------------------------------------------
    def _build(self, split: str) -> Dataset:
        o = self.options
        if split == "train" or (split == "val" and o.get("name") == "demo"):
            _prepare_demo(o)  # idempotent; also covers a DataModule used without prepare_data
        train = split == "train"
        parts = {
            subset: RestorationDataset(
                samples, train=train, patch_size=o["patch_size"], scale=o["scale"], degradation=self.degradation,
                crop=None if train else o.get("val_crop"), small_images=o["small_images"],
                resize_to=o.get("resize"), seed=self.seed)
            for subset, samples in _scan(o, split).items()
        }
        dataset = MixedDataset(parts, train=train) if o.get("subsets") else parts[""]
        if train and o.get("samples_per_epoch"):
            dataset = Cycled(dataset, max(int(o["samples_per_epoch"]), len(dataset)))
        if split == "val" and self.val_max_images and self.val_max_images < len(dataset):
            dataset = Subset(dataset, range(self.val_max_images))
        return dataset

    def _world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    def _check_world_size(self) -> None:
        _check_epoch(len(self.datasets["train"]), self.options["batch_size"], self._world_size())

    def _eval_sampler(self, dataset: Dataset, split: str):
        """Under DDP, each evaluation image on exactly one rank (Lightning's default sampler pads the
        last round with repeated images, which would then be counted twice in the metrics)."""
        trainer = getattr(self, "trainer", None)
        world = int(trainer.world_size) if trainer is not None else 1
        if world == 1:
            return None
        if len(dataset) < world:
            raise DataError(f"{len(dataset)} {split} image(s) for {world} ranks: every rank needs at least one "
                            f"(raise val.max_images, add images, or use fewer devices)")
        return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=int(trainer.global_rank), shuffle=False)

    def _train_order(self, dataset: Dataset) -> dict:
        """Shuffling and the workers' base seeds from two generators of their own: nothing depends on
        the global RNG (not in checkpoints), and the sampler's generator, which torchdata's
        RandomSampler saves and restores, is not also advanced by each epoch's base-seed draw.
        Under DDP, torch's DistributedSampler (what Lightning would insert, shuffled by seed and
        epoch), given here because Lightning would not see torchdata's sampler as shuffled."""
        trainer = getattr(self, "trainer", None)
        world = int(trainer.world_size) if trainer is not None else 1
        if world > 1:
            sampler = DistributedSampler(dataset, num_replicas=world, rank=int(trainer.global_rank), shuffle=True,
                                         seed=self.seed)
        else:
            sampler = StatefulRandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed))
        return {"sampler": sampler, "generator": torch.Generator().manual_seed(self.seed + 1)}

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        if self.datasets[split] is None:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        dataset = self.datasets[split]
        train = split == "train"
        workers = self.options["num_workers"] if train else min(self.options["num_workers"], len(dataset))
        # Training: torchdata's StatefulDataLoader, whose position (sampler order, items already
        # served, each worker's TrainDraws state) Lightning saves in checkpoints and restores on
        # resume, so a run resumed mid-epoch sees the batches the uninterrupted run would have.
        loader_cls = StatefulDataLoader if train else DataLoader
        return loader_cls(
            dataset,
            **(self._train_order(dataset) if train else {"sampler": self._eval_sampler(dataset, split)}),
            batch_size=batch_size,
            drop_last=train,
            num_workers=workers,
            pin_memory=bool(self.options.get("pin_memory")) and torch.cuda.is_available(),
            persistent_workers=bool(self.options.get("persistent_workers", True)) and workers > 0,
            worker_init_fn=_leave_stop_signals_to_the_main_process if workers > 0 else None,
            collate_fn=collate,
        )


def _leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader worker init: ignore SIGTERM and SIGINT. Schedulers (SLURM) and a terminal's Ctrl-C
    signal every process of the job; a worker that died of it ended the run with "DataLoader worker
    ... is killed by signal" before the main process (mrlight.callbacks.RunGuard) could finish its step
    and write last.ckpt. The workers still end with the main process (PyTorch's parent watchdog)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_datamodule(data_cfg: Any, *, seed: int = 0, val_max_images: int | None = None) -> RestorationDataModule:
    """The DataModule for the `data:` config node; `seed` fixes the validation degradations;
    `val_max_images` keeps the first N validation images (the same ones for any number of ranks)."""
    return RestorationDataModule(data_cfg, seed=seed, val_max_images=val_max_images)
