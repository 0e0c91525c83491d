"""Published weights -> mrlight: reading official `.pth` files, fitting them to a preset, writing checkpoints.

IR-SDE / Refusion / DA-CLIP save the plain `state_dict()` of the unwrapped network (`save_network` in
their `models/base_model.py`); other tools wrap it (`{'state_dict': ...}`, `{'params': ...}`) or keep
DataParallel's `module.` prefix. `read_state_dict` accepts all of these; `fit_report` says exactly
why a file does not fit a preset; `make_checkpoint` builds the dict that `sample.py ckpt=`, fine-tuning
(`init_from=`) and the trajectory tools read (see mrlight.checkpoint).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from mrlight.checkpoint import CheckpointError, load_checkpoint
from mrlight.models import network_config

WRAPPER_KEYS = ("state_dict", "params", "params_ema", "model", "net")
LIST_LIMIT = 8


class WeightsError(CheckpointError):
    """A weights file that cannot be read or does not fit the requested network."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: unwrapped from a `state_dict`/`params` dict, `module.` prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(f"{path} is not a readable PyTorch weights file (or holds objects that safe "
                           f"loading refuses): {first}") from None
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        kind = f"a dict with keys {', '.join(map(str, list(obj)[:LIST_LIMIT]))}" if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{path} holds {kind}, not a state dict of tensors (nor one under "
                           f"{' / '.join(repr(k) for k in WRAPPER_KEYS)})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _listing(keys: list[str]) -> str:
    more = f" (+{len(keys) - LIST_LIMIT} more)" if len(keys) > LIST_LIMIT else ""
    return ", ".join(keys[:LIST_LIMIT]) + more


def _listed(values) -> str:
    """A list as one shell word: [1,1,1,28]."""
    return "[" + ",".join(str(v) for v in values) + "]"


def _unet_widths(state: dict[str, torch.Tensor]) -> list[int]:
    """Level input widths and the middle width of an IR-SDE / DA-CLIP UNet state dict."""
    depth = len({k.split(".")[1] for k in state if k.startswith("downs.")})
    widths = [state[f"downs.{i}.0.block1.proj.weight"].shape[0] for i in range(depth)]
    return widths + [state[f"downs.{depth - 1}.3.weight"].shape[0]]


def guess_network(state: dict[str, torch.Tensor]) -> str | None:
    """A `network=... network.KEY=...` suggestion read off the file's keys and shapes, or None."""
    try:
        if "intro.weight" in state and "ending.weight" in state:
            enc = sorted({int(k.split(".")[1]) for k in state if k.startswith("encoders.")})
            blocks = [len({k.split(".")[2] for k in state if k.startswith(f"encoders.{i}.")}) for i in enc]
            dec = [len({k.split(".")[2] for k in state if k.startswith(f"decoders.{i}.")}) for i in enc]
            mid = len({k.split(".")[1] for k in state if k.startswith("middle_blks.")})
            return (f"network=refusion-nafnet network.width={state['intro.weight'].shape[0]} "
                    f"network.enc_blk_nums={_listed(blocks)} network.middle_blk_num={mid} network.dec_blk_nums={_listed(dec)}")
        if "init_conv.weight" in state and "final_conv.weight" in state:
            nf, widths = state["init_conv.weight"].shape[0], _unet_widths(state)
            cross = [k for k in state if k.endswith("attn2.to_k.weight")]
            if widths == [nf * 2 ** i for i in range(len(widths))] and not cross and "prompt" not in state:
                return f"network=irsde-unet network.nf={nf} network.depth={len(widths) - 1}"
            ctx = (state["text_mlp.0.weight"].shape[1] if "text_mlp.0.weight" in state
                   else state[cross[0]].shape[1] if cross else None)
            return (f"network=daclip-unet network.nf={nf} network.ch_mult={_listed(w // nf for w in widths[1:])}"
                    + (f" network.context_dim={ctx}" if ctx else "")
                    + f" network.use_degra_context={str('prompt' in state).lower()} "
                    f"network.use_image_context={str(bool(cross)).lower()}"
                    + (" network.scale=0.5" if "downsample.weight" in state else ""))
    except (KeyError, IndexError):  # an unusual file: no guess rather than a confusing one
        return None
    return None


def fit_report(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Why `state` does not load strictly into `net` (empty when it does)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
    return problems


def load_into(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str, name: str) -> None:
    """`net.load_state_dict(state, strict=True)`, or a WeightsError that lists every mismatch and a guess."""
    problems = fit_report(net, state)
    if problems:
        guess = guess_network(state)
        hint = f"; the file looks like: {guess}" if guess else ""
        raise WeightsError(f"{source} does not fit network {name!r}: " + "; ".join(problems) + hint)
    net.load_state_dict(state, strict=True)


def make_checkpoint(net: torch.nn.Module, config: dict, source: str) -> dict:
    """An mrlight checkpoint (Lightning layout) holding `net`'s weights and the run config."""
    import lightning

    return {"state_dict": {f"net.{k}": v.detach().cpu() for k, v in net.state_dict().items()},
            "hyper_parameters": {"config": config},
            "epoch": 0, "global_step": 0, "pytorch-lightning_version": lightning.__version__,
            "mrlight_converted_from": str(source)}


def init_network_from(net: torch.nn.Module, path: str | Path, network_cfg: dict, prediction: str | None = None) -> None:
    """Fine-tuning start: copy the network weights of the mrlight checkpoint `path` into `net`.

    The checkpoint's network must be the configured one (name and resolved arguments); only the
    weights are taken (the EMA weights when EMA was on), not its optimizer, step or SDE.
    """
    ckpt = load_checkpoint(path)
    saved = ckpt["hyper_parameters"]["config"]["network"]
    # the encoder file's location (daclip-unet) is not part of the architecture
    a = {k: v for k, v in network_config(saved["name"], **dict(saved.get("overrides") or {})).items() if k != "daclip"}
    b = {k: v for k, v in network_config(network_cfg["name"], **dict(network_cfg.get("overrides") or {})).items()
         if k != "daclip"}
    if saved["name"] != network_cfg["name"] or a != b:
        raise CheckpointError(f"init_from={path} holds network {saved['name']!r} {a}, the config builds "
                              f"{network_cfg['name']!r} {b}; set network.name/network.overrides to match it")
    if prediction is not None:  # a noise network fine-tuned as a data network would start from nonsense
        output = {"matching": "noise"}
        was = ckpt["hyper_parameters"]["config"]["objective"]["prediction"]
        if output.get(was, was) != output.get(prediction, prediction):
            raise CheckpointError(f"init_from={path} predicts {output.get(was, was)!r} (objective.prediction={was}), "
                                  f"the config trains objective.prediction={prediction}; set objective.prediction="
                                  f"{was} (or matching, for a noise network)")
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    load_into(net, state, f"init_from={path}", network_cfg["name"])


__all__ = ["read_state_dict", "guess_network", "fit_report", "load_into", "make_checkpoint",
           "init_network_from", "WeightsError"]
