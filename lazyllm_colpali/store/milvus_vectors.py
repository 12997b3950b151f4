"""How a page's full multi-vector is kept in a Milvus server, so any machine can rebuild its cache from it.

Two layouts behind one small interface, chosen by probing the server when a collection is created (the
choice is recorded in the collection's meta row, so reopening never probes again):

- :class:`BlobRows` (Milvus < 2.6.4, Milvus Lite's gRPC server): a companion collection
  ``<collection>__vectors`` with one wide row per ``rows_tokens`` tokens of a page (32768 values,
  FLOAT16_VECTOR where the server has it, else FLOAT_VECTOR holding the same fp16 values). Measured in
  benchmarks/bench_store.py against one row per patch vector: 10-20x fewer rows to insert and read back.
- :class:`NativeStruct` (Milvus >= 2.6.4): an Array-of-Structs field ``patches`` on the page row itself,
  indexed with ``MAX_SIM_IP``, so the server can also run MaxSim candidate search natively
  (``EmbeddingList`` queries). Not runnable on this machine: its schema and requests are unit-tested, and
  :func:`supports_native_struct` detects servers that silently drop the struct field.
"""
from __future__ import annotations

import logging
import math
import re
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .milvus_query import filter_expression, query_all

MAX_VECTOR_DIM = 32768          # Milvus's widest vector field
STRUCT_MAX_TOKENS = 2048        # patches per page in the native layout (ColQwen2 pages have <= ~1030)

Call = Callable[..., Any]       # the store's retrying wrapper: call(what, fn, *args, **kwargs)


class VectorLayout(ABC):
    """Writes, reads and deletes full multi-vectors of pages in Milvus."""

    name: str

    @abstractmethod
    def write(self, items: Sequence[Tuple[str, str, np.ndarray]]) -> None:
        """``(page_id, doc_id, float16 array (n, dim))`` items; an existing page is replaced."""

    @abstractmethod
    def read(self, pages: Mapping[str, int]) -> Dict[str, np.ndarray]:
        """``{page_id: n_tokens} -> {page_id: float16 array}``; pages Milvus lacks are absent."""

    @abstractmethod
    def delete_docs(self, doc_ids: Sequence[str]) -> None: ...

    @abstractmethod
    def stored_pages(self) -> Dict[str, str]:
        """``page_id -> doc_id`` of every page with vectors in Milvus."""


