"""Milvus backend: page rows, a meta row, and (for a server URI) the full multi-vectors live in Milvus; a local
:class:`LocalVectorFile` is what exact MaxSim reads; page images live in a keyed :class:`PageImageStore`.

Two modes, one code path:

- **Milvus Lite file** (``./colpali.db``): one machine. Milvus holds page rows; the local vector file is the
  authority for vectors (Lite has no FLOAT16 vectors and fetching vectors back costs 75-300x a local read).
- **Server URI** (``http://host:19530``): Milvus is the source of truth for everything. Page vectors are kept
  in Milvus (:mod:`.milvus_vectors`), so any machine rebuilds its local cache from it (:mod:`.cache_sync`).
  Search never reads vectors from Milvus per query.

Faults it is built for (docs/faults.md): a server that restarts (:mod:`.milvus_calls`), a creation killed
half-way (:mod:`.collections`), bytes that rot in a cache (:mod:`.integrity`), a writer killed before its
change token, the same path on two machines (:mod:`.source_registry`), hostile rows and filter values.
"""
from __future__ import annotations

import base64
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set
from urllib.parse import urlparse

import numpy as np
import torch

from ..errors import DimensionMismatchError, StoreError, StoreUnavailableError
from ..ingest.records import PageRecord
from ..logging import LOG, drop_alloc_timestamp_noise
from ..settings import DEFAULT_COLLECTION, data_home, default_db
from .base import Filters, MultiVectorStore, PageItem
from .cache_sync import CacheSync
from .collections import OwnedCollection
from .consistency import ConsistencyCheck
from .image_store import PageImageStore, check_image_key, check_key_part, own_image_key
from .integrity import ROW_META_KEY, fp16_checksum, split_meta
from .milvus_calls import DOWN_HINT, RETRY_DELAYS, MilvusCaller
from .milvus_query import FAST_READ, MAX_SEARCH_LIMIT, filter_expression, query_all  # noqa: F401 (re-exported)
from .milvus_vectors import NativeStruct, VectorLayout, struct_search_request
from .schema import CollectionSchema
from .source_registry import SourceClaim, SourceRegistry
from .vector_file import LocalVectorFile

_REMOTE_SCHEMES = ('http', 'https', 'tcp', 'grpc', 'unix')
_RECORD_FIELDS = ['page_id', 'doc_id', 'source', 'file_name', 'page', 'width', 'height', 'image_key', 'content_sha',
                  'n_vectors', 'meta']


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
    import re

    if is_remote_uri(uri):
        parsed = urlparse(uri)
        slug = re.sub(r'[^A-Za-z0-9_.-]+', '_', f'{parsed.hostname}_{parsed.port or ""}{parsed.path}').strip('_')
        return data_home() / 'servers' / slug / collection
    db = Path(uri).expanduser().resolve()
    return db.parent / f'{db.name}.assets' / collection


def connect(uri: str, *, token: str = '', db_name: str = '', retry_delays: Sequence[float] = RETRY_DELAYS):
    """A ``MilvusClient`` for a Lite path or a server URI (a server that is starting gets ``retry_delays``)."""
    from pymilvus import MilvusClient

    remote = is_remote_uri(uri)
    if not remote:
        Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        # Milvus Lite's embedded gRPC server logs a harmless AllocTimestamp traceback on each new collection
        drop_alloc_timestamp_noise()
    kwargs = {'uri': uri if remote else str(Path(uri).expanduser()), 'timeout': 10}
    if token:
        kwargs['token'] = token
    if db_name:
        kwargs['db_name'] = db_name
    error: Exception = StoreError('not tried')
    for attempt in range(len(retry_delays) + 1 if remote else 1):
        if attempt:
            time.sleep(retry_delays[attempt - 1])   # a busy or restarting server: try again
        try:
            return MilvusClient(**kwargs)
        except Exception as e:  # pymilvus raises several types (MilvusException, grpc errors, OSError)
            error = e
    hint = (DOWN_HINT if remote else
            'is another process (an indexer or server) using this file? Milvus Lite allows one process; '
            'to share a collection between processes run `milvus-lite server` or Milvus and use its URI')
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ''
    cls = StoreUnavailableError if remote else StoreError
    raise cls(f'cannot open Milvus at {uri!r} ({type(error).__name__}: {first_line}); {hint}') from None


