"""Single-shot against multi-hop retrieval on chain questions: the generated concept-chain benchmark (chain
lengths 2, 3 and 4) and chain questions written for the real corpus (benchmarks/data/real_chains: RAG and
ColPali paper pages that name a concept another page explains).

Arms: text, layout, hybrid (RRF of the arms that ran; the tiny visual arm is weighted 0, so it is text+layout)
and the visual arm with a tiny random model (its rows are meaningless), each single-shot and ``-multihop``.
Per arm and chain length: all@10 (every gold page of the chain in the top 10), Recall@10, recall per hop
position, searches per question and latency per question (p50, ms); all@10 split by whether the chain has a
link shown only in a figure.

    nice python benchmarks/bench_multihop.py --out benchmarks/results/multihop.json
    nice python benchmarks/bench_multihop.py --skip-real --arms text,text-multihop     # a quick look
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report_io import write_json  # noqa: E402
from lazyllm_colpali.eval import evaluate_run, from_parts, run_eval  # noqa: E402
from lazyllm_colpali.eval.chains import chain_metrics  # noqa: E402
from lazyllm_colpali.eval.concept_chains import build_concept_chains, load_chains  # noqa: E402

HERE = Path(__file__).resolve().parent
ARMS = ('colpali', 'text', 'layout', 'hybrid', 'colpali-multihop', 'text-multihop', 'layout-multihop',
        'hybrid-multihop')
REAL_CANDIDATES = (os.environ.get('LAZYLLM_COLPALI_REAL_CORPUS', ''), str(HERE.parents[1] / 'shared/corpus/real'),
                   '/work/shared/corpus/real')


def summarize(report, dataset, qids: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Per arm, over the questions ``qids``: all@10, R@10, recall per hop, searches and ms per question."""
    qrels = {q: dataset.qrels[q] for q in qids}
    rows = {}
    for arm in report.arms:
        if arm.error:
            rows[arm.arm] = {'error': arm.error}
            continue
        run = {q: arm.run.get(q, {}) for q in qids}
        chain = chain_metrics(qrels, dataset.chain_hops, run, [arm.per_query[q]['searches'] for q in qids])
        ms = [arm.per_query[q]['ms'] for q in qids]
        rows[arm.arm] = {**chain, 'recall@10': round(evaluate_run(qrels, run, ['recall@10'])['recall@10'], 3),
                         'ms_p50': round(statistics.median(ms), 1), 'ms_mean': round(statistics.mean(ms), 1),
                         'note': arm.note}
    return rows


def table(title: str, rows: Dict[str, Dict[str, float]]) -> str:
    hops = sorted({k for r in rows.values() for k in r if k.startswith('R@10 h')})
    header = ['arm', 'all@10', 'R@10', *hops, 'searches/q', 'ms/q p50', 'ms/q mean']
    lines = [f'### {title}', '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for arm, r in rows.items():
        if 'error' in r:
            lines.append(f'| {arm} | not run: {r["error"]} |')
            continue
        cells = [arm, f'{r.get("all@10", 0):.3f}', f'{r["recall@10"]:.3f}', *(f'{r.get(h, 0):.3f}' for h in hops),
                 f'{r.get("searches", 1):.2f}', f'{r["ms_p50"]:.1f}', f'{r["ms_mean"]:.1f}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def real_corpus(given: str) -> Path:
    for candidate in ([given] if given else REAL_CANDIDATES):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise SystemExit('real corpus not found: pass --real-corpus DIR or set LAZYLLM_COLPALI_REAL_CORPUS')


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arms', default=','.join(ARMS))
    parser.add_argument('--hops', type=int, default=3)
    parser.add_argument('--model', default='tiny:colpali', help='visual arm model (tiny: rankings meaningless)')
    parser.add_argument('--chains-root', default=None, help='where the concept-chain benchmark is generated')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--real-corpus', default='')
    parser.add_argument('--workdir', default=None, help='keep the arms\' indexes here (reused by a rerun)')
    parser.add_argument('--skip-real', action='store_true')
    parser.add_argument('--skip-generated', action='store_true')
    parser.add_argument('--out', default=str(HERE / 'results' / 'multihop.json'))
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(',') if a]
    work = Path(args.workdir or tempfile.mkdtemp(prefix='bench_multihop_'))
    result = {'hops': args.hops, 'model': args.model, 'arms': arms, 'load_before': os.getloadavg()}
    options = dict(topk=10, model=args.model, hybrid_weights={'colpali': 0.0}, multihop={'hops': args.hops})
    out: List[str] = []
    if not args.skip_generated:
        root = Path(args.chains_root or work / 'concept_chains')
        dataset = build_concept_chains(root, seed=args.seed)
        chains = load_chains(root)
        start = time.perf_counter()
        report = run_eval(dataset, arms, workdir=work / 'generated', **options)
        result['generated'] = {'dataset': str(root), 'queries': len(dataset.queries), 'pages': report.n_pages,
                               'seconds': time.perf_counter() - start, 'by_length': {}, 'by_link': {}}
        for length in sorted({len(c.terms) for c in chains}):
            qids = [c.query_id for c in chains if len(c.terms) == length]
            rows = summarize(report, dataset, qids)
            result['generated']['by_length'][length] = rows
            out.append(table(f'generated, chain length {length} ({len(qids)} questions, {length + 1} gold pages '
                             'each)', rows))
        for label, pick in (('text links only', lambda c: c.image_link is None),
                            ('one link only in a figure', lambda c: c.image_link is not None)):
            qids = [c.query_id for c in chains if pick(c)]
            if qids:
                rows = summarize(report, dataset, qids)
                result['generated']['by_link'][label] = rows
                out.append(table(f'generated, {label} ({len(qids)} questions)', rows))
    if not args.skip_real:
        corpus = real_corpus(args.real_corpus)
        data = HERE / 'data' / 'real_chains'
        dataset = from_parts(corpus, data / 'queries.jsonl', data / 'qrels.jsonl', name='real_chains')
        start = time.perf_counter()
        report = run_eval(dataset, arms, workdir=work / 'real', **options)
        rows = summarize(report, dataset, sorted(dataset.queries))
        result['real'] = {'corpus': str(corpus), 'queries': len(dataset.queries), 'pages': report.n_pages,
                          'seconds': time.perf_counter() - start, 'rows': rows,
                          'per_query': {a.arm: {q: sorted(p for p in a.run.get(q, {}) if p in dataset.qrels[q])
                                                for q in dataset.queries} for a in report.arms if not a.error}}
        out.append(table(f'real corpus ({len(dataset.queries)} chain questions, {report.n_pages} pages)', rows))
    result['load_after'] = os.getloadavg()
    print('\n\n'.join(out))
    print(f'\nload average before {result["load_before"][0]:.2f}, after {result["load_after"][0]:.2f}')
    write_json(args.out, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
