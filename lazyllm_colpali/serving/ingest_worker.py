"""Ingestion off the request path: one writer thread behind a bounded queue, shared by the chat and the API.

Requests only enqueue a job and read its progress, so questions keep being answered while a large upload
indexes (searches read committed pages only; see the store). ``stop()`` cancels the running job between
stored batches - every page stored before that stays - and drops the queued ones, so a server exits in seconds.

    >>> worker = IngestWorker(lambda paths, on_progress: on_progress(1, 1) or f'added {paths}')
    >>> job = worker.submit(['a.pdf'], 'a.pdf')
    >>> job.wait(10) and (job.state, job.done, job.total, job.result)
    ('done', 1, 1, "added ['a.pdf']")
    >>> worker.stop()                 # cancels a running job at its next batch; True once the writer ended
    True
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..errors import ColPaliError
from ..logging import LOG

# job(paths, on_progress) -> result; on_progress(done, total) raises IngestCancelled once stop() was called.
JobFunction = Callable[[List[str], Callable[[int, int], None]], Any]


class IngestBusyError(ColPaliError):
    """The ingestion queue is full: try again once the queued uploads are indexed."""


class IngestCancelled(Exception):
    """Raised inside a running job (from its progress callback) when the server stops."""


@dataclass
class IngestJob:
    id: str
    paths: List[str]
    label: str                       # what people see: the file names (escaped where shown)
    state: str = 'queued'            # queued | running | done | failed | cancelled
    done: int = 0                    # pages stored so far
    total: int = 0                   # pages to store (known once the files are counted)
    result: Any = None
    error: Optional[str] = None
    started: Optional[float] = None
    finished_at: Optional[float] = None
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.finished.wait(timeout)

    @property
    def over(self) -> bool:
        return self.finished.is_set()

    def progress(self) -> str:
        if self.state == 'queued':
            return 'queued'
        return f'{self.done}/{self.total} pages' if self.total else 'counting pages'


class IngestWorker:
    """A single writer thread; ``max_pending`` jobs may wait behind the running one."""

    def __init__(self, job: JobFunction, *, max_pending: int = 8, keep: int = 100):
        self._job = job
        self._queue: 'queue.Queue[Optional[IngestJob]]' = queue.Queue(maxsize=max_pending)
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._keep = keep
        self.jobs: Dict[str, IngestJob] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name='lazyllm-colpali-ingest', daemon=True)
        self._thread.start()

    def submit(self, paths: List[str], label: str = '') -> IngestJob:
        if self._stopping.is_set():
            raise IngestBusyError('the server is stopping; nothing new is indexed')
        with self._lock:
            job = IngestJob(str(next(self._ids)), list(paths), label or ', '.join(map(str, paths)))
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise IngestBusyError(f'{self._queue.maxsize} uploads are already waiting to be indexed; '
                                      'try again when they are done') from None
            self.jobs[job.id] = job
            for old in [j for j in self.jobs.values() if j.over][:max(0, len(self.jobs) - self._keep)]:
                del self.jobs[old.id]          # bounded memory: forget the oldest finished jobs
        return job

    def active(self) -> List[IngestJob]:
        """Jobs running or queued, oldest first."""
        with self._lock:
            return [j for j in self.jobs.values() if not j.over]

    def _progress(self, job: IngestJob) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            job.done, job.total = done, total
            if self._stopping.is_set():
                raise IngestCancelled()
        return report

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._stopping.is_set():
                self._finish(job, 'cancelled', error='the server stopped before this upload was indexed')
                continue
            job.state, job.started = 'running', time.time()
            try:
                self._finish(job, 'done', result=self._job(job.paths, self._progress(job)))
            except IngestCancelled:
                self._finish(job, 'cancelled', error=f'the server stopped after {job.done} of {job.total} pages '
                                                     '(those are kept; upload again to index the rest)')
            except Exception as e:   # reported to whoever follows the job, never lost in a thread
                LOG.warning(f'ingestion job {job.id} failed: {type(e).__name__}: {e}')
                self._finish(job, 'failed', error=f'{type(e).__name__}: {e}')

    @staticmethod
    def _finish(job: IngestJob, state: str, result: Any = None, error: Optional[str] = None) -> None:
        job.state, job.result, job.error, job.finished_at = state, result, error, time.time()
        job.finished.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel the running job at its next stored batch, drop queued ones; True if the writer has ended."""
        self._stopping.set()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, 'cancelled', error='the server stopped before this upload was indexed')
        try:
            self._queue.put(None, timeout=1)  # wakes the writer if it is idle
        except queue.Full:                    # a submit raced in: the writer sees the stop flag anyway
            pass
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()
