"""Milvus backend: page records + one pooled candidate vector per page in Milvus, full multi-vectors in a
local :class:`LocalVectorFile`, page images in a :class:`PageImageStore`.

Why this split (measured in ../shared/notes/milvus.md and benchmarks/): Milvus Lite 3.2 has no native
multi-vector (MAX_SIM) field, and pulling a page's patch vectors back out of Milvus costs ~0.1 s per page,
while exact MaxSim over a contiguous local tensor scores thousands of pages in that time. So Milvus does
what it is good at (metadata, filters, deletes, ANN candidates) and exact scoring reads the local file.
The same code runs on a Lite file (``./colpali.db``) and on a server (``http://host:19530``).
"""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set
from urllib.parse import urlparse

import torch

from ..errors import DimensionMismatchError, StoreError
from ..ingest.records import PageRecord
from ..logging import LOG
from ..settings import DEFAULT_COLLECTION, data_home, default_db
from .base import Filters, MultiVectorStore, PageItem
from .image_store import PageImageStore
from .vector_file import LocalVectorFile, PackedMultiVectors

_REMOTE_SCHEMES = ('http', 'https', 'tcp', 'grpc', 'unix')
_RECORD_FIELDS = ['page_id', 'doc_id', 'source', 'file_name', 'page', 'width', 'height', 'image_path',
                  'n_vectors', 'meta']
_MAX_SEARCH_LIMIT = 16384  # Milvus's topk ceiling
_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)   # ~7.5 s: long enough for a restarting server, short for a dead one


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
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(int(value))


def filter_expression(filters: Filters) -> str:
    """Translate the store's filter dict into a Milvus boolean expression."""
    if not filters:
        return ''
    fields = {'doc_id': 'doc_id', 'file': 'file_name', 'file_name': 'file_name', 'source': 'source'}
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


