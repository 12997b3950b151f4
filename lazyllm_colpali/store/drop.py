"""Removing a collection completely, whatever state it is in (``lazyllm-colpali drop``): every Milvus
collection of the store (half-created ones and probes too), this machine's vector cache, and the page images
and centroid index of its documents in the shared folder. Planned first, so the command can show what goes
and ask before anything is removed."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..logging import LOG
from . import collections
from .image_store import PageImageStore
from .milvus_query import query_all
from .milvus_store import _lite_acquire, _lite_release, connect, default_data_dir, is_remote_uri


@dataclass
class DropPlan:
    uri: str
    collection: str
    collections: List[str]
    doc_ids: List[str] = field(default_factory=list)
    cache_dir: Optional[Path] = None          # this machine's vector cache (``<data dir>/vectors``)
    images: Optional[Path] = None             # the shared page image folder
    centroid_file: Optional[Path] = None

    @property
    def empty(self) -> bool:
        return not (self.collections or self.cache_dir)

    def describe(self) -> str:
        lines = [f'collection {self.collection!r} in {self.uri}:']
        lines.append(f'  Milvus collections: {", ".join(self.collections) or "none"}')
        lines.append(f'  documents: {len(self.doc_ids)} (their page images in {self.images})')
        if self.cache_dir:
            lines.append(f'  this machine\'s vector cache: {self.cache_dir}')
        if self.centroid_file:
            lines.append(f'  centroid index: {self.centroid_file}')
        return '\n'.join(lines)


def plan_drop(uri: str, collection: str, *, data_dir: Optional[str | Path] = None,
              shared_dir: Optional[str | Path] = None, token: str = '', db_name: str = '') -> DropPlan:
    data = Path(data_dir) if data_dir else default_data_dir(uri, collection)
    shared = Path(shared_dir) if shared_dir else data
    plan = DropPlan(uri, collection, [], images=shared / 'pages')
    if is_remote_uri(uri) or Path(uri).expanduser().exists():
        with _client(uri, token, db_name) as (client, call):
            plan.collections = collections.store_collection_names(call('list', client.list_collections), collection)
            if collection in plan.collections:
                try:   # a half-made page collection may have no index and cannot load: then it has no pages
                    call('load', client.load_collection, collection)
                    plan.doc_ids = sorted({r['doc_id'] for r in query_all(client, call, collection, '', ['doc_id'])})
                except Exception as e:
                    LOG.info(f'could not list the documents of {collection!r}: {e}')
    if (data / 'vectors').exists():
        plan.cache_dir = data / 'vectors'
    centroids = shared / 'index' / f'{collection}.centroids.pt'
    plan.centroid_file = centroids if centroids.exists() else None
    return plan


def carry_out(plan: DropPlan, *, token: str = '', db_name: str = '') -> None:
    if plan.collections:
        with _client(plan.uri, token, db_name) as (client, call):
            collections.drop(call, client, plan.collection)
    if plan.images is not None and plan.images.is_dir() and plan.doc_ids:
        PageImageStore(plan.images).delete_docs(plan.doc_ids)
    if plan.cache_dir is not None:
        shutil.rmtree(plan.cache_dir, ignore_errors=True)
    if plan.centroid_file is not None:
        plan.centroid_file.unlink(missing_ok=True)


class _client:
    """A plain client with a call wrapper that names the operation in its error."""

    def __init__(self, uri: str, token: str, db_name: str):
        self.uri, self.token, self.db_name = uri, token, db_name
        self.lite = None if is_remote_uri(uri) else str(Path(uri).expanduser())

    def __enter__(self):
        from .milvus_calls import MilvusCaller

        self.client = connect(self.uri, token=self.token, db_name=self.db_name)
        if self.lite:
            _lite_acquire(self.lite)
        return self.client, MilvusCaller(self.uri, '', not self.lite, lambda: None)

    def __exit__(self, *exc) -> None:
        self.client.close()
        if self.lite:
            _lite_release(self.lite)
