"""The browser chat: ``lazyllm.WebModule`` in front of a module that indexes uploads, retrieves pages and
answers with a VLM, showing each cited page as a thumbnail.

Safe to show: every piece of text we did not write (file and upload names, model output, error messages)
goes through :func:`~lazyllm_colpali.serving.escape.markdown_text`, and thumbnails are embedded JPEG bytes
looked up by page key in the collection's own image store - WebModule inlines whatever file an answer's
``![..](PATH)`` names, so no path ever appears in an answer.
Many users: uploads are indexed by one :class:`IngestWorker` thread; the uploader's chat follows the job's
progress while other people's questions are answered (the page is served with concurrent event handlers).
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

from lazyllm.module import ModuleBase

from ..errors import ColPaliError
from ..generation.answer import Answer, AnswerSettings, PageAnswerer, VLMUnavailableError
from ..ingest.sources import SUPPORTED_SUFFIXES
from ..lazyllm_glue.components import ColPaliDocument
from ..logging import LOG
from .chat_feedback import ChatFeedback
from .chat_view import render_answer, source_views
from .escape import markdown_text, only_our_images
from .i18n import localize_webmodule, pick_lang, text
from .ingest_worker import IngestBusyError, IngestJob, IngestWorker

NO_INDEX = text('no_index')
NO_VLM = text('no_vlm')


def _stream(message: str) -> None:
    """Show progress in the chat bubble while the module works (WebModule drains this queue)."""
    try:
        from lazyllm import FileSystemQueue
        FileSystemQueue().enqueue(message)
    except Exception:   # outside a WebModule session there is nobody to show it to
        LOG.info(message.strip())


def _guarded(markdown: str) -> str:
    """Last check before WebModule sees an answer: only our embedded thumbnails may be images."""
    if only_our_images(markdown):
        return markdown
    LOG.error('an answer held an image that is not an embedded page thumbnail; it is shown as text')
    return markdown_text(markdown)


def _name(path: str) -> str:
    return markdown_text(Path(path).name, inline=True)


class VisualChat(ModuleBase):
    """``message (+ attached files) -> Markdown answer with cited page thumbnails``.

    ``follow_seconds``: how long the uploader's own message follows its indexing job (streaming progress)
    before answering from the pages stored so far; indexing goes on in the background either way.
    ``upload_dirs``: where attached files may come from (the web UI's upload folder); a message can name
    files itself in LazyLLM's file envelope, so anything else is refused. None: any path (library use).
    ``lang``: ``en`` or ``zh`` (default: the locale). ``explain``: show each cited page's matched area (from
    its similarity map, :mod:`lazyllm_colpali.retrieve.explain`). ``feedback``: a 👍/👎 pair per cited page,
    stored like the API's ``POST /feedback`` (:mod:`lazyllm_colpali.serving.chat_feedback`).
    """

    def __init__(self, doc: ColPaliDocument, llm: Optional[Callable] = None, *, topk: int = 5,
                 settings: Optional[AnswerSettings] = None, max_pending: int = 8,
                 follow_seconds: float = 600.0, upload_dirs: Optional[List[Path]] = None, lang: Optional[str] = None,
                 explain: bool = True, feedback: bool = True, return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        self.doc = doc
        self.llm = llm
        self.topk = topk
        self.settings = settings or AnswerSettings()
        self.lang = pick_lang(lang)
        self.explain = explain
        self.follow_seconds = follow_seconds
        self.upload_dirs = [Path(d).resolve() for d in upload_dirs] if upload_dirs is not None else None
        self.answerer = PageAnswerer(llm, self.settings) if llm is not None else None
        self.worker = IngestWorker(lambda paths, on_progress: self.doc.add_files(paths, on_progress=on_progress),
                                   max_pending=max_pending)
        self.feedback = ChatFeedback(lambda: self.doc.index) if feedback else None   # 👍/👎 per cited page

    def forward(self, message: str, **kw) -> str:
        from lazyllm.components.formatter import decode_query_with_filepaths

        try:
            decoded = decode_query_with_filepaths(message)
        except ValueError:   # typed text that merely starts like LazyLLM's file envelope
            decoded = message
        query, files = (decoded.get('query'), decoded.get('files')) if isinstance(decoded, dict) else (decoded, [])
        query = query if isinstance(query, str) else ''
        files = [f for f in files if isinstance(f, str)] if isinstance(files, list) else []
        try:
            notes = self._ingest(files) if files else self._background_note()
            if not query.strip():
                return _guarded('\n\n'.join(notes)) or text('ask', self.lang)
            return _guarded('\n\n'.join([*notes, self.respond(query)]))
        except ColPaliError as e:
            return f'**Error:** {markdown_text(e)}'

    def _background_note(self) -> List[str]:
        active = [j for j in self.worker.active() if j.state == 'running']
        return [f'*(Indexing {markdown_text(j.label, inline=True)} in the background: {j.progress()}; answers use '
                'the pages stored so far.)*' for j in active]

    def _uploaded(self, path: str) -> bool:
        if self.upload_dirs is None:
            return True
        real = Path(path).resolve()
        return any(d in real.parents for d in self.upload_dirs)

    def _ingest(self, files: List[str]) -> List[str]:
        foreign = [f for f in files if not self._uploaded(f)]
        notes = [f'Skipped {_name(f)}: not a file uploaded to this chat.' for f in foreign]
        files = [f for f in files if f not in foreign]
        usable = [f for f in files if Path(f).suffix.lower() in SUPPORTED_SUFFIXES]
        notes += [f'Skipped {_name(f)}: not a PDF or image.' for f in files if f not in usable]
        if not usable:
            return notes
        names = ', '.join(Path(f).name for f in usable)
        try:
            job = self.worker.submit(usable, names)
        except IngestBusyError as e:
            return [*notes, f'Not indexed: {markdown_text(e)}']
        _stream(f'Indexing {markdown_text(names, inline=True)} ...\n')
        return [*notes, *self._follow(job)]

    def _follow(self, job: IngestJob) -> List[str]:
        """Stream the job's progress into this chat until it ends (or ``follow_seconds``, or shutdown)."""
        deadline, shown = time.monotonic() + self.follow_seconds, ''
        names = markdown_text(job.label, inline=True)
        while not job.wait(0.5):
            if self.worker.stopping or time.monotonic() > deadline:
                return [f'Still indexing {names} in the background ({job.progress()}); ask again later - answers '
                        'use the pages stored so far.']
            if job.progress() != shown:
                shown = job.progress()
                _stream(f'{shown}\n')
        if job.total and job.progress() != shown:   # a job quicker than a poll still shows its final count
            _stream(f'{job.progress()}\n')
        if job.state != 'done':
            return [f'Indexing {names} stopped: {markdown_text(job.error, inline=True)}']
        report = job.result
        notes = [f'Indexed {names}: {report.added_pages} pages added, {report.skipped_pages} already indexed.']
        notes.extend(f'Skipped {_name(f.path)}: {markdown_text(f.reason, inline=True)}' for f in report.failures)
        return notes

    def render(self, answer: Answer, note: str = '') -> str:
        """The chat message for an answer: ``note`` (ours), the model's text escaped, one block per cited page
        (:func:`~lazyllm_colpali.serving.chat_view.render_source`: thumbnail, matched area, full page on click)."""
        index = self.doc.index
        explain = (lambda hit: index.explain(answer.query, hit)) if self.explain else None
        message = render_answer(answer, source_views(answer, index.store.images, explain), self.lang, note)
        return message + self.feedback.markdown(answer.query, answer.hits, self.lang) if self.feedback else message

    def respond(self, query: str) -> str:
        index = self.doc.index
        if index.store.count() == 0:
            return text('no_index', self.lang)
        hits = index.search(query, self.topk)
        if not hits:
            return text('no_match', self.lang)
        if self.answerer is None:
            return self.render(Answer(query, '', hits[:self.settings.pages]), note=text('no_vlm', self.lang))
        try:
            answer = self.answerer.answer(hits, query)
        except VLMUnavailableError as e:
            answer = Answer(query, text('vlm_down', self.lang, error=e), hits[:self.settings.pages])
        return self.render(answer)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop indexing (the running upload keeps the pages stored so far); True if the writer ended."""
        return self.worker.stop(timeout)


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (probed the way servers bind: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:   # someone on loopback (another bind address)
        return s.connect_ex(('127.0.0.1', port)) != 0


class ChatServer:
    """The chat page (``lazyllm.WebModule``'s UI) served on our bind address, with concurrent answers.

    WebModule itself listens on every interface and answers one message at a time; here its gradio page is
    launched through the public ``demo`` on ``host`` with ``concurrency`` event handlers, so one user's long
    upload does not hold up the others' questions.
    """

    def __init__(self, chat: VisualChat, *, host: str = '127.0.0.1', port: Optional[int] = None,
                 title: Optional[str] = None, concurrency: int = 16):
        from lazyllm.tools.webpages.webmodule import WebModule

        from ..settings import data_home

        # WebModule keeps uploads under ./.temp of the current folder unless told otherwise: use our cache.
        # Only files in that folder are taken as uploads (a typed message could name any path otherwise).
        os.environ.setdefault('GRADIO_TEMP_DIR', str(data_home() / 'gradio_uploads'))
        Path(os.environ['GRADIO_TEMP_DIR']).mkdir(parents=True, exist_ok=True)
        chat.upload_dirs = [Path(os.environ['GRADIO_TEMP_DIR']).resolve()]
        self.chat, self.host, self.port, self.concurrency = chat, host, port, concurrency
        self.url: Optional[str] = None
        handlers = _signal_handlers()
        self.web = WebModule(chat, port=port, stream=True, encode_files=True, title=title or text('ui_title', chat.lang))
        _restore_signal_handlers(handlers)   # WebModule installs SIGINT/SIGTERM handlers that sys.exit(0)
        localize_webmodule(self.web.demo, chat.lang)   # its controls are labelled in Chinese only
        self._stopped = threading.Event()

    def pick_port(self) -> int:
        if self.port is not None:
            if not port_free(self.host, self.port):
                raise ColPaliError(f'port {self.port} on {self.host} is already in use; pass another --port')
            return self.port
        for port in range(20500, 20800):
            if port_free(self.host, port):
                return port
        raise ColPaliError('ports 20500-20799 are all in use; pass --port')

    def start(self, port: Optional[int] = None) -> str:
        from starlette.middleware import Middleware
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        from .api import allowed_hosts_for

        port = port or self.pick_port()
        hosts = allowed_hosts_for(self.host)   # a Host check, as for the API: no DNS rebinding on loopback
        app_kwargs = {'middleware': [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]} if hosts else {}
        feedback = self.chat.feedback
        self.web.demo.queue(default_concurrency_limit=self.concurrency).launch(
            server_name=self.host, server_port=port, prevent_thread_lock=True, share=False, quiet=True,
            app_kwargs=app_kwargs, head=feedback.script if feedback else None)
        if feedback:
            feedback.install(self.web.demo.app)
        shown = '127.0.0.1' if self.host in ('0.0.0.0', '::', 'localhost') else self.host
        self.url = self.web.url = f'http://{shown}:{port}'
        LOG.info(f'chat running at {self.url} (bound to {self.host})')
        return self.url

    def wait(self) -> None:
        """Block until :meth:`request_stop` (a signal handler calls it)."""
        while not self._stopped.wait(0.2):
            pass

    def request_stop(self, *_: object) -> None:
        self._stopped.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel indexing at the next stored batch, then close the page; pages stored so far are kept."""
        self._stopped.set()
        if not self.chat.close(timeout):
            LOG.warning(f'the indexing thread did not stop within {timeout:.0f} s')
        self.web.stop()


def _signal_handlers():
    import signal
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers) -> None:
    import signal
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
