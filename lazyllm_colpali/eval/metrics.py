"""IR metrics through ranx (not by hand): nDCG@k, Recall@k, MRR over a run of page rankings."""
from __future__ import annotations

from typing import Dict, List, Sequence

DEFAULT_METRICS = ('ndcg@5', 'ndcg@10', 'recall@1', 'recall@5', 'recall@10', 'mrr')
_NO_HIT = '__no_hit__'   # ranx needs every query in the run; an empty ranking scores 0 on every metric


def evaluate_run(qrels: Dict[str, Dict[str, int]], run: Dict[str, Dict[str, float]],
                 metrics: Sequence[str] = DEFAULT_METRICS) -> Dict[str, float]:
    """Mean of each metric over the queries that have judgements.

    >>> qrels = {'q1': {'a.pdf#1': 1}, 'q2': {'a.pdf#2': 1}}
    >>> run = {'q1': {'a.pdf#1': 3.0, 'a.pdf#2': 1.0}, 'q2': {'a.pdf#1': 2.0, 'a.pdf#2': 1.0}}
    >>> {k: round(v, 3) for k, v in evaluate_run(qrels, run, ['recall@1', 'mrr']).items()}
    {'recall@1': 0.5, 'mrr': 0.75}
    """
    from ranx import Qrels, Run, evaluate

    judged = {q: rel for q, rel in qrels.items() if rel}
    full_run = {q: (dict(run.get(q) or {}) or {_NO_HIT: 0.0}) for q in judged}
    scores = evaluate(Qrels(judged), Run(full_run), list(metrics), make_comparable=True)
    if isinstance(scores, float):
        scores = {metrics[0]: scores}
    return {m: float(scores[m]) for m in metrics}


def percentile(values: List[float], q: float) -> float:
    import numpy as np
    return float(np.percentile(values, q)) if values else float('nan')
