"""Every retrieval arm as a LazyLLM component with one contract:
``forward(query, filters=None, *, topk=None)`` -> top pages, in ``lazyllm.Retriever``'s output vocabulary
(nodes by default, ``'content'``, ``'dict'``), and ``search(query, filters=None, *, topk=None)`` -> SearchHits.

``ColPaliRetriever`` (visual), ``PageTextRetriever`` (text layer / OCR / MinerU, or caption+QA) and
``HybridRetriever`` (reciprocal rank fusion of any of them, keyed by page id) are interchangeable, so
swapping one arm for another in a pipeline is one line:

    visual = ColPaliRetriever(doc, topk=5)
    text = PageTextRetriever(PageTextIndex('./text_index'), dataset_path='./pdfs', topk=5)
    hybrid = HybridRetriever({'visual': visual, 'text': text}, weights={'visual': 1.0, 'text': 0.5}, topk=5)

Filters (``file``, ``doc_id``, ``source``, ``pages``, ``page``) mean the same in every arm.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from lazyllm.module import ModuleBase

from ..ingest.records import IngestReport
from ..retrieve.fusion import reciprocal_rank_fusion
from ..retrieve.retriever import SearchHit
from ..text.page_index import PageTextIndex
from .components import hit_to_node
from .output import check_output_format, format_nodes

Filters = Optional[Dict[str, Any]]
_FILTER_KEYS = ('doc_id', 'file', 'file_name', 'source', 'pages', 'page')


def filter_hits(hits: List[SearchHit], filters: Filters) -> List[SearchHit]:
    """The store's filter dict applied to hits (for arms whose index cannot filter by itself)."""
    if not filters:
        return hits
    unknown = set(filters) - set(_FILTER_KEYS)
    if unknown:
        raise ValueError(f'unknown filter {sorted(unknown)[0]!r}; use doc_id, file, source, pages or page')

    def values(v):
        return {v} if isinstance(v, (str, int)) else set(v)

    def keep(h: SearchHit) -> bool:
        for key, value in filters.items():
            if value is None:
                continue
            if key in ('file', 'file_name') and h.file_name not in values(value):
                return False
            if key in ('doc_id', 'source') and getattr(h, key) not in values(value):
                return False
            if key == 'pages' and not int(value[0]) <= h.page <= int(value[1]):
                return False
            if key == 'page' and h.page != int(value):
                return False
        return True
    return [h for h in hits if keep(h)]


class PageTextRetriever(ModuleBase):
    """A text arm: pages' text (or VLM captions) searched by LazyLLM's ``Retriever`` (BM25 by default).
    ``dataset_path`` is indexed on ``.start()`` or first use, incrementally. Nodes are ``DocNode``s holding
    the page text, with file, page and page_id in their metadata."""

    def __init__(self, index: PageTextIndex, dataset_path: Union[str, Path, List[Union[str, Path]], None] = None,
                 topk: int = 5, output_format: Optional[str] = None, join: Union[bool, str] = False,
                 name: Optional[str] = None, return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        check_output_format(output_format, join)
        self.index = index
        self.dataset_path = dataset_path
        self.topk = topk
        self.output_format = output_format
        self.join = join
        kind = getattr(index.extractor, 'name', 'text')
        self.arm_name = name or ('text' if kind == 'auto' else kind)
        self._ingested = dataset_path is None
        self._lock = threading.Lock()
        self.last_report: Optional[IngestReport] = None

    def ensure_indexed(self) -> PageTextIndex:
        with self._lock:
            if not self._ingested:
                paths = self.dataset_path if isinstance(self.dataset_path, list) else [self.dataset_path]
                self.last_report = self.index.add(paths)
                self._ingested = True
        return self.index

    def _get_deploy_tasks(self):
        from lazyllm import pipeline
        return pipeline(lambda *args: self.ensure_indexed())

    def search(self, query: str, filters: Filters = None, *, topk: Optional[int] = None) -> List[SearchHit]:
        k = topk or self.topk
        if not filters:
            return self.ensure_indexed().search(query, k)
        index = self.ensure_indexed()
        # The text index ranks every page; filtering that ranking keeps the top k of the allowed pages.
        return filter_hits(index.search(query, max(k, index.count())), filters)[:k]

    def forward(self, query: str, filters: Filters = None, *, topk: Optional[int] = None, **kw):
        return format_nodes([hit_to_node(h) for h in self.search(query, filters, topk=topk)],
                            self.output_format, self.join)


def arm_hits(arm: Callable, query: str, filters: Filters, topk: int) -> List[SearchHit]:
    """Any arm's ranking as SearchHits: ours through ``search``; any other LazyLLM retriever (a stock
    ``lazyllm.Retriever`` over a ColPali or text Document) through its nodes."""
    from ..generation import hits_from

    if hasattr(arm, 'search') and callable(arm.search):
        return arm.search(query, filters, topk=topk)
    # best first: LazyLLM's map-store retrievers return their top k unordered (a set() after the sort)
    return sorted(hits_from(arm(query, filters, topk=topk)), key=lambda h: -h.score)


class HybridRetriever(ModuleBase):
    """Reciprocal rank fusion of several arms (each asked for ``depth`` pages), run in a LazyLLM ``parallel``.

    Fusion is keyed by page id, so one page found by the visual and a text arm counts once with both ranks
    (LazyLLM's own ``RRFFusion`` keys by ``node.text``: an image node's text is its path, a text node's is
    its text, so the same page from two arms would not meet there). The arms are used as given, never
    modified."""

    def __init__(self, arms: Mapping[str, Callable], weights: Optional[Mapping[str, float]] = None,
                 topk: int = 5, depth: int = 50, k: int = 60, output_format: Optional[str] = None,
                 join: Union[bool, str] = False, return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        check_output_format(output_format, join)
        if not arms:
            raise ValueError('HybridRetriever needs at least one arm')
        self.arms = dict(arms)
        self.weights = dict(weights or {})
        unknown = set(self.weights) - set(self.arms)
        if unknown:
            raise ValueError(f'weights for unknown arms {sorted(unknown)}; arms are {sorted(self.arms)}')
        self.topk, self.depth, self.k = topk, depth, k
        self.output_format = output_format
        self.join = join
        self.arm_name = 'hybrid'

    def search(self, query: str, filters: Filters = None, *, topk: Optional[int] = None) -> List[SearchHit]:
        from lazyllm import parallel

        names = list(self.arms)
        with parallel().asdict as fan_out:
            for name in names:
                setattr(fan_out, name, _Ask(self.arms[name], filters, self.depth))
        rankings: Dict[str, Any] = fan_out(query)
        return reciprocal_rank_fusion({n: rankings[n] for n in names}, self.weights, k=self.k,
                                      topk=topk or self.topk)

    def forward(self, query: str, filters: Filters = None, *, topk: Optional[int] = None, **kw):
        return format_nodes([hit_to_node(h) for h in self.search(query, filters, topk=topk)],
                            self.output_format, self.join)


class _Ask:
    """``arm_hits(arm, query, filters, depth)`` as a one-argument callable for ``parallel``."""

    def __init__(self, arm, filters: Filters, depth: int):
        self.arm, self.filters, self.depth = arm, filters, depth

    def __call__(self, query: str) -> List[SearchHit]:
        return arm_hits(self.arm, query, self.filters, self.depth)
