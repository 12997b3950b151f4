"""Keeping a machine's vector cache in line with Milvus and with its own checksums (mixed into the store).

- **Other machines' writes.** Every write bumps a change token; a reader compares ``(token, row count)`` with
  what its cache was synced to at most every ``sync_interval`` seconds (one ``get`` and one ``count``), and
  lists every row every ``full_sync_interval`` seconds regardless. So a writer killed between its rows and
  its token is still seen: its rows change the count, and a listing catches even a same-count change.
- **A listing** fetches the vectors of new pages (checked against the checksum their row records), drops
  pages deleted elsewhere - and their page images on this machine, so a machine with its own image folder
  does not keep images of documents another machine deleted - and refetches pages whose cached copy differs
  from Milvus's (another length, or another checksum).
- **Damage on this disk.** Every ``verify_interval`` seconds ``verify_pages`` cached pages are read back and
  checked against their checksums (a cursor walks the file); a page that fails, and any page a truncated file
  no longer holds, is dropped and - for a server - fetched again at once, never left out of results quietly.
  On a Milvus Lite file (the vectors' only copy) it is left out with a warning and `check --repair`
  re-encodes it from its source.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..logging import LOG
from .integrity import fp16_checksum, row_checksum
from .vector_file import PackedMultiVectors

_SYNC_BATCH = 32


class CacheSync:
    """Needs of the host: ``remote``, ``vectors``, ``images``, ``layout``, ``uri``, ``collection``, ``_lock``,
    ``get_meta``, ``_count``, ``_query``."""

    def _init_sync(self, sync_interval: float, full_sync_interval: float, verify_interval: float,
                   verify_pages: int) -> None:
        self.sync_interval = sync_interval
        self.full_sync_interval = full_sync_interval
        self.verify_interval = verify_interval
        self.verify_pages = verify_pages
        now = time.monotonic()
        self._last_sync = -float('inf')
        self._last_full = now          # a fresh process trusts (token, count) for its first interval
        self._last_verify = now

    def packed(self) -> PackedMultiVectors:
        if self.remote:
            self.sync()
        self.verify_sample()
        packed = self.vectors.packed()
        if self.remote and self.vectors.damaged:   # pages a truncated cache lost: fetch them, never leave them out
            with self._lock:
                LOG.warning(f'vector cache {self.vectors.root}: {len(self.vectors.damaged)} pages lie outside the '
                            f'file (truncated?); fetching them again from Milvus')
                self.vectors.delete_pages(self.vectors.damaged)
                self.sync(force=True)
            packed = self.vectors.packed()
        return packed

    def verify_sample(self, force: bool = False) -> List[str]:
        """Check the next ``verify_pages`` cached pages against their checksums (at most every
        ``verify_interval`` seconds unless ``force``); damaged ones are dropped and, for a server, refetched.
        Returns the damaged page ids."""
        now = time.monotonic()
        if self.verify_pages <= 0 or (not force and now - self._last_verify < self.verify_interval):
            return []
        with self._lock:
            self._last_verify = now
            bad = self.vectors.verify_sample(self.verify_pages)
            if bad:
                self._drop_damaged(bad, 'do not match their checksums (damaged on disk)')
            return bad

    def _drop_damaged(self, pages: List[str], why: str) -> None:
        action = ('fetching them again from Milvus' if self.remote else
                  'they are left out of search until `lazyllm-colpali check --repair` re-encodes them')
        LOG.warning(f'vector cache {self.vectors.root}: {len(pages)} pages {why}; {action}')
        self.vectors.delete_pages(pages)
        if self.remote:
            self.sync(force=True)

    def sync(self, force: bool = False) -> Optional[Dict[str, int]]:
        """Bring this machine's vector cache in line with Milvus (server URIs): fetch pages other machines
        added, drop pages they deleted, refetch pages whose copy differs. Cheap when nothing changed (one
        ``get`` of the change token, one ``count``), done at most every ``sync_interval`` seconds unless
        ``force``; a full listing at least every ``full_sync_interval`` seconds."""
        if not self.remote:
            return None
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_sync < self.sync_interval:
                return None
            self._last_sync = now
            full = force or now - self._last_full >= self.full_sync_interval
            change = self.get_meta('change', fast=not force) or {}
            token = f'{change.get("token", "")}/{self._count(fast=not force)}'
            if not full and token == self.vectors.info().get('synced_token'):
                return None
            self._last_full = now
            rows = {r['page_id']: r for r in self._query('', ['page_id', 'doc_id', 'n_vectors', 'meta'])}
            local = self.vectors.page_lengths()
            local_docs = self.vectors.page_docs()
            local_crc = self.vectors.checksums() if self.vectors.dtype == 'float16' else {}

            def differs(page_id: str) -> bool:
                row = rows[page_id]
                crc = row_checksum(row.get('meta'))
                return int(row['n_vectors']) != local[page_id] or (
                    crc is not None and page_id in local_crc and local_crc[page_id] != crc)
            gone = [p for p in local if p not in rows]
            stale = [p for p in local if p in rows and differs(p)]
            self.vectors.delete_pages(gone + stale)
            todo = {p: (int(r['n_vectors']), r['doc_id'], row_checksum(r.get('meta')))
                    for p, r in rows.items() if p not in local or p in stale}
            fetched, absent, corrupt = self._fetch(todo)
            left = sorted({local_docs[p] for p in gone} - {r['doc_id'] for r in rows.values()})
            self.images.delete_docs(left)   # documents another machine deleted: their images go here too
            if not absent and not corrupt:
                self.vectors.set_info(synced_token=token)
            if todo or gone:
                LOG.info(f'Synced the vector cache with {self.uri} [{self.collection}]: {fetched} pages fetched, '
                         f'{len(gone)} dropped' + (f', {len(stale)} replaced' if stale else '')
                         + (f', {len(absent)} have no vectors in Milvus' if absent else ''))
            if corrupt:
                LOG.warning(f'{len(corrupt)} pages\' vectors in Milvus [{self.collection}] do not match the checksum '
                            f'their rows record; not cached (run `lazyllm-colpali check --repair`): '
                            f'{", ".join(corrupt[:5])}')
            return {'fetched': fetched, 'dropped': len(gone), 'replaced': len(stale), 'absent': len(absent),
                    'corrupt': len(corrupt)}

    def _fetch(self, todo: Dict[str, Tuple[int, str, Optional[int]]]) -> Tuple[int, List[str], List[str]]:
        """Fetch ``{page_id: (n_vectors, doc_id, checksum)}`` from Milvus into the local file; returns
        ``(fetched, absent ids, ids whose vectors fail their row's checksum)``."""
        from tqdm.auto import tqdm

        fetched, absent, corrupt = 0, [], []
        ids = sorted(todo)
        with tqdm(total=len(ids), desc='Fetching vectors from Milvus', unit='page',
                  disable=len(ids) < 200) as bar:
            for start in range(0, len(ids), _SYNC_BATCH):
                batch = ids[start:start + _SYNC_BATCH]
                with self.vectors.file_lock.hold():   # another process on this data dir may be fetching too
                    batch = [p for p in batch if p not in self.vectors.has(batch)]
                    got = self.layout.read({p: todo[p][0] for p in batch}) if batch else {}
                    bad = [p for p, a in got.items() if todo[p][2] is not None and fp16_checksum(a) != todo[p][2]]
                    items = [(p, todo[p][1], torch.from_numpy(a.astype(np.float32)))
                             for p, a in got.items() if p not in bad]
                    self.vectors.put(items)
                fetched += len(items)
                absent += [p for p in batch if p not in got]
                corrupt += bad
                bar.update(len(ids[start:start + _SYNC_BATCH]))
        return fetched, absent, corrupt
