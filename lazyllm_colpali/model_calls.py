"""Calls to a remote model, made affordable: a disk cache, retries with exponential backoff, and a limit on
calls in flight. Every VLM step that may be rerun over many pages or questions goes through it (the caption
arm's page descriptions, the answer-level evaluation's RAG answers and judgements).

    calls = CachedModelCalls(vlm, cache_dir='./cache', concurrency=4, retries=3)
    text = calls.ask('Describe the page.', ['page1.png'])      # a rerun reads the cache: no call
    rag = build_rag(retriever, calls)                           # or stand in for the chat module itself

The cache key is the bytes of the attached files + the prompt + the model's name, so the same page in another
index, or a rerun, costs nothing; a call whose tries all fail is not cached, so the next run asks again.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Type

from .errors import ColPaliError


class ModelCallError(ColPaliError):
    """A model gave no usable answer after every retry."""


def answer_text(answer: Any) -> Any:
    """LazyLLM chat modules answer a str, or a dict with ``content`` (VLM types): return the text.

    >>> answer_text({'content': 'a page'}), answer_text('plain')
    ('a page', 'plain')
    """
    if isinstance(answer, dict):
        return answer.get('content', answer.get('text', ''))
    return answer


def model_id_of(llm: Any) -> str:
    """A stable name for a chat module (part of the cache key: another model must not reuse its answers)."""
    return str(getattr(llm, '_model_name', None) or getattr(llm, 'model_name', None) or type(llm).__name__)


class CachedModelCalls:
    """``ask(prompt, files, parse)`` on a LazyLLM chat module, cached, retried and limited to ``concurrency``
    calls in flight. Calling the object with a LazyLLM query (``encode_query_with_filepaths`` output) does the
    same, so it can stand in wherever a chat module is expected (``build_rag``, ``PageAnswerer``)."""

    def __init__(self, llm: Callable, cache_dir: str | Path, *, model_id: Optional[str] = None, retries: int = 3,
                 backoff: float = 1.0, concurrency: int = 4, error: Type[ColPaliError] = ModelCallError):
        self.llm = llm
        self.cache_dir = Path(cache_dir)
        self.model_id = model_id or model_id_of(llm)
        self.retries = max(1, retries)
        self.backoff = backoff
        self.error = error
        self.calls = 0            # model calls made (retries included): what a rerun must not pay again
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._count_lock = threading.Lock()

    # what error messages name when the model is unreachable (PageAnswerer reads these from its chat module)
    @property
    def _base_url(self) -> Optional[str]:
        return getattr(self.llm, '_base_url', None) or getattr(self.llm, 'base_url', None)

    def cache_path(self, prompt: str, files: Sequence[str | Path] = ()) -> Path:
        data = b''.join(Path(f).read_bytes() for f in files)
        key = hashlib.sha256(data + prompt.encode() + self.model_id.encode()).hexdigest()
        return self.cache_dir / key[:2] / f'{key}.json'

    def ask(self, prompt: str, files: Sequence[str | Path] = (), parse: Callable[[str], Any] = str,
            what: str = 'the request') -> Any:
        """The model's answer to ``prompt`` with ``files`` attached, passed through ``parse`` (its result is
        what the cache keeps, so it must be JSON-serialisable). ``what`` names the item in the final error."""
        cache = self.cache_path(prompt, files)
        if cache.exists():
            try:
                return json.loads(cache.read_text(encoding='utf-8'))
            except ValueError:   # a damaged entry (a crash mid-write elsewhere): ask again
                pass
        query = prompt
        if files:
            from lazyllm.components.formatter import encode_query_with_filepaths
            query = encode_query_with_filepaths(prompt, [str(f) for f in files])
        last: Exception | None = None
        for attempt in range(self.retries):
            with self._count_lock:
                self.calls += 1
            try:
                with self._slots:
                    answer = answer_text(self.llm(query))
                if not isinstance(answer, str) or not answer.strip():
                    raise self.error(f'empty answer from the model ({answer!r})')
                data = parse(answer)
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(f'{cache.name}.{os.getpid()}.{threading.get_ident()}.tmp')
                tmp.write_text(json.dumps(data, ensure_ascii=False), encoding='utf-8')
                tmp.replace(cache)
                return data
            except Exception as e:  # network errors, HTTP 5xx, bad answers: all worth a retry
                last = e
                if attempt + 1 < self.retries:
                    time.sleep(self.backoff * 2 ** attempt)
        raise self.error(f'VLM failed on {what} after {self.retries} tries: {last}')

    def __call__(self, query: str, **kw) -> str:
        from lazyllm.components.formatter import decode_query_with_filepaths

        decoded = decode_query_with_filepaths(query)
        if isinstance(decoded, dict):
            return self.ask(decoded.get('query', ''), decoded.get('files') or [])
        return self.ask(str(decoded))
