"""Milvus backend: page rows, a meta row, and (for a server URI) the full multi-vectors live in Milvus; a local
:class:`LocalVectorFile` is what exact MaxSim reads; page images live in a keyed :class:`PageImageStore`.

Two modes, one code path:

- **Milvus Lite file** (``./colpali.db``): one machine. Milvus holds page rows; the local vector file is the
  authority for vectors (Lite has no FLOAT16 vectors and fetching vectors back costs 75-300x a local read).
- **Server URI** (``http://host:19530``): Milvus is the source of truth for everything. Page vectors are kept
  in Milvus (:mod:`.milvus_vectors`), so any machine rebuilds its local cache from it. Every write bumps a
  change token in the meta collection; a reader compares it with the token its cache was synced to (one
  ``get``, every ``sync_interval`` seconds at most) and fetches new pages / drops deleted ones. Search never
  reads vectors from Milvus per query.
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set
from urllib.parse import urlparse

import numpy as np
import torch

from ..errors import DimensionMismatchError, StoreError
from ..ingest.records import PageRecord
from ..logging import LOG, drop_alloc_timestamp_noise
from ..settings import DEFAULT_COLLECTION, data_home, default_db
from .base import Filters, MultiVectorStore, PageItem
from .image_store import PageImageStore
from .milvus_vectors import (BlobRows, NativeStruct, VectorLayout, add_struct_field, add_struct_index,
                             struct_search_request, supports_float16, supports_native_struct)
from .vector_file import LocalVectorFile, PackedMultiVectors

SCHEMA_VERSION = 2
_REMOTE_SCHEMES = ('http', 'https', 'tcp', 'grpc', 'unix')
_RECORD_FIELDS = ['page_id', 'doc_id', 'source', 'file_name', 'page', 'width', 'height', 'image_key', 'content_sha',
                  'n_vectors', 'meta']
_MAX_SEARCH_LIMIT = 16384  # Milvus's topk ceiling
_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)   # ~7.5 s: long enough for a restarting server, short for a dead one
_SYNC_BATCH = 32
# Reads on the query path accept a few seconds of staleness: a Strong read waits for the server's time tick
# (~200 ms per call measured on Milvus 2.3.5, vs ~6 ms Bounded). Writes and the reads that decide what to
# write (missing, delete, check, sync listings) stay Strong.
_FAST_READ = {'consistency_level': 'Bounded'}


_LITE_USERS: Dict[str, int] = {}   # open stores per Milvus Lite path in this process
_LITE_USERS_LOCK = threading.Lock()


def _lite_acquire(path: str) -> None:
    with _LITE_USERS_LOCK:
        _LITE_USERS[path] = _LITE_USERS.get(path, 0) + 1


def _lite_release(path: str) -> None:
    # Milvus Lite runs one embedded server per file and keeps its lock until the server stops; closing a
    # client does not stop it. Stop it when our last store on that file closes, so other processes can open it.
    with _LITE_USERS_LOCK:
        _LITE_USERS[path] = _LITE_USERS.get(path, 1) - 1
        if _LITE_USERS[path] > 0:
            return
        del _LITE_USERS[path]
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(path)


def is_remote_uri(uri: str) -> bool:
    return urlparse(uri).scheme in _REMOTE_SCHEMES


def default_data_dir(uri: str, collection: str) -> Path:
    if is_remote_uri(uri):
        parsed = urlparse(uri)
        slug = re.sub(r'[^A-Za-z0-9_.-]+', '_', f'{parsed.hostname}_{parsed.port or ""}{parsed.path}').strip('_')
        return data_home() / 'servers' / slug / collection
    db = Path(uri).expanduser().resolve()
    return db.parent / f'{db.name}.assets' / collection


def _literal(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f'filter values must be strings or integers, got {value!r}')
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(int(value))


def filter_expression(filters: Filters) -> str:
    """Translate the store's filter dict into a Milvus boolean expression.

    >>> filter_expression({'file': ['a.pdf', 'b "x".pdf'], 'pages': (2, 5)})
    '(file_name in ["a.pdf", "b \\\\"x\\\\".pdf"]) and (page >= 2 and page <= 5)'
    """
    if not filters:
        return ''
    fields = {'doc_id': 'doc_id', 'page_id': 'page_id', 'file': 'file_name', 'file_name': 'file_name',
              'source': 'source'}
    parts = []
    for key, value in filters.items():
        if value is None:
            continue
        if key in fields:
            values = [value] if isinstance(value, (str, int)) else list(value)
            parts.append(f'{fields[key]} in [{", ".join(_literal(v) for v in values)}]')
        elif key == 'pages':
            first, last = value
            parts.append(f'page >= {int(first)} and page <= {int(last)}')
        elif key == 'page':
            parts.append(f'page == {int(value)}')
        else:
            raise ValueError(f'unknown filter {key!r}; use doc_id, file, source, pages or page')
    return ' and '.join(f'({p})' for p in parts)


def query_all(client, call: Callable, collection: str, expr: str, fields: List[str],
              **kwargs: Any) -> List[Dict[str, Any]]:
    """Every row matching ``expr``: one bounded query covers most calls; the iterator only for bigger results."""
    rows = call('query', client.query, collection, filter=expr, output_fields=fields, limit=_MAX_SEARCH_LIMIT,
                **kwargs)
    if len(rows) < _MAX_SEARCH_LIMIT:
        return list(rows)
    iterator = call('query', client.query_iterator, collection, batch_size=4096, filter=expr, output_fields=fields,
                    **kwargs)
    rows = []
    try:
        while True:
            batch = call('query', iterator.next)
            if not batch:
                return rows
            rows.extend(batch)
    finally:
        iterator.close()


class MilvusMultiVectorStore(MultiVectorStore):
    """Multi-vector page store on Milvus (Lite file by default, or a server URI).

    ``data_dir`` is this machine's cache (the local vector file); ``shared_dir`` holds what every machine
    must see the same way (page images, the centroid index): point all machines at one shared folder.

    >>> store = MilvusMultiVectorStore(str(tmp / 'demo.db'), dim=4)   # a Milvus Lite file
    >>> store.count(), store.dim, store.index_type, store.layout_name
    (0, 4, 'FLAT', 'local')
    >>> store.close()
    """

    def __init__(self, uri: Optional[str] = None, collection: str = DEFAULT_COLLECTION, *, dim: Optional[int] = None,
                 data_dir: Optional[str | Path] = None, shared_dir: Optional[str | Path] = None,
                 vector_dtype: str = 'float16', image_format: str = 'jpeg', index_type: Optional[str] = None,
                 token: str = '', db_name: str = '', sync_interval: float = 5.0, layout: Optional[str] = None,
                 lock_timeout: float = 120.0, create: bool = True):
        self.uri = uri or default_db()
        self.collection = collection
        self.remote = is_remote_uri(self.uri)
        self.data_dir = Path(data_dir) if data_dir else default_data_dir(self.uri, collection)
        self.shared_dir = Path(shared_dir) if shared_dir else self.data_dir
        self.index_type = index_type or ('HNSW' if self.remote else 'FLAT')
        self.sync_interval = sync_interval
        self._lock = threading.RLock()
        self._lite_path = None if self.remote else str(Path(self.uri).expanduser())
        if not self.remote and not create and not Path(self._lite_path).exists():
            raise StoreError(f'no collection store at {self.uri!r}: the Milvus Lite path does not exist; check --db '
                             f'(or index some files first)')
        self._client = self._connect(token, db_name)
        self._meta_name = f'{collection}__meta'
        try:
            self.dim, self.layout_name = self._open_collection(dim, layout)
        except Exception:
            self.close()
            raise
        self.vectors = LocalVectorFile(self.data_dir / 'vectors', self.dim, vector_dtype, lock_timeout=lock_timeout)
        self.images = PageImageStore(self.shared_dir / 'pages', image_format=image_format)
        self.layout: Optional[VectorLayout] = self._make_layout()
        self._last_sync = -float('inf')

    # -- connection ------------------------------------------------------------------------------------
    def _connect(self, token: str, db_name: str):
        from pymilvus import MilvusClient

        if not self.remote:
            Path(self.uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            # Milvus Lite's embedded gRPC server logs a harmless AllocTimestamp traceback on each new collection
            drop_alloc_timestamp_noise()
        kwargs = {'uri': self.uri if self.remote else self._lite_path, 'timeout': 10}
        if token:
            kwargs['token'] = token
        if db_name:
            kwargs['db_name'] = db_name
        error: Exception = StoreError('not tried')
        for attempt in range(len(_RETRY_DELAYS) + 1 if self.remote else 1):
            if attempt:
                time.sleep(_RETRY_DELAYS[attempt - 1])   # a busy or restarting server: try again
            try:
                client = MilvusClient(**kwargs)
                if self._lite_path:
                    _lite_acquire(self._lite_path)
                return client
            except Exception as e:  # pymilvus raises several types (MilvusException, grpc errors, OSError)
                error = e
        hint = ('is the server running and reachable?' if self.remote else
                'is another process (an indexer or server) using this file? Milvus Lite allows one process; '
                'to share a collection between processes run `milvus-lite server` or Milvus and use its URI')
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ''
        raise StoreError(f'cannot open Milvus at {self.uri!r} ({type(error).__name__}: {first_line}); {hint}') from None

    def _call(self, what: str, fn, *args, **kwargs):
        for attempt in range(len(_RETRY_DELAYS) + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                text = str(e)
                # pymilvus connects lazily: a server that is down shows up here, on the first real call.
                down = self.remote and any(w in text.lower() for w in ('connect', 'unavailable', 'timeout'))
                if down and attempt < len(_RETRY_DELAYS):  # a restarting server is back within ~1 s
                    time.sleep(_RETRY_DELAYS[attempt])
                    continue
                hint = '; is the server running and reachable? Nothing stored so far is lost' if down else ''
                raise StoreError(f'Milvus {what} failed on {self.uri!r} collection {self.collection!r}: '
                                 f'{type(e).__name__}: {text}{hint}') from e

    # -- schema ----------------------------------------------------------------------------------------
    def _open_collection(self, dim: Optional[int], layout: Optional[str]) -> tuple:
        client = self._client
        if not self._call('list_collections', client.has_collection, self.collection):
            if dim is None:
                raise StoreError(f'collection {self.collection!r} does not exist in {self.uri!r}; index some files '
                                 f'first (or check --db / --collection)')
            try:
                return self._create(dim, layout)
            except StoreError:
                if not self._call('list_collections', client.has_collection, self.collection):
                    raise   # not a lost race with another process creating the same collection
        schema = self.get_meta('schema')
        if schema is None:
            raise StoreError(f'collection {self.collection!r} in {self.uri!r} was made by lazyllm-colpali 0.1 (no '
                             f'schema record); index into a new --collection, or drop this one and re-index')
        if int(schema.get('version', 0)) > SCHEMA_VERSION:
            raise StoreError(f'collection {self.collection!r} uses schema {schema["version"]}, newer than this '
                             f'lazyllm-colpali understands ({SCHEMA_VERSION}); upgrade the package')
        stored = int(schema['dim'])
        if dim is not None:
            self.check_dim(dim, stored)
        # A collection reopened by a new process (or on a restarted server) starts released.
        self._call('load_collection', client.load_collection, self.collection)
        if schema['layout'] == 'blob':
            self._call('load_collection', client.load_collection, f'{self.collection}__vectors')
        self._float16 = bool(schema.get('float16'))
        return stored, schema['layout']

    def check_dim(self, dim: int, stored: Optional[int] = None) -> None:
        """Refuse a model whose vectors do not have this collection's dimension."""
        stored = self.dim if stored is None else stored
        if dim != stored:
            raise DimensionMismatchError(
                f'collection {self.collection!r} in {self.uri!r} holds {stored}-dim vectors but the model gives '
                f'{dim}-dim vectors; use the model it was built with, or another --collection')

    def _choose_layout(self, layout: Optional[str]) -> str:
        if not self.remote:
            return 'local'   # Milvus Lite: the local vector file is the authority
        if layout:
            return layout
        return 'struct' if supports_native_struct(self._client, self._call, self.collection) else 'blob'

    def _create(self, dim: int, layout: Optional[str]) -> tuple:
        from pymilvus import DataType

        client = self._client
        chosen = self._choose_layout(layout)
        self._float16 = chosen == 'blob' and supports_float16(client, self.collection)
        self._create_meta()
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field('page_id', DataType.VARCHAR, max_length=64, is_primary=True)
        schema.add_field('doc_id', DataType.VARCHAR, max_length=64)
        schema.add_field('source', DataType.VARCHAR, max_length=4096)
        schema.add_field('file_name', DataType.VARCHAR, max_length=1024)
        schema.add_field('page', DataType.INT64)
        schema.add_field('width', DataType.INT64)
        schema.add_field('height', DataType.INT64)
        schema.add_field('image_key', DataType.VARCHAR, max_length=256)
        schema.add_field('content_sha', DataType.VARCHAR, max_length=64)
        schema.add_field('n_vectors', DataType.INT64)
        schema.add_field('meta', DataType.JSON)
        schema.add_field('pooled', DataType.FLOAT_VECTOR, dim=dim)
        if chosen == 'struct':
            add_struct_field(client, schema, dim)
        index = client.prepare_index_params()
        params = {'M': 16, 'efConstruction': 200} if self.index_type == 'HNSW' else {}
        index.add_index(field_name='pooled', index_type=self.index_type, metric_type='IP', params=params)
        if chosen == 'struct':
            add_struct_index(index)
        if chosen == 'blob':
            BlobRows(client, self._call, self.collection, dim, self._float16).create()
        self._call('create_collection', client.create_collection, self.collection, schema=schema, index_params=index,
                   consistency_level='Strong')
        self.set_meta('schema', {'version': SCHEMA_VERSION, 'dim': dim, 'layout': chosen, 'float16': self._float16})
        LOG.info(f'Created collection {self.collection!r} ({dim}-dim, {self.index_type}, vectors: {chosen}) '
                 f'in {self.uri}')
        return dim, chosen

    def _make_layout(self) -> Optional[VectorLayout]:
        if self.layout_name == 'blob':
            return BlobRows(self._client, self._call, self.collection, self.dim, self._float16)
        if self.layout_name == 'struct':
            return NativeStruct(self._client, self._call, self.collection, self.dim)
        return None

    # -- meta rows (schema, model, change token) ------------------------------------------------------
    def _create_meta(self) -> None:
        from pymilvus import DataType

        client = self._client
        if self._call('list_collections', client.has_collection, self._meta_name):
            return
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field('key', DataType.VARCHAR, max_length=64, is_primary=True)
        schema.add_field('value', DataType.JSON)
        schema.add_field('v', DataType.FLOAT_VECTOR, dim=2)   # Milvus wants a vector field in every collection
        index = client.prepare_index_params()
        index.add_index(field_name='v', index_type='FLAT', metric_type='IP')
        self._call('create_collection', client.create_collection, self._meta_name, schema=schema, index_params=index,
                   consistency_level='Strong')

    def get_meta(self, key: str, fast: bool = False) -> Optional[Dict[str, Any]]:
        if not getattr(self, '_meta_loaded', False):
            if not self._call('list_collections', self._client.has_collection, self._meta_name):
                return None
            self._call('load_collection', self._client.load_collection, self._meta_name)
            self._meta_loaded = True
        rows = self._call('get meta', self._client.get, self._meta_name, ids=[key], output_fields=['value'],
                          **(_FAST_READ if fast else {}))
        return rows[0]['value'] if rows else None

    def set_meta(self, key: str, value: Dict[str, Any]) -> None:
        self._call('upsert meta', self._client.upsert, self._meta_name, [{'key': key, 'value': value, 'v': [1.0, 0.0]}])

    def _bump(self) -> None:
        """Tell every machine's cache that this collection changed (after the change is visible)."""
        self.set_meta('change', {'token': uuid.uuid4().hex, 'at': time.time()})

    def model_info(self) -> Optional[Dict[str, Any]]:
        """The model this collection was built with (name or folder, family, dim, config fingerprint)."""
        return self.get_meta('model')

    def record_model(self, info: Dict[str, Any]) -> None:
        self.set_meta('model', dict(info))

    # -- writes ----------------------------------------------------------------------------------------
    def add(self, items: Sequence[PageItem]) -> None:
        if not items:
            return
        with self._lock:
            rows, vectors16 = [], []
            for record, vectors, image in items:
                if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] == 0:
                    raise DimensionMismatchError(f'{record.source} page {record.page_number}: vectors of shape '
                                                 f'{tuple(vectors.shape)} do not fit collection dim {self.dim}')
                if image is not None:
                    record.image_key = self.images.key_for(record.doc_id, record.page_id)
                    self.images.save(record.image_key, image)
                elif not record.image_key:
                    self.images.key_for(record.doc_id, record.page_id)   # ids must be safe path parts all the same
                record.n_vectors = int(vectors.shape[0])
                array = vectors.detach().to('cpu', torch.float32).numpy().astype(np.float16)
                vectors16.append(array)
                rows.append(self._row(record, vectors, array))
            # Commit order: images, token groups of pooled pages, vectors (Milvus for a server, then the local
            # file), then the page row that makes the page visible, then the change token other machines watch.
            self._put_token_groups([r for r, _, _ in items if r.token_groups is not None])
            if self.layout is not None:
                self.layout.write([(r.page_id, r.doc_id, a) for (r, _, _), a in zip(items, vectors16)])
            self.vectors.put([(r.page_id, r.doc_id, v) for r, v, _ in items])
            self._call('upsert', self._client.upsert, self.collection, rows)
            self._bump()

    def _row(self, record: PageRecord, vectors: torch.Tensor, array: np.ndarray) -> Dict[str, Any]:
        pooled = torch.nn.functional.normalize(vectors.float().mean(0), dim=0)
        row = {'page_id': record.page_id, 'doc_id': record.doc_id, 'source': record.source,
               'file_name': record.file_name, 'page': record.page_number, 'width': record.width,
               'height': record.height, 'image_key': record.image_key, 'content_sha': record.content_sha,
               'n_vectors': record.n_vectors, 'meta': record.metadata or {}, 'pooled': pooled.tolist()}
        if self.layout_name == 'struct':
            row.update(NativeStruct.row_fields(array))
        return row

    # -- token groups of pooled pages -------------------------------------------------------------------
    # A page stored with token pooling keeps, for each token the encoder emitted, the pooled row it went into:
    # what maps pooled vectors back to the patches they cover (similarity maps). One meta row per page, so
    # it lives in Milvus beside everything else of the collection and costs the search path nothing.
    _GROUPS = 'tokens:'

    def _put_token_groups(self, records: Sequence[PageRecord]) -> None:
        if not records:
            return
        rows = []
        for record in records:
            groups = np.asarray(torch.as_tensor(record.token_groups).cpu(), dtype=np.int64)
            dtype = 'uint16' if groups.max() < 1 << 16 else 'int32'
            data = base64.b64encode(groups.astype('<u2' if dtype == 'uint16' else '<i4').tobytes()).decode('ascii')
            rows.append({'key': self._GROUPS + record.page_id, 'v': [1.0, 0.0],
                         'value': {'dtype': dtype, 'rows': data}})
        self._call('upsert token groups', self._client.upsert, self._meta_name, rows)

    def token_groups(self, page_id: str) -> Optional[torch.Tensor]:
        """For a page stored with token pooling, the stored row of each token the encoder emitted (int64);
        None for a page stored as encoded."""
        value = self.get_meta(self._GROUPS + page_id, fast=True)
        if not value:
            return None
        raw = np.frombuffer(base64.b64decode(value['rows']), dtype='<u2' if value['dtype'] == 'uint16' else '<i4')
        return torch.from_numpy(raw.astype(np.int64))

    def delete_docs(self, doc_ids: Sequence[str]) -> int:
        ids = list(doc_ids)
        if not ids:
            return 0
        with self._lock:
            expr = filter_expression({'doc_id': ids})
            pages = [r['page_id'] for r in query_all(self._client, self._call, self.collection, expr, ['page_id'])]
            n = len(pages)
            # Make pages invisible first; leftovers of a crash here are unreferenced, not wrong (check reclaims).
            self._call('delete', self._client.delete, self.collection, filter=expr)
            if self.layout is not None:
                self.layout.delete_docs(ids)
            self.vectors.delete_docs(ids)
            self.images.delete_docs(ids)
            if pages:
                self._call('delete token groups', self._client.delete, self._meta_name,
                           ids=[self._GROUPS + p for p in pages])
            self._bump()
            return n

    # -- reads -----------------------------------------------------------------------------------------
    def _query(self, expr: str, fields: List[str]) -> List[Dict[str, Any]]:
        return query_all(self._client, self._call, self.collection, expr, fields)

    def missing(self, page_ids: Sequence[str]) -> Set[str]:
        """Pages that must be (re-)encoded. For a server only Milvus counts (a page another machine stored is
        fetched by :meth:`sync`, never re-encoded); for a Lite file the local vectors must be there too."""
        ids = list(page_ids)
        if not ids:
            return set()
        found = {r['page_id'] for r in self._call('get', self._client.get, self.collection, ids=ids,
                                                   output_fields=['page_id'])}
        if self.remote:
            return set(ids) - found
        return set(ids) - (found & self.vectors.has(ids))

    def doc_ids(self, doc_ids: Sequence[str]) -> Set[str]:
        """Which of ``doc_ids`` exist in this collection."""
        if not doc_ids:
            return set()
        rows = self._query(filter_expression({'doc_id': list(doc_ids)}), ['doc_id'])
        return {r['doc_id'] for r in rows}

    def records(self, page_ids: Sequence[str], images: bool = True) -> Dict[str, PageRecord]:
        """Page records by id. ``images``: resolve each ``image_path`` on this machine, re-rendering a missing
        image from its source (False for callers that only need ids and sources)."""
        ids = list(page_ids)
        if not ids:
            return {}
        rows = self._call('get', self._client.get, self.collection, ids=ids, output_fields=_RECORD_FIELDS, **_FAST_READ)
        out = {}
        for r in rows:
            record = PageRecord(page_id=r['page_id'], doc_id=r['doc_id'], source=r['source'], file_name=r['file_name'],
                                page_number=int(r['page']), width=int(r['width']), height=int(r['height']),
                                n_vectors=int(r['n_vectors']), metadata=r.get('meta') or {},
                                image_key=r['image_key'], content_sha=r['content_sha'])
            if images:
                record.image_path = str(self.image_file(record) or '')
            out[record.page_id] = record
        return out

    def image_file(self, record: PageRecord, rerender: bool = True) -> Optional[Path]:
        """The page image on this machine; a missing one is re-rendered from its source when that file is
        still there with the same content."""
        path = self.images.local_path(record.image_key)
        if path is None and rerender and record.image_key:
            image = rerender_page(record)
            if image is not None:
                self.images.save(record.image_key, image)
                path = self.images.local_path(record.image_key)
        return path

    def page_ids(self, filters: Filters = None) -> List[str]:
        return [r['page_id'] for r in query_all(self._client, self._call, self.collection, filter_expression(filters),
                                                ['page_id'], **_FAST_READ)]

    def packed(self) -> PackedMultiVectors:
        if self.remote:
            self.sync()
        return self.vectors.packed()

    def candidates(self, query: torch.Tensor, budget: int, filters: Filters = None) -> List[str]:
        """Approximate stage: native MaxSim on a struct-layout server; otherwise each query token searches the
        pooled page vectors and pages are ranked by the sum of their per-token scores."""
        limit = max(1, min(budget, _MAX_SEARCH_LIMIT))
        if self.layout_name == 'struct':
            hits = self._call('search', self._client.search, self.collection,
                              **struct_search_request(query.float().numpy(), limit, filter_expression(filters)),
                              **_FAST_READ)
            return [h['entity']['page_id'] if 'entity' in h else h['id'] for h in hits[0]]
        params = {'metric_type': 'IP', 'params': {'ef': max(limit, 64)} if self.index_type == 'HNSW' else {}}
        hits = self._call('search', self._client.search, self.collection, data=query.float().tolist(), limit=limit,
                          filter=filter_expression(filters), output_fields=['page_id'], search_params=params,
                          **_FAST_READ)
        totals: Dict[str, float] = {}
        for token_hits in hits:
            for hit in token_hits:
                page_id = hit['entity']['page_id'] if 'entity' in hit else hit['id']
                totals[page_id] = totals.get(page_id, 0.0) + float(hit['distance'])
        return sorted(totals, key=totals.__getitem__, reverse=True)[:budget]

    # -- dense search (the single-vector arm, lazyllm_colpali/dense.py) -----------------------------------
    def search_pooled(self, vector: torch.Tensor, limit: int, filters: Filters = None) -> List[tuple]:
        """``[(page_id, inner product)]``, best first: Milvus's own search (HNSW or FLAT) over the pages' dense
        field. For pages of one vector each (the dense arm) this is the whole search."""
        limit = max(1, min(limit, _MAX_SEARCH_LIMIT))
        params = {'metric_type': 'IP', 'params': {'ef': max(limit, 64)} if self.index_type == 'HNSW' else {}}
        hits = self._call('search', self._client.search, self.collection, data=[vector.float().reshape(-1).tolist()],
                          limit=limit, filter=filter_expression(filters), output_fields=['page_id'],
                          search_params=params, **_FAST_READ)
        return [(h['entity']['page_id'] if 'entity' in h else h['id'], float(h['distance'])) for h in hits[0]]

    def documents(self) -> List[Dict[str, Any]]:
        docs: Dict[str, Dict[str, Any]] = {}
        for row in self._query('', ['doc_id', 'source', 'file_name']):
            doc = docs.setdefault(row['doc_id'], {'doc_id': row['doc_id'], 'source': row['source'],
                                                  'file_name': row['file_name'], 'pages': 0})
            doc['pages'] += 1
        return sorted(docs.values(), key=lambda d: d['source'])

    def count(self) -> int:
        rows = self._call('count', self._client.query, self.collection, filter='', output_fields=['count(*)'])
        return int(rows[0]['count(*)'])

    # -- the local cache ------------------------------------------------------------------------------
    def sync(self, force: bool = False) -> Optional[Dict[str, int]]:
        """Bring this machine's vector cache in line with Milvus (server URIs): fetch pages other machines
        added, drop pages they deleted. Cheap when nothing changed (one ``get`` of the change token), and
        done at most every ``sync_interval`` seconds unless ``force``."""
        if not self.remote:
            return None
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_sync < self.sync_interval:
                return None
            self._last_sync = now
            change = self.get_meta('change', fast=not force) or {}
            token = change.get('token', '')
            if not force and token and token == self.vectors.info().get('synced_token'):
                return None
            rows = {r['page_id']: (int(r['n_vectors']), r['doc_id'])
                    for r in self._query('', ['page_id', 'doc_id', 'n_vectors'])}
            local = self.vectors.page_lengths()
            gone = [p for p in local if p not in rows]
            stale = [p for p, n in local.items() if p in rows and rows[p][0] != n]
            self.vectors.delete_pages(gone + stale)
            todo = {p: row for p, row in rows.items() if p not in local or p in stale}
            fetched, absent = self._fetch(todo)
            if not absent:
                self.vectors.set_info(synced_token=token)
            if todo or gone:
                LOG.info(f'Synced the vector cache with {self.uri} [{self.collection}]: {fetched} pages fetched, '
                         f'{len(gone)} dropped' + (f', {len(absent)} have no vectors in Milvus' if absent else ''))
            return {'fetched': fetched, 'dropped': len(gone), 'absent': len(absent)}

    def _fetch(self, todo: Dict[str, tuple]) -> tuple:
        """Fetch ``{page_id: (n_vectors, doc_id)}`` from Milvus into the local file; ``(fetched, absent ids)``."""
        from tqdm.auto import tqdm

        fetched, absent = 0, []
        ids = sorted(todo)
        with tqdm(total=len(ids), desc='Fetching vectors from Milvus', unit='page',
                  disable=len(ids) < 200) as bar:
            for start in range(0, len(ids), _SYNC_BATCH):
                batch = ids[start:start + _SYNC_BATCH]
                with self.vectors.file_lock.hold():   # another process on this data dir may be fetching too
                    batch = [p for p in batch if p not in self.vectors.has(batch)]
                    got = self.layout.read({p: todo[p][0] for p in batch}) if batch else {}
                    items = [(p, todo[p][1], torch.from_numpy(a.astype(np.float32))) for p, a in got.items()]
                    self.vectors.put(items)
                fetched += len(items)
                absent += [p for p in batch if p not in got]
                bar.update(len(ids[start:start + _SYNC_BATCH]))
        return fetched, absent

    # -- consistency ----------------------------------------------------------------------------------
    def check(self, repair: bool = False) -> Dict[str, Any]:
        """Cross-check Milvus rows, Milvus vectors (server), the local vector file and page images.

        Every list in the report is an inconsistency. ``repair`` fixes what can be fixed from what is stored:
        refetches vectors from Milvus (never deletes a row because this machine lacks its vectors), drops
        damaged or unreferenced local vectors, reclaims vectors/images no row references, re-renders missing
        images from their source, and compacts the vector file. Pages whose vectors exist nowhere are listed
        in ``needs_encoding`` (``lazyllm-colpali check --repair`` re-encodes them with the recorded model).
        """
        with self._lock:
            self.sync(force=True)   # a server's rows are the truth: bring this machine's cache in line first
            report = self._inspect()
            if not repair:
                return report
            self.vectors.delete_pages(report['damaged_vectors'] + report['vector_length_mismatch']
                                      + report['vectors_without_rows'])
            if self.remote:
                if report['orphan_milvus_vectors'] and self.layout is not None:
                    self.layout.delete_pages(report['orphan_milvus_vectors'])
                self.sync(force=True)
            records = self.records(report['missing_images'])   # records() re-renders missing images
            self.images.delete_docs(report['orphan_image_docs'])
            reclaimed = self.vectors.compact()
            after = self._inspect()
            after['reclaimed_vector_rows'] = reclaimed
            after['repaired_images'] = sum(1 for r in records.values() if r.image_path)
            return after

    def _inspect(self) -> Dict[str, Any]:
        rows = {r['page_id']: r for r in self._query('', ['page_id', 'doc_id', 'image_key', 'n_vectors'])}
        local = self.vectors.page_lengths()
        validation = self.vectors.validate()
        damaged = set(validation['damaged'])
        report: Dict[str, Any] = {
            'pages': len(rows),
            'rows_without_vectors': sorted(set(rows) - set(local) - damaged),
            'vectors_without_rows': sorted(set(local) - set(rows)),
            'damaged_vectors': sorted(damaged),
            'vector_length_mismatch': sorted(p for p, n in local.items()
                                             if p in rows and p not in damaged and int(rows[p]['n_vectors']) != n),
            'missing_images': sorted(p for p, r in rows.items()
                                     if r['image_key'] and not self.images.exists(r['image_key'])),
            'orphan_image_docs': sorted(set(self.images.doc_ids()) - {r['doc_id'] for r in rows.values()}),
            'dead_vector_rows': int(validation['dead_rows']),
        }
        if self.remote and self.layout is not None:
            stored = self.layout.stored_pages()
            report['rows_without_milvus_vectors'] = sorted(set(rows) - set(stored))
            report['orphan_milvus_vectors'] = sorted(set(stored) - set(rows))
        missing_everywhere = set(report.get('rows_without_milvus_vectors', [])) if self.remote else \
            set(report['rows_without_vectors']) | damaged
        report['needs_encoding'] = sorted(p for p in missing_everywhere if p in rows)
        return report

    def storage_bytes(self) -> Dict[str, int]:
        vectors = sum(p.stat().st_size for p in self.vectors.root.iterdir() if p.is_file())
        milvus = 0
        if not self.remote:
            milvus = sum(p.stat().st_size for p in Path(self.uri).expanduser().rglob('*') if p.is_file())
        return {'vectors': vectors, 'images': self.images.bytes_used(), 'milvus': milvus}

    def close(self) -> None:
        with self._lock:
            if getattr(self, 'vectors', None) is not None:
                self.vectors.close()
            if self._client is None:
                return
            try:
                self._client.close()
                if self._lite_path:
                    _lite_release(self._lite_path)
            except Exception as e:  # closing must not mask the caller's own error
                LOG.warning(f'closing Milvus client for {self.uri}: {e}')
            self._client = None


def rerender_page(record: PageRecord):
    """Render a page again (a PIL image) from its source file, if the file is still there with the same bytes;
    None otherwise."""
    from ..errors import DocumentError
    from ..ingest.render import render_page
    from ..ingest.sources import file_sha256

    source = Path(record.source)
    try:
        if not source.is_file() or (record.content_sha and file_sha256(source) != record.content_sha):
            return None
        return render_page(source, record.page_number, record.width, record.height)
    except (DocumentError, OSError) as e:
        LOG.warning(f'could not re-render {record.source} page {record.page_number}: {e}')
        return None
