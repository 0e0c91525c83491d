"""The exception types a user can meet and entry points catch; a leaf module (imports nothing of mrlight).

Each message names what is wrong (the key, the file, the step) and what is valid, so `train.py`,
`sample.py`, `python -m mrlight.convert` and the app print it as one line instead of a traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration: the message names the key, the value and what is valid."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, not mrlight's, or another architecture."""


class WeightsError(CheckpointError):
    """A weights file that cannot be read or does not fit the requested network."""


class DataError(ValueError):
    """A data set or data configuration problem; the message names the file, folder or key."""


class NonFiniteError(FloatingPointError):
    """Sampling produced NaN or Inf; the message names the step and time."""


USER_ERRORS = (ConfigError, CheckpointError, DataError, NonFiniteError)

__all__ = ["ConfigError", "CheckpointError", "WeightsError", "NonFiniteError", "DataError", "USER_ERRORS"]
