"""One process per run key: an advisory lock on the key, released however the process ends."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None


@contextmanager
def claimed(lock: Path):
    """True while this process alone runs the key (an advisory lock the kernel releases when
    the process dies, however it dies); False when another process holds it."""
    if fcntl is None:  # no flock (Windows): runs are not coordinated
        yield True
        return
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:  # the file locked must still be the one at `lock`, not one its holder removed
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield True
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def removed_if_left_empty(folder: Path, out: Path):
    """A run that fails before writing anything leaves no empty folders behind."""
    try:
        yield
    except BaseException:
        for d in (folder, *folder.parents):
            if d == out or out not in d.parents:
                break
            try:
                d.rmdir()  # only an empty folder; an interrupted run's checkpoint stays
            except OSError:
                break
        raise
