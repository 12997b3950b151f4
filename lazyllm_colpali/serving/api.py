"""JSON search API over a :class:`ColPaliIndex`, for programs (FastAPI; bind to 127.0.0.1 by default).

    POST /search   {"query": "...", "topk": 5, "filters": {"file": "a.pdf", "pages": [1, 3]}, "hops": 1}
                   -> {"hits": [{"file_name", "page", "score", "page_id", ...}], "ms": 12.3, "pages": 1234}
                   (``hops`` > 1: multi-hop retrieval; each hit's metadata says its hop and bridge, and the
                   answer adds "searches" and "trace": the bridges and new pages of every hop)
    POST /index    {"paths": ["/data/pdfs/new"]} -> {"job": "1"}   (only under --allow-root folders; queued)
    GET  /jobs/ID  -> {"state": "queued" | "running" | "done" | "failed" | "cancelled", "done": 3, "total": 9,
                       "report": {...}}
    GET  /health   -> {"pages": 1234}

Hostile input is answered, never crashed on: every malformed body is a 400 naming the field, bodies over
``max_body_bytes`` a 413, a Host header other than the bound host a 400 (DNS rebinding), a missing bearer
token a 401, a path outside the allowed roots (after resolving symlinks) a 403. One process owns the Milvus
Lite file, so searches and ingestion share it here; ingestion runs on one writer thread
(:class:`~lazyllm_colpali.serving.ingest_worker.IngestWorker`) and searches see whole pages only.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import json
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from typing_extensions import Annotated

from ..errors import ColPaliError
from ..indexer import ColPaliIndex
from ..logging import LOG
from .ingest_worker import IngestBusyError, IngestWorker

MAX_BODY_BYTES = 64 * 1024      # a search or an index request is small; 64 KiB holds 100 long paths
MAX_NAMES = 100                 # values in one file/doc_id/source filter
MAX_NAME_CHARS = 1024
MAX_PATHS = 100
LOOPBACK_NAMES = ('localhost', '127.0.0.1', '::1')
WILDCARD_HOSTS = ('0.0.0.0', '::', '')


def _no_surrogates(text: str) -> str:
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        raise ValueError('contains a lone surrogate (not valid Unicode text)') from None
    if '\x00' in text:
        raise ValueError('contains a NUL character')
    return text


Text = Annotated[StrictStr, AfterValidator(_no_surrogates)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME_CHARS), AfterValidator(_no_surrogates)]
Names = Union[Name, Annotated[List[Name], Field(min_length=1, max_length=MAX_NAMES)]]
Page = Annotated[StrictInt, Field(ge=1, le=10_000_000)]


# Module level: FastAPI resolves these (postponed) annotations through the module's globals.
# Fields default to None without being Optional: leaving a filter out means "no filter", an explicit null is
# a mistake worth a 400.
class SearchFilters(BaseModel):
    model_config = ConfigDict(extra='forbid')
    file: Names = None
    doc_id: Names = None
    source: Names = None
    pages: Annotated[List[Page], Field(min_length=2, max_length=2)] = None
    page: Page = None

    @field_validator('pages')
    @classmethod
    def _ordered(cls, pages: List[int]) -> List[int]:
        if pages[0] > pages[1]:
            raise ValueError(f'first page {pages[0]} is after last page {pages[1]}')
        return pages

    def to_store(self) -> Dict[str, Any]:
        filters = self.model_dump(exclude_none=True)
        if 'pages' in filters:
            filters['pages'] = tuple(filters['pages'])
        return filters


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra='forbid')
    query: Text
    topk: Annotated[StrictInt, Field(ge=1, le=100)] = 5
    filters: Optional[SearchFilters] = None
    hops: Annotated[StrictInt, Field(ge=1, le=8)] = 1


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra='forbid')
    paths: Annotated[List[Annotated[StrictStr, Field(min_length=1, max_length=4096), AfterValidator(_no_surrogates)]],
                     Field(min_length=1, max_length=MAX_PATHS)]


def is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(bind: str) -> Optional[List[str]]:
    """Host header names a browser may use for a server bound to ``bind``; None = any (wildcard binds)."""
    if bind in WILDCARD_HOSTS:
        return None
    return list(LOOPBACK_NAMES) if is_loopback(bind) else [bind.strip('[]').lower()]


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != 'body']
    out = ''
    for p in parts:
        out += f'[{p}]' if p.isdigit() else (f'.{p}' if out else p)
    return out or 'body'


def _validation_message(errors: List[Dict[str, Any]]) -> str:
    messages = []
    for e in errors[:5]:
        loc = list(e.get('loc', ()))
        if e.get('type') == 'json_invalid':
            messages.append(f'body: not valid JSON ({e.get("ctx", {}).get("error", "decode error")})')
            continue
        # A union reports one error per branch, tagged with the branch type (e.g. 'str', 'list[...]'): drop tags.
        loc = [p for p in loc if not (isinstance(p, str) and ('[' in p or p in ('str', 'int', 'list')))]
        msg = e.get('msg', 'invalid')
        if e.get('type') == 'extra_forbidden':
            msg = ('unknown filter; use doc_id, file, source, pages or page' if 'filters' in loc
                   else 'unknown field')
        elif e.get('type') == 'missing':
            msg = 'required'
        elif e.get('type') == 'string_type' and loc[-1:] and loc[-1] in ('file', 'doc_id', 'source'):
            msg = 'should be a name or a list of 1-100 names'
        elif msg.startswith('Value error, '):
            msg = msg[len('Value error, '):]
        text = f'{_field(loc)}: {msg}'
        if text not in messages:
            messages.append(text)
    return '; '.join(messages)


def _json(status: int, detail: str, headers: Optional[Dict[str, str]] = None):
    body = json.dumps({'detail': detail}, ensure_ascii=True).encode()
    return status, body, {'content-type': 'application/json', **(headers or {})}


class _Guard:
    """Pure ASGI wrapper: Host header, bearer token and body size checked before the app sees a request, and
    any error escaping the app answered as JSON 500 (the connection stays usable)."""

    def __init__(self, app, *, allowed_hosts: Optional[Iterable[str]], token: Optional[str], max_body_bytes: int):
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.token = token
        self.max_body_bytes = max_body_bytes

    @staticmethod
    async def _send(send, status: int, body: bytes, headers: Dict[str, str]) -> None:
        await send({'type': 'http.response.start', 'status': status,
                    'headers': [(k.encode(), v.encode()) for k, v in {**headers, 'content-length': str(len(body))}
                                .items()]})
        await send({'type': 'http.response.body', 'body': body})

    def _refusal(self, scope) -> Optional[tuple]:
        headers = {k.decode('latin-1').lower(): v.decode('latin-1') for k, v in scope.get('headers', [])}
        if self.allowed_hosts is not None:
            host = headers.get('host', '')
            name = host[1:host.index(']')] if host.startswith('[') and ']' in host else host.rsplit(':', 1)[0]
            if name.lower() not in self.allowed_hosts:
                return _json(400, f'Host header {host!r} is not this server (expected one of '
                                  f'{", ".join(sorted(self.allowed_hosts))}); refused to block DNS rebinding')
        if self.token is not None:
            auth = headers.get('authorization', '')
            given = auth[7:] if auth[:7].lower() == 'bearer ' else ''
            if not hmac.compare_digest(given.encode('utf-8', 'replace'), self.token.encode('utf-8')):
                return _json(401, 'missing or wrong bearer token (Authorization: Bearer ...)',
                             {'www-authenticate': 'Bearer'})
        length = headers.get('content-length')
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return _json(413, f'request body over {self.max_body_bytes} bytes', {'connection': 'close'})
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            return await self._send(send, *refusal)
        # Read the whole (bounded) body first, also when it comes chunked, then replay it to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message['type'] == 'http.disconnect':
                return
            chunk = message.get('body', b'')
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._send(send, *_json(413, f'request body over {self.max_body_bytes} bytes',
                                                     {'connection': 'close'}))
            chunks.append(chunk)
            more = message.get('more_body', False)
        body, replayed = b''.join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {'type': 'http.request', 'body': body, 'more_body': False}
            return await receive()

        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message['type'] == 'http.response.start'
            await send(message)

        try:
            await self.app(scope, replay, tracking_send)
        except Exception as e:   # already logged below; a 500 with JSON, and the connection stays open
            LOG.error(f'{scope.get("method")} {scope.get("path")} failed: {type(e).__name__}: {e}')
            if not started:
                await self._send(send, *_json(500, f'internal error ({type(e).__name__}); see the server log'))


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def create_app(index: ColPaliIndex, *, allow_roots: Sequence[Union[str, Path]] = (),
               allowed_hosts: Optional[Iterable[str]] = LOOPBACK_NAMES, token: Optional[str] = None,
               max_body_bytes: int = MAX_BODY_BYTES, max_pending: int = 8):
    """The ASGI app. ``allow_roots``: folders /index may read (none: /index is off); ``allowed_hosts``: Host
    header names accepted (None: any); ``token``: bearer token every request must carry."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from ..ingest.records import IngestFailure
    from ..ingest.sources import expand_sources

    roots = [Path(r).expanduser().resolve() for r in allow_roots]
    for root in roots:
        if not root.is_dir():
            raise ColPaliError(f'--allow-root {root}: not a folder')

    def ingest(paths: List[str], on_progress) -> Dict[str, Any]:
        files, problems = expand_sources(paths)
        # A symlink inside a root may point outside it: only files whose real path is inside are read.
        inside = [f for f in files if _inside(f.resolve(), roots)]
        refused = [IngestFailure(str(f), 'links outside the allowed roots') for f in files if f not in inside]
        report = index.add(inside, on_progress=on_progress) if inside else None
        result = dataclasses.asdict(report) if report else {'documents': [], 'added_pages': 0, 'skipped_pages': 0,
                                                            'failures': []}
        result['failures'] += [dataclasses.asdict(f) for f in refused] + \
            [{'path': p, 'reason': r} for p, r in problems]
        return result

    worker = IngestWorker(ingest, max_pending=max_pending)
    from ..multihop import IndexArm, MultiHopRetriever
    chain = MultiHopRetriever(IndexArm(index))   # collection terms built at the first multi-hop search

    @asynccontextmanager
    async def lifespan(_app):
        yield
        # Shutdown: cancel indexing at the next stored batch; pages stored so far stay.
        await asyncio.to_thread(worker.stop, 10.0)

    app = FastAPI(title='lazyllm_colpali search', lifespan=lifespan)
    app.state.worker = worker

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError):
        return JSONResponse({'detail': _validation_message(list(exc.errors()))}, status_code=400)

    @app.get('/health')
    def health() -> Dict[str, Any]:
        return {'pages': index.store.count()}

    @app.post('/search')
    def search(request: SearchRequest) -> Dict[str, Any]:
        start = time.perf_counter()
        filters = request.filters.to_store() if request.filters else None
        extra: Dict[str, Any] = {}
        try:
            if request.hops > 1:
                result = chain.search_with_trace(request.query, filters or None, topk=request.topk, hops=request.hops)
                hits = result.hits
                extra = {'searches': result.searches, 'stopped': result.stopped,
                         'trace': [vars(h) for h in result.hops]}
            else:
                hits = index.search(request.query, request.topk, filters or None)
        except (ColPaliError, ValueError) as e:   # the client's to fix: say what is wrong
            raise HTTPException(status_code=400, detail=str(e))
        return {'hits': [h.to_dict() for h in hits], 'ms': (time.perf_counter() - start) * 1000,
                'pages': len(index.store.packed()), **extra}

    @app.post('/index')
    def start_index(request: IndexRequest) -> Dict[str, str]:
        if not roots:
            raise HTTPException(status_code=403, detail='indexing over HTTP is off: start serve-api with '
                                                        '--allow-root FOLDER (repeatable) to allow folders under it')
        resolved = []
        for i, raw in enumerate(request.paths):
            path = Path(raw)
            if not path.is_absolute():
                raise HTTPException(status_code=400, detail=f'paths[{i}]: give an absolute path, got {raw!r}')
            real = path.resolve()   # symlinks and .. resolved before the check
            if not _inside(real, roots):
                raise HTTPException(status_code=403, detail=f'paths[{i}]: {raw!r} is outside the allowed roots')
            if not real.exists():
                raise HTTPException(status_code=400, detail=f'paths[{i}]: no such file or folder: {raw!r}')
            resolved.append(str(real))
        try:
            job = worker.submit(resolved, ', '.join(request.paths))
        except IngestBusyError as e:
            raise HTTPException(status_code=429, detail=str(e))
        return {'job': job.id}

    @app.get('/jobs/{job_id}')
    def job(job_id: str) -> Dict[str, Any]:
        found = worker.jobs.get(job_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f'no job {job_id!r}')
        return {'state': found.state, 'paths': found.paths, 'done': found.done, 'total': found.total,
                'report': found.result, 'error': found.error}

    guard = _Guard(app, allowed_hosts=allowed_hosts, token=token, max_body_bytes=max_body_bytes)
    guard.worker = worker
    return guard
