"""Search latency without explanations (unchanged?) and what similarity maps cost when asked for.

One collection of synthetic ColPali-shaped pages (1046 x 128 vectors, 612 x 792 page images) is built in a
Milvus Lite file; then, each in a fresh process over the same collection:

* ``search`` p50/p95 with this checkout, and with ``--compare-tree DIR`` (e.g. main before this change) in the
  same run, in ``--rounds`` interleaved processes per tree (medians): the ratio is the answer to "is search
  latency without explain unchanged";
* ``explain`` of one hit: the first call (colpali-engine's map utilities import, the page geometry) and warm
  calls (maps from stored vectors), the overlay PNG, and ``search + explain`` of the top 5 (``--explain``).

The query encoder is the tiny random ColPali (no weights exist offline; a real model's query costs more, and
the same in both trees).

    python benchmarks/bench_explain.py --pages 2000 --out benchmarks/results/explain.json
    git -C /work/main worktree add /tmp/before <commit> && \\
        python benchmarks/bench_explain.py --compare-tree /tmp/before --out benchmarks/results/explain.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ['revenue in 2023', 'operating costs by region', 'replace the filter every month', 'warranty terms',
           'maximum operating pressure', 'hiring plan for next quarter']


def build(db: Path, pages: int, seed: int = 0) -> None:
    import torch
    from PIL import Image

    from lazyllm_colpali import MilvusMultiVectorStore
    from lazyllm_colpali.ingest.records import PageRecord, make_page_id

    generator = torch.Generator().manual_seed(seed)
    image = Image.new('RGB', (612, 792), 'white')
    store = MilvusMultiVectorStore(str(db), dim=128)
    try:
        for start in range(0, pages, 50):
            items = []
            for n in range(start, min(start + 50, pages)):
                doc = f'{n // 10:016x}'
                record = PageRecord(page_id=make_page_id(doc, n % 10 + 1), doc_id=doc, source=f'/bench/{doc}.pdf',
                                    file_name=f'{doc}.pdf', page_number=n % 10 + 1, width=612, height=792)
                vectors = torch.nn.functional.normalize(torch.randn(1046, 128, generator=generator), dim=1)
                items.append((record, vectors, image))
            store.add(items)
    finally:
        store.close()


def measure(db: Path, runs: int, explain: bool) -> dict:
    """Runs in a child process (its own checkout on PYTHONPATH)."""
    from lazyllm_colpali import ColPaliEncoder, ColPaliIndex, MilvusMultiVectorStore

    encoder = ColPaliEncoder('tiny:colpali').load()
    store = MilvusMultiVectorStore(str(db), create=False)
    index = ColPaliIndex(encoder, store, progress=False, allow_model_change=True)
    try:
        index.search(QUERIES[0], 5)                      # warm: kernel JIT, the packed view, query shapes
        for q in QUERIES:
            encoder.encode_queries([q])                  # every query's encoding cached: time the search itself
        times = []
        for i in range(runs):
            start = time.perf_counter()
            index.search(QUERIES[i % len(QUERIES)], 5)
            times.append((time.perf_counter() - start) * 1000)
        import lazyllm_colpali
        result = {'pages': store.count(), 'search_ms': _stats(times), 'package': lazyllm_colpali.__file__}
        if explain:
            hits = index.search(QUERIES[1], 5)
            start = time.perf_counter()
            index.explain(QUERIES[1], hits[0])
            result['explain_first_ms'] = (time.perf_counter() - start) * 1000
            warm, png, both = [], [], []
            for i in range(runs):
                start = time.perf_counter()
                explanation = index.explain(QUERIES[1], hits[i % len(hits)])
                warm.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                explanation.overlay(box=True).save(os.path.join(tempfile.gettempdir(), 'bench_explain.png'))
                png.append((time.perf_counter() - start) * 1000)
            for i in range(max(3, runs // 5)):
                start = time.perf_counter()
                query = QUERIES[i % len(QUERIES)]
                index.explain_hits(query, index.search(query, 5))
                both.append((time.perf_counter() - start) * 1000)
            result.update(explain_ms=_stats(warm), overlay_png_ms=_stats(png), search_and_explain_top5_ms=_stats(both))
        return result
    finally:
        store.close()


def _stats(values) -> dict:
    values = sorted(values)
    return {'p50': statistics.median(values), 'p95': values[min(len(values) - 1, int(0.95 * len(values)))],
            'n': len(values)}


def child(tree: Path, db: Path, runs: int, explain: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE='1', LAZYLLM_LOG_LEVEL='WARNING',
               TRANSFORMERS_VERBOSITY='error', PYTHONWARNINGS='ignore')
    code = (f'import sys, json; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import bench_explain; '
            f'print("RESULT", json.dumps(bench_explain.measure(__import__("pathlib").Path({str(db)!r}), {runs}, '
            f'{explain})))')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    lines = [line for line in out.stdout.splitlines() if line.startswith('RESULT ')]
    if out.returncode or not lines:
        raise SystemExit(f'measurement with {tree} failed:\n{out.stderr[-3000:]}')
    return json.loads(lines[-1][len('RESULT '):])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pages', type=int, default=2000)
    parser.add_argument('--runs', type=int, default=60, help='searches per process')
    parser.add_argument('--rounds', type=int, default=3, help='processes per tree, interleaved')
    parser.add_argument('--workdir', default=None, help='keep the collection here (default: a temporary folder)')
    parser.add_argument('--compare-tree', default=None, help='another checkout: its search latency, same run')
    parser.add_argument('--out', default='benchmarks/results/explain.json')
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix='bench_explain_'))
    db = work / 'explain.db'
    if not db.exists():
        start = time.perf_counter()
        build(db, args.pages)
        print(f'built {args.pages} pages in {time.perf_counter() - start:.0f} s')
    trees = {'this tree': ROOT}
    if args.compare_tree:
        trees[args.compare_tree] = Path(args.compare_tree).resolve()
    child(ROOT, db, 3, explain=False)   # warm the OS page cache: the first process would pay the reads
    rows = {name: {'rounds': []} for name in trees}
    for round_ in range(args.rounds):   # interleaved, so a change in the machine's load hits every tree
        for name, tree in trees.items():
            found = child(tree, db, args.runs, explain=name == 'this tree' and round_ == 0)
            rows[name]['rounds'].append(found.pop('search_ms'))
            rows[name].update(found)
    for row in rows.values():
        row['search_p50_ms'] = statistics.median(r['p50'] for r in row['rounds'])
        row['search_p95_ms'] = statistics.median(r['p95'] for r in row['rounds'])
    base = rows['this tree']['search_p50_ms']
    print(f'{"tree":<28} {"pages":>6} {"search p50 ms":>14} {"p95":>8} {"x this tree":>12}  per-round p50')
    for name, row in rows.items():
        row['search_p50_vs_this_tree'] = row['search_p50_ms'] / base
        print(f'{name[-28:]:<28} {row["pages"]:>6} {row["search_p50_ms"]:>14.1f} {row["search_p95_ms"]:>8.1f} '
              f'{row["search_p50_vs_this_tree"]:>12.2f}  {[round(r["p50"]) for r in row["rounds"]]} '
              f'({row["package"]})')
    mine = rows['this tree']
    print(f'explain one hit: first call {mine["explain_first_ms"]:.0f} ms, then p50 {mine["explain_ms"]["p50"]:.1f} ms '
          f'(+ overlay PNG p50 {mine["overlay_png_ms"]["p50"]:.1f} ms); search + explain of the top 5 p50 '
          f'{mine["search_and_explain_top5_ms"]["p50"]:.0f} ms')
    result = {'pages': args.pages, 'runs': args.runs, 'rounds': args.rounds, 'load_average': os.getloadavg(),
              'rows': rows}
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
