"""Data for mrlight: folders of LQ/GT pairs or clean images, synthetic degradations, the demo set.

    from mrlight.data import build_datamodule, check_data, read_image, DataError

See docs/DATA.md for every task's data set and layout.
"""

from .datamodule import RestorationDataModule, build_datamodule, check_data
from .datasets import MixedDataset, RestorationDataset
from .degradations import DEGRADATIONS, Degradation, build_degradation
from .demo import ensure_demo, make_demo
from .errors import DataError
from .io import read_image, write_image

__all__ = [
    "DEGRADATIONS", "DataError", "Degradation", "MixedDataset", "RestorationDataModule", "RestorationDataset",
    "build_datamodule", "build_degradation", "check_data", "ensure_demo", "make_demo", "read_image", "write_image",
]
