"""Chain metrics: for queries with two or more gold pages, did an arm find the whole chain?

* ``all@10``: the share of such queries whose gold pages are *all* in the top 10;
* ``R@10 hN``: recall@10 of the gold pages at hop position N of their chain (from the qrels' ``hop`` field;
  a page reachable from the question is hop 1, the definition behind it hop 2, ...), over all chain queries;
* ``searches``: searches the arm spent per query (1 for single-shot arms; hop 1 plus one per bridge for a
  multi-hop arm), over every query.

    >>> qrels = {'q1': {'a#1': 1, 'b#1': 1}, 'q2': {'a#1': 1, 'c#1': 1, 'd#1': 1}, 'q3': {'a#1': 1}}
    >>> hops = {'q1': {'a#1': 1, 'b#1': 2}, 'q2': {'a#1': 1, 'c#1': 2, 'd#1': 3}}
    >>> run = {'q1': {'a#1': 2.0, 'b#1': 1.0}, 'q2': {'a#1': 2.0, 'c#1': 1.0}, 'q3': {}}
    >>> chain_metrics(qrels, hops, run, searches=[1, 3, 1])
    {'chain_queries': 2, 'all@10': 0.5, 'R@10 h1': 1.0, 'R@10 h2': 1.0, 'R@10 h3': 0.0, 'searches': 1.667}
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

CHAIN_K = 10
MULTIHOP_SUFFIX = '-multihop'


def base_arm(name: str) -> str:
    """``text-multihop`` -> ``text``; other names unchanged."""
    return name[:-len(MULTIHOP_SUFFIX)] if name.endswith(MULTIHOP_SUFFIX) else name


def is_multihop(name: str) -> bool:
    return name.endswith(MULTIHOP_SUFFIX) and len(name) > len(MULTIHOP_SUFFIX)


def chain_queries(qrels: Mapping[str, Mapping[str, int]]) -> List[str]:
    return sorted(q for q, rel in qrels.items() if len(rel) >= 2)


def _top(ranking: Mapping[str, float], k: int) -> set:
    return set(sorted(ranking, key=lambda p: -ranking[p])[:k])


def chain_metrics(qrels: Mapping[str, Mapping[str, int]], hops: Mapping[str, Mapping[str, int]],
                  run: Mapping[str, Mapping[str, float]], searches: Optional[Sequence[int]] = None,
                  k: int = CHAIN_K) -> Dict[str, float]:
    """The metrics above; ``{}`` when no query has two gold pages and no searches were counted."""
    out: Dict[str, float] = {}
    chained = chain_queries(qrels)
    if chained:
        out['chain_queries'] = len(chained)
        found_all = 0
        per_hop: Dict[int, List[int]] = {}
        for q in chained:
            top = _top(run.get(q) or {}, k)
            found_all += all(page in top for page in qrels[q])
            for page, hop in (hops.get(q) or {}).items():
                per_hop.setdefault(int(hop), []).append(page in top)
        out[f'all@{k}'] = round(found_all / len(chained), 3)
        for hop in sorted(per_hop):
            out[f'R@{k} h{hop}'] = round(sum(per_hop[hop]) / len(per_hop[hop]), 3)
    if searches:
        out['searches'] = round(sum(searches) / len(searches), 3)
    return out


def chain_columns(arms: Sequence) -> List[str]:
    """The chain columns any arm of a report has, in a stable order (all@k, per-hop recall, searches); none
    when no query has a chain and every arm searched once per query."""
    chains = [getattr(arm, 'chain', None) or {} for arm in arms]
    names: List[str] = []
    for chain in chains:
        for key in chain:
            if key not in ('chain_queries', 'searches') and key not in names:
                names.append(key)
    hop_keys = sorted((n for n in names if ' h' in n), key=lambda n: int(n.rsplit('h', 1)[1]))
    counted = any(c.get('searches', 1) != 1 for c in chains) or any('chain_queries' in c for c in chains)
    return [n for n in names if n.startswith('all@')] + hop_keys + (['searches'] if counted else [])
