"""``check`` and ``check --repair``: cross-check Milvus rows, Milvus's vectors, this machine's cache (offsets,
lengths, checksums), page images, image keys and source claims (mixed into the store)."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from ..logging import LOG
from .image_store import own_image_key
from .integrity import fp16_checksum, row_checksum

_VERIFY_BATCH = 32


class ConsistencyCheck:
    """Needs of the host: the store's attributes and its read/write methods."""

    def check(self, repair: bool = False) -> Dict[str, Any]:
        """Cross-check Milvus rows, Milvus vectors (server), the local vector file and page images.

        Every list in the report is an inconsistency; numbers are counts (``unverified_vectors``: cached
        pages written before checksums; ``unclaimed_documents``: documents indexed before source claims).
        ``repair`` fixes what can be fixed from what is stored: refetches vectors from Milvus (never deletes a
        row because this machine lacks its vectors), drops damaged, corrupt or unreferenced local vectors,
        checks unverified pages against Milvus's copy and records their checksums, gives rows with a bad
        image key their own key, reclaims vectors/images/claims nothing references, re-renders missing images
        from their source, and compacts the vector file. Pages whose vectors exist nowhere are listed in
        ``needs_encoding`` (``lazyllm-colpali check --repair`` re-encodes them with the recorded model).
        """
        with self._lock:
            self.sync(force=True)   # a server's rows are the truth: bring this machine's cache in line first
            report = self._inspect()
            if not repair:
                return report
            self.vectors.delete_pages(report['damaged_vectors'] + report['vector_length_mismatch']
                                      + report['vectors_without_rows'] + report['corrupt_vectors']
                                      + report['vectors_differ_from_milvus'])
            if self.remote and report['orphan_milvus_vectors'] and self.layout is not None:
                self.layout.delete_pages(report['orphan_milvus_vectors'])
            self._settle_unverified()
            rekeyed = self._give_own_image_keys(report['bad_image_keys'])
            self.sources.forget_docs(report['claims_without_pages'])
            if self.remote:
                self.sync(force=True)
            records = self.records(report['missing_images'] + rekeyed)   # records() re-renders missing images
            self.images.delete_docs(report['orphan_image_docs'])
            reclaimed = self.vectors.compact()
            after = self._inspect()
            after['reclaimed_vector_rows'] = reclaimed
            after['repaired_images'] = sum(1 for r in records.values() if r.image_path)
            return after

    def _inspect(self) -> Dict[str, Any]:
        rows = {r['page_id']: r for r in self._query('', ['page_id', 'doc_id', 'image_key', 'n_vectors', 'meta'])}
        local = self.vectors.page_lengths()
        validation = self.vectors.validate()
        damaged = set(validation['damaged'])
        verified = self.vectors.verify()
        corrupt = set(verified['corrupt'])
        local_crc = self.vectors.checksums() if self.vectors.dtype == 'float16' else {}
        bad_keys = sorted(p for p, r in rows.items()
                          if r['image_key'] and not own_image_key(r['image_key'], r['doc_id'], p))
        claims = self.sources.all()
        docs = {r['doc_id'] for r in rows.values()}
        report: Dict[str, Any] = {
            'pages': len(rows),
            'rows_without_vectors': sorted(set(rows) - set(local) - damaged),
            'vectors_without_rows': sorted(set(local) - set(rows)),
            'damaged_vectors': sorted(damaged),
            'corrupt_vectors': sorted(corrupt),
            'vectors_differ_from_milvus': sorted(
                p for p, crc in local_crc.items() if p in rows and p not in corrupt
                and row_checksum(rows[p].get('meta')) not in (None, crc)),
            'vector_length_mismatch': sorted(p for p, n in local.items()
                                             if p in rows and p not in damaged and int(rows[p]['n_vectors']) != n),
            'bad_image_keys': bad_keys,
            'missing_images': sorted(p for p, r in rows.items() if r['image_key'] and p not in bad_keys
                                     and not self.images.exists(r['image_key'])),
            'orphan_image_docs': sorted(set(self.images.doc_ids()) - docs),
            'claims_without_pages': sorted({c.doc_id for c in claims} - docs),
            'dead_vector_rows': int(validation['dead_rows']),
            'unverified_vectors': len(verified['unverified']),
            'unclaimed_documents': len(docs - {c.doc_id for c in claims}),
        }
        if self.remote and self.layout is not None:
            stored = self.layout.stored_pages()
            report['rows_without_milvus_vectors'] = sorted(set(rows) - set(stored))
            report['orphan_milvus_vectors'] = sorted(set(stored) - set(rows))
        lost_here = set(report['rows_without_vectors']) | damaged | corrupt | set(report['vectors_differ_from_milvus'])
        missing_everywhere = set(report.get('rows_without_milvus_vectors', [])) if self.remote else lost_here
        report['needs_encoding'] = sorted(p for p in missing_everywhere if p in rows)
        return report

    def _settle_unverified(self) -> None:
        """Pages cached before checksums: on a server, compare each with Milvus's copy (drop it if it differs;
        the sync that follows refetches it) and record the checksum of those that match; on a Lite file the
        cache is the only copy, so its checksums are recorded as they are."""
        unverified = self.vectors.verify()['unverified']
        if not unverified:
            return
        if not self.remote or self.layout is None:
            self.vectors.record_checksums(unverified)
            return
        lengths = self.vectors.page_lengths()
        matching, differing = [], []
        for start in range(0, len(unverified), _VERIFY_BATCH):
            batch = [p for p in unverified[start:start + _VERIFY_BATCH] if p in lengths]
            cached = self.vectors.get(batch)
            remote = self.layout.read({p: lengths[p] for p in batch})
            for page_id in batch:
                same = page_id in remote and page_id in cached and \
                    fp16_checksum(cached[page_id].numpy()) == fp16_checksum(remote[page_id])
                (matching if same else differing).append(page_id)
        if differing:
            LOG.warning(f'vector cache {self.vectors.root}: {len(differing)} pages cached before checksums differ '
                        f'from Milvus\'s copy; fetching them again')
            self.vectors.delete_pages(differing)
        self.vectors.record_checksums(matching)

    def _give_own_image_keys(self, page_ids: List[str]) -> List[str]:
        """Rewrite rows whose image key is not their own page's with the right key (vectors from this
        machine's cache or Milvus); returns the pages rewritten (their images are re-rendered next)."""
        if not page_ids:
            return []
        records = self.records(page_ids, images=False, fresh=True)
        vectors = self.vectors.get(list(records))
        if self.layout is not None:
            missing = {p: records[p].n_vectors for p in records if p not in vectors}
            vectors.update({p: torch.from_numpy(a.astype(np.float32)) for p, a in self.layout.read(missing).items()})
        items = []
        for page_id, record in records.items():
            if page_id in vectors:
                record.image_key = self.images.key_for(record.doc_id, record.page_id)
                items.append((record, vectors[page_id].float(), None))
        self.add(items)
        return [r.page_id for r, _, _ in items]

