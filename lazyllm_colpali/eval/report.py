"""The comparison table (Markdown), its JSON, and a PNG bar chart. Metric groups that arm hooks add to a row
(answer-level metrics, ...) get their own columns after the retrieval metrics and their own chart panel."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .chains import chain_columns
from .harness import EvalReport

_LABELS = {'ndcg@5': 'nDCG@5', 'ndcg@10': 'nDCG@10', 'recall@1': 'R@1', 'recall@5': 'R@5', 'recall@10': 'R@10',
           'mrr': 'MRR'}
# column labels of metric groups, by "group.metric" (unlisted ones show the metric's own name)
GROUP_LABELS = {'answers.em': 'EM', 'answers.anls': 'ANLS', 'answers.f1': 'F1', 'answers.semantic': 'Sem',
                'answers.judge': 'Judge', 'answers.abstain': 'Abstain'}


def group_columns(report: EvalReport) -> List[Tuple[str, str]]:
    """(group, metric) pairs that any arm has, in first-seen order; counts (``n_*``) stay in the JSON."""
    columns: List[Tuple[str, str]] = []
    for arm in report.arms:
        for group, values in arm.metric_groups.items():
            columns.extend((group, m) for m in values if not m.startswith('n_') and (group, m) not in columns)
    return columns


def _group_label(group: str, metric: str) -> str:
    return GROUP_LABELS.get(f'{group}.{metric}', metric)


def _fmt(value: float, digits: int = 3) -> str:
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.{digits}f}'


def _size(n: float) -> str:
    if n is None or math.isnan(n):
        return '-'
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024
    return str(n)


def format_table(report: EvalReport) -> str:
    chains = chain_columns(report.arms)   # all@10, R@10 per hop, searches: only where the data has chains
    extra = group_columns(report)         # answer-level metrics, ...: only where an arm hook added them
    header = ['arm', *(_LABELS.get(m, m) for m in report.metrics), *chains, *(_group_label(g, m) for g, m in extra),
              'p50 ms', 'p95 ms', 'index s/page', 'bytes/page', 'index bytes/page', 'note']
    rows: List[List[str]] = []
    for arm in report.arms:
        if arm.error:
            rows.append([arm.arm, *(['-'] * (len(header) - 2)), f'not run: {arm.error}'])
            continue
        rows.append([arm.arm, *(_fmt(arm.metrics.get(m)) for m in report.metrics),
                     *(_fmt(arm.chain.get(c), 2 if c == 'searches' else 3) for c in chains),
                     *(_fmt(arm.metric_groups.get(g, {}).get(m)) for g, m in extra), _fmt(arm.latency_p50_ms, 1),
                     _fmt(arm.latency_p95_ms, 1), _fmt(arm.index_s_per_page, 3), _size(arm.bytes_per_page),
                     _size(arm.index_bytes_per_page), arm.note])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: '| ' + ' | '.join(c.ljust(w) for c, w in zip(cells, widths)) + ' |'  # noqa: E731
    # The visual model is named only where a visual arm ran (colpali, colpali@PATH, colpali+context).
    visual = any(arm.arm.startswith('colpali') for arm in report.arms)
    title = (f'{report.dataset}: {report.n_queries} queries, {report.n_pages} pages, top-{report.topk}'
             + (f', model {report.model}' if visual else ''))
    return '\n'.join([title, '', line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|',
                      *map(line, rows), *([''] + list(report.notes) if report.notes else [])])


def write_json(report: EvalReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=1, default=float))
    return path


def _score(value: Optional[float]) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def write_chart(report: EvalReport, path: str | Path, metrics=('ndcg@5', 'ndcg@10', 'recall@5', 'mrr')) -> Path:
    """Retrieval quality by arm, and one panel more per metric group (answer-level metrics, ...)."""
    arms = [a for a in report.arms if not a.error]
    groups: Dict[str, List[str]] = {}
    for group, metric in group_columns(report):
        groups.setdefault(group, []).append(metric)
    panels = [(f'{report.dataset}: retrieval quality by arm (top-{report.topk})',
               {_LABELS.get(m, m): [_score(a.metrics.get(m)) for a in arms] for m in metrics})]
    panels += [(f'{report.dataset}: {group} by arm',
                {_group_label(group, m): [_score(a.metric_groups.get(group, {}).get(m)) for a in arms]
                 for m in names}) for group, names in groups.items()]
    return _bar_chart(path, [a.arm for a in arms], panels, width=1.6)


def write_chain_chart(report: EvalReport, path: str | Path) -> Optional[Path]:
    """all@10 and recall per hop position, single-shot and multi-hop arms side by side, each labelled with its
    searches per query (None when the dataset has no chain queries: see :mod:`.chains`)."""
    arms = [a for a in report.arms if not a.error and (a.chain or {}).get('chain_queries')]
    columns = [c for c in chain_columns(arms) if c != 'searches']
    if not arms or not columns:
        return None
    labels = [f'{a.arm}\n{a.chain.get("searches", 1):.1f} searches/q' for a in arms]
    title = f'{report.dataset}: whole chains found ({arms[0].chain["chain_queries"]:.0f} chain queries)'
    return _bar_chart(path, labels, [(title, {c: [a.chain.get(c, 0.0) for a in arms] for c in columns})],
                      width=1.4, tick_size=8)


def _bar_chart(path: str | Path, groups: List[str], panels: List[Tuple[str, Dict[str, List[float]]]],
               width: float, tick_size: Optional[int] = None) -> Path:
    """Panels of grouped bars, one above the other (one group per arm, one bar per series) with value labels,
    scores from 0 to 1; ``panels``: (title, {series label: one value per group})."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, width * len(groups) + 2), 4 * len(panels)), dpi=120,
                             squeeze=False)
    for ax, (title, series) in zip(axes[:, 0], panels):
        bar = 0.8 / max(1, len(series))
        crowded = len(series) > 4   # upright labels of narrow bars would overlap
        for i, (label, values) in enumerate(series.items()):
            bars = ax.bar([x + i * bar for x in range(len(groups))], values, bar, label=label)
            ax.bar_label(bars, fmt='%.2f', fontsize=6 if crowded else 7, rotation=90 if crowded else 0, padding=2)
        ax.set_xticks([x + bar * (len(series) - 1) / 2 for x in range(len(groups))], groups, fontsize=tick_size)
        ax.set_ylim(0, 1.15 if crowded else 1.08)
        ax.set_title(title)
        ax.legend(ncols=len(series), fontsize=8, loc='upper center',
                  bbox_to_anchor=(0.5, -0.08 if tick_size is None else -0.16))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
