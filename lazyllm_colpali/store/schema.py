"""Which Milvus collections a store is made of, and how it opens or finishes them (mixed into the store).

The plan - dimension, vector layout, fp16 - is written as the schema record in ``<collection>__meta`` before
anything else is created; every open then creates what is missing and checks what exists
(:mod:`.collections`), so a creation killed at any step is finished by the next writer or
``check --repair``, reported by a reader (:class:`HalfCreatedError`), or removed by ``drop``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set

from ..errors import DimensionMismatchError, StoreError
from ..logging import LOG
from . import collections
from .collections import HalfCreatedError, OwnedCollection, field_dim, field_type_name
from .milvus_vectors import (BlobRows, NativeStruct, VectorLayout, add_struct_field, add_struct_index,
                             has_struct_field, supports_float16, supports_native_struct)

SCHEMA_VERSION = 2
_PAGE_FIELDS = {'page_id', 'doc_id', 'source', 'file_name', 'page', 'width', 'height', 'image_key', 'content_sha',
                'n_vectors', 'meta', 'pooled'}


class CollectionSchema:
    """Needs of the host: ``_client``, ``_call``, ``collection``, ``uri``, ``remote``, ``index_type``, ``sources``,
    ``_companions``, ``get_meta``, ``set_meta``, ``_count``."""

    def owned_collections(self) -> List[OwnedCollection]:
        """Every Milvus collection of this store, in creation order (the schema record in ``__meta`` first)."""
        specs = [self._meta_spec(), self.sources.spec()]
        if self.layout_name == 'blob':
            specs.append(OwnedCollection(self.layout.collection, self.layout.schema, self.layout.index,
                                         self._blob_problem))
        specs.append(OwnedCollection(self.collection, self._pages_schema, self._pages_index, self._pages_problem))
        return specs + list(self._companions)

    def add_companion(self, spec: OwnedCollection) -> None:
        """Let another component keep a collection beside this store's (a dense arm's vectors, say): it is
        created resumably, reloaded after a server restart and removed by ``drop`` with the store's own.
        Its name must be ``<collection>__<something>``."""
        if not spec.name.startswith(f'{self.collection}__'):
            raise ValueError(f'a companion collection of {self.collection!r} must be named '
                             f'{self.collection}__<name>, got {spec.name!r}')
        with self._lock:
            names = set(self._call('list_collections', self._client.list_collections))
            names |= set(collections.ensure(self._call, self._client, [spec], names))
            collections.load(self._call, self._client, [spec], names)
            self._companions.append(spec)

    def _open_collection(self, dim: Optional[int], layout: Optional[str], create: bool) -> tuple:
        client = self._client
        names = set(self._call('list_collections', client.list_collections))
        schema = None
        if self._meta_name in names:
            collections.load(self._call, client, [self._meta_spec()], names)
            schema = self.get_meta('schema')
        fresh = schema is None and not self._present(names)
        if schema is None:
            schema = self._plan_schema(names, dim, layout, create)
        elif int(schema.get('version', 0)) > SCHEMA_VERSION:
            raise StoreError(f'collection {self.collection!r} uses schema {schema["version"]}, newer than this '
                             f'lazyllm-colpali understands ({SCHEMA_VERSION}); upgrade the package')
        stored = int(schema['dim'])
        if dim is not None:
            self.check_dim(dim, stored)
        self.dim, self.layout_name, self._float16 = stored, schema['layout'], bool(schema.get('float16'))
        self.layout = self._make_layout()
        required = [s for s in self.owned_collections() if s.required]
        missing = [s.name for s in required if s.name not in names]
        if missing:
            if not create:
                raise self._half_created(names, missing)
            names |= set(collections.ensure(self._call, client, required, names))
            if fresh:
                LOG.info(f'Created collection {self.collection!r} ({stored}-dim, {self.index_type}, vectors: '
                         f'{self.layout_name}) in {self.uri}')
            else:
                LOG.warning(f'Finished creating collection {self.collection!r} in {self.uri} (a creation had '
                            f'stopped half-way): created {", ".join(missing)}')
        # A collection reopened by a new process (or on a restarted server) starts released.
        collections.load(self._call, client, required, names)
        return stored, self.layout_name

    def _present(self, names: Set[str]) -> List[str]:
        return [n for n in collections.store_collection_names(names, self.collection)
                if not n.endswith(collections.PROBE_SUFFIXES)]

    def _half_created(self, names: Set[str], missing: Sequence[str]) -> HalfCreatedError:
        present = self._present(names)
        return HalfCreatedError(
            f'collection {self.collection!r} in {self.uri!r} is half created (a creation was stopped): it has '
            f'{", ".join(present) or "nothing"} but lacks {", ".join(missing)}; `lazyllm-colpali check --repair` '
            f'(or indexing into it) finishes creating it, `lazyllm-colpali drop --collection {self.collection}` '
            f'removes it', present, missing)

    def _plan_schema(self, names: Set[str], dim: Optional[int], layout: Optional[str], create: bool) -> dict:
        """Decide (or recover) what the collection is, and record it before creating anything else."""
        client = self._client
        present = self._present(names)
        pages = None
        if self.collection in names:
            pages = self._call('describe_collection', client.describe_collection, self.collection)
            collections.load(self._call, client, [OwnedCollection(self.collection, self._pages_schema,
                                                                  self._pages_index)], names)
            if self._count(self.collection):
                raise StoreError(f'collection {self.collection!r} in {self.uri!r} has pages but no schema record: '
                                 f'it was made by lazyllm-colpali 0.1; index into a new --collection, or remove it '
                                 f'(`lazyllm-colpali drop --collection {self.collection}`) and re-index')
        if not present and (dim is None or not create):
            raise StoreError(f'collection {self.collection!r} does not exist in {self.uri!r}; index some files '
                             f'first (or check --db / --collection)')
        if present and not create:
            raise self._half_created(names, ['its schema record'] + ([] if pages else [self.collection]))
        stored_dim = field_dim(pages, 'pooled') if pages else None
        if dim is None:
            dim = stored_dim
        if dim is None:
            raise self._half_created(names, ['its schema record'])
        if stored_dim is not None:
            self.check_dim(dim, stored_dim)
        vectors_name = f'{self.collection}__vectors'
        if vectors_name in names:
            blob = self._call('describe_collection', client.describe_collection, vectors_name)
            chosen, float16 = 'blob', field_type_name(blob, 'blob') == 'FLOAT16_VECTOR'
        elif pages is not None and has_struct_field(pages):
            chosen, float16 = 'struct', False
        else:
            chosen = self._choose_layout(layout)
            float16 = chosen == 'blob' and supports_float16(client, self.collection)
        if self._meta_name not in names:
            collections.ensure(self._call, client, [self._meta_spec()], names)
            names.add(self._meta_name)
            collections.load(self._call, client, [self._meta_spec()], names)
        schema = {'version': SCHEMA_VERSION, 'dim': int(dim), 'layout': chosen, 'float16': float16}
        self.set_meta('schema', schema)   # the plan, recorded before the rest is created
        return schema

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

    def _pages_schema(self):
        from pymilvus import DataType

        client = self._client
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
        schema.add_field('pooled', DataType.FLOAT_VECTOR, dim=self.dim)
        if self.layout_name == 'struct':
            add_struct_field(client, schema, self.dim)
        return schema

    def _pages_index(self):
        index = self._client.prepare_index_params()
        params = {'M': 16, 'efConstruction': 200} if self.index_type == 'HNSW' else {}
        index.add_index(field_name='pooled', index_type=self.index_type, metric_type='IP', params=params)
        if self.layout_name == 'struct':
            add_struct_index(index)
        return index

    def _pages_problem(self, description: Dict[str, Any]) -> Optional[str]:
        names = {f.get('name') for f in description.get('fields', [])}
        if not _PAGE_FIELDS <= names:
            return f'lacks the page fields {", ".join(sorted(_PAGE_FIELDS - names))}'
        dim = field_dim(description, 'pooled')
        return None if dim == self.dim else f'holds {dim}-dim pooled vectors, not {self.dim}'

    def _blob_problem(self, description: Dict[str, Any]) -> Optional[str]:
        width = field_dim(description, 'blob')
        return None if width == self.layout.width else f'holds {width}-wide vector rows, not {self.layout.width}'

    def _make_layout(self) -> Optional[VectorLayout]:
        if self.layout_name == 'blob':
            return BlobRows(self._client, self._call, self.collection, self.dim, self._float16)
        if self.layout_name == 'struct':
            return NativeStruct(self._client, self._call, self.collection, self.dim)
        return None

    def _meta_spec(self) -> OwnedCollection:
        def schema():
            from pymilvus import DataType

            meta = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
            meta.add_field('key', DataType.VARCHAR, max_length=64, is_primary=True)
            meta.add_field('value', DataType.JSON)
            return collections.with_placeholder_vector(meta)
        return OwnedCollection(self._meta_name, schema, lambda: collections.placeholder_index(self._client))
