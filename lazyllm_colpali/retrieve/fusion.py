"""Reciprocal rank fusion (Cormack et al., 2009) of page rankings from several arms.

    >>> from lazyllm_colpali.retrieve.retriever import SearchHit
    >>> hit = lambda pid: SearchHit(pid, 'd', '/a.pdf', 'a.pdf', int(pid[-1]), 1.0, '')
    >>> fused = reciprocal_rank_fusion({'visual': [hit('p1'), hit('p2')], 'text': [hit('p2'), hit('p3')]}, k=60)
    >>> [h.page_id for h in fused]
    ['p2', 'p1', 'p3']
    >>> fused[0].metadata['ranks']
    {'visual': 2, 'text': 1}
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence

from .retriever import SearchHit


def reciprocal_rank_fusion(rankings: Mapping[str, Sequence[SearchHit]], weights: Optional[Mapping[str, float]] = None,
                           k: int = 60, topk: Optional[int] = None) -> List[SearchHit]:
    """score(page) = sum over arms of weight / (k + rank). Rank-based, so arms with incomparable scores
    (MaxSim sums, BM25) fuse without calibration. Ties keep the order of first appearance."""
    if k < 0:
        raise ValueError(f'k must be >= 0, got {k}')
    weights = dict(weights or {})
    unknown = set(weights) - set(rankings)
    if unknown:
        raise ValueError(f'weights given for arms that are not fused: {sorted(unknown)}')
    scores: Dict[str, float] = {}
    first: Dict[str, SearchHit] = {}
    ranks: Dict[str, Dict[str, int]] = {}
    for arm, hits in rankings.items():
        weight = float(weights.get(arm, 1.0))
        for rank, hit in enumerate(hits, 1):
            scores[hit.page_id] = scores.get(hit.page_id, 0.0) + weight / (k + rank)
            ranks.setdefault(hit.page_id, {})[arm] = rank
            seen = first.get(hit.page_id)
            if seen is None or (not seen.image_path and hit.image_path):   # keep a hit that has the image
                first[hit.page_id] = hit
    order = sorted(scores, key=lambda pid: -scores[pid])
    fused = [replace(first[pid], score=scores[pid], metadata={**first[pid].metadata, 'ranks': ranks[pid]})
             for pid in order]
    return fused[:topk] if topk else fused
