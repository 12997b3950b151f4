"""BM25 query latency of the text arm at ~2,000 real pages, and where LazyLLM's Retriever path spends it.

The corpus is the text layer of the real PDFs in ../shared/corpus/real (papers in English and a Chinese
research report), repeated until it holds --pages pages; each copy gets its own page id and a distinct marker
word, so every page is a separate BM25 document. Queries are 6-word spans of random pages.

Rows (same pages, same queries, same process):
- ``lazyllm Retriever topk=1000``: the text arm before this benchmark (``bm25_backend='lazyllm'``);
- ``lazyllm Retriever topk=10``: the same path asked for only the hits the caller wants;
- ``PageBM25 (bm25s)``: ``text/bm25.py`` alone; ``PageTextIndex.search (bm25s)``: the arm end to end.
The breakdown profiles the LazyLLM path and reports milliseconds per query in its main steps.

    nice python benchmarks/bench_bm25.py --pages 2000 --out benchmarks/results/bm25_2k.json
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lazyllm_colpali.text.bm25 import PageBM25  # noqa: E402
from lazyllm_colpali.text.extract import TextLayerExtractor  # noqa: E402
from lazyllm_colpali.text.page_index import PageTextIndex  # noqa: E402
from lazyllm_colpali.text.page_text_store import PageText  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / 'shared' / 'corpus' / 'real'
# LazyLLM functions that make up its per-query cost (name -> what it does).
STEPS = {'get_nodes': 'load + deserialise every node from the store', '_hash_nodes': 'sha256 of every node (cache key)',
         'retrieve': 'bm25s scoring + top-k', 'with_sim_score': 'copy each hit node with its score'}


def real_page_texts(folder: Path) -> list:
    texts = []
    for pdf in sorted(folder.glob('*.pdf')):
        texts += [t for _, t in TextLayerExtractor().pages(pdf) if len(t) > 200]
    if not texts:
        raise SystemExit(f'no real pages with a text layer under {folder}')
    return texts


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(search, queries) -> dict:
    latencies = []
    for q in queries:
        start = time.perf_counter()
        search(q)
        latencies.append((time.perf_counter() - start) * 1000)
    return {'p50_ms': percentile(latencies, 50), 'p95_ms': percentile(latencies, 95)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pages', type=int, default=2000)
    parser.add_argument('--queries', type=int, default=50)
    parser.add_argument('--topk', type=int, default=10)
    parser.add_argument('--corpus', default=str(REAL), help='folder of real PDFs (text layers are used)')
    parser.add_argument('--out', default='benchmarks/results/bm25_2k.json')
    args = parser.parse_args(argv)

    texts = real_page_texts(Path(args.corpus))
    rng = random.Random(0)
    queries = []
    for _ in range(args.queries):
        words = re.findall(r'[A-Za-z]{3,}', texts[rng.randrange(len(texts))])
        start = rng.randrange(max(1, len(words) - 6))
        queries.append(' '.join(words[start:start + 6]) or 'retrieval')
    rows, build = [], {}
    with tempfile.TemporaryDirectory(prefix='bench_bm25_') as tmp:
        seed = PageTextIndex(Path(tmp) / 'idx', extractor='text-layer', progress=False, similarity='bm25')
        for i in range(args.pages):
            doc = f'{i:016x}'
            seed.store.put(PageText(f'{doc}_p00001', doc, f'/bench/{i}.pdf', f'{i}.pdf', 1,
                                    f'{texts[i % len(texts)]}\nmarker{i}', 'text-layer'))
        ids = seed.store.all_ids()
        page_texts = [seed.store.path_of(pid).read_text(encoding='utf-8') for pid in ids]
        seed.close()

        def arm(backend):
            return PageTextIndex(Path(tmp) / 'idx', extractor='text-layer', progress=False, similarity='bm25',
                                 bm25_backend=backend)

        lazy = arm('lazyllm')
        start = time.perf_counter()
        lazy.search(queries[0], args.topk)   # builds the Document, the store and LazyLLM's cached BM25
        build['lazyllm Retriever'] = time.perf_counter() - start
        retriever = lazy.retriever()
        rows.append({'path': 'lazyllm Retriever topk=1000', **timed(lambda q: lazy.search(q, args.topk), queries)})
        rows.append({'path': 'lazyllm Retriever topk=10', **timed(lambda q: retriever(q, topk=args.topk), queries)})
        profile = cProfile.Profile()
        profile.enable()
        for q in queries:
            lazy.search(q, args.topk)
        profile.disable()
        stats = pstats.Stats(profile).stats
        breakdown = {}
        for (path, _, name), (_, _, _, cumulative, _) in stats.items():
            if name in STEPS and 'lazyllm' in path and (name != 'retrieve' or path.endswith('bm25.py')):
                breakdown[name] = breakdown.get(name, 0.0) + cumulative * 1000 / len(queries)
        lazy.close()

        start = time.perf_counter()
        bm25 = PageBM25(page_texts, ids)
        build['PageBM25 (bm25s)'] = time.perf_counter() - start
        rows.append({'path': 'PageBM25 (bm25s)', **timed(lambda q: bm25.search(q, args.topk), queries)})
        fast = arm('bm25s')
        start = time.perf_counter()
        fast.search(queries[0], args.topk)
        build['PageTextIndex (bm25s)'] = time.perf_counter() - start
        rows.append({'path': 'PageTextIndex.search (bm25s)', **timed(lambda q: fast.search(q, args.topk), queries)})
        # Same scores as LazyLLM's own BM25 component (same tokeniser, same bm25s parameters)?
        agree = 0
        for q in queries[:10]:
            ours = fast.search(q, 1)
            agree += abs((ours[0].score if ours else 0.0) - _lazy_top(Path(tmp), q)) < 1e-4
        fast.close()

    baseline = rows[0]['p50_ms']
    for row in rows:
        row['speedup_p50'] = baseline / row['p50_ms'] if row['p50_ms'] else float('inf')
    result = {'pages': args.pages, 'queries': len(queries), 'topk': args.topk, 'distinct_texts': len(texts),
              'rows': rows, 'build_s': build,
              'lazyllm_breakdown_ms_per_query': {f'{k} ({STEPS[k]})': v for k, v in breakdown.items()},
              'same_top1_score_as_lazyllm_of_10': agree}
    print(f'BM25 over {args.pages} pages ({len(texts)} distinct real pages), {len(queries)} queries, top-{args.topk}')
    print(f'| {"path":32} | p50 ms | p95 ms | x p50 vs first row |')
    print(f'|{"-" * 34}|--------|--------|-------------------|')
    for r in rows:
        print(f'| {r["path"]:32} | {r["p50_ms"]:6.2f} | {r["p95_ms"]:6.2f} | {r["speedup_p50"]:17.1f} |')
    print('LazyLLM path per query:', ', '.join(f'{k} {v:.1f} ms' for k, v in breakdown.items()))
    print('build s:', ', '.join(f'{k} {v:.2f}' for k, v in build.items()),
          f'| top-1 score equal to LazyLLM\'s on {agree}/10 queries')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


def _lazy_top(tmp: Path, query: str) -> float:
    """LazyLLM's own BM25 (``lazyllm.tools.rag.component.bm25``) top-1 score over the same pages."""
    from lazyllm.tools.rag.component.bm25 import BM25
    from lazyllm.tools.rag.doc_node import DocNode

    global _LAZY_BM25
    if _LAZY_BM25 is None:
        pages = sorted((tmp / 'idx' / 'pages').glob('*.txt'))
        _LAZY_BM25 = BM25([DocNode(text=p.read_text(encoding='utf-8')) for p in pages], language='en', topk=1)
    hits = _LAZY_BM25.retrieve(query, topk=1)
    return float(hits[0][1]) if hits else 0.0


_LAZY_BM25 = None

if __name__ == '__main__':
    main()
