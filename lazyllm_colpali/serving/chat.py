"""The browser chat: ``lazyllm.WebModule`` in front of a module that indexes uploads, retrieves pages and
answers with a VLM, showing each cited page as a thumbnail.

Thumbnails are Markdown images whose paths come only from the collection's own page store
(``PageImageStore.thumbnail`` + ``resolve``); WebModule inlines the files an answer points at, so model
output has its image syntax neutralised first - nothing outside the page store can reach the browser.
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable, List, Optional

from lazyllm.module import ModuleBase
from lazyllm.tools.webpages.webmodule import WebModule

from ..errors import ColPaliError
from ..generation.answer import Answer, AnswerSettings, PageAnswerer, VLMUnavailableError, answer_markdown
from ..ingest.sources import SUPPORTED_SUFFIXES
from ..lazyllm_glue.components import ColPaliDocument
from ..logging import LOG

NO_INDEX = ('No documents are indexed yet. Attach PDFs to a message here (they are indexed right away), or run '
            '`lazyllm-colpali index FOLDER` with the same --db and restart.')
NO_VLM = ('*(No VLM configured, so here are the best pages. Start `lazyllm-colpali serve` with --vlm-url and '
          '--vlm-model to get written answers.)*')


def _stream(text: str) -> None:
    """Show progress in the chat bubble while the module works (WebModule drains this queue)."""
    try:
        from lazyllm import FileSystemQueue
        FileSystemQueue().enqueue(text)
    except Exception:   # outside a WebModule session there is nobody to show it to
        LOG.info(text.strip())


class VisualChat(ModuleBase):
    """``message (+ attached files) -> Markdown answer with cited page thumbnails``."""

    def __init__(self, doc: ColPaliDocument, llm: Optional[Callable] = None, *, topk: int = 5,
                 settings: Optional[AnswerSettings] = None, thumbnail_side: int = 360, return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        self.doc = doc
        self.llm = llm
        self.topk = topk
        self.settings = settings or AnswerSettings()
        self.thumbnail_side = thumbnail_side
        self.answerer = PageAnswerer(llm, self.settings) if llm is not None else None

    def forward(self, message: str, **kw) -> str:
        from lazyllm.components.formatter import decode_query_with_filepaths

        decoded = decode_query_with_filepaths(message)
        text, files = (decoded['query'], decoded['files']) if isinstance(decoded, dict) else (decoded, [])
        try:
            notes = self._ingest(files) if files else []
            if not (text or '').strip():
                return '\n'.join(notes) or 'Ask a question about your documents.'
            return '\n'.join([*notes, self.respond(text)]) if notes else self.respond(text)
        except ColPaliError as e:
            return f'**Error:** {e}'

    def _ingest(self, files: List[str]) -> List[str]:
        usable = [f for f in files if Path(f).suffix.lower() in SUPPORTED_SUFFIXES]
        notes = [f'Skipped {Path(f).name}: not a PDF or image.' for f in files if f not in usable]
        if not usable:
            return notes
        names = ', '.join(Path(f).name for f in usable)
        _stream(f'Indexing {names} ...\n')
        report = self.doc.add_files(usable, on_progress=lambda done, total: _stream(f'{done}/{total} pages\n'))
        notes.append(f'Indexed {names}: {report.added_pages} pages added, {report.skipped_pages} already indexed.')
        notes.extend(f'Skipped {Path(f.path).name}: {f.reason}' for f in report.failures)
        return notes

    def thumbnails(self, answer: Answer) -> List[Optional[str]]:
        images = self.doc.index.store.images
        paths = []
        for hit in answer.hits:
            thumb = images.thumbnail(hit.doc_id, hit.page_id, self.thumbnail_side)
            safe = images.resolve(thumb) if thumb else None   # never a path outside the page store
            paths.append(str(safe) if safe else None)
        return paths

    def respond(self, query: str) -> str:
        index = self.doc.index
        if index.store.count() == 0:
            return NO_INDEX
        hits = index.search(query, self.topk)
        if not hits:
            return 'No indexed page matches this question.'
        if self.answerer is None:
            answer = Answer(query, NO_VLM, hits[:self.settings.pages])
        else:
            try:
                answer = self.answerer.answer(hits, query)
            except VLMUnavailableError as e:
                answer = Answer(query, f'**The answer model is unavailable:** {e}\n\nThe best pages are below.',
                                hits[:self.settings.pages])
        return answer_markdown(answer, self.thumbnails(answer))


class LocalWebModule(WebModule):
    """``lazyllm.WebModule`` bound to 127.0.0.1 by default (WebModule itself listens on every interface)."""

    def __init__(self, m: Any, *, host: str = '127.0.0.1', **kwargs: Any):
        import os

        from ..settings import data_home
        self.host = host
        # WebModule keeps uploads under ./.temp of the current folder unless told otherwise: use our cache.
        os.environ.setdefault('GRADIO_TEMP_DIR', str(data_home() / 'gradio_uploads'))
        super().__init__(m, **kwargs)

    def _work(self):   # WebModule._work, with the bind address configurable
        port = self._find_can_use_network_port() if isinstance(self.port, (range, tuple, list)) else self.port
        if not self._verify_port_access(port):
            raise ColPaliError(f'port {port} is already in use; pass another --port')
        self.url = f'http://127.0.0.1:{port}' if self.host in ('127.0.0.1', '0.0.0.0', 'localhost') \
            else f'http://{self.host}:{port}'
        self.demo.queue().launch(server_name=self.host, server_port=port, prevent_thread_lock=True, share=False)
        LOG.info(f'chat running at {self.url} (bound to {self.host})')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
