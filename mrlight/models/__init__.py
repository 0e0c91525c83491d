"""Conditional networks `net(x_t, mu, t)` for MR diffusion, built from named presets.

    net = build_network("unet-tiny", nf=8)
    net = build_network("irsde-unet", nf=32, depth=5)      # IR-SDE's released deshadowing network

A preset is a network family plus its arguments; `overrides` change single fields and unknown
fields are an error naming the valid ones. Presets named after a published network (`irsde-unet`,
`refusion-nafnet`, `daclip-unet`) are key-for-key ports that load the released weights strictly (docs/INTEROP.md);
`unet-*` and `nafnet-*` are mrlight's own designs.
"""

from __future__ import annotations

import difflib
import inspect

from torch import nn

from mrlight.models.daclip import DaCLIPUNet
from mrlight.models.irsde import IRSDEUNet
from mrlight.models.nafnet import ConditionalNAFNet
from mrlight.models.refusion import RefusionNAFNet
from mrlight.models.unet import ConditionalUNet

FAMILIES = {"unet": ConditionalUNet, "nafnet": ConditionalNAFNet, "irsde-unet": IRSDEUNet,
            "refusion-nafnet": RefusionNAFNet, "daclip-unet": DaCLIPUNet}

PRESETS: dict[str, dict] = {
    # mrlight's own small UNet for the CPU demo and tests: 3 levels, linear attention everywhere.
    "unet-tiny": dict(family="unet", nf=16, ch_mult=[1, 2, 2], num_res_blocks=1, mid_attention="linear"),
    # mrlight's own UNet at IR-SDE's size (nf 64, 4 levels); not IR-SDE's layers: use irsde-unet for those.
    "unet-base": dict(family="unet", nf=64, ch_mult=[1, 2, 4, 4], num_res_blocks=2, mid_attention="full"),
    # mrlight's own small conditional NAFNet-style network for the CPU demo and tests.
    "nafnet-tiny": dict(family="nafnet", width=16, enc_blocks=[1, 1, 1], mid_blocks=1, dec_blocks=[1, 1, 1]),
    # mrlight's own conditional NAFNet-style network, NAFNet-width32 layout; not Refusion's layers.
    "nafnet-base": dict(family="nafnet", width=32, enc_blocks=[2, 2, 4, 8], mid_blocks=12, dec_blocks=[2, 2, 2, 2]),
    # Published networks, key for key (mrlight/models/irsde.py, refusion.py, daclip.py).
    "irsde-unet": dict(family="irsde-unet", in_nc=3, out_nc=3, nf=64, depth=4),
    "refusion-nafnet": dict(family="refusion-nafnet", img_channel=3, width=64, middle_blk_num=1,
                            enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1]),
    # DA-CLIP universal-ir; daclip=PATH attaches the DA-CLIP encoder that computes the contexts from mu.
    "daclip-unet": dict(family="daclip-unet", in_nc=3, out_nc=3, nf=64, ch_mult=[1, 2, 4, 8], context_dim=512,
                        use_degra_context=True, use_image_context=True, daclip=None),
}

__all__ = ["build_network", "build_configured", "network_config", "PRESETS", "FAMILIES", "ConditionalUNet", "ConditionalNAFNet",
           "IRSDEUNet", "RefusionNAFNet", "DaCLIPUNet"]


# Former names of mrlight's own look-alikes: they claimed published networks they are not.
RENAMED = {"unet-irsde": "unet-base", "nafnet": "nafnet-base"}


def network_config(name: str, **overrides) -> dict:
    """The full argument dict of preset `name` with `overrides` applied (validated)."""
    if name in RENAMED:
        raise ValueError(f"network {name!r} was renamed {RENAMED[name]!r} (it is mrlight's own design, not the "
                         f"published network); the published IR-SDE / Refusion networks are 'irsde-unet' / "
                         f"'refusion-nafnet'")
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown network {name!r}{hint}; valid: {', '.join(PRESETS)}")
    cfg = dict(PRESETS[name])
    family = FAMILIES[cfg.pop("family")]
    valid = [p for p in inspect.signature(family).parameters]
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"network {name!r} has no field {key!r}{hint}; valid: {', '.join(valid)}")
    cfg.update(overrides)
    return cfg


def build_network(name: str, **overrides) -> nn.Module:
    """Instantiate preset `name`; `overrides` replace preset fields (e.g. nf=8)."""
    cfg = network_config(name, **overrides)
    return FAMILIES[PRESETS[name]["family"]](**cfg)


def build_configured(network_cfg: dict, daclip=None, *, checkpoint: str | None = None) -> tuple[nn.Module, dict]:
    """The network of a config's `network` block, and the block to record in a checkpoint.

    `daclip`: the DA-CLIP encoder file, a run-time setting (`daclip=PATH` of train.py, sample.py and
    the converter), for network daclip-unet only. `network.overrides.daclip` may hold:

    - an encoder identity {"model", "sha256"} (what checkpoints record): the file given as `daclip`
      must have it (a WeightsError names both hashes otherwise); without a file the network is built
      without its encoder (`net.encoder_identity` says which one it needs);
    - a path (an old checkpoint, or a run config written as `network.overrides.daclip=PATH`): the
      encoder's identity is unknown. `checkpoint` (the checkpoint's name) marks the old-checkpoint
      case: the given `daclip` file, else the stored path if it exists, is used with a warning.

    The recorded block holds the attached (or expected) encoder's identity, never a path.
    """
    import warnings
    from pathlib import Path

    from mrlight.errors import CheckpointError, ConfigError

    name = network_cfg["name"]
    overrides = dict(network_cfg.get("overrides") or {})
    if name != "daclip-unet":
        if daclip:
            where = f"{checkpoint}'s network" if checkpoint else "network.name"
            raise ConfigError(f"daclip={daclip} is the DA-CLIP encoder of network daclip-unet; {where} is {name!r}")
        return build_network(name, **overrides), network_cfg
    given = "daclip" in overrides
    stored = overrides.pop("daclip", None)
    path = str(daclip) if daclip else None
    if isinstance(stored, (str, Path)):
        if checkpoint is not None:
            if path:
                warnings.warn(f"{checkpoint} names its DA-CLIP encoder by a path ({stored}; an old checkpoint), "
                              f"not by its weights' hash: using daclip={path} unchecked", stacklevel=2)
            elif Path(stored).is_file():
                path = str(stored)
                warnings.warn(f"{checkpoint} names its DA-CLIP encoder by a path (an old checkpoint), not by its "
                              f"weights' hash: using {path} unchecked (daclip=PATH chooses the file)", stacklevel=2)
            else:
                raise CheckpointError(f"{checkpoint} names its DA-CLIP encoder by a path that does not exist here "
                                      f"({stored}; an old checkpoint): pass daclip=PATH to the encoder file")
        else:
            path = path or str(stored)
        stored = None
    net = build_network(name, **overrides, daclip=stored)  # an identity: the encoder that must be attached
    if path:
        from mrlight.models.daclip_encoder import DaCLIPEncoder

        try:
            net.attach_encoder(DaCLIPEncoder.from_file(path))
        except CheckpointError as err:  # WeightsError: name the checkpoint whose identity is not met
            raise type(err)(f"{checkpoint}: {err}" if checkpoint else str(err)) from None
    identity = net.encoder_identity
    if identity is not None or given:
        overrides["daclip"] = identity
    return net, {**network_cfg, "overrides": overrides}
