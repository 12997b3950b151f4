"""An exclusive, cross-process file lock (``fcntl.flock``) that says who holds it when it cannot be taken.

The kernel drops a flock when its holder dies (``kill -9`` included), so a crashed writer never leaves a
stale lock behind; the pid written into the file is only there to make the error message useful.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import StoreError

try:
    import fcntl
except ImportError:   # Windows: one process per data dir is then the user's job
    fcntl = None


class FileLock:
    """Re-entrant within a process (threads queue on an RLock), exclusive across processes."""

    def __init__(self, path: str | Path, timeout: float = 120.0, what: str = 'this vector cache'):
        self.path = Path(path)
        self.timeout = timeout
        self.what = what
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = -1

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            self._fd = fd
            return
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors='replace').strip() or 'unknown'
                    os.close(fd)
                    raise StoreError(f'another process (pid {holder}) has been writing to {self.what} '
                                     f'({self.path.parent}) for over {self.timeout:.0f} s; wait for it to finish '
                                     f'or stop it, then retry')
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def _release(self) -> None:
        if self._fd < 0:
            return
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1
