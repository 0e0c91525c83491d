"""Reading mrlight checkpoints safely: `weights_only` loading, clear errors, architecture checks.

A checkpoint is Lightning's dict; mrlight stores the resolved run config in
`hyper_parameters["config"]`, and with EMA enabled `state_dict` holds the EMA weights (Lightning's
WeightAveraging callback moves the raw weights to `current_model_state`).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from mrlight.models import build_network, network_config


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, not mrlight's, or another architecture."""


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint without executing pickled code (`torch.load(weights_only=True)`)."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.parent.is_dir():
            found = sorted(p.name for p in path.parent.glob("*.ckpt"))
            hint = f"; checkpoints in {path.parent}: {', '.join(found) if found else 'none'}"
        raise CheckpointError(f"checkpoint not found: {path}{hint}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt, truncated or not a PyTorch file)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path} holds objects that safe (weights_only) loading refuses to unpickle; "
                              f"it was not written by mrlight ({str(err).splitlines()[0]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    config = ckpt.get("hyper_parameters", {}).get("config")
    if not isinstance(config, dict) or "network" not in config or "sde" not in config:
        raise CheckpointError(f"{path} was not written by mrlight (no run config in its hyper_parameters)")
    return ckpt


def _arch(config: dict) -> dict:
    net = config["network"]
    return {"name": net["name"], **network_config(net["name"], **dict(net.get("overrides") or {}))}


def check_compatible(ckpt: dict, config: dict, path: str | Path = "checkpoint") -> None:
    """Raise CheckpointError if the checkpoint's network or SDE differs from `config`'s."""
    saved = ckpt["hyper_parameters"]["config"]
    a, b = _arch(saved), _arch(config)
    if a != b:
        diff = ", ".join(f"{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}"
                         for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        raise CheckpointError(f"{path} holds another architecture ({diff}); set network.name/network.overrides "
                              f"to match it or start a new run with another output_dir")
    for key in ("T", "max_sigma", "schedule", "eps"):
        if saved["sde"].get(key) != config["sde"].get(key):
            raise CheckpointError(f"{path} was trained with sde.{key}={saved['sde'].get(key)!r}, "
                                  f"the config says {config['sde'].get(key)!r}")
    saved_pred = saved["objective"]["prediction"]
    if saved_pred != config["objective"]["prediction"]:
        raise CheckpointError(f"{path} was trained with objective.prediction={saved_pred!r}, "
                              f"the config says {config['objective']['prediction']!r}")


def network_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> torch.nn.Module:
    """The network with the checkpoint's weights (the EMA weights when EMA was on)."""
    config = ckpt["hyper_parameters"]["config"]
    net = build_network(config["network"]["name"], **dict(config["network"].get("overrides") or {}))
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit network {config['network']['name']!r}: "
                              f"{str(err).splitlines()[0]}") from None
    return net
