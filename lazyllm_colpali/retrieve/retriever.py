"""The MaxSim retriever: optional candidate generation in the store, then exact MaxSim rerank."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..errors import EmptyQueryError
from ..store.base import Filters, MultiVectorStore
from .maxsim import maxsim_packed, topk


@dataclass
class SearchHit:
    page_id: str
    doc_id: str
    source: str
    file_name: str
    page: int
    score: float
    image_path: str
    metadata: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class MaxSimRetriever:
    """Ranks pages by exact MaxSim.

    ``mode='exact'`` scores every (filtered) page: exact by construction. ``mode='candidates'`` asks the
    store for ``candidate_budget`` pages first (approximate), then scores those exactly; it is exact
    whenever the budget covers the collection. ``mode='auto'`` is exact up to ``exact_max_pages`` pages.
    """

    def __init__(self, store: MultiVectorStore, *, mode: str = 'auto', candidate_budget: int = 256,
                 exact_max_pages: int = 20000, device: str = 'cpu'):
        if mode not in ('auto', 'exact', 'candidates'):
            raise ValueError(f"mode must be 'auto', 'exact' or 'candidates', got {mode!r}")
        self.store = store
        self.mode = mode
        self.candidate_budget = candidate_budget
        self.exact_max_pages = exact_max_pages
        self.device = device

    def _use_candidates(self) -> bool:
        if self.mode == 'auto':
            return self.store.count() > self.exact_max_pages
        return self.mode == 'candidates'

    def search_vectors(self, query: torch.Tensor, topk_: int = 5, filters: Filters = None) -> List[SearchHit]:
        if query.ndim != 2 or query.shape[0] == 0:
            raise EmptyQueryError('the query produced no vectors; give a non-empty query')
        if self._use_candidates():
            page_ids: Optional[Sequence[str]] = self.store.candidates(query, self.candidate_budget, filters)
        else:
            page_ids = self.store.page_ids(filters) if filters else None
        packed = self.store.packed(page_ids)
        if len(packed) == 0:
            return []
        scores = maxsim_packed([query], packed, device=self.device)[0]
        values, indices = topk(scores, topk_)
        chosen = [packed.page_ids[int(i)] for i in indices]
        records = self.store.records(chosen)
        return [SearchHit(page_id=r.page_id, doc_id=r.doc_id, source=r.source, file_name=r.file_name,
                          page=r.page_number, score=float(v), image_path=r.image_path, metadata=r.metadata)
                for v, r in ((v, records[p]) for v, p in zip(values.tolist(), chosen) if p in records)]
