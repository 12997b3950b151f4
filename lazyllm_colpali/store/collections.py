"""The Milvus collections one store owns, created so that a kill at any point can be resumed.

A store is several collections (``<name>__meta``, ``<name>__sources``, ``<name>__vectors`` on blob-layout
servers, the page collection ``<name>``, and whatever another component adds with
:meth:`MilvusMultiVectorStore.add_companion`). Creating them is not atomic in Milvus, so creation is
planned, recorded, then carried out idempotently:

1. ``<name>__meta`` exists and holds the schema record (dim, layout, float16) before anything else is made;
2. every owned collection that is missing is created, one that exists is checked against what it should be;
3. an open finds the same plan in the schema record and finishes whatever a killed process left out.

``drop`` removes every collection named ``<name>`` or ``<name>__*``, so no half state is a dead end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ..errors import StoreError

Call = Callable[..., Any]
PROBE_SUFFIXES = ('__probe', '__probe16')   # throw-away collections of the layout probes


class HalfCreatedError(StoreError):
    """Some of a store's collections exist and others do not (a creation was killed half-way)."""

    def __init__(self, message: str, present: Sequence[str], missing: Sequence[str]):
        super().__init__(message)
        self.present, self.missing = list(present), list(missing)


@dataclass
class OwnedCollection:
    """One collection of a store: ``schema()`` and ``index()`` build its pymilvus schema and index params;
    ``problem(description)`` says what is wrong with an existing one (``describe_collection``'s dict) or
    returns None; ``required``: its absence is a half state (False: created on first use, e.g. added by a
    later version to existing stores)."""

    name: str
    schema: Callable[[], Any]
    index: Callable[[], Any]
    problem: Optional[Callable[[Dict[str, Any]], Optional[str]]] = None
    load: bool = True
    required: bool = True


def with_placeholder_vector(schema):
    """Add the 2-dim vector field Milvus wants in every collection, to a collection that needs none."""
    from pymilvus import DataType

    schema.add_field('v', DataType.FLOAT_VECTOR, dim=2)
    return schema


def placeholder_index(client):
    """The index of :func:`with_placeholder_vector`'s field (never searched)."""
    params = client.prepare_index_params()
    params.add_index(field_name='v', index_type='FLAT', metric_type='IP')
    return params


def store_collection_names(all_names: Iterable[str], collection: str) -> List[str]:
    """Every collection that belongs to the store ``collection`` (probes included)."""
    return sorted(n for n in all_names if n == collection or n.startswith(f'{collection}__'))


def field_dim(description: Dict[str, Any], field: str) -> Optional[int]:
    """The ``dim`` of a vector field in a ``describe_collection`` result (None if there is no such field)."""
    for f in description.get('fields', []):
        if f.get('name') == field:
            dim = (f.get('params') or {}).get('dim')
            return int(dim) if dim is not None else None
    return None


def field_type_name(description: Dict[str, Any], field: str) -> str:
    for f in description.get('fields', []):
        if f.get('name') == field:
            return getattr(f.get('type'), 'name', str(f.get('type')))
    return ''


def create(call: Call, client, spec: OwnedCollection) -> None:
    call('create_collection', client.create_collection, spec.name, schema=spec.schema(), index_params=spec.index(),
         consistency_level='Strong')


def ensure(call: Call, client, specs: Sequence[OwnedCollection], existing: Iterable[str]) -> List[str]:
    """Create the missing collections of ``specs``, check the existing ones and give any that lacks its index
    (a creation stopped between the two calls) its index; returns the names created. A collection another
    process created meanwhile counts as existing."""
    existing = set(existing)
    created = []
    for spec in specs:
        if spec.name not in existing:
            try:
                create(call, client, spec)
                created.append(spec.name)
            except StoreError:
                if not call('list_collections', client.has_collection, spec.name):
                    raise
        check(call, client, spec)
        if not call('list_indexes', client.list_indexes, spec.name):
            call('create_index', client.create_index, spec.name, spec.index())
    return created


def check(call: Call, client, spec: OwnedCollection) -> None:
    if spec.problem is None:
        return
    problem = spec.problem(call('describe_collection', client.describe_collection, spec.name))
    if problem:
        raise StoreError(f'collection {spec.name!r} exists but {problem}; it was not made by this store (or by '
                         f'another version): use another --collection, or remove it with `lazyllm-colpali drop`')


def load(call: Call, client, specs: Sequence[OwnedCollection], existing: Iterable[str]) -> None:
    """Load the existing collections of ``specs``; one that has no index yet gets it first."""
    existing = set(existing)
    for spec in specs:
        if spec.load and spec.name in existing:
            try:
                call('load_collection', client.load_collection, spec.name)
            except StoreError:
                if call('list_indexes', client.list_indexes, spec.name):
                    raise
                call('create_index', client.create_index, spec.name, spec.index())
                call('load_collection', client.load_collection, spec.name)


def drop(call: Call, client, collection: str) -> List[str]:
    """Drop every collection of the store ``collection``; returns their names."""
    names = store_collection_names(call('list_collections', client.list_collections), collection)
    for name in names:
        call('drop_collection', client.drop_collection, name)
    return names
