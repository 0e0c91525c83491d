"""What a valid mrlight configuration is: key names, value types, enumerated choices, a sampler that runs.

`validate(schema, override, origin)` checks an override layer against the defaults (unknown keys
name the closest valid one; values must have the default's type, `MULTI_TYPED` lists keys that take
more; `trainer.*` keys are checked against `lightning.Trainer`'s signature and annotations).
`check_values(cfg)` checks a merged configuration: choices, ranges, the network preset and a dry run
of the configured sampler on a tiny input, so that a bad value stops `train.py` / `sample.py`
before any work starts, with the key named.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

from mrlight.errors import ConfigError


# Keys whose value may take more than the default's type.
MULTI_TYPED = {
    "sde.max_sigma": (int, float),
    "val.lpips": (bool, str),         # true | false | "random" (random backbone, tests only)
    "ckpt_path": (str, type(None)),
    "init_from": (str, type(None)),
    "sampler.time_schedule": (str, list, ListConfig, type(None)),  # a name, a .yaml file of times, or times
    "sampler.lambda_min": (int, float, type(None)),
    "optim.grad_clip": (int, float, type(None)),
    "data.val_crop": (int, type(None)),
    "checkpoint.every_n_steps": (int, type(None)),
    "checkpoint.every_minutes": (int, float, type(None)),
    "daclip": (str, type(None)),      # the DA-CLIP encoder file (run-time; checkpoints record its identity)
}


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _trainer_args() -> list[str]:
    from lightning.pytorch import Trainer

    return [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"]


def _type_name(t) -> str:
    return {type(None): "null", str: "string", int: "integer", float: "number", bool: "boolean",
            list: "list", dict: "mapping"}.get(t, t.__name__)


def _check_type(key: str, default, value, origin: str, types: dict | None = None) -> None:
    types = MULTI_TYPED if types is None else {**MULTI_TYPED, **types}
    if key in types:
        allowed = types[key]
    elif default is None:
        return
    elif isinstance(default, bool):
        allowed = (bool,)
    elif isinstance(default, int):
        allowed = (int,)
    elif isinstance(default, float):
        allowed = (int, float)
    elif isinstance(default, str):
        allowed = (str, int, float)  # a name like 2024 parses as a number
    elif isinstance(default, (list, ListConfig)):
        allowed = (list, ListConfig)
    else:
        return
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        want = " or ".join(dict.fromkeys(_type_name(t) for t in allowed if t is not ListConfig))
        raise ConfigError(f"{key}={value!r} ({origin}): expected {want}, got {_type_name(type(value))}")


def _trainer_hints() -> dict:
    import typing

    from lightning.pytorch import Trainer

    try:
        return typing.get_type_hints(Trainer.__init__)
    except Exception:  # an annotation that does not resolve: check nothing rather than fail
        return {}


_PLAIN = {int: (int,), float: (int, float), bool: (bool,), str: (str,), type(None): (type(None),),
          list: (list, ListConfig), dict: (dict, DictConfig)}


def _annotation_accepts(annotation, value) -> tuple[bool, list[str]]:
    """(does a plain config value fit the Trainer argument's annotation?, readable names of what fits).

    Types a config cannot spell (callbacks, Strategy objects, timedelta) accept anything."""
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        results = [_annotation_accepts(a, value) for a in args]
        return any(ok for ok, _ in results), [n for _, names in results for n in names]
    if origin is typing.Literal:
        return value in args and not (isinstance(value, bool) and bool not in map(type, args)), \
            [repr(a) for a in args]
    plain = _PLAIN.get(origin or annotation)
    if plain is None:
        return True, []
    ok = isinstance(value, plain) and not (isinstance(value, bool) and bool not in plain)
    return ok, [_type_name(origin or annotation)]


def _check_trainer_type(key: str, value, origin: str) -> None:
    annotation = _trainer_hints().get(key.split(".", 1)[1])
    if annotation is None:
        return
    ok, names = _annotation_accepts(annotation, value)
    if not ok:
        want = " or ".join(dict.fromkeys(names))
        raise ConfigError(f"{key}={value!r} ({origin}): expected {want}, got {_type_name(type(value))}")


def _raw(cfg: DictConfig, key):
    """The value at `key` without resolving interpolations (containers stay containers)."""
    node = cfg._get_node(key)
    return node if isinstance(node, (DictConfig, ListConfig)) else node._value()


def validate(schema: DictConfig, override: DictConfig, origin: str, prefix: str = "",
             types: dict | None = None) -> None:
    """Every key of `override` must exist in `schema` with a compatible type (`types`: extra
    multi-typed keys, full dotted name -> allowed types, on top of MULTI_TYPED)."""
    for key in override.keys():
        full = f"{prefix}{key}"
        value = _raw(override, key)
        if full.startswith("trainer."):
            valid = _trainer_args()
            if key not in valid:
                raise ConfigError(f"unknown key {full!r} ({origin}): not an argument of lightning.Trainer"
                                  f"{_suggest(full, [f'trainer.{v}' for v in valid])}")
            if not (isinstance(value, str) and value.startswith("${")):
                _check_trainer_type(full, value, origin)
            continue
        if key not in schema:
            raise ConfigError(f"unknown key {full!r} ({origin}){_suggest(full, _all_keys(schema, prefix))}")
        default = _raw(schema, key)
        if isinstance(default, DictConfig):
            if len(default) == 0:  # free-form block
                continue
            if not isinstance(value, DictConfig):
                if value is None or isinstance(value, str) and value.startswith("${"):
                    continue
                raise ConfigError(f"{full}={value!r} ({origin}): expected a mapping with keys "
                                  f"{', '.join(default.keys())}")
            validate(default, value, origin, prefix=f"{full}.", types=types)
        elif isinstance(value, str) and value.startswith("${"):
            continue  # interpolation, checked after resolution
        else:
            _check_type(full, default, value, origin, types)


def _all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    out = []
    for key in cfg.keys():
        node = _raw(cfg, key)
        full = f"{prefix}{key}"
        out.append(full)
        if isinstance(node, DictConfig):
            out.extend(_all_keys(node, f"{full}."))
    return out


CHOICES = {
    "objective.prediction": ("noise", "data", "velocity", "matching"),
    "objective.loss": ("l1", "l2"),
    "objective.t_sampling": ("continuous", "discrete"),
    "optim.name": ("adamw", "adam", "sgd"),
    "optim.scheduler": ("cosine", "constant"),
    "logger.backend": ("wandb", "csv", "none"),
    "logger.mode": ("auto", "online", "offline"),
    "sde.schedule": ("cosine", "linear", "constant"),
    "stage": ("fit", "validate", "test"),
}


def check_time_schedule(ts) -> None:
    """sampler.time_schedule: a schedule name, a YAML file of times that exists, a list of times, or null."""
    from mrlight.sampling import TIME_SCHEDULE_NAMES

    if ts is None or isinstance(ts, (list, ListConfig)):
        return  # a list is checked against nfe and T by the sampler (sample.py dry-runs it)
    if str(ts).lower().endswith((".yaml", ".yml")):
        if not Path(str(ts)).is_file():
            raise ConfigError(f"sampler.time_schedule={ts!r}: file not found (a YAML file with a 'times:' list)")
        return
    if ts not in TIME_SCHEDULE_NAMES:
        raise ConfigError(f"sampler.time_schedule={ts!r} is not valid{_suggest(str(ts), TIME_SCHEDULE_NAMES)}; "
                          f"valid: {', '.join(TIME_SCHEDULE_NAMES)}, a .yaml file of times, a list of times, or null")


def check_values(cfg: DictConfig) -> None:
    """Enumerated and range-limited values, with the valid choices in the message."""
    from mrlight.models import PRESETS, network_config
    from mrlight.sampling import CORRECTORS, SAMPLERS, SOLVERS

    choices = dict(CHOICES)
    choices["network.name"] = tuple(PRESETS)
    choices["sampler.sampler"] = tuple(SAMPLERS)
    choices["sampler.solver"] = SOLVERS
    choices["sampler.corrector"] = CORRECTORS
    for key, valid in choices.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in valid:
            raise ConfigError(f"{key}={value!r} is not valid{_suggest(str(value), valid)}; valid: {', '.join(valid)}")
    check_time_schedule(OmegaConf.select(cfg, "sampler.time_schedule"))
    lp = OmegaConf.select(cfg, "val.lpips")
    if lp not in (True, False, "random"):
        raise ConfigError(f"val.lpips={lp!r} is not valid; valid: true, false, random")
    try:
        network_config(cfg.network.name, **dict(cfg.network.overrides or {}))
    except ValueError as err:
        raise ConfigError(f"network.overrides: {err}") from None
    daclip = OmegaConf.select(cfg, "daclip")
    if daclip is not None and cfg.network.name != "daclip-unet":
        raise ConfigError(f"daclip={daclip} is the DA-CLIP encoder file of network daclip-unet; "
                          f"network.name is {cfg.network.name!r}")
    for key in ("val.every_n_steps", "val.max_images", "sampler.nfe", "sde.T"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key}={value!r} must be >= 1")
    for key in ("checkpoint.every_n_steps", "checkpoint.every_minutes"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{key}={value!r} must be > 0 (or null to turn it off)")
    if not 0 < cfg.ema.decay < 1:
        raise ConfigError(f"ema.decay={cfg.ema.decay!r} must be in (0, 1)")
    check_sampler(cfg)


def build_sde(sde_cfg):
    """The `MRSDE` of an `sde` config block, or a ConfigError naming the key."""
    from mrlight.sde import MRSDE

    try:
        return MRSDE(T=sde_cfg["T"], max_sigma=sde_cfg["max_sigma"], schedule=sde_cfg["schedule"], eps=sde_cfg["eps"])
    except (TypeError, ValueError) as err:
        key = next((k for k in ("T", "max_sigma", "schedule", "eps") if k in str(err)), None)
        raise ConfigError(f"sde{'.' + key if key else ''}: {err}") from None


def check_sampler(cfg: DictConfig) -> None:
    """Dry-run the configured sampler on a tiny input, so a bad `sampler.*` value stops the run before
    any work starts (not at the first validation), with the key named."""
    import torch

    from mrlight.sampling import OptionError, sample, sampler_options, with_network_defaults

    sde = build_sde(cfg.sde)
    block = OmegaConf.to_container(cfg.sampler, resolve=True)
    if block.get("sampler") == "distilled":
        distill = OmegaConf.to_container(cfg.distill, resolve=True) if "distill" in cfg else {}
        if not distill.get("times"):
            raise ConfigError("sampler.sampler='distilled' is the sampler of a distilled student: train one with "
                              "distill.teacher=CKPT (its checkpoint then restores with sample.py ckpt=STUDENT.ckpt)")
        from mrlight.student import distilled_from_config

        student = distilled_from_config(lambda x, m, t: torch.zeros_like(x), sde, distill)
        extra = {k: v for k, v in sampler_options(block).items() if k not in ("sampler", "nfe")}
        try:
            sample(student, torch.zeros(1, 3, 8, 8), sde, sampler="distilled", nfe=block.get("nfe"), **extra)
        except OptionError as err:
            value = block.get(err.option)
            raise ConfigError(f"sampler.{err.option}{f'={value!r}' if value is not None else ''} "
                              f"(sampler 'distilled'): {err}") from None
        return
    prediction = {"matching": "noise"}.get(cfg.objective.prediction, cfg.objective.prediction)
    sampler = block.get("sampler") or "mr"
    try:
        sample(lambda x, m, t: torch.zeros_like(x), torch.zeros(1, 3, 8, 8), sde, prediction=prediction,
               **with_network_defaults(sampler_options(block), prediction, sde))
    except OptionError as err:
        value = block.get(err.option)
        shown = f"={value!r}" if value is not None else ""
        raise ConfigError(f"sampler.{err.option}{shown} (sampler {sampler!r}): {err}") from None
