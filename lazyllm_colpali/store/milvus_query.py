"""Filters and listings over Milvus collections: the store's filter dict as a Milvus expression, and "every
row matching" without Milvus's topk ceiling."""
from __future__ import annotations

import json
import unicodedata
from typing import Any, Callable, Dict, List, Mapping, Optional

MAX_SEARCH_LIMIT = 16384   # Milvus's topk ceiling
MAX_PAGE = 10_000_000      # page numbers a filter may name (the HTTP API's bound too)
# Reads on the query path accept a few seconds of staleness: a Strong read waits for the server's time tick
# (~200 ms per call measured on Milvus 2.3.5, vs ~6 ms Bounded). Writes and the reads that decide what to
# write (missing, delete, check, sync listings) stay Strong.
FAST_READ = {'consistency_level': 'Bounded'}
_NAME_FIELDS = {'doc_id': 'doc_id', 'page_id': 'page_id', 'file': 'file_name', 'file_name': 'file_name',
                'source': 'source'}


def _literal(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f'filter {key!r}: values must be strings or integers, got {value!r}')
    if isinstance(value, int):
        return str(_page_number(key, value) if key in ('page', 'pages') else value)
    if any(unicodedata.category(c) == 'Cc' for c in value):
        # Milvus's expression parser rejects escaped control characters with a raw parser error; no stored
        # name has one (indexing refuses such file names), so such a value can only match nothing.
        raise ValueError(f'filter {key!r}: value {value!r} contains control characters; stored names never do')
    return json.dumps(value, ensure_ascii=False)


def _page_number(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'filter {key!r}: page numbers must be integers, got {value!r}')
    if not 1 <= value <= MAX_PAGE:
        raise ValueError(f'filter {key!r}: page {value} is out of range (pages count from 1 to {MAX_PAGE:,})')
    return value


def filter_expression(filters: Optional[Mapping[str, Any]]) -> str:
    """Translate the store's filter dict into a Milvus boolean expression.

    >>> filter_expression({'file': ['a.pdf', 'b "x".pdf'], 'pages': (2, 5)})
    '(file_name in ["a.pdf", "b \\\\"x\\\\".pdf"]) and (page >= 2 and page <= 5)'
    >>> filter_expression({'file': {'$ne': 'x'}})
    Traceback (most recent call last):
    ...
    ValueError: filter 'file': expected a name or a list of names, got {'$ne': 'x'}
    """
    if not filters:
        return ''
    parts = []
    for key, value in filters.items():
        if value is None:
            continue
        if key in _NAME_FIELDS:
            if isinstance(value, (str, int)):
                values = [value]
            elif isinstance(value, (list, tuple, set, frozenset)):
                values = list(value)
            else:   # a dict such as {'$ne': 'x'} would otherwise be read as its keys and silently match nothing
                raise ValueError(f'filter {key!r}: expected a name or a list of names, got {value!r}')
            parts.append(f'{_NAME_FIELDS[key]} in [{", ".join(_literal(key, v) for v in values)}]')
        elif key == 'pages':
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f'filter \'pages\': expected (first, last), got {value!r}')
            first, last = (_page_number(key, v) for v in value)
            parts.append(f'page >= {first} and page <= {last}')
        elif key == 'page':
            parts.append(f'page == {_page_number(key, value)}')
        else:
            raise ValueError(f'unknown filter {key!r}; use doc_id, file, source, pages or page')
    return ' and '.join(f'({p})' for p in parts)


def query_all(client, call: Callable, collection: str, expr: str, fields: List[str],
              **kwargs: Any) -> List[Dict[str, Any]]:
    """Every row matching ``expr``: one bounded query covers most calls; the iterator only for bigger results."""
    rows = call('query', client.query, collection, filter=expr, output_fields=fields, limit=MAX_SEARCH_LIMIT,
                **kwargs)
    if len(rows) < MAX_SEARCH_LIMIT:
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
