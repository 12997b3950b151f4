"""Every retrieval arm as a LazyLLM component with one shape: ``query -> top-k pages``.

``ColPaliRetriever`` (visual), ``PageTextRetriever`` (text layer / OCR / MinerU, or caption+QA) and
``HybridRetriever`` (reciprocal rank fusion of any of them) take the same call and return the same things -
``ImageDocNode``s by default, ``SearchHit``s with ``output_format='hits'`` - so swapping one arm for another
in a pipeline is one line:

    visual = ColPaliRetriever(doc, topk=5)
    text = PageTextRetriever(PageTextIndex('./text_index'), dataset_path='./pdfs', topk=5)
    hybrid = HybridRetriever({'visual': visual, 'text': text}, weights={'visual': 1.0, 'text': 0.5}, topk=5)
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from lazyllm.module import ModuleBase

from ..ingest.records import IngestReport
from ..retrieve.fusion import reciprocal_rank_fusion
from ..retrieve.retriever import SearchHit
from ..text.page_index import PageTextIndex
from .components import hit_to_node

OUTPUT_FORMATS = (None, 'hits', 'dict')


def format_hits(hits: List[SearchHit], output_format: Optional[str]):
    if output_format == 'hits':
        return hits
    if output_format == 'dict':
        return [h.to_dict() for h in hits]
    return [hit_to_node(h) for h in hits]


def _check_format(output_format: Optional[str]) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be None (nodes), 'hits' or 'dict', got {output_format!r}")


class PageTextRetriever(ModuleBase):
    """A text arm: pages' text (or VLM captions) searched by LazyLLM's ``Retriever`` (BM25 by default).
    ``dataset_path`` is indexed on ``.start()`` or first use, incrementally."""

    def __init__(self, index: PageTextIndex, dataset_path: Union[str, Path, List[Union[str, Path]], None] = None,
                 topk: int = 5, output_format: Optional[str] = None, return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        _check_format(output_format)
        self.index = index
        self.dataset_path = dataset_path
        self.topk = topk
        self.output_format = output_format
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

    def forward(self, query: str, topk: Optional[int] = None, **kw):
        return format_hits(self.ensure_indexed().search(query, topk or self.topk), self.output_format)


class HybridRetriever(ModuleBase):
    """Reciprocal rank fusion of several arms (each asked for ``depth`` pages), run in a LazyLLM ``parallel``."""

    def __init__(self, arms: Mapping[str, ModuleBase], weights: Optional[Mapping[str, float]] = None,
                 topk: int = 5, depth: int = 50, k: int = 60, output_format: Optional[str] = None,
                 return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        _check_format(output_format)
        if not arms:
            raise ValueError('HybridRetriever needs at least one arm')
        self.arms = dict(arms)
        self.weights = dict(weights or {})
        unknown = set(self.weights) - set(self.arms)
        if unknown:
            raise ValueError(f'weights for unknown arms {sorted(unknown)}; arms are {sorted(self.arms)}')
        self.topk, self.depth, self.k = topk, depth, k
        self.output_format = output_format
        for arm in self.arms.values():   # every arm answers in hits; fusion needs page ids and ranks
            if hasattr(arm, 'output_format'):
                arm.output_format = 'hits'

    def forward(self, query: str, topk: Optional[int] = None, **kw):
        from lazyllm import parallel

        names = list(self.arms)
        with parallel().asdict as fan_out:
            for name in names:
                setattr(fan_out, name, _Ask(self.arms[name], self.depth))
        rankings: Dict[str, Any] = fan_out(query)
        fused = reciprocal_rank_fusion({n: rankings[n] for n in names}, self.weights, k=self.k,
                                       topk=topk or self.topk)
        return format_hits(fused, self.output_format)


class _Ask:
    """``arm(query, topk=depth)`` as a one-argument callable for ``parallel``."""

    def __init__(self, arm, depth: int):
        self.arm, self.depth = arm, depth

    def __call__(self, query: str):
        return self.arm(query, topk=self.depth)
