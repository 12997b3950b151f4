"""A second process working on a shared collection, for the many-machines tests (run as a script).

    python -m tests.helpers.store_worker write URI COLLECTION DATA_DIR DOC N_PAGES
    python -m tests.helpers.store_worker sync URI COLLECTION DATA_DIR
    python -m tests.helpers.store_worker compact-forever VECTOR_DIR DIM

Vectors are a deterministic function of the page id (:func:`vectors_for`), so a test can tell whether every
page ended up with its own vectors.
"""
from __future__ import annotations

import hashlib
import sys

import numpy as np
import torch

DIM = 16


def manifest_count(vector_dir) -> int:
    """Pages committed to a vector file's manifest, read without taking its lock (0 while it is being made)."""
    import sqlite3
    from pathlib import Path

    try:
        with sqlite3.connect(f'file:{Path(vector_dir) / "manifest.sqlite"}?mode=ro', uri=True, timeout=1) as db:
            return db.execute('SELECT COUNT(*) FROM pages').fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def vectors_for(page_id: str, dim: int = DIM) -> torch.Tensor:
    seed = int(hashlib.sha256(page_id.encode()).hexdigest()[:8], 16)
    rng = np.random.RandomState(seed)
    n = 3 + seed % 29
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return torch.from_numpy(v / np.linalg.norm(v, axis=1, keepdims=True))


def items_for(doc: str, n_pages: int, dim: int = DIM):
    from lazyllm_colpali import PageRecord

    out = []
    for page in range(1, n_pages + 1):
        page_id = f'{doc}-p{page:05d}'
        record = PageRecord(page_id=page_id, doc_id=doc, source=f'/x/{doc}.pdf', file_name=f'{doc}.pdf',
                            page_number=page, width=10, height=10)
        out.append((record, vectors_for(page_id, dim), None))
    return out


def main(argv) -> int:
    from lazyllm_colpali import MilvusMultiVectorStore

    command = argv[0]
    if command == 'write':
        uri, collection, data_dir, doc, n = argv[1:6]
        store = MilvusMultiVectorStore(uri, collection, dim=DIM, data_dir=data_dir, sync_interval=3600)
        items = items_for(doc, int(n))
        for start in range(0, len(items), 5):
            store.add(items[start:start + 5])
        store.close()
    elif command == 'sync':
        uri, collection, data_dir = argv[1:4]
        store = MilvusMultiVectorStore(uri, collection, data_dir=data_dir)
        print('SYNC', store.sync(force=True), flush=True)
        store.close()
    elif command == 'compact-forever':
        from lazyllm_colpali import LocalVectorFile

        vf = LocalVectorFile(argv[1], int(argv[2]))
        ids = sorted(vf.page_docs())
        round_ = 0
        while True:   # rewrite a page (leaving a dead copy) and compact, until killed
            page_id = ids[round_ % len(ids)]
            vf.put([(page_id, 'd', vf.get([page_id])[page_id].float())])
            vf.compact()
            round_ += 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
