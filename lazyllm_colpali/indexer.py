"""The visual index: files -> page images -> multi-vectors -> store, and queries -> ranked pages.

Small on purpose (PyLate-style ``add`` / ``remove`` / ``__call__``); each step lives in its own module.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, List, Optional, Sequence, Union

from tqdm.auto import tqdm

from .errors import ColPaliError, DocumentError, EmptyQueryError, QueryTooLongError
from .ingest.context import PageContext
from .ingest.records import IngestFailure, IngestReport, PageRecord, RenderedPage, make_page_id
from .ingest.render import count_pages, render_pages
from .ingest.sources import document_id, expand_sources
from .logging import LOG
from .models.encoder import ColPaliEncoder
from .models.identity import check_same_model, model_identity
from .serving.escape import terminal_text
from .retrieve.retriever import MaxSimRetriever, SearchHit
from .store.base import Filters, MultiVectorStore

if TYPE_CHECKING:
    from .retrieve.explain import PageExplanation

MAX_QUERY_CHARS = 2000


class ColPaliIndex:
    """Index PDFs and images with a ColPali-family encoder into a multi-vector store; search by MaxSim.

    Re-adding a file adds nothing (page ids come from the content hash); a changed file at the same source
    replaces its old pages once the new ones are stored; a bad file is reported and skipped. A source is
    ``(source_prefix, absolute path)``: ``source_prefix`` names the file system the paths belong to (default:
    ``$LAZYLLM_COLPALI_SOURCE_PREFIX`` or this machine's host name), so on a shared collection another
    machine's different file at the same path is another document, never an older version of this one.
    """

    def __init__(self, encoder: ColPaliEncoder, store: MultiVectorStore, *, dpi: int = 144, max_side: int = 2048,
                 retriever: Optional[MaxSimRetriever] = None, progress: bool = True, allow_model_change: bool = False,
                 context: Optional[PageContext] = None, source_prefix: Optional[str] = None):
        from .store.source_registry import check_source_prefix, default_source_prefix

        self.source_prefix = check_source_prefix(source_prefix) if source_prefix is not None else \
            default_source_prefix()
        self.encoder = encoder
        self.context = context   # pages also get their context text's token vectors (ingest/context.py)
        self.store = store
        self.dpi = dpi
        self.max_side = max_side
        self.retriever = retriever or MaxSimRetriever(store)
        self.progress = progress
        self.allow_model_change = allow_model_change
        self._model_checked = False
        self._explainer = None

    def check_model(self) -> None:
        """Record the encoder's identity in a new collection; refuse another model on an existing one."""
        if self._model_checked or not hasattr(self.store, 'model_info'):
            return
        current = model_identity(self.encoder)
        recorded = self.store.model_info()
        if recorded is None:
            self.store.record_model(current)
        elif not self.allow_model_change:
            check_same_model(recorded, current, f'collection {getattr(self.store, "collection", "")!r}')
        self._check_context()
        self._model_checked = True

    def _check_context(self) -> None:
        """A collection built with context keeps building it the same way (its recorded settings); one
        without context cannot gain it halfway (its pages would be scored on different terms)."""
        if not hasattr(self.store, 'get_meta'):
            return
        recorded = self.store.get_meta('context')
        if recorded:
            self.context = PageContext.from_settings(recorded)
        elif self.context is not None:
            if self.store.count():
                raise ColPaliError(f'collection {getattr(self.store, "collection", "")!r} already holds pages '
                                   f'indexed without context; index with context into a new --collection')
            self.store.set_meta('context', self.context.settings())

    # -- ingestion -------------------------------------------------------------------------------------
    def add(self, paths: Iterable[str | Path], metadata: Optional[dict] = None,
            on_progress: Optional[Callable[[int, int], None]] = None) -> IngestReport:
        """Index every page not yet stored. ``on_progress(done, total)`` is called after each stored batch
        (the chat UI streams it; the terminal gets a tqdm bar)."""
        report = IngestReport()
        self.check_model()
        files, problems = expand_sources(paths)
        report.failures.extend(IngestFailure(p, r) for p, r in problems)
        plan = []
        for path in files:
            try:
                doc_id, sha = document_id(path)
                n_pages = count_pages(path)
                mtime = path.stat().st_mtime
            except (DocumentError, OSError) as e:
                report.failures.append(IngestFailure(terminal_text(path), getattr(e, 'reason', str(e))))
                continue
            claims = self._claims(path)
            newer = [c for c in claims if c.prefix == self.source_prefix and c.doc_id != doc_id and c.mtime > mtime]
            if newer:   # an older copy must not replace what is indexed: same source, later modification time
                report.failures.append(IngestFailure(terminal_text(path), _newer_note(newer[0])))
                continue
            wanted = [make_page_id(doc_id, n) for n in range(1, n_pages + 1)]
            todo = self.store.missing(wanted)
            report.skipped_pages += n_pages - len(todo)
            report.documents.append(doc_id)
            settled = not todo and [(c.doc_id, c.mtime) for c in claims if c.prefix == self.source_prefix] == \
                [(doc_id, mtime)]
            plan.append((path, doc_id, sha, todo, mtime, settled))
        total = sum(len(p[3]) for p in plan)
        with tqdm(total=total, desc='Indexing pages', unit='page', disable=not self.progress or total == 0) as bar:
            if on_progress is not None:
                bar = _NotifyingBar(bar, total, on_progress)
            for path, doc_id, sha, todo, mtime, settled in plan:
                if todo:
                    try:
                        self._add_file(path, doc_id, sha, todo, metadata or {}, report, bar)
                    except DocumentError as e:
                        report.failures.append(IngestFailure(terminal_text(path), e.reason))
                        continue
                if not settled:   # re-indexing an unchanged file that is already claimed costs no writes
                    self._replace_older_versions(path, doc_id, mtime)
        for failure in report.failures:
            LOG.warning(f'Skipped {failure.path}: {failure.reason}')
        LOG.info(report.summary().splitlines()[0])
        return report

    def _add_file(self, path: Path, doc_id: str, sha: str, todo: set, metadata: dict, report: IngestReport,
                  bar) -> None:
        batch: List[RenderedPage] = []
        clock = time.perf_counter()
        for page_number, image in render_pages(path, self.dpi, self.max_side):
            page_id = make_page_id(doc_id, page_number)
            if page_id not in todo:
                continue
            record = PageRecord(page_id=page_id, doc_id=doc_id, source=str(path.resolve()), file_name=path.name,
                                page_number=page_number, width=image.width, height=image.height,
                                metadata=dict(metadata), content_sha=sha)
            batch.append(RenderedPage(record, image))
            if len(batch) >= self.encoder.batch_size:
                report.seconds['render'] += time.perf_counter() - clock
                self._store_batch(batch, report, bar)
                batch, clock = [], time.perf_counter()
        report.seconds['render'] += time.perf_counter() - clock
        self._store_batch(batch, report, bar)

    def _store_batch(self, batch: List[RenderedPage], report: IngestReport, bar) -> None:
        if not batch:
            return
        clock = time.perf_counter()
        vectors = self._encode_pages([p.record for p in batch], [p.image for p in batch])
        report.seconds['encode'] += time.perf_counter() - clock
        clock = time.perf_counter()
        self.store.add([(p.record, v, p.image) for p, v in zip(batch, vectors)])
        report.seconds['store'] += time.perf_counter() - clock
        report.added_pages += len(batch)
        bar.update(len(batch))

    def _encode_pages(self, records: List[PageRecord], images: list) -> list:
        if hasattr(self.encoder, 'encode_images_grouped'):   # multi-vector encoders: pooled pages keep their groups
            vectors, groups = self.encoder.encode_images_grouped(images)
            for record, page_groups in zip(records, groups):
                record.token_groups = page_groups
        else:
            vectors = self.encoder.encode_images(images)
        if self.context is not None:
            vectors = self.context.extend(self.encoder, records, vectors)
        return vectors

    def _claims(self, path: Path) -> list:
        return self.store.source_claims(str(path.resolve())) if hasattr(self.store, 'source_claims') else []

    def _replace_older_versions(self, path: Path, doc_id: str, mtime: float) -> None:
        """A file whose content changed gets a new doc_id; once its pages are stored it claims its source, and
        older versions of the same source (same prefix and path) go unless another prefix still holds them."""
        source = str(path.resolve())
        if hasattr(self.store, 'claim_source'):
            self.store.claim_source(doc_id, self.source_prefix, source, mtime)
            older = self.store.replace_older_versions(doc_id, source, self.source_prefix)
        else:   # a store without source claims: the path alone identifies a document
            records = self.store.records(self.store.page_ids({'source': source}), images=False)
            older = sorted({r.doc_id for r in records.values()} - {doc_id})
            self.store.delete_docs(older)
        if older:
            LOG.info(f'{path} changed: replaced {len(older)} older version(s)')

    def reencode(self, page_ids: Sequence[str]) -> int:
        """Render and encode stored pages again from their sources (vectors lost everywhere); returns how many
        pages were restored. Pages whose source is gone or changed are left for the caller to report."""
        from .store.milvus_store import rerender_page

        self.check_model()
        records = list(self.store.records(list(page_ids), images=False).values())   # rendered once, below
        restored = 0
        for start in range(0, len(records), self.encoder.batch_size):
            batch = [(r, rerender_page(r)) for r in records[start:start + self.encoder.batch_size]]
            batch = [(r, image) for r, image in batch if image is not None]
            if batch:
                vectors = self._encode_pages([r for r, _ in batch], [image for _, image in batch])
                self.store.add([(r, v, image) for (r, image), v in zip(batch, vectors)])
                restored += len(batch)
        return restored

    def remove(self, doc_ids: Sequence[str]) -> int:
        """Delete documents (all their pages, vectors and images); returns the number of pages removed."""
        return self.store.delete_docs(list(doc_ids))

    # -- search ----------------------------------------------------------------------------------------
    def search(self, query: str, topk: int = 5, filters: Filters = None) -> List[SearchHit]:
        check_query(query)
        self.check_model()
        vectors = self.encoder.encode_queries([query])[0]
        return self.retriever.search_vectors(vectors, topk, filters)

    __call__ = search

    # -- explanation ------------------------------------------------------------------------------------
    def explain(self, query: str, page: Union[str, SearchHit]) -> 'PageExplanation':
        """Where ``page`` (a page id or a hit) matched ``query``: per-token similarity maps on its patch grid,
        from its stored vectors (see :mod:`lazyllm_colpali.retrieve.explain`). Computed only when asked."""
        from .retrieve.explain import PageExplainer

        check_query(query)   # the same refusals as search: empty, or longer than a question
        if self._explainer is None:
            self._explainer = PageExplainer(self.encoder, self.store, self.retriever)
        return self._explainer.explain(query, page)

    def explain_hits(self, query: str, hits: Sequence[SearchHit]) -> List['PageExplanation']:
        return [self.explain(query, hit) for hit in hits]


def check_query(query: str) -> None:
    """Refuse an empty or over-long query before any model runs."""
    if not query or not query.strip():
        raise EmptyQueryError('empty query: type what you are looking for')
    if len(query) > MAX_QUERY_CHARS:
        raise QueryTooLongError(f'query of {len(query)} characters is longer than {MAX_QUERY_CHARS}: ask a '
                                f'question, not a document (MaxSim cost grows with every query token)')


def _newer_note(claim) -> str:
    when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(claim.mtime))
    return (f'a newer version of this file (modified {when}) is already indexed as document {claim.doc_id} from '
            f'source prefix {terminal_text(claim.prefix)!r}; an older copy does not replace it (delete that document '
            f'first to index this one)')


class _NotifyingBar:
    """A tqdm bar that also reports ``(done, total)`` to a callback."""

    def __init__(self, bar, total: int, callback: Callable[[int, int], None]):
        self.bar, self.total, self.callback, self.done = bar, total, callback, 0

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.done += n
        self.callback(self.done, self.total)
