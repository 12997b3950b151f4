"""Recall@k of a model on held-out pairs: each distinct query ranks every page the pairs name (positives and
negatives) by exact MaxSim. Ties are counted against the model (a query that scores all pages the same has
Recall@1 = 0, not a lucky 1)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Sequence

import torch

from ..retrieve.maxsim import maxsim_reference
from .pages import PageImages
from .pairs import PageRef, TrainingPair


def embed(model: Any, processor: Any, items: Sequence, process: Callable, batch_size: int,
          prepare: Callable[[dict], dict], device: str) -> List[torch.Tensor]:
    """Multi-vectors of ``items`` (images or query strings) with padding rows removed, in eval mode."""
    out: List[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                batch = prepare(dict(process(list(items[start:start + batch_size]))))
                batch = {k: v.to(device) if hasattr(v, 'to') else v for k, v in batch.items()}
                vectors = model(**batch)
                mask = batch['attention_mask'].bool()
                out.extend(v[m].float().cpu() for v, m in zip(vectors, mask))
    finally:
        model.train(was_training)
    return out


def recall_at_k(model: Any, processor: Any, pages: PageImages, pairs: Sequence[TrainingPair], *,
                ks: Sequence[int] = (1, 5), batch_size: int = 4, prepare: Callable[[dict], dict] = dict,
                device: str = 'cpu') -> Dict[str, float]:
    """``{'recall@1': ..., 'recall@5': ..., 'queries': n, 'pages': m}`` over the pages ``pairs`` name."""
    relevant: 'OrderedDict[str, set]' = OrderedDict()
    pool: 'OrderedDict[PageRef, int]' = OrderedDict()
    for pair in pairs:
        relevant.setdefault(pair.query, set()).add(pair.page)
        for ref in [pair.page, *pair.negatives]:
            pool.setdefault(ref, len(pool))
    if not relevant:
        return {}
    refs = list(pool)
    page_vectors = embed(model, processor, [pages[r] for r in refs], processor.process_images, batch_size,
                         prepare, device)
    queries = list(relevant)
    query_vectors = embed(model, processor, queries, processor.process_queries, batch_size, prepare, device)
    scores = maxsim_reference(query_vectors, page_vectors)   # (queries, pages)
    result: Dict[str, float] = {}
    for k in ks:
        total = 0.0
        for row, query in zip(scores, queries):
            wanted = [pool[r] for r in relevant[query]]
            # Pessimistic rank: every other page scoring at least as high comes first.
            found = sum(1 for i in wanted if int((row >= row[i]).sum()) - 1 < k)
            total += found / len(wanted)
        result[f'recall@{k}'] = total / len(queries)
    result.update(queries=len(queries), pages=len(refs), chance_recall_at_1=1.0 / len(refs))
    return result
