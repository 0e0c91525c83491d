"""The `key=value` command lines of sample.py, `python -m mrlight.convert`, `mrlight.tune_steps` and the app.

One helper so that every entry point parses, checks and reports arguments the same way: unknown
keys name the closest valid one, values are checked against the default's type, and user errors
end in one `error: ...` line with exit code 2 instead of a traceback.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from mrlight.config import parse_overrides
from mrlight.schema import validate
from mrlight.errors import ConfigError


def error(message: str, code: int = 2) -> int:
    """Print one `error: ...` line to stderr and return the exit code."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def help_requested(argv: list[str], doc: str) -> int | None:
    """Print `doc` for -h/--help (exit 0) or for no arguments at all (exit 2); None otherwise."""
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(doc)
        return 0 if argv else 2
    return None


def parse_args(argv: list[str], defaults: dict, *, types: dict | None = None, skip: tuple[str, ...] = (),
               required: tuple[str, ...] = (), usage: str = "") -> DictConfig:
    """`defaults` updated by the `key=value` arguments, checked (ConfigError naming the key).

    `types` allows keys more than their default's type (e.g. {"tile": (int, type(None))}); keys
    under a name in `skip` are left unchecked (a block checked later, e.g. `sampler` once the
    checkpoint is read); `required` keys must be given (not None).
    """
    try:
        cli = OmegaConf.from_dotlist(parse_overrides(argv))
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 -- OmegaConf's grammar errors: one clear line
        raise ConfigError(f"cannot parse the arguments: {err}") from None
    checked = OmegaConf.create({k: v for k, v in cli.items() if k not in skip})
    schema = OmegaConf.create({k: v for k, v in defaults.items() if k not in skip})
    validate(schema, checked, "command line", types=types)
    args = OmegaConf.merge(OmegaConf.create(defaults), cli)
    for key in required:
        if args.get(key) is None:
            raise ConfigError(f"{key}=... is required" + (f" (usage: {usage})" if usage else ""))
    return args


__all__ = ["error", "help_requested", "parse_args"]
