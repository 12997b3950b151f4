"""The text of every page an arm searches, for bridge concepts: the arm's own page text where it keeps one (text,
layout, OCR and caption arms), else the project's text extraction of the page's source file (the visual arm:
text layer by default, ``'auto'`` adds OCR for scans). Terms are rebuilt when the collection changes.

Arms are recognised by what they hold, not by class: a ``PageTextIndex`` (``arm.index``), a visual index whose
store lists its documents (``arm.index.store`` or ``arm.doc.index.store``), or member arms (``arm.arms``, a
hybrid). Anything else needs ``corpus=`` (the files it indexed).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import ColPaliError, DocumentError
from ..ingest.records import make_page_id
from ..ingest.sources import document_id, expand_sources
from ..logging import LOG
from .terms import CollectionTerms

Paths = Union[str, Path, Sequence[Union[str, Path]]]


class UnknownCollectionError(ColPaliError, ValueError):
    """The wrapped arm does not say which pages it searches, and no ``corpus=`` was given."""


class CollectionText:
    """Page texts and their :class:`CollectionTerms` for one arm, rebuilt when the arm's collection changes.

    ``extractor`` reads source files where the arm keeps no text (``'text-layer'``: fast, exact on born-digital
    PDFs; ``'auto'``: OCR for scans, seconds per page). ``corpus`` overrides where pages come from."""

    def __init__(self, arm: Any, corpus: Optional[Paths] = None, extractor: str = 'text-layer',
                 max_df_share: float = 0.2):
        self.arm = arm
        self.corpus = corpus
        self.extractor_name = extractor
        self.max_df_share = max_df_share
        self._lock = threading.Lock()
        self._key: Any = None
        self._terms: Optional[CollectionTerms] = None
        self._file_pages: Dict[Tuple[str, str], Dict[int, str]] = {}   # (doc_id, source) -> page -> text

    def terms(self) -> CollectionTerms:
        with self._lock:
            key, load = self._resolve()
            if self._terms is None or key != self._key:
                self._terms = CollectionTerms(load(), max_df_share=self.max_df_share)
                self._key = key
            return self._terms

    # -- where the pages come from --------------------------------------------------------------------
    def _resolve(self) -> Tuple[Any, Callable[[], Dict[str, str]]]:
        if self.corpus is not None:
            files = self._corpus_files()
            return tuple(files), lambda: self._files_text(files)
        sources = list(text_sources(self.arm))
        if not sources:
            raise UnknownCollectionError(
                f'multi-hop: cannot tell which pages a {type(self.arm).__name__} searches; pass corpus= (the files '
                'or folder it indexed) so bridge concepts can be weighed against the collection')
        keys, loaders = [], []
        for source in sources:
            key, load = self._source(source)
            keys.append(key)
            loaders.append(load)

        def load_all() -> Dict[str, str]:
            texts: Dict[str, str] = {}
            for load in loaders:
                for pid, text in load().items():
                    texts.setdefault(pid, text)   # a page two member arms hold keeps the first arm's text
            return texts
        return tuple(keys), load_all

    def _source(self, source: Any) -> Tuple[Any, Callable[[], Dict[str, str]]]:
        from ..text.page_index import PageTextIndex

        if isinstance(source, PageTextIndex):
            store = source.store
            return ('text', id(store), store.version, store.count()), lambda: _store_texts(store)
        store = source.store
        if hasattr(store, 'get_meta'):   # Milvus: one read of the change token every writer bumps
            token = (store.get_meta('change', fast=True) or {}).get('token')
            return ('files', id(store), token, store.count()), lambda: self._documents_text(store.documents())
        documents = store.documents()
        key = ('files', id(store), tuple((d['doc_id'], d['pages']) for d in documents))
        return key, lambda: self._documents_text(documents)

    def _corpus_files(self) -> List[Path]:
        paths = [self.corpus] if isinstance(self.corpus, (str, Path)) else list(self.corpus)
        files, problems = expand_sources(paths)
        for path, reason in problems:
            LOG.warning(f'multi-hop corpus: skipped {path}: {reason}')
        return files

    def _files_text(self, files: Iterable[Path]) -> Dict[str, str]:
        texts: Dict[str, str] = {}
        for path in files:
            try:
                doc_id, _ = document_id(path)
            except OSError as e:
                LOG.warning(f'multi-hop corpus: cannot read {path}: {e}')
                continue
            for number, text in self._pages_of(doc_id, str(Path(path).resolve())).items():
                texts[make_page_id(doc_id, number)] = text
        return texts

    def _documents_text(self, documents: List[Dict[str, Any]]) -> Dict[str, str]:
        texts: Dict[str, str] = {}
        for doc in documents:
            for number, text in self._pages_of(doc['doc_id'], doc['source']).items():
                texts[make_page_id(doc['doc_id'], number)] = text
        return texts

    def _pages_of(self, doc_id: str, source: str) -> Dict[int, str]:
        """Extracted once per document version (doc ids change with the content)."""
        key = (doc_id, source)
        if key not in self._file_pages:
            from ..text.extract import get_extractor

            pages: Dict[int, str] = {}
            if Path(source).is_file():
                try:
                    pages = dict(get_extractor(self.extractor_name).pages(Path(source)))
                except DocumentError as e:
                    LOG.warning(f'multi-hop: no text from {source}: {e.reason}')
            else:
                LOG.warning(f'multi-hop: {source} is gone; its pages give no bridge concepts')
            self._file_pages[key] = pages
        return self._file_pages[key]


def text_sources(arm: Any) -> Iterable[Any]:
    """The page collections an arm searches: PageTextIndex objects, or visual indexes (with ``.store``)."""
    from ..text.page_index import PageTextIndex

    members = getattr(arm, 'arms', None)
    if isinstance(members, dict):
        for member in members.values():
            yield from text_sources(member)
        return
    inner = getattr(arm, 'arm', None)     # an adapter around another arm (the eval harness has one)
    if inner is not None and inner is not arm:
        yield from text_sources(inner)
        return
    if hasattr(arm, 'ensure_indexed') and isinstance(getattr(arm, 'index', None), PageTextIndex):
        arm.ensure_indexed()
        yield arm.index
        return
    index = getattr(arm, 'index', None)
    if index is None and getattr(arm, 'doc', None) is not None:
        index = arm.doc.index
    if isinstance(index, PageTextIndex):
        yield index
    elif index is not None and hasattr(getattr(index, 'store', None), 'documents'):
        yield index


def _store_texts(store) -> Dict[str, str]:
    ids = store.all_ids()
    return {pid: record.text for pid, record in store.get(ids, with_text=True).items()}