class MilvusMultiVectorStore(CollectionSchema, CacheSync, ConsistencyCheck, MultiVectorStore):
    """Multi-vector page store on Milvus (Lite file by default, or a server URI).

    ``data_dir`` is this machine's cache (the local vector file); ``shared_dir`` holds what every machine
    must see the same way (page images, the centroid index): point all machines at one shared folder.
    ``sync_interval``: how often (s) a reader looks for other machines' writes (change token and row count);
    ``full_sync_interval``: how often it lists every row regardless (a writer may die before its token);
    ``verify_interval`` / ``verify_pages``: how often and how many cached pages are checked against their
    checksums while serving; ``retry_delays``: the backoff for a server that is down or restarting.

    >>> store = MilvusMultiVectorStore(str(tmp / 'demo.db'), dim=4)   # a Milvus Lite file
    >>> store.count(), store.dim, store.index_type, store.layout_name
    (0, 4, 'FLAT', 'local')
    >>> store.close()
    """

    def __init__(self, uri: Optional[str] = None, collection: str = DEFAULT_COLLECTION, *, dim: Optional[int] = None,
                 data_dir: Optional[str | Path] = None, shared_dir: Optional[str | Path] = None,
                 vector_dtype: str = 'float16', image_format: str = 'jpeg', index_type: Optional[str] = None,
                 token: str = '', db_name: str = '', sync_interval: float = 5.0, layout: Optional[str] = None,
                 lock_timeout: float = 120.0, create: bool = True, full_sync_interval: float = 60.0,
                 verify_interval: float = 30.0, verify_pages: int = 64, retry_delays: Sequence[float] = RETRY_DELAYS):
        self.uri = uri or default_db()
        self.collection = collection
        self.remote = is_remote_uri(self.uri)
        self.data_dir = Path(data_dir) if data_dir else default_data_dir(self.uri, collection)
        self.shared_dir = Path(shared_dir) if shared_dir else self.data_dir
        self.index_type = index_type or ('HNSW' if self.remote else 'FLAT')
        self._lock = threading.RLock()
        self._warned_keys: Set[tuple] = set()
        self._lite_path = None if self.remote else str(Path(self.uri).expanduser())
        if not self.remote and not create and not Path(self._lite_path).exists():
            raise StoreError(f'no collection store at {self.uri!r}: the Milvus Lite path does not exist; check --db '
                             f'(or index some files first)')
        self._client = self._connect(token, db_name, retry_delays)
        self._caller = MilvusCaller(self.uri, collection, self.remote, self._reload, retry_delays)
        self._meta_name = f'{collection}__meta'
        self.sources = SourceRegistry(self._client, self._call, collection)
        self._companions: List[OwnedCollection] = []
        self.layout: Optional[VectorLayout] = None
        self.layout_name = ''
        try:
            self.dim, self.layout_name = self._open_collection(dim, layout, create)
            if create:
                # Made now, not at the first claim: a server restarting while Milvus Lite's server creates a
                # collection can leave its folder behind unregistered ("File exists" on every retry).
                self.sources.ensure()
        except Exception:
            self.close()
            raise
        self.vectors = LocalVectorFile(self.data_dir / 'vectors', self.dim, vector_dtype, lock_timeout=lock_timeout)
        self.images = PageImageStore(self.shared_dir / 'pages', image_format=image_format)
        self._init_sync(sync_interval, full_sync_interval, verify_interval, verify_pages)

    # -- connection ------------------------------------------------------------------------------------
    def _connect(self, token: str, db_name: str, retry_delays: Sequence[float]):
        client = connect(self.uri, token=token, db_name=db_name, retry_delays=retry_delays)
        if self._lite_path:
            _lite_acquire(self._lite_path)
        return client

    def _call(self, what: str, fn, *args, **kwargs):
        return self._caller(what, fn, *args, **kwargs)

    @property
    def unavailable(self) -> str:
        """Why Milvus is unreachable right now ('' while it answers): the last connection error."""
        return self._caller.last_error if self._caller.down else ''

    def ping(self) -> None:
        """One cheap call to Milvus (raises :class:`StoreUnavailableError` while it cannot be reached)."""
        self._call('list_collections', self._client.has_collection, self.collection)

    def _reload(self) -> None:
        """Load every collection of this store again (a restarted server leaves them all released)."""
        for spec in self.owned_collections():
            if spec.load:
                try:
                    self._client.load_collection(spec.name)
                except Exception as e:   # one not there (the registry before first use) must not stop the rest
                    LOG.info(f'loading {spec.name!r} again on {self.uri}: {type(e).__name__}: {e}')

    # -- meta rows (schema, model, change token) ------------------------------------------------------
    def get_meta(self, key: str, fast: bool = False) -> Optional[Dict[str, Any]]:
        rows = self._call('get meta', self._client.get, self._meta_name, ids=[key], output_fields=['value'],
                          **(FAST_READ if fast else {}))
        return rows[0]['value'] if rows else None

    def set_meta(self, key: str, value: Dict[str, Any]) -> None:
        self._call('upsert meta', self._client.upsert, self._meta_name, [{'key': key, 'value': value, 'v': [1.0, 0.0]}])

    def _bump(self) -> None:
        """Tell every machine's cache that this collection changed (after the change is visible). Readers also
        watch the row count and list every row now and then, so a writer killed before this line is seen too."""
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
            for record, vectors, image in items:   # every item is checked before anything is written
                if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] == 0:
                    raise DimensionMismatchError(f'{record.source} page {record.page_number}: vectors of shape '
                                                 f'{tuple(vectors.shape)} do not fit collection dim {self.dim}')
                self.images.key_for(record.doc_id, record.page_id)   # ids must be safe path parts
                if image is None and record.image_key:
                    check_image_key(record.image_key, record.doc_id, record.page_id)
            rows, vectors16 = [], []
            for record, vectors, image in items:
                if image is not None:
                    record.image_key = self.images.key_for(record.doc_id, record.page_id)
                    self.images.save(record.image_key, image)
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
        meta = split_meta(record.metadata)[0]
        meta[ROW_META_KEY] = {'crc': fp16_checksum(array)}
        row = {'page_id': record.page_id, 'doc_id': record.doc_id, 'source': record.source,
               'file_name': record.file_name, 'page': record.page_number, 'width': record.width,
               'height': record.height, 'image_key': record.image_key, 'content_sha': record.content_sha,
               'n_vectors': record.n_vectors, 'meta': meta, 'pooled': pooled.tolist()}
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
        ids = [check_key_part(d, 'doc id') for d in doc_ids]   # all checked before anything is deleted
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
            self.sources.forget_docs(ids)
            self._bump()
            return n

    def delete_pages(self, page_ids: Sequence[str]) -> List[str]:
        """Delete single pages (rows, vectors, images); returns the ids of the pages that existed. A document
        whose last page goes is gone, source claims included."""
        ids = [check_key_part(p, 'page id') for p in page_ids]
        if not ids:
            return []
        with self._lock:
            rows = self._query(filter_expression({'page_id': ids}), ['page_id', 'doc_id', 'image_key'])
            if not rows:
                return []
            found = [r['page_id'] for r in rows]
            self._call('delete', self._client.delete, self.collection, filter=filter_expression({'page_id': found}))
            if self.layout is not None:
                self.layout.delete_pages(found)
            self.vectors.delete_pages(found)
            for row in rows:
                try:
                    self.images.delete_page(check_image_key(row['image_key'], row['doc_id'], row['page_id']))
                except ValueError:
                    pass   # a bad key names no file of ours
            docs = {r['doc_id'] for r in rows}
            emptied = sorted(docs - self.doc_ids(sorted(docs)))
            self.images.delete_docs(emptied)
            self.sources.forget_docs(emptied)
            self._bump()
            return sorted(found)

    # -- where documents come from (see source_registry) ----------------------------------------------------
    def source_claims(self, source: str) -> List[SourceClaim]:
        """Which prefixes hold which version (doc id) of the file at path ``source``."""
        return self.sources.at(source)

    def claim_source(self, doc_id: str, prefix: str, source: str, mtime: float) -> None:
        """Record that ``prefix``'s file at ``source`` (modified at ``mtime``) is document ``doc_id``."""
        self.sources.claim(check_key_part(doc_id, 'doc id'), prefix, source, mtime)

    def replace_older_versions(self, doc_id: str, source: str, prefix: str) -> List[str]:
        """After ``doc_id`` is stored and claimed for ``(prefix, source)``: release ``prefix``'s claims on other
        versions at ``source`` and delete those no other prefix claims. Documents at ``source`` that nobody
        claims (indexed before claims were recorded) count as this machine's on a Milvus Lite file (one machine)
        and are kept, with a warning, on a server. Returns the deleted doc ids."""
        with self._lock:
            claims = self.sources.at(source)
            older = {c.doc_id for c in claims if c.prefix == prefix and c.doc_id != doc_id}
            held_elsewhere = {c.doc_id for c in claims if c.prefix != prefix}
            claimed = {c.doc_id for c in claims}
            stored = {r['doc_id'] for r in self._query(filter_expression({'source': source}), ['doc_id'])}
            unclaimed = stored - claimed - {doc_id}
            if unclaimed and self.remote:
                LOG.warning(f'{source}: kept {len(unclaimed)} version(s) indexed before source prefixes were '
                            f'recorded ({", ".join(sorted(unclaimed))}); if they are older copies of this file, '
                            f'delete them: lazyllm-colpali delete {" ".join(sorted(unclaimed))}')
                unclaimed = set()
            doomed = sorted((older - held_elsewhere) | unclaimed)
            if doomed:
                self.delete_docs(doomed)   # deletes their claims too
            for old in sorted(older & held_elsewhere):
                self.sources.release(old, prefix)
            return doomed

    def source_documents(self) -> List[SourceClaim]:
        """Every recorded claim (document, prefix, path, modification time)."""
        return self.sources.all()

    # -- reads -----------------------------------------------------------------------------------------
    def _query(self, expr: str, fields: List[str], **kwargs: Any) -> List[Dict[str, Any]]:
        return query_all(self._client, self._call, self.collection, expr, fields, **kwargs)

    def _count(self, collection: Optional[str] = None, fast: bool = False) -> int:
        rows = self._call('count', self._client.query, collection or self.collection, filter='',
                          output_fields=['count(*)'], **(FAST_READ if fast else {}))
        return int(rows[0]['count(*)'])

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

    def records(self, page_ids: Sequence[str], images: bool = True, fresh: bool = False) -> Dict[str, PageRecord]:
        """Page records by id. ``images``: resolve each ``image_path`` on this machine, re-rendering a missing
        image from its source (False for callers that only need ids and sources). With ``images``, a row whose
        image key is not its own page's (a hostile or broken writer) is left out - one bad page, never a failed
        search - and reported by :meth:`check`. ``fresh``: a Strong read (see :meth:`page_ids`)."""
        ids = list(page_ids)
        if not ids:
            return {}
        rows = self._call('get', self._client.get, self.collection, ids=ids, output_fields=_RECORD_FIELDS,
                          **({} if fresh else FAST_READ))
        out = {}
        for r in rows:
            metadata, own = split_meta(r.get('meta'))
            record = PageRecord(page_id=r['page_id'], doc_id=r['doc_id'], source=r['source'], file_name=r['file_name'],
                                page_number=int(r['page']), width=int(r['width']), height=int(r['height']),
                                n_vectors=int(r['n_vectors']), metadata=metadata,
                                image_key=r['image_key'], content_sha=r['content_sha'])
            if images:
                if record.image_key and not own_image_key(record.image_key, record.doc_id, record.page_id):
                    self._warn_once(('key', record.page_id), f'page {record.page_id} has an invalid image key '
                                    f'{record.image_key!r}; it is left out of results (run `lazyllm-colpali check`)')
                    continue
                record.image_path = str(self.image_file(record) or '')
            out[record.page_id] = record
        return out

    def _warn_once(self, key: tuple, message: str) -> None:
        if key not in self._warned_keys:
            self._warned_keys.add(key)
            LOG.warning(message)

    def image_file(self, record: PageRecord, rerender: bool = True) -> Optional[Path]:
        """The page image on this machine; a missing one is re-rendered from its source when that file is
        still there with the same content."""
        if not record.image_key or not own_image_key(record.image_key, record.doc_id, record.page_id):
            return None
        path = self.images.local_path(record.image_key)
        if path is None and rerender:
            image = rerender_page(record)
            if image is not None:
                self.images.save(record.image_key, image)
                path = self.images.local_path(record.image_key)
        return path

    def page_ids(self, filters: Filters = None, fresh: bool = False) -> List[str]:
        """Ids of the pages ``filters`` select. ``fresh``: a Strong read that sees every committed write (for
        deciding what to delete); by default a query-path read that may lag a few seconds."""
        return [r['page_id'] for r in self._query(filter_expression(filters), ['page_id'],
                                                  **({} if fresh else FAST_READ))]

    def candidates(self, query: torch.Tensor, budget: int, filters: Filters = None) -> List[str]:
        """Approximate stage: native MaxSim on a struct-layout server; otherwise each query token searches the
        pooled page vectors and pages are ranked by the sum of their per-token scores."""
        limit = max(1, min(budget, MAX_SEARCH_LIMIT))
        if self.layout_name == 'struct':
            hits = self._call('search', self._client.search, self.collection,
                              **struct_search_request(query.float().numpy(), limit, filter_expression(filters)),
                              **FAST_READ)
            return [h['entity']['page_id'] if 'entity' in h else h['id'] for h in hits[0]]
        params = {'metric_type': 'IP', 'params': {'ef': max(limit, 64)} if self.index_type == 'HNSW' else {}}
        hits = self._call('search', self._client.search, self.collection, data=query.float().tolist(), limit=limit,
                          filter=filter_expression(filters), output_fields=['page_id'], search_params=params,
                          **FAST_READ)
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
        limit = max(1, min(limit, MAX_SEARCH_LIMIT))
        params = {'metric_type': 'IP', 'params': {'ef': max(limit, 64)} if self.index_type == 'HNSW' else {}}
        hits = self._call('search', self._client.search, self.collection, data=[vector.float().reshape(-1).tolist()],
                          limit=limit, filter=filter_expression(filters), output_fields=['page_id'],
                          search_params=params, **FAST_READ)
        return [(h['entity']['page_id'] if 'entity' in h else h['id'], float(h['distance'])) for h in hits[0]]

    def documents(self) -> List[Dict[str, Any]]:
        docs: Dict[str, Dict[str, Any]] = {}
        for row in self._query('', ['doc_id', 'source', 'file_name']):
            doc = docs.setdefault(row['doc_id'], {'doc_id': row['doc_id'], 'source': row['source'],
                                                  'file_name': row['file_name'], 'pages': 0})
            doc['pages'] += 1
        return sorted(docs.values(), key=lambda d: d['source'])

    def count(self) -> int:
        return self._count()

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
