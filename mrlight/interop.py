"""Published weights -> mrlight checkpoints.

Reading and fitting state dicts lives in the leaf module `mrlight.weights` (re-exported here);
`make_checkpoint` builds the dict that `sample.py ckpt=`, fine-tuning (`init_from=`) and the
trajectory tools read (see mrlight.checkpoint).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mrlight.weights import WeightsError, fit_report, guess_network, load_into, read_state_dict  # noqa: F401


def make_checkpoint(net: torch.nn.Module, config: dict, source: str) -> dict:
    """An mrlight checkpoint (Lightning layout) holding `net`'s weights and the run config."""
    import lightning

    return {"state_dict": {f"net.{k}": v.detach().cpu() for k, v in net.state_dict().items()},
            "hyper_parameters": {"config": config},
            "epoch": 0, "global_step": 0, "pytorch-lightning_version": lightning.__version__,
            "mrlight_converted_from": Path(str(source)).name}


__all__ = ["read_state_dict", "guess_network", "fit_report", "load_into", "make_checkpoint", "WeightsError"]
