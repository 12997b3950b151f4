"""Which source each document came from, so a shared collection replaces only older versions of the same file.

A document's *source* is ``(source prefix, absolute path)``: the prefix names the file system the path belongs
to - this machine's host name by default, or one name (``--source-prefix``) given by every machine that sees
the same files (a shared mount). Its *version* is its content hash (``doc_id`` hashes bytes and path, as
before, so identical bytes at one path are one document wherever they were indexed).

``<collection>__sources`` holds one *claim* per (document, prefix): "this prefix's file at this path has these
bytes". Indexing a file adds its claim; a newer version at the same source releases the older version's claim,
and a document is deleted only when no claim is left - so machine B indexing a different file at the same path
never touches machine A's document, and a document two machines both hold stays until both replace it.

>>> claim_key('0123456789abcdef', 'host-a') == claim_key('0123456789abcdef', 'host-a')
True
>>> check_source_prefix('bad\\x07name')
Traceback (most recent call last):
...
ValueError: --source-prefix 'bad\\x07name' contains control characters; use a plain name (e.g. the host name)
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .collections import OwnedCollection, placeholder_index, with_placeholder_vector
from .milvus_query import filter_expression, query_all

SOURCE_PREFIX_ENV = 'LAZYLLM_COLPALI_SOURCE_PREFIX'
MAX_PREFIX_CHARS = 256


def check_source_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix.strip():
        raise ValueError(f'--source-prefix must be a non-empty name, got {prefix!r}')
    if len(prefix) > MAX_PREFIX_CHARS:
        raise ValueError(f'--source-prefix is {len(prefix)} characters long; at most {MAX_PREFIX_CHARS}')
    if any(unicodedata.category(c) == 'Cc' for c in prefix):
        raise ValueError(f'--source-prefix {prefix!r} contains control characters; use a plain name (e.g. the '
                         f'host name)')
    return prefix


def default_source_prefix() -> str:
    """``$LAZYLLM_COLPALI_SOURCE_PREFIX``, else this machine's host name."""
    return check_source_prefix(os.environ.get(SOURCE_PREFIX_ENV) or socket.gethostname() or 'localhost')


def claim_key(doc_id: str, prefix: str) -> str:
    return f'{doc_id}:{hashlib.sha256(prefix.encode("utf-8")).hexdigest()[:16]}'


@dataclass
class SourceClaim:
    doc_id: str
    prefix: str
    source: str
    mtime: float          # the file's modification time when it was indexed
    at: float = 0.0       # when it was indexed

    @classmethod
    def from_row(cls, row: Dict[str, Any]) -> 'SourceClaim':
        return cls(row['doc_id'], row['prefix'], row['source'], float(row['mtime']), float(row.get('at') or 0))


_FIELDS = ['doc_id', 'prefix', 'source', 'mtime', 'at']


class SourceRegistry:
    """The claims of one store, in ``<collection>__sources`` (created on first use: stores made before it
    existed get it when they are next written to)."""

    def __init__(self, client, call, collection: str):
        self.client, self.call = client, call
        self.name = f'{collection}__sources'
        self._ready = False

    def spec(self) -> OwnedCollection:
        return OwnedCollection(self.name, self.schema, self.index, required=False)

    def schema(self):
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field('key', DataType.VARCHAR, max_length=64, is_primary=True)
        schema.add_field('doc_id', DataType.VARCHAR, max_length=64)
        schema.add_field('prefix', DataType.VARCHAR, max_length=1024)
        schema.add_field('source', DataType.VARCHAR, max_length=4096)
        schema.add_field('mtime', DataType.DOUBLE)
        schema.add_field('at', DataType.DOUBLE)
        return with_placeholder_vector(schema)

    def index(self):
        return placeholder_index(self.client)

    def exists(self) -> bool:
        from . import collections

        if not self._ready and self.call('list_collections', self.client.has_collection, self.name):
            collections.load(self.call, self.client, [self.spec()], [self.name])
            self._ready = True
        return self._ready

    def ensure(self) -> None:
        from . import collections

        if self.exists():
            return
        collections.ensure(self.call, self.client, [self.spec()], ())
        collections.load(self.call, self.client, [self.spec()], [self.name])
        self._ready = True

    # -- writes ----------------------------------------------------------------------------------------
    def claim(self, doc_id: str, prefix: str, source: str, mtime: float) -> None:
        self.ensure()
        row = {'key': claim_key(doc_id, prefix), 'doc_id': doc_id, 'prefix': prefix, 'source': source,
               'mtime': float(mtime), 'at': time.time(), 'v': [1.0, 0.0]}
        self.call('upsert source', self.client.upsert, self.name, [row])

    def release(self, doc_id: str, prefix: str) -> None:
        if self.exists():
            self.call('delete source', self.client.delete, self.name, ids=[claim_key(doc_id, prefix)])

    def forget_docs(self, doc_ids: Sequence[str]) -> None:
        if doc_ids and self.exists():
            self.call('delete source', self.client.delete, self.name,
                      filter=filter_expression({'doc_id': list(doc_ids)}))

    # -- reads -----------------------------------------------------------------------------------------
    def _query(self, expr: str) -> List[SourceClaim]:
        if not self.exists():
            return []
        return [SourceClaim.from_row(r) for r in query_all(self.client, self.call, self.name, expr, _FIELDS)]

    def at(self, source: str) -> List[SourceClaim]:
        """Every claim on the path ``source`` (all prefixes)."""
        return self._query(filter_expression({'source': source}))

    def of(self, doc_ids: Sequence[str]) -> List[SourceClaim]:
        return self._query(filter_expression({'doc_id': list(doc_ids)})) if doc_ids else []

    def all(self) -> List[SourceClaim]:
        return self._query('')

    def doc_ids(self) -> Optional[set]:
        """Documents with at least one claim (None when this store has no registry yet)."""
        if not self.exists():
            return None
        return {c.doc_id for c in self.all()}
