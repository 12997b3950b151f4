"""Local, memory-mappable storage of full multi-vectors: what exact MaxSim streams over.

Authoritative for a Milvus Lite file; a per-machine cache of the vectors kept in Milvus for a server URI.

Layout in ``root``: ``tokens-<generation>.bin`` is an append-only row-major matrix ``(total_tokens, dim)`` of
the configured dtype; ``manifest.sqlite`` maps ``page_id -> (doc_id, offset, length)`` in rows and names the
current tokens file; ``checksums`` holds a CRC-32 of each page's bytes (for the page's current offset and
length), checked by :meth:`verify` so bytes that rot in place are found. Writers (any process) hold
``root/lock``; a page's vectors are written and fsync'ed before its manifest row commits, so a crash leaves at
most unreferenced tail bytes, never a half page.
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
from .integrity import vectors_checksum
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
            # A table of its own (not a column of pages): files written before checksums stay readable and
            # writable by older versions; a checksum counts only while its offset and length match the page's.
            self._db.execute('CREATE TABLE IF NOT EXISTS checksums (page_id TEXT PRIMARY KEY, offset INTEGER NOT NULL, '
                             'length INTEGER NOT NULL, crc INTEGER NOT NULL)')
            self._check_info()
            self._remove_stale_generations()
        self._version = 0
        self._packed: Optional[PackedMultiVectors] = None
        self._packed_key: tuple = ()
        self._warned: set = set()
        self.damaged: List[str] = []     # pages the last packed() left out (outside the file)
        self._verify_cursor = 0

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
                sums = []
                for page_id, doc_id, vectors in items:
                    data = vectors.detach().to('cpu', torch.float32).numpy().astype(self._np_dtype)
                    f.write(data.tobytes())
                    rows.append((page_id, doc_id, offset, len(data)))
                    sums.append((page_id, offset, len(data), vectors_checksum(data)))
                    offset += len(data)
                f.flush()
                os.fsync(f.fileno())
            with self._db:
                self._db.execute('BEGIN IMMEDIATE')
                self._db.executemany('INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?)', rows)
                self._db.executemany('INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?)', sums)
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
            if column == 'doc_id':
                self._db.executemany('DELETE FROM checksums WHERE page_id IN (SELECT page_id FROM pages WHERE '
                                     'doc_id = ?)', [(v,) for v in values])
            else:
                self._db.executemany('DELETE FROM checksums WHERE page_id = ?', [(v,) for v in values])
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
            self.damaged = list(report['damaged'])
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

    # -- checksums -------------------------------------------------------------------------------------
    def _checksums_by_page(self) -> Dict[str, tuple]:
        with self._lock:
            rows = self._db.execute('SELECT page_id, offset, length, crc FROM checksums')
            return {p: (o, n, c) for p, o, n, c in rows}

    def checksums(self) -> Dict[str, int]:
        """``page_id -> CRC-32`` of every page whose checksum matches its current place in the file."""
        with self._lock:
            return dict(self._db.execute('SELECT c.page_id, c.crc FROM checksums c JOIN pages p ON c.page_id = '
                                         'p.page_id AND c.offset = p.offset AND c.length = p.length'))

    def verify(self, page_ids: Optional[Iterable[str]] = None) -> Dict[str, List[str]]:
        """Read pages back and compare each with its checksum: ``{'corrupt': [...], 'unverified': [...]}``
        (unverified: written before checksums, or by an older version). All pages unless ``page_ids``."""
        path, rows, table = self._open_snapshot()
        sums = self._checksums_by_page()
        wanted = None if page_ids is None else set(page_ids)
        corrupt, unverified = [], []
        for page_id, offset, length in rows:
            if (wanted is not None and page_id not in wanted) or offset + length > len(table):
                continue   # pages outside the file are validate()'s 'damaged'
            expected = sums.get(page_id)
            if expected is None or expected[:2] != (offset, length):
                unverified.append(page_id)
            elif vectors_checksum(table[offset:offset + length]) != expected[2]:
                corrupt.append(page_id)
        return {'corrupt': corrupt, 'unverified': unverified}

    def verify_sample(self, n_pages: int) -> List[str]:
        """Verify the next ``n_pages`` pages in file order (a cursor walks the file across calls, so a
        long-running reader checks every page in turn); returns the corrupt ones."""
        with self._lock:
            ids = [r[0] for r in self._db.execute('SELECT page_id FROM pages ORDER BY offset')]
            if not ids:
                return []
            start = self._verify_cursor % len(ids)
            chosen = (ids[start:] + ids[:start])[:n_pages]
            self._verify_cursor = start + len(chosen)
        return self.verify(chosen)['corrupt']

    def record_checksums(self, page_ids: Iterable[str]) -> int:
        """Checksum pages as they are now (for pages written before checksums; verify them first where
        another copy exists). Returns how many were recorded."""
        wanted = set(page_ids)
        with self._lock, self.file_lock.hold():
            path, rows, table = self._open_snapshot()
            sums = [(p, o, n, vectors_checksum(table[o:o + n])) for p, o, n in rows
                    if p in wanted and o + n <= len(table)]
            with self._db:
                self._db.execute('BEGIN IMMEDIATE')
                self._db.executemany('INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?)', sums)
        return len(sums)

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
            sums = self._checksums_by_page()
            new_rows, new_sums, corrupt, unverified, offset = [], [], [], [], 0
            with open(new_path, 'wb') as f:
                for page_id, start, length in rows:
                    data = np.asarray(table[start:start + length])
                    crc = vectors_checksum(data)
                    known = sums.get(page_id)
                    verified = known is not None and known[:2] == (start, length)
                    if verified and known[2] != crc:
                        corrupt.append(page_id)   # never carry rotten bytes into the new generation
                        continue
                    f.write(data.tobytes())
                    new_rows.append((offset, page_id))
                    if verified:   # an unverified page stays unverified: its bytes are not blessed here
                        new_sums.append((page_id, offset, length, crc))
                    else:
                        unverified.append(page_id)
                    offset += length
                f.flush()
                os.fsync(f.fileno())
            del table
            if _crash_after == 'write':
                return -1
            if corrupt:
                LOG.warning(f'vector file {self.root}: {len(corrupt)} pages fail their checksum; dropping them so '
                            f'they are fetched or re-indexed')
            with self._db:
                self._db.execute('BEGIN IMMEDIATE')
                self._db.executemany('DELETE FROM pages WHERE page_id = ?', [(p,) for p in corrupt])
                self._db.executemany('DELETE FROM checksums WHERE page_id = ?', [(p,) for p in corrupt + unverified])
                self._db.executemany('UPDATE pages SET offset = ? WHERE page_id = ?', new_rows)
                self._db.executemany('INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?)', new_sums)
                self._db.execute('DELETE FROM checksums WHERE page_id NOT IN (SELECT page_id FROM pages)')
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
