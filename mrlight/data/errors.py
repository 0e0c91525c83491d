"""The one exception type for data problems a user can fix (missing folders, bad files, bad keys)."""

from __future__ import annotations

from mrlight.errors import DataError

__all__ = ["DataError", "name_list"]


def name_list(names, limit: int = 12) -> str:
    """`a, b, c (and 7 more)`: short enough for one error message."""
    names = sorted(str(n) for n in names)
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")