class MilvusMultiVectorStore(MultiVectorStore):
    """Multi-vector page store on Milvus (Lite file by default, or a server URI).

    >>> store = MilvusMultiVectorStore(str(tmp / 'demo.db'), dim=4)   # a Milvus Lite file
    >>> store.count(), store.dim, store.index_type
    (0, 4, 'FLAT')
    >>> store.close()
    """

    def __init__(self, uri: Optional[str] = None, collection: str = DEFAULT_COLLECTION, *, dim: Optional[int] = None,
                 data_dir: Optional[str | Path] = None, vector_dtype: str = 'float16', image_format: str = 'jpeg',
                 index_type: Optional[str] = None, token: str = '', db_name: str = ''):
        self.uri = uri or default_db()
        self.collection = collection
        self.remote = is_remote_uri(self.uri)
        self.data_dir = Path(data_dir) if data_dir else default_data_dir(self.uri, collection)
        self.index_type = index_type or ('HNSW' if self.remote else 'FLAT')
        self._lock = threading.RLock()
        self._lite_path = None if self.remote else str(Path(self.uri).expanduser())
        self._client = self._connect(token, db_name)
        self.dim = self._open_collection(dim)
        self.vectors = LocalVectorFile(self.data_dir / 'vectors', self.dim, vector_dtype)
        self.images = PageImageStore(self.data_dir / 'pages', image_format=image_format)

    # -- connection ------------------------------------------------------------------------------------
    def _connect(self, token: str, db_name: str):
        from pymilvus import MilvusClient

        if not self.remote:
            Path(self.uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        kwargs = {'uri': self.uri if self.remote else self._lite_path, 'timeout': 10}
        if token:
            kwargs['token'] = token
        if db_name:
            kwargs['db_name'] = db_name
        try:
            client = MilvusClient(**kwargs)
            if self._lite_path:
                _lite_acquire(self._lite_path)
            return client
        except Exception as e:  # pymilvus raises several types (MilvusException, grpc errors, OSError)
            hint = ('is the server running and reachable?' if self.remote else
                    'is another process (an indexer or server) using this file? Milvus Lite allows one process')
            raise StoreError(f'cannot open Milvus at {self.uri!r} ({type(e).__name__}: {e}); {hint}') from e

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

    def _open_collection(self, dim: Optional[int]) -> int:
        from pymilvus import DataType

        client = self._client
        if self._call('list_collections', client.has_collection, self.collection):
            fields = self._call('describe_collection', client.describe_collection, self.collection)['fields']
            stored = next(int(f['params']['dim']) for f in fields if f['name'] == 'pooled')
            if dim is not None and dim != stored:
                raise DimensionMismatchError(
                    f'collection {self.collection!r} in {self.uri!r} holds {stored}-dim vectors but the model gives '
                    f'{dim}-dim vectors; use the model it was built with, or another --collection')
            # A collection reopened by a new process (or on a restarted server) starts released.
            self._call('load_collection', client.load_collection, self.collection)
            return stored
        if dim is None:
            raise StoreError(f'collection {self.collection!r} does not exist in {self.uri!r}; index some files first')
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field('page_id', DataType.VARCHAR, max_length=64, is_primary=True)
        schema.add_field('doc_id', DataType.VARCHAR, max_length=64)
        schema.add_field('source', DataType.VARCHAR, max_length=4096)
        schema.add_field('file_name', DataType.VARCHAR, max_length=1024)
        schema.add_field('page', DataType.INT64)
        schema.add_field('width', DataType.INT64)
        schema.add_field('height', DataType.INT64)
        schema.add_field('image_path', DataType.VARCHAR, max_length=4096)
        schema.add_field('n_vectors', DataType.INT64)
        schema.add_field('meta', DataType.JSON)
        schema.add_field('pooled', DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        params = {'M': 16, 'efConstruction': 200} if self.index_type == 'HNSW' else {}
        index.add_index(field_name='pooled', index_type=self.index_type, metric_type='IP', params=params)
        self._call('create_collection', client.create_collection, self.collection, schema=schema, index_params=index,
                   consistency_level='Strong')
        LOG.info(f'Created collection {self.collection!r} ({dim}-dim, {self.index_type}) in {self.uri}')
        return dim

    # -- writes ----------------------------------------------------------------------------------------
    def add(self, items: Sequence[PageItem]) -> None:
        if not items:
            return
        with self._lock:
            rows = []
            for record, vectors, image in items:
                if vectors.ndim != 2 or vectors.shape[1] != self.dim:
                    raise DimensionMismatchError(f'{record.source} page {record.page_number}: vectors of shape '
                                                 f'{tuple(vectors.shape)} do not fit collection dim {self.dim}')
                if image is not None:
                    record.image_path = str(self.images.save(record.doc_id, record.page_id, image))
                record.n_vectors = int(vectors.shape[0])
                rows.append(self._row(record, vectors))
            # Commit order: images, then vectors (fsync'ed), then the Milvus row that makes the page visible.
            self.vectors.put([(r.page_id, r.doc_id, v) for r, v, _ in items])
            self._call('upsert', self._client.upsert, self.collection, rows)

    @staticmethod
    def _row(record: PageRecord, vectors: torch.Tensor) -> Dict[str, Any]:
        pooled = torch.nn.functional.normalize(vectors.float().mean(0), dim=0)
        return {'page_id': record.page_id, 'doc_id': record.doc_id, 'source': record.source,
                'file_name': record.file_name, 'page': record.page_number, 'width': record.width,
                'height': record.height, 'image_path': record.image_path, 'n_vectors': record.n_vectors,
                'meta': record.metadata or {}, 'pooled': pooled.tolist()}

    def delete_docs(self, doc_ids: Sequence[str]) -> int:
        ids = list(doc_ids)
        if not ids:
            return 0
        with self._lock:
            expr = filter_expression({'doc_id': ids})
            n = len(self._query(expr, ['page_id']))
            # Make pages invisible first; leftover vectors/images of a crash here are unreferenced, not wrong.
            self._call('delete', self._client.delete, self.collection, filter=expr)
            self.vectors.delete_docs(ids)
            for doc_id in ids:
                self.images.delete_doc(doc_id)
            return n

    # -- reads -----------------------------------------------------------------------------------------
    def _query(self, expr: str, fields: List[str]) -> List[Dict[str, Any]]:
        # One bounded query covers most calls; the iterator (slower, noisier on Lite) only for bigger results.
        rows = self._call('query', self._client.query, self.collection, filter=expr, output_fields=fields,
                          limit=_MAX_SEARCH_LIMIT)
        if len(rows) < _MAX_SEARCH_LIMIT:
            return list(rows)
        iterator = self._call('query', self._client.query_iterator, self.collection, batch_size=4096,
                              filter=expr, output_fields=fields)
        rows = []
        try:
            while True:
                batch = self._call('query', iterator.next)
                if not batch:
                    return rows
                rows.extend(batch)
        finally:
            iterator.close()

    def missing(self, page_ids: Sequence[str]) -> Set[str]:
        ids = list(page_ids)
        if not ids:
            return set()
        found = {r['page_id'] for r in self._call('get', self._client.get, self.collection, ids=ids,
                                                   output_fields=['page_id'])}
        # Visible in Milvus but vectors absent locally (e.g. a new machine against a server) also counts as missing.
        return set(ids) - (found & self.vectors.has(ids))

    def records(self, page_ids: Sequence[str]) -> Dict[str, PageRecord]:
        ids = list(page_ids)
        if not ids:
            return {}
        rows = self._call('get', self._client.get, self.collection, ids=ids, output_fields=_RECORD_FIELDS)
        return {r['page_id']: PageRecord(page_id=r['page_id'], doc_id=r['doc_id'], source=r['source'],
                                         file_name=r['file_name'], page_number=int(r['page']), width=int(r['width']),
                                         height=int(r['height']), image_path=r['image_path'],
                                         n_vectors=int(r['n_vectors']), metadata=r.get('meta') or {})
                for r in rows}

    def page_ids(self, filters: Filters = None) -> List[str]:
        return [r['page_id'] for r in self._query(filter_expression(filters), ['page_id'])]

    def packed(self) -> PackedMultiVectors:
        return self.vectors.packed()

    def candidates(self, query: torch.Tensor, budget: int, filters: Filters = None) -> List[str]:
        """Approximate stage: each query token searches the pooled page vectors; pages are ranked by the sum
        of their per-token scores over the tokens that found them."""
        limit = max(1, min(budget, _MAX_SEARCH_LIMIT))
        params = {'metric_type': 'IP', 'params': {'ef': max(limit, 64)} if self.index_type == 'HNSW' else {}}
        hits = self._call('search', self._client.search, self.collection, data=query.float().tolist(), limit=limit,
                          filter=filter_expression(filters), output_fields=['page_id'], search_params=params)
        totals: Dict[str, float] = {}
        for token_hits in hits:
            for hit in token_hits:
                page_id = hit['entity']['page_id'] if 'entity' in hit else hit['id']
                totals[page_id] = totals.get(page_id, 0.0) + float(hit['distance'])
        return sorted(totals, key=totals.__getitem__, reverse=True)[:budget]

    def documents(self) -> List[Dict[str, Any]]:
        docs: Dict[str, Dict[str, Any]] = {}
        for row in self._query('', ['doc_id', 'source', 'file_name']):
            doc = docs.setdefault(row['doc_id'], {'doc_id': row['doc_id'], 'source': row['source'],
                                                  'file_name': row['file_name'], 'pages': 0})
            doc['pages'] += 1
        return sorted(docs.values(), key=lambda d: d['source'])

    def check(self, repair: bool = False) -> Dict[str, Any]:
        """Cross-check Milvus rows, local vectors and page images. A crash between the commit steps can
        leave vectors or images that no row references (harmless, reclaimable); a row whose vectors are
        gone (e.g. a lost data dir on a server) cannot be scored. ``repair`` drops the unreferenced parts,
        deletes rows without vectors (re-indexing the file restores them) and compacts the vector file."""
        rows = self._row_index()
        local = self.vectors.page_docs()
        report = {'pages': len(rows), 'rows_without_vectors': sorted(set(rows) - set(local)),
                  'vectors_without_rows': sorted(set(local) - set(rows)),
                  'missing_images': sorted(p for p, r in rows.items() if r['image_path'] and
                                           not Path(r['image_path']).is_file()),
                  'orphan_image_docs': self._orphan_image_docs(rows),
                  'dead_vector_rows': self.vectors.dead_rows()}
        if repair:
            if report['rows_without_vectors']:
                self._call('delete', self._client.delete, self.collection, ids=report['rows_without_vectors'])
            self.vectors.delete_pages(report['vectors_without_rows'])
            for doc_id in self._orphan_image_docs(self._row_index()):   # rows deleted just now included
                self.images.delete_doc(doc_id)
            report['reclaimed_vector_rows'] = self.vectors.compact()
        return report

    def _row_index(self) -> Dict[str, Dict[str, Any]]:
        return {r['page_id']: r for r in self._query('', ['page_id', 'doc_id', 'image_path'])}

    def _orphan_image_docs(self, rows: Dict[str, Dict[str, Any]]) -> List[str]:
        live = {r['doc_id'] for r in rows.values()}
        return sorted(d.name for d in self.images.root.iterdir() if d.is_dir() and d.name not in live)

    def count(self) -> int:
        rows = self._call('count', self._client.query, self.collection, filter='', output_fields=['count(*)'])
        return int(rows[0]['count(*)'])

    def storage_bytes(self) -> Dict[str, int]:
        vectors = sum(p.stat().st_size for p in self.vectors.root.iterdir() if p.is_file())
        milvus = 0
        if not self.remote:
            milvus = sum(p.stat().st_size for p in Path(self.uri).expanduser().rglob('*') if p.is_file())
        return {'vectors': vectors, 'images': self.images.bytes_used(), 'milvus': milvus}

    def close(self) -> None:
        with self._lock:
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
