"""Text arm: page texts searched with BM25, or indexed as a LazyLLM ``Document`` and searched with a LazyLLM
``Retriever``.

BM25 by default (no weights needed; ``bm25_chinese`` when the pages are mostly Chinese), built once per index
version with LazyLLM's tokenisation (``text/bm25.py``: milliseconds per query at thousands of pages, where
LazyLLM 1.4's ``Retriever`` costs O(pages) per query; ``bm25_backend='lazyllm'`` keeps that path). Or any
LazyLLM embedding module with a similarity such as ``cosine``, in LazyLLM's default store or a Milvus Lite
file (``store_conf``). Pages keep the visual arm's ids (content hash + page number), so hits from both arms
fuse and evaluate against the same qrels.

    index = PageTextIndex('./text_index')               # text layer + OCR for scans, BM25
    index.add(['./pdfs'])
    index.search('maintenance interval', topk=5)        # -> List[SearchHit] (image_path is '')
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from tqdm.auto import tqdm

from ..errors import ColPaliError, DocumentError, EmptyQueryError
from ..ingest.records import IngestReport, make_page_id
from ..ingest.render import count_pages
from ..ingest.sources import document_id, expand_sources
from ..logging import LOG
from ..retrieve.retriever import SearchHit
from .bm25 import PageBM25
from .extract import TextExtractor, get_extractor
from .page_text_store import PageText, PageTextStore

_CJK = re.compile(r'[\u3400-\u9fff\uf900-\ufaff]')


def mostly_chinese(texts: Iterable[str], threshold: float = 0.3) -> bool:
    """True when CJK characters make up at least ``threshold`` of the non-space characters."""
    cjk = total = 0
    for text in texts:
        cjk += len(_CJK.findall(text))
        total += sum(1 for c in text if not c.isspace())
    return total > 0 and cjk / total >= threshold


class PageTextIndex:
    """Pages' text in a folder + manifest, searched through LazyLLM ``Document`` + ``Retriever``."""

    def __init__(self, root: str | Path, extractor: str | TextExtractor = 'auto', *, similarity: str = 'auto',
                 embed: Optional[Callable] = None, store_conf: Optional[Dict[str, Any]] = None,
                 group: Optional[str] = None, progress: bool = True, bm25_backend: str = 'bm25s'):
        if bm25_backend not in ('bm25s', 'lazyllm'):
            raise ValueError(f'bm25_backend must be "bm25s" or "lazyllm", not {bm25_backend!r}')
        self.store = PageTextStore(root)
        self.bm25_backend = bm25_backend
        self.extractor = get_extractor(extractor)
        self.embed = embed
        self.similarity = similarity
        self.store_conf = store_conf
        self.group = group
        self.progress = progress
        self._lock = threading.Lock()
        self._retriever = None
        self._built_version = -1
        self.seconds_extracting = 0.0

    # -- ingestion -------------------------------------------------------------------------------------
    def add(self, paths: Iterable[str | Path]) -> IngestReport:
        """Extract text for every page not already in the index. Bad files are reported, never fatal."""
        files, problems = expand_sources(paths)
        report = IngestReport()
        report.failures.extend(_failure(p, r) for p, r in problems)
        sizes = {path: _page_count(path) for path in files}
        # One tick per page (pages/s and ETA stay honest on a 50-page scan that OCRs for minutes).
        bar = tqdm(total=sum(sizes.values()), desc=f'text ({self.extractor.name})', unit='page',
                   disable=not self.progress, dynamic_ncols=True)
        for path in files:
            bar.set_postfix_str(path.name[-40:], refresh=False)
            done = report.added_pages + report.skipped_pages
            try:
                self._add_file(path, report, bar)
            except ColPaliError as e:
                reason = e.reason if isinstance(e, DocumentError) else str(e)
                LOG.warning(f'skipped {path}: {reason}')
                report.failures.append(_failure(str(path), reason))
                if not isinstance(e, DocumentError):
                    bar.close()
                    raise   # a missing backend is not the file's fault: stop and say so
            # Catch the bar up on pages this file skipped or could not produce.
            bar.update(max(0, sizes[path] - (report.added_pages + report.skipped_pages - done)))
        bar.close()
        return report

    def _add_file(self, path: Path, report: IngestReport, bar=None) -> None:
        doc_id, _ = document_id(path)   # the visual arm's ids: hits of both arms fuse by page id
        n_pages = count_pages(path)
        todo = {n for n in range(1, n_pages + 1) if not self.store.has(make_page_id(doc_id, n))}
        report.skipped_pages += n_pages - len(todo)
        if bar is not None:
            bar.update(n_pages - len(todo))
        report.documents.append(doc_id)
        if todo:
            start = time.perf_counter()
            for number, text in self.extractor.pages(path, todo):
                self.store.put(PageText(make_page_id(doc_id, number), doc_id, str(path.resolve()), path.name,
                                        number, text, self.extractor.name))
                report.added_pages += 1
                if bar is not None:
                    bar.update(1)
            for where, reason in getattr(self.extractor, 'failures', []):   # pages a VLM could not describe
                report.failures.append(_failure(where, reason))
            if hasattr(self.extractor, 'failures'):
                self.extractor.failures.clear()
            elapsed = time.perf_counter() - start
            self.seconds_extracting += elapsed
            report.seconds['encode'] += elapsed
        # A changed file gets a new doc id: its old pages go once the new ones are in.
        stale = [d for d in self.store.doc_ids_for_source(str(path.resolve())) if d != doc_id]
        if stale:
            self.store.delete_docs(stale)

    def remove(self, doc_ids: Iterable[str]) -> int:
        return self.store.delete_docs(doc_ids)

    # -- search ----------------------------------------------------------------------------------------
    def _resolve_similarity(self) -> str:
        if self.similarity != 'auto':
            return self.similarity
        if self.embed is not None:
            return 'cosine'
        sample = [self.store.path_of(pid).read_text(encoding='utf-8') for pid in self.store.all_ids()[:200]]
        return 'bm25_chinese' if mostly_chinese(sample) else 'bm25'

    def _build(self):
        similarity = self._resolve_similarity()
        if similarity.startswith('bm25') and self.bm25_backend == 'bm25s' and self.group is None:
            ids = self.store.all_ids()
            texts = [self.store.path_of(pid).read_text(encoding='utf-8') for pid in ids]
            return PageBM25(texts, ids, language='zh' if similarity == 'bm25_chinese' else 'en')
        from .._compat import import_lazyllm_rag
        import_lazyllm_rag()
        from lazyllm import Document, Retriever

        # Each build is its own Document: LazyLLM's map store reads its files once, at first use. LazyLLM skips
        # every file under a hidden folder when it scans a dataset_path (~/.cache included), so the map store
        # is handed the page files by name instead.
        name = f'pagetext_{id(self)}_{self.store.version}'
        if (self.store_conf or {}).get('type', 'map') == 'map':
            files = [str(self.store.path_of(pid)) for pid in self.store.all_ids()]
            doc = Document(None, embed=self.embed, store_conf=self.store_conf, doc_files=files, name=name)
        else:
            if _under_hidden_folder(self.store.pages_dir):
                raise ColPaliError(f'the text index folder {self.store.root} is under a hidden folder, which '
                                   f'LazyLLM skips for a {self.store_conf["type"]!r} store; choose a workdir '
                                   'without a ".name" component')
            doc = Document(str(self.store.pages_dir), embed=self.embed, store_conf=self.store_conf, name=name)
        group = self.group or ('lazyllm_root' if similarity.startswith('bm25') else 'CoarseChunk')
        return Retriever(doc, group, similarity, topk=1000 if self.embed is None else 200)

    def retriever(self):
        with self._lock:
            if self._retriever is None or self._built_version != self.store.version:
                self._retriever = self._build() if self.store.count() else None
                self._built_version = self.store.version
            return self._retriever

    def search(self, query: str, topk: int = 5) -> List[SearchHit]:
        if not query or not query.strip():
            raise EmptyQueryError('the query is empty')
        retriever = self.retriever()
        if retriever is None:
            return []
        if isinstance(retriever, PageBM25):
            return self._hits(retriever.search(query, topk))
        best: Dict[str, float] = {}
        for node in retriever(query):
            # A node is a page (root group) or a chunk of one (embedding groups): the page is its file.
            page_id = Path(node.global_metadata.get('file_name') or '').stem
            score = float(node.similarity_score or 0.0)
            if page_id and score > 0 and score > best.get(page_id, float('-inf')):
                best[page_id] = score
        return self._hits(sorted(best.items(), key=lambda kv: -kv[1])[:topk])

    def _hits(self, ranked: List[Tuple[str, float]]) -> List[SearchHit]:
        records = self.store.get([pid for pid, _ in ranked], with_text=True)
        # The page text rides along: answer prompts and the eval report can use it without another lookup.
        return [SearchHit(pid, records[pid].doc_id, records[pid].source, records[pid].file_name, records[pid].page,
                          score, '', {'arm_text': records[pid].producer, 'text': records[pid].text[:4000]})
                for pid, score in ranked if pid in records]

    def storage_bytes(self) -> Dict[str, int]:
        manifest = self.store.root / 'manifest.sqlite'
        return {'text': self.store.text_bytes(), 'manifest': manifest.stat().st_size if manifest.exists() else 0}

    def count(self) -> int:
        return self.store.count()

    def close(self) -> None:
        self.store.close()


def _under_hidden_folder(path: Path) -> bool:
    return any(part.startswith('.') and part not in ('.', '..') for part in path.resolve().parts)


def _page_count(path: Path) -> int:
    try:
        return count_pages(path)
    except DocumentError:
        return 1   # the file fails again in add() and is reported there; it still takes one tick


def _failure(path: str, reason: str):
    from ..ingest.records import IngestFailure
    return IngestFailure(path, reason)
