"""Indexing throughput and query latency end to end on this machine.

Generates N born-digital PDF pages (text, a table-like grid, shapes), indexes them with a ColPali-family
model into Milvus Lite, and times rendering, encoding and storing separately; then times queries
(p50/p95) for exact MaxSim and for Milvus candidates + exact rerank, and reports bytes per page.

    python benchmarks/bench_index.py --pages 200 --model tiny:colpali --out benchmarks/results/index.json
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402  (benchmarks/ is on sys.path when run or imported)

from lazyllm_colpali import ColPaliEncoder, ColPaliIndex, MaxSimRetriever, MilvusMultiVectorStore  # noqa: E402

WORDS = ('revenue cost margin pump filter warranty install region quarter growth hiring policy network latency '
         'table figure chart model retrieval page document energy budget forecast risk').split()


def make_corpus(folder: Path, pages: int, pages_per_doc: int = 10, seed: int = 0) -> None:
    from fpdf import FPDF

    rng = random.Random(seed)
    for d in range(0, pages, pages_per_doc):
        pdf = FPDF(unit='pt', format=(612, 792))
        pdf.set_font('helvetica', size=12)
        for p in range(min(pages_per_doc, pages - d)):
            pdf.add_page()
            pdf.set_font('helvetica', size=20)
            pdf.cell(0, 30, f'Report {d // pages_per_doc} section {p + 1}: {rng.choice(WORDS)} {rng.choice(WORDS)}')
            pdf.ln(40)
            pdf.set_font('helvetica', size=11)
            pdf.multi_cell(0, 14, ' '.join(rng.choice(WORDS) for _ in range(120)))
            for r in range(5):   # a small table
                for c in range(4):
                    pdf.rect(72 + c * 110, 420 + r * 22, 110, 22)
                    pdf.text(78 + c * 110, 435 + r * 22, f'{rng.randint(1, 999)}')
            pdf.circle(300, 650, rng.randint(20, 60))
        pdf.output(str(folder / f'doc_{d // pages_per_doc:04d}.pdf'))


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pages', type=int, default=200)
    parser.add_argument('--model', default='tiny:colpali')
    parser.add_argument('--dpi', type=int, default=144)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--queries', type=int, default=50)
    parser.add_argument('--out', default='benchmarks/results/index.json')
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix='bench_index_'))
    (work / 'pdfs').mkdir()
    make_corpus(work / 'pdfs', args.pages)
    encoder = ColPaliEncoder(args.model, device='cpu', batch_size=args.batch_size).load()
    store = MilvusMultiVectorStore(str(work / 'colpali.db'), dim=encoder.dim)
    index = ColPaliIndex(encoder, store, dpi=args.dpi, progress=True)
    start = time.perf_counter()
    report = index.add([work / 'pdfs'])
    wall = time.perf_counter() - start

    rng = random.Random(1)
    queries = [' '.join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) for _ in range(args.queries)]
    latency = {}
    for mode in ('exact', 'candidates'):
        index.retriever = MaxSimRetriever(store, mode=mode, candidate_budget=64)
        index.search(queries[0])  # warm-up (first call builds the packed tensor)
        times = []
        for q in queries:
            t = time.perf_counter()
            index.search(q, topk=5)
            times.append((time.perf_counter() - t) * 1000)
        latency[mode] = {'p50_ms': percentile(times, 50), 'p95_ms': percentile(times, 95),
                         'mean_ms': statistics.mean(times)}
    encode_q = []
    for q in queries[:20]:
        t = time.perf_counter()
        encoder.encode_queries([q])
        encode_q.append((time.perf_counter() - t) * 1000)
    storage = store.storage_bytes()
    n = store.count()
    result = {
        'model': args.model, 'pages': n, 'dpi': args.dpi, 'batch_size': args.batch_size,
        'tokens_per_page': float(store.packed().lengths.float().mean()),
        'index_wall_s': wall, 'pages_per_s': report.added_pages / wall,
        'render_s': report.seconds['render'], 'encode_s': report.seconds['encode'], 'store_s': report.seconds['store'],
        'query_latency_ms': latency, 'query_encode_p50_ms': percentile(encode_q, 50),
        'bytes_per_page': {k: v / n for k, v in storage.items()},
    }
    store.close()
    write_json(args.out, result, announce=False)

    print(f'\nIndexed {n} pages with {args.model} at {args.dpi} DPI in {wall:.1f} s = '
          f'{result["pages_per_s"]:.2f} pages/s')
    print(f'{"stage":<12}{"seconds":>10}{"s/page":>10}')
    for stage in ('render', 'encode', 'store'):
        print(f'{stage:<12}{result[stage + "_s"]:>10.2f}{result[stage + "_s"] / n:>10.4f}')
    print(f'\n{"query mode":<12}{"p50 ms":>10}{"p95 ms":>10}   '
          f'(includes query encoding, p50 {result["query_encode_p50_ms"]:.1f} ms)')
    for mode, row in latency.items():
        print(f'{mode:<12}{row["p50_ms"]:>10.1f}{row["p95_ms"]:>10.1f}')
    print('\nbytes/page: ' + ', '.join(f'{k} {v / 1024:.1f} KiB' for k, v in result['bytes_per_page'].items()))
    print(f'JSON written to {args.out}')
    return result


if __name__ == '__main__':
    main()
