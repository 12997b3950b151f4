"""The dense arm: one vector per page from a visual bi-encoder, stored and searched by Milvus itself.

A dense collection is an ordinary collection of the visual store (:class:`MilvusMultiVectorStore`) whose
pages hold a single vector: the page row's dense field (HNSW on a server, FLAT on a Lite file) is that
vector, and Milvus's own search over it is the whole query. So ids, filters, the image store, the recorded
model, ``delete``, ``check [--repair]`` and the many-machine sync are the visual arm's, by construction.

The dense arm of collection ``X`` lives in collection ``X_dense`` of the same Milvus, so both arms can be
built over the same pages (same page ids) and used together: :class:`DenseThenMaxSim` is the visual arm's
``dense`` mode (the dense arm's top pages, reranked by exact MaxSim).

>>> from PIL import Image
>>> from lazyllm_colpali.models.dense import DenseEncoder
>>> from lazyllm_colpali.store.milvus_store import MilvusMultiVectorStore
>>> for name, colour in (('red.png', 'red'), ('blue.png', 'blue')):
...     Image.new('RGB', (300, 400), colour).save(tmp / name)
>>> encoder = DenseEncoder('tiny:biqwen2')           # a tiny random BiQwen2: rankings are meaningless
>>> store = MilvusMultiVectorStore(str(tmp / 'd.db'), dense_collection('pages'), dim=encoder.dim)
>>> index = DenseIndex(encoder, store, progress=False)
>>> index.add([tmp / 'red.png', tmp / 'blue.png']).added_pages, store.collection
(2, 'pages_dense')
>>> [h.file_name for h in index.search('a blue page', topk=5, filters={'file': 'blue.png'})]
['blue.png']
>>> store.close()
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

import torch

from .errors import ColPaliError
from .indexer import ColPaliIndex, check_query
from .retrieve.retriever import SearchHit, hits_for
from .store.base import Filters

DENSE_SUFFIX = '_dense'
PathLike = Union[str, os.PathLike]


def dense_collection(collection: str) -> str:
    """The collection that holds the dense arm of ``collection``."""
    return collection if collection.endswith(DENSE_SUFFIX) else f'{collection}{DENSE_SUFFIX}'


def dense_dirs(collection: str, data_dir: Optional[PathLike], shared_dir: Optional[PathLike]) -> tuple:
    """Folders of the dense collection when the user named the visual arm's: a sub-folder of each, so the two
    collections never share a vector file (different dims) or an image folder (``check --repair`` on one would
    reclaim the other's images as unreferenced). None stays None (each collection's default folder).

    >>> dense_dirs('pages_dense', '/data/cache', None)
    (PosixPath('/data/cache/pages_dense'), None)
    """
    return tuple(Path(d) / collection if d else None for d in (data_dir, shared_dir))


class DenseRetriever:
    """Milvus's own inner-product search over pages of one vector each (the retriever of a dense index)."""

    def __init__(self, store):
        self.store = store

    def search_vectors(self, query: torch.Tensor, topk: int = 5, filters: Filters = None) -> List[SearchHit]:
        # A few spare pages, as in the visual arm: a row deleted meanwhile is skipped, the next takes its place.
        return hits_for(self.store, self.store.search_pooled(query[0], 2 * topk + 8, filters), topk)

    def candidates(self, query: torch.Tensor, budget: int, filters: Filters = None) -> List[str]:
        return [page_id for page_id, _ in self.store.search_pooled(query[0], budget, filters)]


class DenseIndex(ColPaliIndex):
    """:class:`ColPaliIndex` with a single-vector encoder (:class:`~lazyllm_colpali.models.dense.DenseEncoder`)
    and Milvus's dense search: the same incremental, resumable ingestion, versions and re-encoding."""

    def __init__(self, encoder, store, **kwargs):
        if kwargs.get('context') is not None:
            raise ColPaliError('context vectors extend multi-vector pages (the visual arm); a dense page is one '
                               'vector')
        kwargs.setdefault('retriever', DenseRetriever(store))
        super().__init__(encoder, store, **kwargs)


class DenseThenMaxSim:
    """The visual arm's ``dense`` mode: the dense arm's top ``budget`` pages (filters applied by Milvus),
    reranked by exact MaxSim over the visual arm's stored multi-vectors. ``budget`` defaults to the visual
    retriever's candidate budget (max(256, 2% of pages)). Both indexes must cover the same pages (index
    both with ``lazyllm-colpali index ... --dense-model M``); a page only one of them has is left out."""

    def __init__(self, visual: ColPaliIndex, dense: DenseIndex, budget: Optional[int] = None):
        self.visual = visual
        self.dense = dense
        self.budget = budget

    def search(self, query: str, topk: int = 5, filters: Filters = None) -> List[SearchHit]:
        check_query(query)
        self.visual.check_model()
        self.dense.check_model()
        budget = self.budget or self.visual.retriever.budget(len(self.visual.store.packed()))
        dense_query = self.dense.encoder.encode_queries([query])[0]
        page_ids = self.dense.retriever.candidates(dense_query, max(budget, topk), filters)
        vectors = self.visual.encoder.encode_queries([query])[0]
        return self.visual.retriever.search_vectors(vectors, topk, filters, page_ids=page_ids)

    __call__ = search
