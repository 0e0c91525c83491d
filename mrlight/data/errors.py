"""The one exception type for data problems a user can fix (missing folders, bad files, bad keys)."""

from __future__ import annotations


class DataError(ValueError):
    """A data set or data configuration problem; the message names the file, folder or key."""


def name_list(names, limit: int = 12) -> str:
    """`a, b, c (and 7 more)`: short enough for one error message."""
    names = sorted(str(n) for n in names)
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")
