"""Run configuration: base defaults <- configs/task/<task>.yaml <- key=value arguments (OmegaConf).

This module reads and merges the layers; what a valid configuration is (every key in
`configs/defaults.yaml` or a Lightning Trainer argument under `trainer.*`, values of the default's
type, enumerated choices, a sampler that dry-runs) lives in `mrlight.schema`. Free-form blocks are
those whose default is empty or null (`network.overrides`, `data.degradation`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mrlight.errors import ConfigError
from mrlight.schema import (MULTI_TYPED, _raw, _suggest, check_time_schedule, check_values,  # noqa: F401
                            validate)

# MRLIGHT_CONFIG_DIR points train.py / sample.py at another config tree (same layout).
CONFIG_DIR = Path(os.environ.get("MRLIGHT_CONFIG_DIR") or Path(__file__).resolve().parent.parent / "configs")

def parse_overrides(argv: Iterable[str]) -> list[str]:
    """Check that every argument is key=value."""
    out = []
    for arg in argv:
        if "=" not in arg or arg.startswith("="):
            raise ConfigError(f"argument {arg!r} is not key=value (e.g. trainer.max_steps=100)")
        out.append(arg[2:] if arg.startswith("--") else arg)
    return out


def available_tasks(config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (config_dir / "task").glob("*.yaml"))


# Free-form blocks: a later layer replaces them whole instead of merging key by key, so that
# data.degradation={name: jpeg} does not inherit the task's sigma, and a list can replace a mapping.
REPLACED_WHOLE = ("data.degradation", "network.overrides", "data.subsets")


def _merge(layers: list[DictConfig]) -> DictConfig:
    last = {}
    stripped = []
    for layer in layers:
        layer = layer.copy()
        # network.overrides are fields of one preset: a layer that names a network without giving
        # overrides drops the earlier layers' (`task=demo network.name=unet-tiny` gets a plain unet-tiny).
        net = layer.get("network")
        if isinstance(net, DictConfig) and "name" in net and "overrides" not in net:
            last["network.overrides"] = {}
        for key in REPLACED_WHOLE:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(layer, parent) if parent else layer
            if isinstance(node, DictConfig) and leaf in node:
                last[key] = _raw(node, leaf)
                del node[leaf]
        stripped.append(layer)
    try:
        cfg = OmegaConf.merge(*stripped)
        for key, value in last.items():
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    except (OmegaConfBaseException, TypeError, ValueError) as err:
        raise ConfigError(f"cannot merge the configuration: {err}") from None
    return cfg


def load_config(argv: Iterable[str] = (), config_dir: Path | str = CONFIG_DIR) -> DictConfig:
    """Defaults <- task file <- `key=value` overrides, validated and resolved."""
    config_dir = Path(config_dir)
    overrides = parse_overrides(argv)
    try:
        base = OmegaConf.load(config_dir / "defaults.yaml")
        cli = OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse the arguments: {err}") from None
    validate(base, cli, "command line")
    task = cli.get("task", base.get("task"))
    layers = [base]
    if task is not None:
        task_file = config_dir / "task" / f"{task}.yaml"
        if not task_file.is_file():
            tasks = available_tasks(config_dir)
            raise ConfigError(f"unknown task {task!r}: no {task_file}{_suggest(str(task), tasks)}; "
                              f"valid: {', '.join(tasks) or '(none)'}")
        try:
            task_cfg = OmegaConf.load(task_file)
        except (OmegaConfBaseException, Exception) as err:
            raise ConfigError(f"cannot read {task_file}: {err}") from None
        if task_cfg is not None and len(task_cfg):
            validate(base, task_cfg, str(task_file))
            layers.append(task_cfg)
    layers.append(cli)
    cfg = _merge(layers)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the configuration: {err}") from None
    if OmegaConf.select(cfg, "distill.teacher"):  # a student run: the teacher's SDE, network and the k-call sampler
        from mrlight.student import apply_teacher

        apply_teacher(cfg)
    check_values(cfg)
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
