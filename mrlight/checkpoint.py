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

from mrlight.errors import CheckpointError
from mrlight.models import build_configured, network_config
from mrlight.weights import load_into


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


UNKNOWN = "unknown (an old checkpoint naming the encoder by its path)"


def encoder_of(config: dict, checkpoint: bool = False):
    """The DA-CLIP encoder identity ({"model", "sha256"}) a config's daclip-unet uses, None without one.

    A run config's encoder is the file of its run-time `daclip=` (or a path in `network.overrides.daclip`),
    hashed here (once per file); a checkpoint config records the identity. An old checkpoint's path
    gives UNKNOWN."""
    net = config["network"]
    stored = (net.get("overrides") or {}).get("daclip")
    if isinstance(stored, dict):
        return {"model": stored.get("model"), "sha256": stored.get("sha256")}
    if checkpoint:
        return UNKNOWN if isinstance(stored, str) else None
    path = config.get("daclip") or stored
    if not path:
        return None
    from mrlight.models.daclip_encoder import file_identity

    return file_identity(path)


def _arch(config: dict, checkpoint: bool = False) -> dict:
    net = config["network"]
    arch = {"name": net["name"], **network_config(net["name"], **dict(net.get("overrides") or {}))}
    if "daclip" in arch:  # daclip-unet: the encoder by what it is, not by where it lies
        arch["daclip"] = encoder_of(config, checkpoint)
    return arch


def _identity_text(identity) -> str:
    from mrlight.models.daclip_encoder import describe

    return identity if isinstance(identity, str) else describe(identity)


def check_compatible(ckpt: dict, config: dict, path: str | Path = "checkpoint") -> None:
    """Raise CheckpointError if the checkpoint's network or SDE differs from `config`'s.

    For daclip-unet the DA-CLIP encoders are compared by identity (model and weights hash): the
    run's `daclip=` file may lie anywhere but must be the encoder the checkpoint was trained with."""
    import warnings

    saved = ckpt["hyper_parameters"]["config"]
    a, b = _arch(saved, checkpoint=True), _arch(config)
    if "daclip" in a and "daclip" in b and a["daclip"] != b["daclip"]:
        if a["daclip"] in (UNKNOWN, None):  # an old checkpoint, or one without an encoder: nothing to compare
            what = "names its DA-CLIP encoder by a path (an old checkpoint)" if a["daclip"] else "records no DA-CLIP encoder"
            warnings.warn(f"{path} {what}: the run's encoder {_identity_text(b['daclip'])} is used unchecked",
                          stacklevel=2)
        elif b["daclip"] is None:
            raise CheckpointError(f"{path} was trained with the DA-CLIP encoder {_identity_text(a['daclip'])}: "
                                  f"pass daclip=PATH to that encoder file")
        else:
            raise CheckpointError(f"{path} was trained with another DA-CLIP encoder: the checkpoint records "
                                  f"sha256 {a['daclip']['sha256']} ({a['daclip']['model']}), the daclip= file has "
                                  f"sha256 {b['daclip']['sha256']} ({b['daclip']['model']}); pass daclip= the "
                                  f"encoder file the checkpoint was trained with")
        a, b = {k: v for k, v in a.items() if k != "daclip"}, {k: v for k, v in b.items() if k != "daclip"}
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


def network_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint", daclip: str | Path | None = None,
                            require_encoder: bool = False) -> torch.nn.Module:
    """The network with the checkpoint's weights (the EMA weights when EMA was on).

    `daclip`: the DA-CLIP encoder file of a daclip-unet checkpoint; it must be the encoder whose identity
    the checkpoint records (a WeightsError names both hashes otherwise). Without it the network comes
    without its encoder, unless `require_encoder` (restoring needs it: a CheckpointError says which file).
    """
    config = ckpt["hyper_parameters"]["config"]
    net, _ = build_configured(config["network"], daclip, checkpoint=str(path))
    if require_encoder and getattr(net, "encoder", None) is None and getattr(net, "encoder_identity", None):
        raise CheckpointError(f"{path} was trained with the DA-CLIP encoder {_identity_text(net.encoder_identity)}: "
                              f"pass daclip=PATH to that encoder file")
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit network {config['network']['name']!r}: "
                              f"{str(err).splitlines()[0]}") from None
    return net


