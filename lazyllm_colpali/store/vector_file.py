"""Local, memory-mappable storage of full multi-vectors: the exact-rerank source of truth.

Layout in ``root``: ``tokens.bin`` is an append-only row-major matrix ``(total_tokens, dim)`` of the
configured dtype; ``manifest.sqlite`` maps ``page_id -> (doc_id, offset, length)`` in rows. A page's
vectors are written and fsync'ed before its manifest row commits, so a crash leaves at most unreferenced
tail bytes, never a half page. Deleted pages leave dead rows until :meth:`compact`.
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

from ..errors import DimensionMismatchError

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
    """Append-only multi-vector file with an SQLite manifest. One writer process at a time."""

    def __init__(self, root: str | Path, dim: int, dtype: str = 'float16'):
        if dtype not in _NP_DTYPES:
            raise ValueError(f'vector dtype {dtype!r} is not one of {", ".join(_NP_DTYPES)}')
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.dtype = dtype
        self._np_dtype = _NP_DTYPES[dtype]
        self._row_bytes = dim * np.dtype(self._np_dtype).itemsize
        self._tokens_path = self.root / 'tokens.bin'
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.root / 'manifest.sqlite'), check_same_thread=False, isolation_level=None)
        self._db.execute('PRAGMA journal_mode=WAL')
        self._db.execute('PRAGMA synchronous=FULL')
        self._db.execute('CREATE TABLE IF NOT EXISTS pages (page_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, '
                         'offset INTEGER NOT NULL, length INTEGER NOT NULL)')
        self._db.execute('CREATE INDEX IF NOT EXISTS pages_doc ON pages(doc_id)')
        self._db.execute('CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL)')
        self._check_info()
        self._trim_partial_tail()
        self._version = 0
        self._packed: Optional[PackedMultiVectors] = None
        self._packed_version = -1

    def _check_info(self) -> None:
        stored = dict(self._db.execute('SELECT key, value FROM info').fetchall())
        if not stored:
            self._db.executemany('INSERT INTO info VALUES (?, ?)', [('dim', str(self.dim)), ('dtype', self.dtype)])
            return
        if int(stored['dim']) != self.dim:
            raise DimensionMismatchError(f'vector file {self.root} holds {stored["dim"]}-dim vectors, got {self.dim}')
        self.dtype = stored['dtype']
        self._np_dtype = _NP_DTYPES[self.dtype]
        self._row_bytes = self.dim * np.dtype(self._np_dtype).itemsize

    def _trim_partial_tail(self) -> None:
        # A crash mid-write can leave a partial row at the end; whole rows past the manifest are harmless.
        if self._tokens_path.exists():
            size = self._tokens_path.stat().st_size
            if size % self._row_bytes:
                with open(self._tokens_path, 'r+b') as f:
                    f.truncate(size - size % self._row_bytes)

    # -- writes ----------------------------------------------------------------------------------------
    def put(self, items: Sequence[tuple]) -> None:
        """Store ``(page_id, doc_id, tensor (n, dim))`` items; an existing page_id is replaced."""
        if not items:
            return
        for page_id, _, vectors in items:
            if vectors.ndim != 2 or vectors.shape[1] != self.dim:
                raise DimensionMismatchError(f'page {page_id}: vectors of shape {tuple(vectors.shape)} do not fit '
                                             f'this collection\'s dim {self.dim}')
        with self._lock:
            rows = []
            with open(self._tokens_path, 'ab') as f:
                offset = f.tell() // self._row_bytes
                for page_id, doc_id, vectors in items:
                    data = vectors.detach().to('cpu', torch.float32).numpy().astype(self._np_dtype)
                    f.write(data.tobytes())
                    rows.append((page_id, doc_id, offset, len(data)))
                    offset += len(data)
                f.flush()
                os.fsync(f.fileno())
            with self._db:
                self._db.execute('BEGIN')
                self._db.executemany('INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?)', rows)
            self._version += 1

    def delete_pages(self, page_ids: Iterable[str]) -> int:
        return self._delete('page_id', page_ids)

    def delete_docs(self, doc_ids: Iterable[str]) -> int:
        return self._delete('doc_id', doc_ids)

    def _delete(self, column: str, values: Iterable[str]) -> int:
        with self._lock, self._db:
            self._db.execute('BEGIN')
            n = sum(self._db.execute(f'DELETE FROM pages WHERE {column} = ?', (v,)).rowcount for v in list(values))
            self._version += 1
        return n

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

    def count(self) -> int:
        return self._db.execute('SELECT COUNT(*) FROM pages').fetchone()[0]

    def _memmap(self) -> np.ndarray:
        size = self._tokens_path.stat().st_size if self._tokens_path.exists() else 0
        rows = size // self._row_bytes
        if rows == 0:
            return np.zeros((0, self.dim), dtype=self._np_dtype)
        # mode 'c' (copy-on-write): torch gets a writable view, the file itself is never modified
        return np.memmap(self._tokens_path, dtype=self._np_dtype, mode='c', shape=(rows, self.dim))

    def get(self, page_ids: Sequence[str]) -> Dict[str, torch.Tensor]:
        with self._lock:
            table = self._memmap()
            out = {}
            for page_id in page_ids:
                row = self._db.execute('SELECT offset, length FROM pages WHERE page_id = ?', (page_id,)).fetchone()
                if row:
                    out[page_id] = torch.from_numpy(np.array(table[row[0]:row[0] + row[1]]))
            return out

    def packed(self) -> PackedMultiVectors:
        """All live pages as one contiguous tensor (cached until the next write)."""
        with self._lock:
            if self._packed is not None and self._packed_version == self._version:
                return self._packed
            rows = self._db.execute('SELECT page_id, offset, length FROM pages ORDER BY offset').fetchall()
            table = self._memmap()
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
            self._packed_version = self._version
            return self._packed

    def dead_rows(self) -> int:
        live = self._db.execute('SELECT COALESCE(SUM(length), 0) FROM pages').fetchone()[0]
        return len(self._memmap()) - live

    def compact(self) -> int:
        """Rewrite the file with live pages only; returns the number of rows reclaimed."""
        with self._lock:
            dead = self.dead_rows()
            if dead == 0:
                return 0
            rows = self._db.execute('SELECT page_id, offset, length FROM pages ORDER BY offset').fetchall()
            table = self._memmap()
            tmp = self._tokens_path.with_suffix('.compact')
            new_rows, offset = [], 0
            with open(tmp, 'wb') as f:
                for page_id, start, length in rows:
                    f.write(np.asarray(table[start:start + length]).tobytes())
                    new_rows.append((offset, page_id))
                    offset += length
                f.flush()
                os.fsync(f.fileno())
            del table
            with self._db:
                self._db.execute('BEGIN')
                self._db.executemany('UPDATE pages SET offset = ? WHERE page_id = ?', new_rows)
                os.replace(tmp, self._tokens_path)  # inside the transaction: a failed rename rolls back offsets
            self._version += 1
            self._packed = None
            return dead

    def close(self) -> None:
        with self._lock:
            self._packed = None
            self._db.close()
