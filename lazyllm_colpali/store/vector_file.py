"""Local, memory-mappable storage of full multi-vectors: what exact MaxSim streams over.

Authoritative for a Milvus Lite file; a per-machine cache of the vectors kept in Milvus for a server URI.

Layout in ``root``: ``tokens-<generation>.bin`` is an append-only row-major matrix ``(total_tokens, dim)`` of
the configured dtype; ``manifest.sqlite`` maps ``page_id -> (doc_id, offset, length)`` in rows and names the
current tokens file. Writers (any process) hold ``root/lock``; a page's vectors are written and fsync'ed
before its manifest row commits, so a crash leaves at most unreferenced tail bytes, never a half page.
Compaction writes a new generation and switches to it in one manifest transaction, so a kill at any point
leaves either the old or the new generation in force. Readers in other processes notice commits through
SQLite's ``data_version`` and re-map. Rows pointing outside the file (a truncated or damaged file) are
reported by :meth:`validate` and never served.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from ..errors import DimensionMismatchError, StoreError
from ..logging import LOG
from .locks import FileLock

_NP_DTYPES = {'float16': np.float16, 'float32': np.float32}


@dataclass
class PackedMultiVectors:
    """Many pages' vectors in one contiguous ``(total_tokens, dim)`` tensor, page i at rows
    ``offsets[i]:offsets[i+1]``. This is the layout the fast MaxSim path streams over."""

    page_ids: List[str]
    tokens: torch.Tensor
    offsets: torch.Tensor   # int64, len(page_ids) + 1

    def __len__(self) -> int:
        return len(self.page_ids)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def page(self, i: int) -> torch.Tensor:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def unpack(self) -> List[torch.Tensor]:
        return [self.page(i) for i in range(len(self))]

    def subset(self, indices: Sequence[int]) -> 'PackedMultiVectors':
        parts = [self.page(i) for i in indices]
        lengths = torch.tensor([len(p) for p in parts], dtype=torch.int64)
        offsets = torch.zeros(len(parts) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        tokens = torch.cat(parts) if parts else self.tokens[:0]
        return PackedMultiVectors([self.page_ids[i] for i in indices], tokens, offsets)

    @classmethod
    def from_list(cls, page_ids: List[str], vectors: Sequence[torch.Tensor]) -> 'PackedMultiVectors':
        lengths = torch.tensor([len(v) for v in vectors], dtype=torch.int64)
        offsets = torch.zeros(len(vectors) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        return cls(list(page_ids), torch.cat(list(vectors)), offsets)


class LocalVectorFile:
    """Append-only multi-vector file with an SQLite manifest; any number of reader and writer processes
    (writers take turns on a file lock)."""

    def __init__(self, root: str | Path, dim: int, dtype: str = 'float16', lock_timeout: float = 120.0):
        if dtype not in _NP_DTYPES:
            raise ValueError(f'vector dtype {dtype!r} is not one of {", ".join(_NP_DTYPES)}')
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.dtype = dtype
        self._np_dtype = _NP_DTYPES[dtype]
        self._row_bytes = dim * np.dtype(self._np_dtype).itemsize
        self._lock = threading.RLock()
        self.file_lock = FileLock(self.root / 'lock', timeout=lock_timeout, what='the vector file')
        self._db = sqlite3.connect(str(self.root / 'manifest.sqlite'), check_same_thread=False, isolation_level=None,
                                   timeout=60)
        with self.file_lock.hold():
            self._db.execute('PRAGMA journal_mode=WAL')
            self._db.execute('PRAGMA synchronous=FULL')
            self._db.execute('CREATE TABLE IF NOT EXISTS pages (page_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, '
                             'offset INTEGER NOT NULL, length INTEGER NOT NULL)')
            self._db.execute('CREATE INDEX IF NOT EXISTS pages_doc ON pages(doc_id)')
            # lets a writer find rows that claim rows past the end of the file without scanning the manifest
            self._db.execute('CREATE INDEX IF NOT EXISTS pages_end ON pages(offset + length)')
            self._db.execute('CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL)')
            self._check_info()
            self._remove_stale_generations()
        self._version = 0
        self._packed: Optional[PackedMultiVectors] = None
        self._packed_key: tuple = ()
        self._warned: set = set()

    # -- info ------------------------------------------------------------------------------------------
    def _check_info(self) -> None:
        stored = self.info()
        if 'dim' not in stored:
            self.set_info(dim=str(self.dim), dtype=self.dtype,
                          tokens_file='tokens.bin' if (self.root / 'tokens.bin').exists() else 'tokens-0.bin')
            return
        if int(stored['dim']) != self.dim:
            raise DimensionMismatchError(f'vector file {self.root} holds {stored["dim"]}-dim vectors, got {self.dim}')
        if 'tokens_file' not in stored:   # written by 0.1.0, before generations
            self.set_info(tokens_file='tokens.bin')
        self.dtype = stored['dtype']
        self._np_dtype = _NP_DTYPES[self.dtype]
        self._row_bytes = self.dim * np.dtype(self._np_dtype).itemsize

    def info(self) -> Dict[str, str]:
        return dict(self._db.execute('SELECT key, value FROM info').fetchall())

    def set_info(self, **values: str) -> None:
        with self._lock:
            self._db.executemany('INSERT OR REPLACE INTO info VALUES (?, ?)', [(k, str(v)) for k, v in values.items()])

    def _tokens_path(self) -> Path:
        name = self._db.execute("SELECT value FROM info WHERE key = 'tokens_file'").fetchone()[0]
        return self.root / name

    def _remove_stale_generations(self) -> None:
        # Left by a compaction killed before (new file) or after (old file) its manifest switch.
        current = self._tokens_path().name
        for path in list(self.root.glob('tokens*.bin')) + list(self.root.glob('tokens*.compact')):
            if path.name != current:
                path.unlink(missing_ok=True)

    def _file_rows(self, path: Optional[Path] = None) -> int:
        path = path or self._tokens_path()
        return path.stat().st_size // self._row_bytes if path.exists() else 0

    # -- writes ----------------------------------------------------------------------------------------
    def put(self, items: Sequence[tuple]) -> None:
        """Store ``(page_id, doc_id, tensor (n, dim))`` items; an existing page_id is replaced."""
        if not items:
            return
        for page_id, _, vectors in items:
            if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] == 0:
                raise DimensionMismatchError(f'page {page_id}: vectors of shape {tuple(vectors.shape)} do not fit '
                                             f'this collection\'s dim {self.dim}')
        with self._lock, self.file_lock.hold():
            path = self._tokens_path()
            rows = []
            with open(path, 'ab') as f:
                size = f.seek(0, os.SEEK_END)
                if size % self._row_bytes:   # a partial row from a writer that crashed mid-write
                    f.truncate(size - size % self._row_bytes)
                    size -= size % self._row_bytes
                offset = size // self._row_bytes
                self._drop_past(offset)   # never append over rows a truncated file still claims
                for page_id, doc_id, vectors in items:
                    data = vectors.detach().to('cpu', torch.float32).numpy().astype(self._np_dtype)
                    f.write(data.tobytes())
                    rows.append((page_id, doc_id, offset, len(data)))
                    offset += len(data)
                f.flush()
                os.fsync(f.fileno())
            with self._db:
                self._db.execute('BEGIN IMMEDIATE')
                self._db.executemany('INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?)', rows)
            self._version += 1

    def delete_pages(self, page_ids: Iterable[str]) -> int:
        return self._delete('page_id', page_ids)

    def delete_docs(self, doc_ids: Iterable[str]) -> int:
        return self._delete('doc_id', doc_ids)

    def _delete(self, column: str, values: Iterable[str]) -> int:
        values = list(values)
        if not values:
            return 0
        with self._lock, self.file_lock.hold(), self._db:
            self._db.execute('BEGIN IMMEDIATE')
            n = sum(self._db.execute(f'DELETE FROM pages WHERE {column} = ?', (v,)).rowcount for v in values)
            self._version += 1
        return n

    def _drop_past(self, file_rows: int) -> None:
        """The append path's check: one indexed lookup, not a scan of the whole manifest per batch."""
        past = [r[0] for r in self._db.execute('SELECT page_id FROM pages WHERE offset + length > ?', (file_rows,))]
        if past:
            LOG.warning(f'vector file {self.root}: {len(past)} pages point past the end of {self._tokens_path().name} '
                        f'(a truncated file); dropping them so they are fetched or re-indexed')
            self._delete('page_id', past)

    def _drop_damaged(self) -> List[str]:
        damaged = self.validate()['damaged']
        if damaged:
            LOG.warning(f'vector file {self.root}: {len(damaged)} pages point outside {self._tokens_path().name} '
                        f'(a truncated or damaged file); dropping them so they are fetched or re-indexed')
            self._delete('page_id', damaged)
        return damaged

    # -- reads -----------------------------------------------------------------------------------------
    def has(self, page_ids: Iterable[str]) -> set:
        ids = list(page_ids)
        found = set()
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ','.join('?' * len(chunk))
                rows = self._db.execute(f'SELECT page_id FROM pages WHERE page_id IN ({marks})', chunk)
                found.update(r[0] for r in rows)
        return found

    def page_docs(self) -> Dict[str, str]:
        """``page_id -> doc_id`` of every page in the manifest."""
        with self._lock:
            return dict(self._db.execute('SELECT page_id, doc_id FROM pages').fetchall())

    def page_lengths(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._db.execute('SELECT page_id, length FROM pages').fetchall())

    def count(self) -> int:
        with self._lock:
            return self._db.execute('SELECT COUNT(*) FROM pages').fetchone()[0]

    def _snapshot(self) -> tuple:
        """``(tokens path, rows sorted by offset)`` read in one transaction, so they belong together."""
        with self._lock:
            self._db.execute('BEGIN')
            try:
                path = self._tokens_path()
                rows = self._db.execute('SELECT page_id, offset, length FROM pages ORDER BY offset').fetchall()
            finally:
                self._db.execute('COMMIT')
            return path, rows

    def validate(self) -> Dict[str, object]:
        """Rows that point outside the tokens file or overlap another row are ``damaged``; ``dead_rows``
        counts file rows no page uses (reclaimed by :meth:`compact`)."""
        path, rows = self._snapshot()
        return self._validate_rows(rows, self._file_rows(path))

    @staticmethod
    def _validate_rows(rows: Sequence[tuple], file_rows: int) -> Dict[str, object]:
        damaged, live, end = [], 0, 0
        for page_id, offset, length in rows:
            if offset < 0 or length <= 0 or offset + length > file_rows or offset < end:
                damaged.append(page_id)
                continue
            live += length
            end = offset + length
        return {'damaged': damaged, 'dead_rows': file_rows - live, 'file_rows': file_rows}

    def _memmap(self, path: Path) -> np.ndarray:
        rows = self._file_rows(path)
        if rows == 0:
            return np.zeros((0, self.dim), dtype=self._np_dtype)
        # mode 'c' (copy-on-write): torch gets a writable view, the file itself is never modified
        return np.memmap(path, dtype=self._np_dtype, mode='c', shape=(rows, self.dim))

    def _open_snapshot(self):
        for _ in range(5):   # a concurrent compaction may remove the file between reading its name and opening it
            path, rows = self._snapshot()
            try:
                return path, rows, self._memmap(path)
            except FileNotFoundError:
                continue
        raise StoreError(f'vector file {self.root} keeps changing under this reader; retry')

    def get(self, page_ids: Sequence[str]) -> Dict[str, torch.Tensor]:
        wanted = set(page_ids)
        path, rows, table = self._open_snapshot()
        out = {}
        for page_id, offset, length in rows:
            if page_id in wanted and offset + length <= len(table):
                out[page_id] = torch.from_numpy(np.array(table[offset:offset + length]))
        return out

    def changed(self) -> tuple:
        """A key that changes whenever this or another process commits to the manifest."""
        with self._lock:
            return self._version, self._db.execute('PRAGMA data_version').fetchone()[0]

    def packed(self) -> PackedMultiVectors:
        """All valid pages as one contiguous tensor (cached until this or another process writes)."""
        with self._lock:
            key = self.changed()
            if self._packed is not None and self._packed_key == key:
                return self._packed
            path, rows, table = self._open_snapshot()
            report = self._validate_rows(rows, len(table))
            if report['damaged']:
                bad = set(report['damaged'])
                rows = [r for r in rows if r[0] not in bad]
                if tuple(sorted(bad)) not in self._warned:
                    self._warned.add(tuple(sorted(bad)))
                    LOG.warning(f'vector file {self.root}: {len(bad)} damaged pages are left out of search; '
                                f'run `lazyllm-colpali check --repair`')
            lengths = np.array([r[2] for r in rows], dtype=np.int64)
            starts = np.array([r[1] for r in rows], dtype=np.int64)
            offsets = np.zeros(len(rows) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            if len(rows) and offsets[-1] == len(table) and np.array_equal(starts, offsets[:-1]):
                tokens = np.asarray(table)  # no dead rows: use the mapped file as is, no copy
            else:
                index = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]) if len(rows) else []
                tokens = np.asarray(table[index]) if len(rows) else np.zeros((0, self.dim), self._np_dtype)
            self._packed = PackedMultiVectors([r[0] for r in rows], torch.from_numpy(tokens), torch.from_numpy(offsets))
            self._packed_key = key
            return self._packed

    def dead_rows(self) -> int:
        return int(self.validate()['dead_rows'])

    def compact(self, _crash_after: Optional[str] = None) -> int:
        """Rewrite live pages into a new generation file; returns the number of rows reclaimed.

        Crash-atomic: the manifest switches offsets and file name in one transaction; the old generation is
        removed afterwards (or, after a kill, by the next process that opens the file). ``_crash_after``
        ('write' or 'commit') lets tests stop here as a kill would.
        """
        with self._lock, self.file_lock.hold():
            self._drop_damaged()
            path, rows, table = self._open_snapshot()
            dead = int(self._validate_rows(rows, len(table))['dead_rows'])
            if dead == 0:
                return 0
            generation = int(path.stem.split('-')[-1]) + 1 if path.stem.startswith('tokens-') else 1
            new_path = self.root / f'tokens-{generation}.bin'
            new_rows, offset = [], 0
            with open(new_path, 'wb') as f:
                for page_id, start, length in rows:
                    f.write(np.asarray(table[start:start + length]).tobytes())
                    new_rows.append((offset, page_id))
                    offset += length
                f.flush()
                os.fsync(f.fileno())
            del table
            if _crash_after == 'write':
                return -1
            with self._db:
                self._db.execute('BEGIN IMMEDIATE')
                self._db.executemany('UPDATE pages SET offset = ? WHERE page_id = ?', new_rows)
                self._db.execute("INSERT OR REPLACE INTO info VALUES ('tokens_file', ?)", (new_path.name,))
            if _crash_after == 'commit':
                return -1
            path.unlink(missing_ok=True)   # readers that mapped it keep their mapping until they re-map
            self._version += 1
            self._packed = None
            return dead

    def close(self) -> None:
        with self._lock:
            self._packed = None
            self._db.close()
