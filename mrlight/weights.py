"""Reading state dicts and fitting them to networks; a leaf module (imports only mrlight.errors).

IR-SDE / Refusion / DA-CLIP save the plain `state_dict()` of the unwrapped network (`save_network` in
their `models/base_model.py`); other tools wrap it (`{'state_dict': ...}`, `{'params': ...}`) or keep
DataParallel's `module.` prefix. `read_state_dict` accepts all of these; `fit_report` says exactly
why a file does not fit a network; `load_into` loads strictly, or with `strict=False` the way the
official loaders do (`load_state_dict(..., strict=False)`), listing every key it drops.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from mrlight.errors import WeightsError

WRAPPER_KEYS = ("state_dict", "params", "params_ema", "model", "net")
LIST_LIMIT = 8


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


def listing(keys: list[str]) -> str:
    """At most LIST_LIMIT names, then how many more."""
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


def fit_report(net: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
    """Why `state` does not load into `net` (empty when it does); `strict=False` tolerates unexpected keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own] if strict else []
    shapes = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {listing(shapes)}")
    return problems


def load_into(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str, name: str,
              strict: bool = True) -> list[str]:
    """Load `state` into `net`, or raise a WeightsError that lists every mismatch and a guess.

    strict=True: every key must match (`load_state_dict(strict=True)`). strict=False: keys of the file
    that the network does not have are dropped, as the official IR-SDE / DA-CLIP loaders do; missing
    keys and shape mismatches are still errors (the network would run with untrained layers).
    Returns the dropped keys (empty when strict).
    """
    problems = fit_report(net, state, strict=strict)
    if problems:
        guess = guess_network(state)
        hint = f"; the file looks like: {guess}" if guess else ""
        raise WeightsError(f"{source} does not fit network {name!r}: " + "; ".join(problems) + hint)
    own = net.state_dict()
    dropped = [k for k in state if k not in own]
    net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    return dropped


__all__ = ["read_state_dict", "guess_network", "fit_report", "load_into", "listing", "WeightsError"]
