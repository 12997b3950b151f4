"""``colpali_milvus``: a LazyLLM vector store (``lazyllm.store``) for multi-vector pages, exact MaxSim.

LazyLLM picks a store by name (``_DocumentStore._make_store`` does ``getattr(lazyllm.store, type)``), so a
stock ``lazyllm.Document`` keeps its ColPali pages in Milvus through this class:

    doc = lazyllm.Document('./pdfs', embed={'colpali': ColPaliEmbed('./models/colqwen2-v1.0')},
                           store_conf={'type': 'colpali_milvus', 'kwargs': {'uri': './colpali.db'}})
    doc.add_reader('*.pdf', PdfPageImageReader())          # pages as ImageDocNodes (the 'image' group)
    retriever = lazyllm.Retriever(doc, 'image', similarity='maxsim', topk=3)

LazyLLM's own Milvus store keeps one vector per row and cannot hold a page's ~1000 patch vectors. This one
is a ``VECTOR`` store built on :class:`MilvusMultiVectorStore` (one Milvus row per page with its metadata
and a pooled vector; the full multi-vectors in a local fp16 file) and scores with
:meth:`MaxSimRetriever.search_vectors` (exact MaxSim, or candidates + exact rerank on big collections).
LazyLLM pairs it with its map segment store, persisted beside a Lite file, for the nodes' text/metadata.

Filters: LazyLLM's ``docid``, ``file_name``, ``lazyllm_doc_path``, and this package's ``file``, ``doc_id``,
``source``, ``pages``, ``page``; a value is a name or a list of names (a page range for ``pages``): any other
shape (a dict operator such as ``{'$ne': 'x'}``) is refused, never read as "matches nothing". ``delete``
checks its whole criteria before deleting anything, deletes exactly the pages they select (``uid``: those
pages; ``docid``/``kb_id``: their documents' pages; several keys: the pages all select) and records what it
deleted in :attr:`ColPaliMilvusStore.last_deleted`. ``get`` does not return the multi-vectors.
"""
from __future__ import annotations

import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Union

import torch
from lazyllm.tools.rag.global_metadata import RAG_DOC_FILE_NAME, RAG_DOC_ID, RAG_DOC_PATH, RAG_KB_ID
from lazyllm.tools.rag.store.store_base import LazyLLMStoreBase, StoreCapability

from ..errors import StoreError
from ..ingest.records import PageRecord
from ..logging import LOG, drop_alloc_timestamp_noise
from ..retrieve.retriever import MaxSimRetriever
from ..store.image_store import check_key_part
from ..store.milvus_query import filter_expression
from ..store.milvus_store import MilvusMultiVectorStore, is_remote_uri

_FILTER_KEYS = {RAG_DOC_ID: 'doc_id', RAG_DOC_FILE_NAME: 'file', RAG_DOC_PATH: 'source', 'doc_id': 'doc_id',
                'file': 'file', 'source': 'source', 'pages': 'pages', 'page': 'page'}
_DELETE_KEYS = ('uid', RAG_DOC_ID, RAG_KB_ID)


