"""The eval harness's ``<arm>-multihop`` arms: whatever base arm the harness built (visual, text, layout,
hybrid, or any arm added later), wrapped in :class:`~lazyllm_colpali.multihop.MultiHopRetriever`."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

from .chains import base_arm, is_multihop


def with_base_arms(arms: Sequence[str]) -> List[str]:
    """The arms to run: each ``X-multihop`` brings its base ``X`` (built once, and its single-shot row is the
    baseline the multi-hop row is read against), placed just before it unless already asked for."""
    out: List[str] = []
    for name in arms:
        if is_multihop(name) and base_arm(name) not in arms and base_arm(name) not in out:
            out.append(base_arm(name))
        if name not in out:
            out.append(name)
    return out


class MultiHopSearch:
    """``(query, topk) -> hits`` for the harness, remembering how many searches the last query spent."""

    def __init__(self, retriever):
        self.retriever = retriever
        self.last_searches = 0

    def __call__(self, query: str, topk: int):
        result = self.retriever.search_with_trace(query, topk=topk)
        self.last_searches = result.searches
        return result.hits


def run_multihop_arm(name: str, searchers: Dict[str, Any], results: List, dataset, topk: int,
                     metrics: Sequence[str], options: Optional[Dict[str, Any]] = None):
    from ..multihop import MultiHopRetriever
    from ..multihop.page_text import text_sources
    from .harness import ArmResult, _query_arm

    result = ArmResult(name)
    base = base_arm(name)
    arm = searchers.get(base)
    base_result = next((r for r in results if r.arm == base), None)
    if arm is None:
        reason = base_result.error if base_result is not None and base_result.error else 'it did not run'
        result.error = f'base arm {base} unavailable: {reason}'
        return result
    options = dict(options or {})
    # Arms that do not say which pages they search get the dataset's files, read by the text layer.
    corpus = options.pop('corpus', None) or (None if list(text_sources(arm)) else dataset.corpus_dir)
    retriever = MultiHopRetriever(arm, topk=topk, corpus=corpus, **options)
    start = time.perf_counter()
    if getattr(retriever.bridges, 'needs_terms', True):
        retriever.collection.terms()   # built once per collection, before the queries are timed
    result.note = (f'{base} + up to {retriever.hops} hops, {type(retriever.bridges).__name__} '
                   f'(collection terms {time.perf_counter() - start:.1f} s)')
    result.pages = base_result.pages
    result.index_seconds = base_result.index_seconds
    result.index_s_per_page = base_result.index_s_per_page
    result.bytes_per_page = base_result.bytes_per_page
    _query_arm(MultiHopSearch(retriever), dataset, topk, result, metrics)
    return result
