"""JSON search API over a :class:`ColPaliIndex`, for programs (FastAPI; bind to 127.0.0.1 by default).

    POST /search   {"query": "...", "topk": 5, "filters": {"file": "a.pdf", "pages": [1, 3]}}
                   -> {"hits": [{"file_name", "page", "score", "page_id", ...}], "ms": 12.3, "pages": 1234}
    POST /index    {"paths": ["/data/pdfs"]} -> {"job": "1"}   (runs in the background, one at a time)
    GET  /jobs/ID  -> {"state": "running" | "done" | "failed", "report": {...}}
    GET  /health   -> {"pages": 1234}

One process owns the Milvus Lite file, so searches and ingestion share it here instead of competing for
its lock; page writes are per-page atomic (see the store), so searches see whole pages only.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field

from ..errors import ColPaliError
from ..indexer import ColPaliIndex


# Module level: FastAPI resolves these (postponed) annotations through the module's globals.
class SearchRequest(BaseModel):
    query: str
    topk: int = Field(5, ge=1, le=100)
    filters: Optional[Dict[str, Any]] = None


class IndexRequest(BaseModel):
    paths: List[str]


def create_app(index: ColPaliIndex):
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title='lazyllm_colpali search')
    jobs: Dict[str, Dict[str, Any]] = {}
    ids = itertools.count(1)
    ingest_lock = threading.Lock()

    @app.get('/health')
    def health() -> Dict[str, Any]:
        return {'pages': index.store.count()}

    @app.post('/search')
    def search(request: SearchRequest) -> Dict[str, Any]:
        start = time.perf_counter()
        filters = dict(request.filters or {})
        if 'pages' in filters:
            filters['pages'] = tuple(filters['pages'])
        try:
            hits = index.search(request.query, request.topk, filters or None)
        except (ColPaliError, ValueError) as e:   # the client's to fix: say what is wrong
            raise HTTPException(status_code=400, detail=str(e))
        return {'hits': [h.to_dict() for h in hits], 'ms': (time.perf_counter() - start) * 1000,
                'pages': len(index.store.packed())}

    def run_job(job_id: str, paths: List[str]) -> None:
        with ingest_lock:
            jobs[job_id]['state'] = 'running'
            try:
                jobs[job_id]['report'] = dataclasses.asdict(index.add(paths))
                jobs[job_id]['state'] = 'done'
            except Exception as e:  # reported to the client through /jobs, never lost in a thread
                jobs[job_id].update(state='failed', error=f'{type(e).__name__}: {e}')

    @app.post('/index')
    def start_index(request: IndexRequest) -> Dict[str, str]:
        job_id = str(next(ids))
        jobs[job_id] = {'state': 'queued', 'paths': request.paths}
        threading.Thread(target=run_job, args=(job_id, request.paths), daemon=True).start()
        return {'job': job_id}

    @app.get('/jobs/{job_id}')
    def job(job_id: str) -> Dict[str, Any]:
        if job_id not in jobs:
            raise HTTPException(status_code=404, detail=f'no job {job_id}')
        return jobs[job_id]

    return app