class ColPaliMilvusStore(LazyLLMStoreBase):
    """Multi-vector pages in Milvus for ``lazyllm.Document``; ``store_conf={'type': 'colpali_milvus', ...}``.

    ``uri``: a Milvus Lite file or a server URI. ``prefix``: Milvus collection names are
    ``<prefix>_<lazyllm collection>_<embed key>``. ``data_dir``: where vectors and page images live (default:
    beside a Lite file). ``mode`` / ``candidate_budget``: as :class:`MaxSimRetriever`.
    """

    __lazyllm_registry_key__ = 'colpali_milvus'
    capability = StoreCapability.VECTOR
    need_embedding = True
    supports_index_registration = False

    def __init__(self, uri: str = './colpali.db', prefix: str = 'lazyllm', data_dir: Optional[str] = None,
                 vector_dtype: str = 'float16', mode: str = 'auto', candidate_budget: Optional[int] = None,
                 token: str = '', db_name: str = ''):
        self.uri = uri
        self.prefix = prefix
        self._data_dir = data_dir
        self._store_kwargs = dict(vector_dtype=vector_dtype, token=token, db_name=db_name)
        self._retriever_kwargs = dict(mode=mode, candidate_budget=candidate_budget)
        self._stores: Dict[str, MilvusMultiVectorStore] = {}
        self._retrievers: Dict[str, MaxSimRetriever] = {}
        self._embed_keys: List[str] = []
        self._lock = threading.RLock()
        self.last_deleted: Dict[str, Dict[str, List[str]]] = {}   # collection -> {'documents': [...], 'pages': [...]}

    def __reduce__(self):   # LazyLLM may pickle stores into its worker processes: ship the settings only
        kwargs = dict(self._store_kwargs, **self._retriever_kwargs)
        return (_rebuild, (self.uri, self.prefix, self._data_dir, kwargs))

    @property
    def dir(self) -> Optional[str]:
        # A local path keeps LazyLLM from spawning a DocServer and puts its segment db beside the Lite file.
        return None if is_remote_uri(self.uri) else str(Path(self.uri).expanduser().resolve())

    def connect(self, embed_dims: Optional[Dict[str, int]] = None, embed_datatypes: Optional[Dict] = None,
                embed: Optional[Dict[str, Any]] = None, global_metadata_desc: Optional[Dict] = None,
                collections: Optional[List[str]] = None, **kwargs) -> None:
        self._embed_keys = list((embed or {}).keys())

    # -- one MilvusMultiVectorStore per (LazyLLM collection, embed key) -----------------------------------
    def _name(self, collection_name: str, embed_key: str) -> str:
        return re.sub(r'[^A-Za-z0-9_]+', '_', f'{self.prefix}_{collection_name}_{embed_key}').strip('_')[:255]

    def _store(self, collection_name: str, embed_key: str,
               dim: Optional[int] = None) -> Optional[MilvusMultiVectorStore]:
        """The page store, opened once; ``None`` when it does not exist yet and ``dim`` is not known."""
        name = self._name(collection_name, embed_key)
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                data_dir = Path(self._data_dir) / name if self._data_dir else None
                drop_alloc_timestamp_noise()
                try:
                    store = MilvusMultiVectorStore(self.uri, name, dim=dim, data_dir=data_dir, **self._store_kwargs)
                except StoreError as e:
                    if dim is not None or 'does not exist' not in str(e):
                        raise
                    return None   # nothing stored under this name yet
                self._stores[name] = store
                self._retrievers[name] = MaxSimRetriever(store, **self._retriever_kwargs)
            return store

    def _keys(self, embed_key: Optional[str] = None) -> List[str]:
        return [embed_key] if embed_key else (self._embed_keys or [])

    # -- LazyLLMStoreBase --------------------------------------------------------------------------------
    def upsert(self, collection_name: str, data: List[dict]) -> bool:
        by_key: Dict[str, List[tuple]] = {}
        for segment in data:
            for key, vectors in (segment.get('embedding') or {}).items():
                if vectors:
                    by_key.setdefault(key, []).append((segment, torch.tensor(vectors, dtype=torch.float32)))
        for key, items in by_key.items():
            for segment, vectors in items:
                if vectors.ndim != 2:
                    raise StoreError(f'colpali_milvus stores multi-vectors; embed key {key!r} gave a vector of '
                                     f'shape {tuple(vectors.shape)} (use ColPaliEmbed or another multi-vector embed)')
            store = self._store(collection_name, key, dim=int(items[0][1].shape[1]))
            store.add([(record, vectors, _page_image(record)) for record, vectors in
                       ((_record(segment), vectors) for segment, vectors in items)])
        return True

    def delete(self, collection_name: str, criteria: Optional[dict] = None, **kwargs) -> bool:
        """Delete the pages ``criteria`` select (see the module doc); True once they are gone. What was deleted
        is logged and kept in ``last_deleted[collection_name]``."""
        criteria = _delete_criteria(criteria)   # every key and value checked before anything is deleted
        deleted: Dict[str, List[str]] = {'documents': [], 'pages': []}
        for key in self._keys():
            store = self._store(collection_name, key)
            if store is None:
                continue
            documents, pages = self._selection(store, criteria)
            if documents:
                deleted['pages'] += store.page_ids({'doc_id': documents}, fresh=True)
                store.delete_docs(documents)
                deleted['documents'] += documents
            deleted['pages'] += store.delete_pages(pages)
        self.last_deleted[collection_name] = {k: sorted(set(v)) for k, v in deleted.items()}
        LOG.info(f'colpali_milvus {collection_name}: deleted {len(set(deleted["pages"]))} pages '
                 f'({len(set(deleted["documents"]))} whole documents)')
        return True

    @staticmethod
    def _selection(store: MilvusMultiVectorStore, criteria: Dict[str, Any]) -> tuple:
        """``(documents to delete whole, other pages to delete)``: the pages every criterion selects (all pages
        without criteria); documents all of whose pages are selected go as documents."""
        selected: Optional[Set[str]] = None
        if 'uid' in criteria:
            selected = set(store.records(criteria['uid'], images=False, fresh=True))
        if RAG_DOC_ID in criteria:
            pages = set(store.page_ids({'doc_id': criteria[RAG_DOC_ID]}, fresh=True))
            selected = pages if selected is None else selected & pages
        records = store.records(sorted(selected) if selected is not None else store.page_ids(fresh=True),
                                images=False, fresh=True)
        if RAG_KB_ID in criteria:
            records = {p: r for p, r in records.items() if r.metadata.get(RAG_KB_ID) == criteria[RAG_KB_ID]}
        by_doc: Dict[str, Set[str]] = defaultdict(set)
        for page_id, record in records.items():
            by_doc[record.doc_id].add(page_id)
        whole = sorted(d for d, pages in by_doc.items() if set(store.page_ids({'doc_id': d}, fresh=True)) <= pages)
        return whole, sorted(p for d, pages in by_doc.items() if d not in whole for p in pages)

    def get(self, collection_name: str, criteria: Optional[dict] = None, **kwargs) -> List[dict]:
        # HybridStore joins these to the segments by uid; the multi-vectors are not served back.
        uids = (criteria or {}).get('uid') or []
        found: Set[str] = set()
        for key in self._keys():
            store = self._store(collection_name, key)
            if store is not None and uids:
                found |= set(store.records(list(uids), images=False))
        return [{'uid': uid, 'embedding': {}} for uid in uids if uid in found]

    def search(self, collection_name: str, query: Optional[str] = None,
               query_embedding: Optional[Union[dict, List[float]]] = None, topk: int = 10,
               filters: Optional[Dict[str, Any]] = None, embed_key: Optional[str] = None, **kwargs) -> List[dict]:
        if query_embedding is None or embed_key is None:
            raise ValueError('colpali_milvus searches by embedding: use an embedding similarity such as maxsim')
        store = self._store(collection_name, embed_key)
        if store is None:
            return []
        query_vectors = torch.tensor(query_embedding, dtype=torch.float32)
        if query_vectors.ndim == 1:
            query_vectors = query_vectors[None]
        hits = self._retrievers[store.collection].search_vectors(query_vectors, topk, _filters(filters))
        return [{'uid': h.page_id, 'score': h.score} for h in hits]

    def collection_exists(self, collection_name: str) -> bool:
        return any(self._store(collection_name, key) is not None for key in self._keys())

    def close(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
            self._retrievers.clear()


def _rebuild(uri: str, prefix: str, data_dir: Optional[str], kwargs: Dict[str, Any]) -> ColPaliMilvusStore:
    return ColPaliMilvusStore(uri, prefix, data_dir, **kwargs)


def _record(segment: dict) -> PageRecord:
    meta = dict(segment.get('meta') or {})
    global_meta = dict(segment.get('global_meta') or {})
    image = (segment.get('image_keys') or [''])[0]
    source = meta.get('source') or global_meta.get(RAG_DOC_PATH) or image
    file_name = meta.get('file_name') or global_meta.get(RAG_DOC_FILE_NAME) or Path(source).name
    keep = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
    keep[RAG_KB_ID] = segment.get('kb_id') or global_meta.get(RAG_KB_ID)
    return PageRecord(page_id=segment['uid'], doc_id=segment.get('doc_id') or global_meta.get(RAG_DOC_ID) or '',
                      source=str(source), file_name=str(file_name), page_number=int(meta.get('page') or 0),
                      width=int(meta.get('width') or 0), height=int(meta.get('height') or 0), image_path=image,
                      metadata=keep)


def _page_image(record: PageRecord):
    """The reader's page image, copied into the collection's keyed image store by ``add``."""
    from PIL import Image

    if not record.image_path or not Path(record.image_path).is_file():
        return None
    with Image.open(record.image_path) as image:
        return image.convert('RGB')


def _names(key: str, value: Any) -> List[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple, set)) or not all(isinstance(v, str) for v in values):
        raise ValueError(f'colpali_milvus delete: {key!r} must be an id or a list of ids, got {value!r}')
    try:
        return [check_key_part(v, key) for v in values]
    except ValueError as e:
        raise ValueError(f'colpali_milvus delete: {e}; nothing was deleted') from None


