"""Convert published IR-SDE / Refusion / DA-CLIP weights into an mrlight checkpoint.

    python -m mrlight.convert SRC OUT.ckpt network=<preset> sde.max_sigma=<s> [network.KEY=VALUE ...]
                              [sde.T=100 sde.eps=0.005 sde.schedule=cosine] [objective.prediction=noise]
                              [sampler.KEY=VALUE ...] [daclip=ENCODER.pt] [strict=false] [overwrite=true]

SRC is the official weights file (the plain state dict that IR-SDE's `save_network` writes; a
`module.` prefix and a `state_dict` / `params` wrapper are accepted). The network must load it
strictly: otherwise the missing / unexpected keys and shape mismatches are listed and nothing is
written. `strict=false` drops the file's keys that the network does not have, as the official
loaders do (`load_state_dict(..., strict=False)`), and prints them; missing keys and shape
mismatches stay errors. The checkpoint records the SDE settings and that the network predicts
noise, so that `python sample.py ckpt=OUT.ckpt ...` and `python train.py ... init_from=OUT.ckpt`
work. For `network=daclip-unet`, `daclip=ENCODER.pt` names the DA-CLIP encoder file (e.g.
daclip_ViT-B-32.pt): the checkpoint records the encoder's identity (CLIP model and sha256 of its
weights), not its path, and the encoder weights are not copied into OUT.ckpt; pass the file again
with `sample.py ... daclip=PATH` (it may have moved).
Released settings and their max_sigma are listed in docs/INTEROP.md.
Exit codes: 0 written, 2 bad input (arguments, file, architecture).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# sde.max_sigma of the released models (their test ymls); printed when max_sigma is not given.
RELEASED_MAX_SIGMA = ("IR-SDE deraining / deblurring: 10; IR-SDE deshadowing / inpainting / super-resolution: 30; "
                      "IR-SDE denoising: 75 (unconditional, not supported); Refusion and DA-CLIP: 50")
OWN_KEYS = ("network", "overwrite", "strict")


def split_arguments(argv: list[str]) -> tuple[list[str], dict, list[str]]:
    """(positional paths, convert.py's own options, run-config overrides), with network.KEY -> network.overrides.KEY."""
    from mrlight.config import ConfigError

    paths, own, config_args = [], {}, []
    for arg in argv:
        if "=" not in arg:
            paths.append(arg)
            continue
        key, value = arg.split("=", 1)
        if key in OWN_KEYS:
            own[key] = value
        elif key.startswith("network.") and not key.startswith(("network.overrides.", "network.name")):
            config_args.append(f"network.overrides.{key[len('network.'):]}={value}")
        else:
            config_args.append(arg)
    if len(paths) != 2:
        raise ConfigError(f"expected two paths, SRC and OUT.ckpt, got {len(paths)}: {' '.join(paths) or '(none)'} "
                          "(usage: python -m mrlight.convert SRC OUT.ckpt network=irsde-unet sde.max_sigma=10)")
    if "network" in own:
        config_args.insert(0, f"network.name={own['network']}")
    return paths, own, config_args


def build_config(config_args: list[str]) -> dict:
    """The run config of the converted model: defaults <- the given network / sde / sampler settings."""
    from mrlight.config import ConfigError, load_config, to_dict

    if not any(a.startswith("network.name=") for a in config_args):
        raise ConfigError("network=<preset> is required, e.g. network=irsde-unet (refusion-nafnet, daclip-unet)")
    if not any(a.startswith("sde.max_sigma=") for a in config_args):
        raise ConfigError(f"sde.max_sigma=... is required: the released models use {RELEASED_MAX_SIGMA}")
    if not any(a.startswith("objective.prediction=") for a in config_args):
        config_args = [*config_args, "objective.prediction=noise"]  # a task file may say otherwise (demo: velocity)
    config = to_dict(load_config(config_args))
    if config["objective"]["prediction"] not in ("noise", "matching"):
        raise ConfigError(f"objective.prediction={config['objective']['prediction']!r}: the published networks "
                          "predict noise; use noise (or matching, IR-SDE's loss on a noise-predicting network)")
    return config


def convert(src: str | Path, out: str | Path, config: dict, overwrite: bool = False, strict: bool = True) -> Path:
    """Load `src` into the configured network and write the mrlight checkpoint `out` (atomically).

    strict=False drops the file's keys that the network does not have (printed); `config["daclip"]` is the
    DA-CLIP encoder file of daclip-unet, recorded by identity (`network.overrides.daclip`), not by path."""
    import torch

    from mrlight.config import ConfigError
    from mrlight.interop import load_into, make_checkpoint, read_state_dict
    from mrlight.models import build_configured

    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass overwrite=true to replace it")
    if out.suffix != ".ckpt":
        raise ConfigError(f"OUT must end in .ckpt (sample.py ckpt=... reads it), got {out}")
    state = read_state_dict(src)
    net_cfg = config["network"]
    net, recorded = build_configured(net_cfg, config.get("daclip"))
    dropped = load_into(net, state, str(src), net_cfg["name"], strict=strict)
    if dropped:
        print(f"strict=false: dropped {len(dropped)} key(s) of {src} that network {net_cfg['name']!r} does not have: "
              + ", ".join(dropped), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    record = {**config, "network": recorded, **({"daclip": None} if "daclip" in config else {})}
    torch.save(make_checkpoint(net, record, src), tmp)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    from mrlight.cli import error, help_requested

    argv = sys.argv[1:] if argv is None else argv
    if (code := help_requested(argv, __doc__)) is not None:
        return code
    from mrlight.errors import CheckpointError, ConfigError

    try:
        (src, out), own, config_args = split_arguments(argv)
        flags = {}
        for key, default in (("overwrite", "false"), ("strict", "true")):
            flags[key] = own.get(key, default).lower()
            if flags[key] not in ("true", "false"):
                raise ConfigError(f"{key}={own[key]!r}: expected true or false")
        config = build_config(config_args)
        written = convert(src, out, config, overwrite=flags["overwrite"] == "true", strict=flags["strict"] == "true")
    except (ConfigError, CheckpointError) as err:
        return error(str(err))
    net, sde = config["network"], config["sde"]
    overrides = "".join(f" {k}={v}" for k, v in (net.get("overrides") or {}).items())
    if config.get("daclip"):
        from mrlight.models.daclip_encoder import describe, file_identity

        overrides += f" daclip={describe(file_identity(config['daclip']))}"
    print(f"wrote {written}: network {net['name']}{overrides}, sde T={sde['T']} max_sigma={sde['max_sigma']} "
          f"schedule={sde['schedule']} eps={sde['eps']}, prediction {config['objective']['prediction']}")
    print(f"restore images with: python sample.py ckpt={written} input=DIR output=DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