def blob_row_tokens(dim: int) -> int:
    return max(1, MAX_VECTOR_DIM // dim)


class BlobRows(VectorLayout):
    """Pages as a few wide rows in ``<collection>__vectors`` (ids ``<page_id>:<part>``)."""

    name = 'blob'

    def __init__(self, client, call: Call, collection: str, dim: int, float16: bool):
        self.client, self.call, self.dim, self.float16 = client, call, dim, float16
        self.collection = f'{collection}__vectors'
        self.row_tokens = blob_row_tokens(dim)
        self.width = self.row_tokens * dim

    def schema(self):
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field('chunk_id', DataType.VARCHAR, max_length=96, is_primary=True)
        schema.add_field('page_id', DataType.VARCHAR, max_length=64)
        schema.add_field('doc_id', DataType.VARCHAR, max_length=64)
        schema.add_field('part', DataType.INT64)
        schema.add_field('blob', DataType.FLOAT16_VECTOR if self.float16 else DataType.FLOAT_VECTOR, dim=self.width)
        return schema

    def index(self):
        index = self.client.prepare_index_params()
        index.add_index(field_name='blob', index_type='FLAT', metric_type='IP')   # never searched; Milvus needs one
        return index

    def open(self) -> None:
        self.call('load_collection', self.client.load_collection, self.collection)

    def parts(self, n_tokens: int) -> int:
        return max(1, math.ceil(n_tokens / self.row_tokens))

    def rows(self, page_id: str, doc_id: str, vectors: np.ndarray) -> List[Dict[str, Any]]:
        flat = np.ascontiguousarray(vectors, dtype=np.float16).reshape(-1)
        rows = []
        for part in range(self.parts(len(vectors))):
            chunk = np.zeros(self.width, dtype=np.float16)
            piece = flat[part * self.width:(part + 1) * self.width]
            chunk[:len(piece)] = piece
            rows.append({'chunk_id': f'{page_id}:{part}', 'page_id': page_id, 'doc_id': doc_id, 'part': part,
                         'blob': chunk if self.float16 else chunk.astype(np.float32)})
        return rows

    def write(self, items: Sequence[Tuple[str, str, np.ndarray]]) -> None:
        batch: List[Dict[str, Any]] = []
        for page_id, doc_id, vectors in items:
            batch.extend(self.rows(page_id, doc_id, vectors))
            if len(batch) >= 64:   # ~4-8 MB per request, well under gRPC's message limit
                self.call('upsert vectors', self.client.upsert, self.collection, batch)
                batch = []
        if batch:
            self.call('upsert vectors', self.client.upsert, self.collection, batch)

    def _decode(self, value: Any) -> np.ndarray:
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (bytes, bytearray)):
            value = value[0]          # FLOAT16_VECTOR comes back as raw bytes
        if isinstance(value, (bytes, bytearray)):
            return np.frombuffer(value, dtype=np.float16)
        return np.asarray(value, dtype=np.float32).astype(np.float16)

    def read(self, pages: Mapping[str, int]) -> Dict[str, np.ndarray]:
        ids = [f'{page_id}:{part}' for page_id, n in pages.items() for part in range(self.parts(n))]
        chunks: Dict[str, np.ndarray] = {}
        for start in range(0, len(ids), 64):
            rows = self.call('get vectors', self.client.get, self.collection, ids=ids[start:start + 64],
                             output_fields=['chunk_id', 'blob'])
            for row in rows:
                chunks[row['chunk_id']] = self._decode(row['blob'])
        out = {}
        for page_id, n in pages.items():
            parts = [chunks.get(f'{page_id}:{part}') for part in range(self.parts(n))]
            if any(p is None for p in parts):
                continue   # incomplete in Milvus (a writer died mid-page): treat as absent
            out[page_id] = np.concatenate(parts)[:n * self.dim].reshape(n, self.dim)
        return out

    def delete_docs(self, doc_ids: Sequence[str]) -> None:
        self.call('delete vectors', self.client.delete, self.collection, filter=filter_expression({'doc_id': doc_ids}))

    def delete_pages(self, page_ids: Sequence[str]) -> None:
        if page_ids:
            self.call('delete vectors', self.client.delete, self.collection,
                      filter=filter_expression({'page_id': list(page_ids)}))

    def stored_pages(self) -> Dict[str, str]:
        rows = query_all(self.client, self.call, self.collection, 'part == 0', ['page_id', 'doc_id'])
        return {r['page_id']: r['doc_id'] for r in rows}

    def drop(self) -> None:
        self.call('drop_collection', self.client.drop_collection, self.collection)