def _delete_criteria(criteria: Optional[dict]) -> Dict[str, Any]:
    """Checked delete criteria: ``uid`` and ``docid`` as lists of ids, ``kb_id`` a string."""
    criteria = dict(criteria or {})
    unknown = sorted(set(criteria) - set(_DELETE_KEYS))
    if unknown:
        raise ValueError(f'colpali_milvus cannot delete by {unknown}; use uid, {RAG_DOC_ID} or {RAG_KB_ID} (nothing '
                         f'was deleted)')
    out: Dict[str, Any] = {k: _names(k, criteria[k]) for k in ('uid', RAG_DOC_ID) if k in criteria}
    if RAG_KB_ID in criteria:
        if not isinstance(criteria[RAG_KB_ID], str):
            raise ValueError(f'colpali_milvus delete: {RAG_KB_ID!r} must be a string, got {criteria[RAG_KB_ID]!r}')
        out[RAG_KB_ID] = criteria[RAG_KB_ID]
    return out


def _filters(filters: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if not filters:
        return None
    out = {}
    for key, value in filters.items():
        if key not in _FILTER_KEYS:
            raise ValueError(f'colpali_milvus cannot filter on {key!r}; use {", ".join(sorted(_FILTER_KEYS))}')
        out[_FILTER_KEYS[key]] = value
    filter_expression(out)   # refuses value shapes it cannot express (e.g. {'$ne': 'x'}) before any search
    return out
