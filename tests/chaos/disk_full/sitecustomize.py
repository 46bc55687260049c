"""Makes ``os.fsync`` fail with ENOSPC while the file ``CHAOS_DISK_FULL_FLAG`` names exists.

On ``PYTHONPATH`` of the disk-full lane's workers, where the machine cannot mount a small tmpfs
(no root): the store's atomic write fsyncs its temporary file before renaming it, and a full
disk is reported there on filesystems that allocate late. The worker's only ``fsync`` calls
are the store's.
"""

from __future__ import annotations

import errno
import os

_FLAG = os.environ.get("CHAOS_DISK_FULL_FLAG")

if _FLAG:
    _real_fsync = os.fsync

    def _fsync(fd: int | os.PathLike[str] | object) -> None:
        if os.path.exists(_FLAG):  # type: ignore[arg-type]
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _real_fsync(fd)  # type: ignore[arg-type]

    os.fsync = _fsync  # type: ignore[assignment]