# -- Milvus >= 2.6.4: the page row carries its patches as an Array of Structs ------------------------------
def add_struct_field(client, schema, dim: int) -> None:
    """Add ``patches: ARRAY<STRUCT{vec: FLOAT_VECTOR(dim)}>`` to a page schema."""
    from pymilvus import DataType

    struct = client.create_struct_field_schema()
    struct.add_field('vec', DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field('patches', DataType.ARRAY, element_type=DataType.STRUCT, struct_schema=struct,
                     max_capacity=STRUCT_MAX_TOKENS)


def add_struct_index(index_params, index_type: str = 'HNSW') -> None:
    params = {'M': 16, 'efConstruction': 200} if index_type == 'HNSW' else {}
    index_params.add_index(field_name='patches[vec]', index_type=index_type, metric_type='MAX_SIM_IP', params=params)


def struct_search_request(query: np.ndarray, limit: int, expr: str = '') -> Dict[str, Any]:
    """Keyword arguments of ``MilvusClient.search`` for native MaxSim over the ``patches`` field."""
    from pymilvus.client.embedding_list import EmbeddingList

    return {'data': [EmbeddingList(np.asarray(query, dtype=np.float32))], 'anns_field': 'patches[vec]',
            'limit': limit, 'filter': expr, 'output_fields': ['page_id'],
            'search_params': {'metric_type': 'MAX_SIM_IP', 'params': {}}}


def has_struct_field(description: Mapping[str, Any], name: str = 'patches') -> bool:
    """Whether ``describe_collection`` shows the struct field (servers before 2.6.4 drop it silently)."""
    fields = list(description.get('fields', [])) + list(description.get('struct_array_fields', None) or [])
    fields += list(description.get('struct_fields', None) or [])
    return any(f.get('name') == name for f in fields)


class NativeStruct(VectorLayout):
    """Multi-vectors in the page collection's ``patches`` field (Milvus >= 2.6.4)."""

    name = 'struct'

    def __init__(self, client, call: Call, collection: str, dim: int):
        self.client, self.call, self.collection, self.dim = client, call, collection, dim

    @staticmethod
    def row_fields(vectors: np.ndarray) -> Dict[str, Any]:
        """The extra page-row field: one struct per patch vector."""
        if len(vectors) > STRUCT_MAX_TOKENS:
            raise ValueError(f'{len(vectors)} patch vectors exceed the struct field capacity {STRUCT_MAX_TOKENS}')
        return {'patches': [{'vec': v} for v in np.asarray(vectors, dtype=np.float32).tolist()]}

    def write(self, items: Sequence[Tuple[str, str, np.ndarray]]) -> None:
        pass   # written with the page row itself (see MilvusMultiVectorStore.add)

    def read(self, pages: Mapping[str, int]) -> Dict[str, np.ndarray]:
        ids = list(pages)
        out = {}
        for start in range(0, len(ids), 32):
            rows = self.call('get vectors', self.client.get, self.collection, ids=ids[start:start + 32],
                             output_fields=['page_id', 'patches'])
            for row in rows:
                out[row['page_id']] = np.asarray([p['vec'] for p in row['patches']], dtype=np.float16)
        return out

    def delete_docs(self, doc_ids: Sequence[str]) -> None:
        pass   # deleted with the page rows

    def delete_pages(self, page_ids: Sequence[str]) -> None:
        pass

    def stored_pages(self) -> Dict[str, str]:
        rows = query_all(self.client, self.call, self.collection, '', ['page_id', 'doc_id'])
        return {r['page_id']: r['doc_id'] for r in rows}

    def drop(self) -> None:
        pass


@contextmanager
def _quiet_pymilvus():
    """A probe's expected rejection is not an error for the user: pymilvus logs every failed call at ERROR."""
    logger = logging.getLogger('pymilvus')
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _probe(client, name: str, build: Callable[[Any, Any], None], check: Callable[[], bool]) -> bool:
    """Create a throw-away collection (``build(schema, index_params)`` adds its fields and indexes), then
    ``check()``; any rejection means the feature is missing. The collection is always dropped."""
    from pymilvus import DataType

    with _quiet_pymilvus():
        try:
            if client.has_collection(name):
                client.drop_collection(name)
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field('page_id', DataType.VARCHAR, max_length=64, is_primary=True)
            index = client.prepare_index_params()
            build(schema, index)
            client.create_collection(name, schema=schema, index_params=index)
            return check()
        except Exception:   # an older server rejects the field, the index or the metric
            return False
        finally:
            try:
                if client.has_collection(name):
                    client.drop_collection(name)
            except Exception:
                pass


def supports_native_struct(client, call: Call, collection: str) -> bool:
    """Create a throw-away collection with a struct field and check that the server kept it."""
    from pymilvus import DataType

    name = f'{collection}__probe'

    def build(schema, index):
        schema.add_field('pooled', DataType.FLOAT_VECTOR, dim=2)
        add_struct_field(client, schema, 2)
        index.add_index(field_name='pooled', index_type='FLAT', metric_type='IP')
        add_struct_index(index, 'HNSW')
    return _probe(client, name, build, lambda: has_struct_field(client.describe_collection(name)))


def server_version(client) -> tuple:
    """``(major, minor, patch)`` of a Milvus server, ``()`` if it does not say (Milvus Lite says 'milvus_lite-3.x')."""
    try:
        text = str(client.get_server_version())
    except Exception:
        return ()
    match = re.match(r'^v?(\d+)\.(\d+)\.(\d+)', text)
    return tuple(int(x) for x in match.groups()) if match else ()


def supports_float16(client, collection: str) -> bool:
    """FLOAT16_VECTOR where the server really has it. Milvus 2.3 accepts the type but its query node panics
    ("unsupported data type: Float16Vector") when it merges two concurrent inserts: seen here on 2.3.5, so
    fp16 rows need Milvus >= 2.4, where the type is GA."""
    from pymilvus import DataType

    if server_version(client) < (2, 4, 0):
        return False

    def build(schema, index):
        schema.add_field('v', DataType.FLOAT16_VECTOR, dim=8)
        index.add_index(field_name='v', index_type='FLAT', metric_type='IP')
    return _probe(client, f'{collection}__probe16', build, lambda: True)