def init_network_from(net: torch.nn.Module, path: str | Path, network_cfg: dict, prediction: str | None = None) -> None:
    """Fine-tuning start: copy the network weights of the mrlight checkpoint `path` into `net`.

    The checkpoint's network must be the configured one (name and resolved arguments); only the
    weights are taken (the EMA weights when EMA was on), not its optimizer, step or SDE.
    """
    ckpt = load_checkpoint(path)
    saved = ckpt["hyper_parameters"]["config"]["network"]
    # the DA-CLIP encoder (daclip-unet) is compared by identity below, not by its file's location
    a = {k: v for k, v in network_config(saved["name"], **dict(saved.get("overrides") or {})).items() if k != "daclip"}
    b = {k: v for k, v in network_config(network_cfg["name"], **dict(network_cfg.get("overrides") or {})).items()
         if k != "daclip"}
    if saved["name"] != network_cfg["name"] or a != b:
        raise CheckpointError(f"init_from={path} holds network {saved['name']!r} {a}, the config builds "
                              f"{network_cfg['name']!r} {b}; set network.name/network.overrides to match it")
    recorded = encoder_of(ckpt["hyper_parameters"]["config"], checkpoint=True)
    ours = getattr(net, "encoder_identity", None)
    if isinstance(recorded, dict) and ours is not None and ours["sha256"] != recorded["sha256"]:
        raise CheckpointError(f"init_from={path} was trained with another DA-CLIP encoder: the checkpoint records "
                              f"sha256 {recorded['sha256']} ({recorded['model']}), the run's daclip= file has "
                              f"sha256 {ours['sha256']} ({ours['model']})")
    if prediction is not None:  # a noise network fine-tuned as a data network would start from nonsense
        output = {"matching": "noise"}
        was = ckpt["hyper_parameters"]["config"]["objective"]["prediction"]
        if output.get(was, was) != output.get(prediction, prediction):
            raise CheckpointError(f"init_from={path} predicts {output.get(was, was)!r} (objective.prediction={was}), "
                                  f"the config trains objective.prediction={prediction}; set objective.prediction="
                                  f"{was} (or matching, for a noise network)")
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    load_into(net, state, f"init_from={path}", network_cfg["name"])


def portable_config(config: dict, data_root: str = "./data") -> dict:
    """A copy of a run config with no path of the machine it was trained on, for files that are shared.

    Data paths under `data.root` move under `data_root` (the default root), `output_dir` becomes
    `outputs/<task>`, a path inside this repository becomes relative to it (a student's
    `distill.teacher: checkpoints/...`), and any other absolute path (`init_from`, an encoder file)
    keeps its file name only: a shipped checkpoint must not carry /home/... of its training machine.
    """
    import copy
    import os

    config = copy.deepcopy(config)
    root = str((config.get("data") or {}).get("root") or "")

    def fix(value, key):
        if not isinstance(value, str) or not os.path.isabs(value):
            return value
        if key == "output_dir":
            return f"outputs/{config.get('task') or 'run'}"
        if root and os.path.isabs(root) and (value == root or value.startswith(root.rstrip("/") + "/")):
            return data_root + value[len(root.rstrip("/")):]
        repo = str(Path(__file__).resolve().parent.parent)
        if value.startswith(repo + "/"):
            return value[len(repo) + 1:]
        return Path(value).name

    def walk(node, prefix=""):
        if isinstance(node, dict):
            return {k: walk(v, f"{prefix}{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, prefix) for v in node]
        return fix(node, prefix)

    return walk(config)


def absolute_paths(config, prefix: str = "") -> list[str]:
    """`key=value` for every absolute path string in a (nested) config."""
    import os

    if isinstance(config, dict):
        return [p for k, v in config.items() for p in absolute_paths(v, f"{prefix}{k}.")]
    if isinstance(config, list):
        return [p for i, v in enumerate(config) for p in absolute_paths(v, f"{prefix}{i}.")]
    return [f"{prefix[:-1]}={config}"] if isinstance(config, str) and os.path.isabs(config) else []
