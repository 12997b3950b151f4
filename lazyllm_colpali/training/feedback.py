"""People's verdicts on retrieved pages, kept beside the collection and turned into training pairs.

Each verdict is one JSON line in ``<shared dir>/feedback/<collection>.jsonl`` (the shared dir holds the
collection's page images, so every machine serving the collection writes to the same file). Writers append
whole lines under an exclusive ``flock`` and ``fsync`` each one, so concurrent writers (threads, processes,
machines on one shared folder with working locks) never interleave; a line cut short by ``kill -9`` is
skipped when read and closed off by the next writer, so nothing written before it is lost.

``export_pairs`` makes pairs: the pages people found useful are positives; pages they rejected for the same
query are its hard negatives (the latest verdict on a query-page pair wins).

    >>> import tempfile, pathlib
    >>> store = FeedbackStore(pathlib.Path(tempfile.mkdtemp()) / 'fb.jsonl')
    >>> _ = store.add('pump warranty', 'p1', True, file='manual.pdf', page=3, source='/docs/manual.pdf')
    >>> _ = store.add('pump warranty', 'p2', False, file='manual.pdf', page=9, source='/docs/manual.pdf')
    >>> [p.to_json() for p in export_pairs(store.records(), corpus='/docs')]
    [{'query': 'pump warranty', 'page': 'manual.pdf#3', 'negatives': ['manual.pdf#9']}]
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from ..errors import ColPaliError
from .pairs import PageRef, TrainingPair

try:
    import fcntl
except ImportError:   # Windows: one writer process at a time is then the operator's job
    fcntl = None

MAX_QUERY_CHARS = 2000


class FeedbackError(ColPaliError):
    """Feedback that cannot be stored (empty query, unknown page) or a store that cannot be written."""


def feedback_path(shared_dir: str | Path, collection: str) -> Path:
    return Path(shared_dir) / 'feedback' / f'{collection}.jsonl'


class FeedbackStore:
    """Append-only, fsync'd JSON lines; safe for concurrent writers and readers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def for_store(cls, store: Any) -> 'FeedbackStore':
        """The feedback file of a :class:`MilvusMultiVectorStore` collection (beside its page images)."""
        return cls(feedback_path(store.shared_dir, store.collection))

    def add(self, query: str, page_id: str, useful: bool, *, file: str = '', page: int = 0, source: str = '',
            doc_id: str = '', via: str = 'api') -> Dict[str, Any]:
        if not isinstance(query, str) or not query.strip():
            raise FeedbackError('query: empty; say which question the page was (not) useful for')
        if len(query) > MAX_QUERY_CHARS:
            raise FeedbackError(f'query: {len(query)} characters, at most {MAX_QUERY_CHARS}')
        if not isinstance(useful, bool):
            raise FeedbackError('useful: must be true or false')
        record = {'id': uuid.uuid4().hex, 'time': time.time(), 'query': query.strip(), 'page_id': page_id,
                  'useful': useful, 'file_name': file, 'page': int(page), 'source': source, 'doc_id': doc_id,
                  'via': via}
        self._append((json.dumps(record, ensure_ascii=False) + '\n').encode('utf-8'))
        return record

    def _append(self, line: bytes) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b'\n':   # a line torn by a crash: close it off
                    line = b'\n' + line
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)   # closing drops the flock
        if new:   # the new file's directory entry must survive a power cut too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def records(self) -> List[Dict[str, Any]]:
        """Every complete verdict, oldest first (torn or foreign lines are skipped)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in data.split(b'\n'):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and {'query', 'page_id', 'useful'} <= set(record):
                out.append(record)
        return out


@dataclass
class ExportSummary:
    verdicts: int = 0
    queries: int = 0
    pairs: int = 0
    negatives: int = 0
    rejected_only_queries: int = 0

    def describe(self) -> str:
        text = (f'{self.pairs} pairs ({self.negatives} hard negatives) from {self.verdicts} verdicts on '
                f'{self.queries} queries')
        if self.rejected_only_queries:
            text += (f'; {self.rejected_only_queries} queries had only rejected pages and give no pair (a pair needs '
                     'a useful page)')
        return text


def _ref(record: Dict[str, Any], corpus: Optional[Path]) -> PageRef:
    source = Path(record.get('source') or record.get('file_name') or record['page_id'])
    if corpus is not None and source.is_absolute():
        try:
            return PageRef(source.relative_to(corpus).as_posix(), int(record.get('page') or 1))
        except ValueError:
            pass
    return PageRef(str(source), int(record.get('page') or 1))


def export_pairs(records: Iterable[Dict[str, Any]], corpus: Optional[str | Path] = None,
                 summary: Optional[ExportSummary] = None) -> List[TrainingPair]:
    """Training pairs from verdicts: one per (query, useful page), the query's rejected pages as its negatives.
    Page references are relative to ``corpus`` when the page's file is under it, else absolute."""
    corpus = Path(corpus).expanduser().resolve() if corpus else None
    latest: 'OrderedDict[tuple, Dict[str, Any]]' = OrderedDict()
    count = 0
    for record in records:
        count += 1
        key = (record['query'], record['page_id'])
        latest.pop(key, None)
        latest[key] = record   # the latest verdict wins, in the order of its last change
    by_query: 'OrderedDict[str, List[Dict[str, Any]]]' = OrderedDict()
    for (query, _), record in latest.items():
        by_query.setdefault(query, []).append(record)
    pairs: List[TrainingPair] = []
    stats = summary if summary is not None else ExportSummary()
    stats.verdicts, stats.queries = count, len(by_query)
    for query, verdicts in by_query.items():
        negatives = [_ref(r, corpus) for r in verdicts if not r['useful']]
        positives = [_ref(r, corpus) for r in verdicts if r['useful']]
        if not positives:
            stats.rejected_only_queries += 1
        for positive in positives:
            pairs.append(TrainingPair(query, positive, list(negatives)))
            stats.negatives += len(negatives)
    stats.pairs = len(pairs)
    return pairs
