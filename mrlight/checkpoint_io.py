"""Atomic checkpoint writes: a kill at any moment leaves the previous or the new file, never a torn one.

Lightning's default `TorchCheckpointIO` serialises into memory, then writes through an fsspec
transaction whose temporary file lives in the system temp folder; on a cluster that folder is
usually another filesystem than the run directory, so the final move is a copy into the target
path, and a kill during that copy leaves a truncated `last.ckpt`. Here the temporary file is in the
target's own folder, is flushed and fsync'ed, and `os.replace` (atomic within one filesystem, POSIX
rename(2)) puts it in place; the folder is fsync'ed so the rename itself survives a node crash.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

TMP_MARK = ".tmp-"
# Test hook (fault tests only): "N" kills this process with SIGKILL halfway through the N-th
# checkpoint write (counted from 1 in this process), as a power cut or the OOM killer would.
KILL_DURING_SAVE_ENV = "MRLIGHT_TEST_KILL_DURING_SAVE"


class _KillHalfway:
    """A file wrapper that SIGKILLs the process once `limit` bytes are written (the test hook)."""

    def __init__(self, file, limit: int):
        self.file, self.limit, self.written = file, limit, 0

    def write(self, data) -> int:
        self.written += len(data)
        if self.written >= self.limit:
            self.file.write(data[: max(0, len(data) - (self.written - self.limit))])
            self.file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose `save_checkpoint` writes a same-folder temporary file and renames it."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_save(checkpoint, Path(path), kill_halfway=self._kill_this_save())

    def _kill_this_save(self) -> bool:
        self.saves += 1
        return os.environ.get(KILL_DURING_SAVE_ENV) == str(self.saves)


def atomic_save(obj: Any, path: Path, kill_halfway: bool = False) -> None:
    """torch.save `obj` to `path` through `<path>.tmp-<pid>` in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if kill_halfway:
                torch.save(obj, _KillHalfway(f, limit=_expected_size(obj) // 2))
            else:
                torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _expected_size(obj: Any) -> int:
    """Bytes torch.save writes for `obj` (only for the test hook, which must land mid-file)."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete `*.ckpt.tmp-*` left by a process killed mid-write; returns what was removed."""
    folder = Path(folder)
    removed = sorted(folder.glob(f"*.ckpt{TMP_MARK}*")) if folder.is_dir() else []
    for tmp in removed:
        tmp.unlink(missing_ok=True)
    return removed
