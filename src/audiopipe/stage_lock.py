"""One writer per stage output folder: an exclusive lock held by the stage process until it exits.

DVC's own lock (`.dvc/tmp/rwlock`) belongs to the `dvc repro` process. Kill only that parent and the stage
command it started keeps running as an orphan; a new `dvc repro` would then start a second writer into the same
folder. Each stage script therefore takes `<out>.lock` (next to its output folder, which DVC deletes before a
rerun) with `flock`; the kernel releases it when the process ends, even by SIGKILL, so a crash never leaves a
stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

_HELD: dict[Path, int] = {}  # lock path -> open descriptor, for the life of this process


class StageBusyError(RuntimeError):
    """Another live process is writing the same stage outputs (the message names it and what to do)."""


def hold_output_lock(out_dir: str | Path) -> Path:
    """Lock `<out_dir>.lock` for the rest of this process, or raise StageBusyError naming the holder's pid."""
    out_dir = Path(out_dir)
    lock_path = (out_dir.parent / f"{out_dir.name}.lock").resolve()
    if lock_path in _HELD:
        return lock_path
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StageBusyError(
            f"{out_dir}: process {holder} is still writing this stage's outputs (an earlier run, e.g. left behind "
            f"when only `dvc repro` was killed); wait for it to finish or stop it (kill {holder}), then rerun"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[lock_path] = fd
    return lock_path
