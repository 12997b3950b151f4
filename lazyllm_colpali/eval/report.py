"""The comparison table (Markdown), its JSON, and a PNG bar chart."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional

from .chains import chain_columns
from .harness import EvalReport

_LABELS = {'ndcg@5': 'nDCG@5', 'ndcg@10': 'nDCG@10', 'recall@1': 'R@1', 'recall@5': 'R@5', 'recall@10': 'R@10',
           'mrr': 'MRR'}


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
    header = ['arm', *(_LABELS.get(m, m) for m in report.metrics), *chains, 'p50 ms', 'p95 ms', 'index s/page',
              'bytes/page', 'note']
    rows: List[List[str]] = []
    for arm in report.arms:
        if arm.error:
            rows.append([arm.arm, *(['-'] * (len(header) - 2)), f'not run: {arm.error}'])
            continue
        rows.append([arm.arm, *(_fmt(arm.metrics.get(m)) for m in report.metrics),
                     *(_fmt(arm.chain.get(c), 2 if c == 'searches' else 3) for c in chains), _fmt(arm.latency_p50_ms, 1),
                     _fmt(arm.latency_p95_ms, 1), _fmt(arm.index_s_per_page, 3), _size(arm.bytes_per_page),
                     arm.note])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: '| ' + ' | '.join(c.ljust(w) for c, w in zip(cells, widths)) + ' |'  # noqa: E731
    # The visual model is named only where a visual arm ran (colpali, colpali@PATH, colpali+context).
    visual = any(arm.arm.startswith('colpali') for arm in report.arms)
    title = (f'{report.dataset}: {report.n_queries} queries, {report.n_pages} pages, top-{report.topk}'
             + (f', model {report.model}' if visual else ''))
    return '\n'.join([title, '', line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|',
                      *map(line, rows)])


def write_json(report: EvalReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=1, default=float))
    return path


def write_chart(report: EvalReport, path: str | Path, metrics=('ndcg@5', 'ndcg@10', 'recall@5', 'mrr')) -> Path:
    arms = [a for a in report.arms if not a.error]
    series = {_LABELS.get(m, m): [a.metrics.get(m, 0.0) for a in arms] for m in metrics}
    return _bar_chart(path, [a.arm for a in arms], series, f'{report.dataset}: retrieval quality by arm '
                      f'(top-{report.topk})', width=1.6)


def write_chain_chart(report: EvalReport, path: str | Path) -> Optional[Path]:
    """all@10 and recall per hop position, single-shot and multi-hop arms side by side, each labelled with its
    searches per query (None when the dataset has no chain queries: see :mod:`.chains`)."""
    arms = [a for a in report.arms if not a.error and (a.chain or {}).get('chain_queries')]
    columns = [c for c in chain_columns(arms) if c != 'searches']
    if not arms or not columns:
        return None
    labels = [f'{a.arm}\n{a.chain.get("searches", 1):.1f} searches/q' for a in arms]
    return _bar_chart(path, labels, {c: [a.chain.get(c, 0.0) for a in arms] for c in columns},
                      f'{report.dataset}: whole chains found ({arms[0].chain["chain_queries"]:.0f} chain queries)',
                      width=1.4, tick_size=8)


def _bar_chart(path: str | Path, groups: List[str], series: Dict[str, List[float]], title: str, width: float,
               tick_size: Optional[int] = None) -> Path:
    """Grouped bars (one group per arm, one bar per series) with value labels, scores from 0 to 1."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, width * len(groups) + 2), 4), dpi=120)
    bar = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        bars = ax.bar([x + i * bar for x in range(len(groups))], values, bar, label=label)
        ax.bar_label(bars, fmt='%.2f', fontsize=7)
    ax.set_xticks([x + bar * (len(series) - 1) / 2 for x in range(len(groups))], groups, fontsize=tick_size)
    ax.set_ylim(0, 1.08)
    ax.set_title(title)
    ax.legend(ncols=len(series), fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.08 if tick_size is None
                                                                                 else -0.16))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
