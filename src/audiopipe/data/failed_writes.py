"""Failed HDF5 writes (a full disk, a file size limit): drop the half-written file safely, raise an error naming it.

`discard(f)` closes an h5py file whose content is thrown away without the SIGSEGV a failing final flush causes;
`write_error(tmp, err, fix)` is the `OSError` the writers (`ClipWriter`, the teacher-prediction writer) raise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py


def discard(f: h5py.File) -> None:
    """Close an h5py file whose content is being thrown away, even when its writes fail (a full disk).

    HDF5 flushes dirty chunks when a dataset or file closes; if that write fails inside `close()`, the library
    keeps a half-closed dataset and the interpreter dies with SIGSEGV when the file object is freed at exit
    (h5py 3.16 / HDF5 1.14). The writers here call `flush()` before `close()`, so a failed write surfaces while
    every object is intact, and drop a failed file with this function, which points its descriptor at
    /dev/null first: the final flush then succeeds, writing nowhere. The caller deletes the file.
    """
    if not f.id.valid:
        return
    try:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, f.id.get_vfd_handle())
        finally:
            os.close(null)
    except (OSError, ValueError, RuntimeError):  # another driver without a file descriptor: close as is
        pass
    try:
        f.close()
    except (OSError, RuntimeError):
        pass


def write_error(tmp: Path, err: BaseException, fix: str) -> OSError:
    """An `OSError` naming the temporary file a failed HDF5 write was going to, the cause, and what to do."""
    errno_ = getattr(err, "errno", None)
    if errno_ is None:  # h5py reports a failed write as RuntimeError("... errno = 28, error message = ...")
        found = re.search(r"errno = (\d+)", str(err))
        errno_ = int(found.group(1)) if found else 5  # EIO
    cause = " ".join(str(err).split())[:200]
    return OSError(errno_, f"{os.strerror(errno_)} while writing {tmp} ({cause}); the temporary file was removed; "
                           f"free disk space (or raise the file size limit) and {fix}", str(tmp))
