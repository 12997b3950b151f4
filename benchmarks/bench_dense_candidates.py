"""The visual arm's ``dense`` mode against its centroid path: candidates from one vector per page searched by
Milvus (the dense arm's storage and search, ``lazyllm_colpali/dense.py``), then exact MaxSim over the
candidates, vs the centroid index's candidates + the same rerank; both against exhaustive exact MaxSim.

No bi-encoder weights exist offline, so the pages' single vectors are a stand-in: each page's mean-pooled,
normalised patch vectors (and each query's mean-pooled token vectors). A trained bi-encoder (BiQwen2, DSE)
is trained for single-vector retrieval and may rank better or worse than this stand-in: the recall column is
the stand-in's, the cost columns (Milvus search + rerank vs centroid probe + rerank, index build, bytes) hold
for any model of that dimension. A real bi-encoder also costs one more query forward pass (a 2B model: ~0.5 s
on CPU, see bench_encode.py), which this script does not include.

    nice python benchmarks/bench_dense_candidates.py --pages 5000 --out benchmarks/results/dense_candidates.json
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_maxsim import K, recall_at_k, rerank, time_queries, top_indices  # noqa: E402
from report_io import write_json  # noqa: E402
from synthetic import make_pages, make_queries  # noqa: E402

from lazyllm_colpali.ingest.records import PageRecord  # noqa: E402
from lazyllm_colpali.retrieve.candidates import CentroidIndex  # noqa: E402
from lazyllm_colpali.retrieve.maxsim import maxsim_packed  # noqa: E402
from lazyllm_colpali.store.milvus_store import MilvusMultiVectorStore  # noqa: E402


def pooled(packed) -> torch.Tensor:
    sums = torch.zeros(len(packed), packed.tokens.shape[1])
    for start in range(0, len(packed), 512):   # chunked: no fp32 copy of the whole corpus
        end = min(start + 512, len(packed))
        a, b = int(packed.offsets[start]), int(packed.offsets[end])
        owner = torch.repeat_interleave(torch.arange(end - start), packed.lengths[start:end])
        sums[start:end].index_add_(0, owner, packed.tokens[a:b].float())
    return torch.nn.functional.normalize(sums, dim=-1)


def dense_store(vectors: torch.Tensor, workdir: Path, index_type: str) -> tuple:
    """One-vector pages in a Milvus Lite collection, exactly as the dense arm stores them."""
    store = MilvusMultiVectorStore(str(workdir / f'dense_{index_type}.db'), 'bench_dense', dim=vectors.shape[1],
                                   index_type=index_type)
    start = time.perf_counter()
    for a in range(0, len(vectors), 500):
        items = [(PageRecord(page_id=f'p{i}', doc_id=f'{i // 100:016x}', source='synthetic', file_name='synthetic',
                             page_number=i % 100 + 1, width=1, height=1, image_key='k'), vectors[i:i + 1], None)
                 for i in range(a, min(a + 500, len(vectors)))]
        store.add(items)
    return store, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pages', type=int, default=5000)
    parser.add_argument('--tokens', type=int, default=1030)
    parser.add_argument('--queries', type=int, default=20)
    parser.add_argument('--budgets', default='64,256,1024')
    parser.add_argument('--index-types', default='FLAT,HNSW', help='Milvus index of the dense field')
    parser.add_argument('--out', default='benchmarks/results/dense_candidates.json')
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(',')]
    workdir = Path(tempfile.mkdtemp(prefix='bench_dense_'))
    result = {'pages': args.pages, 'tokens': args.tokens, 'queries': args.queries, 'k': K,
              'load_average': os.getloadavg(), 'rows': []}
    try:
        corpus = make_pages(args.pages, args.tokens)
        packed = corpus.pages
        queries = make_queries(corpus, args.queries)
        truth = torch.stack([maxsim_packed([q], packed)[0].topk(K).indices for q in queries])

        def row(name, timing, build_s=0.0, extra_bytes=0, **more):
            entry = {'path': name, 'recall@10': recall_at_k(timing['found'], truth), 'p50_ms': timing['p50_ms'],
                     'p95_ms': timing['p95_ms'], 'cpu_s_per_query': timing['cpu_s'], 'build_s': build_s,
                     'extra_bytes_per_page': extra_bytes / args.pages, **more}
            result['rows'].append(entry)
            print(f'{name:<34} recall@10 {entry["recall@10"]:.3f}  p50 {entry["p50_ms"]:8.1f} ms  '
                  f'CPU {entry["cpu_s_per_query"]:.3f} s/query  build {build_s:6.1f} s', flush=True)

        row('exhaustive exact MaxSim', time_queries(lambda q: top_indices(maxsim_packed([q], packed)[0]), queries))

        start = time.perf_counter()
        centroids = CentroidIndex().build(packed)
        build = time.perf_counter() - start
        centroid_bytes = sum(t.numel() * t.element_size() for t in centroids.state_dict().values()
                             if isinstance(t, torch.Tensor))
        for budget in budgets:
            row(f'centroids + rerank (budget {budget})',
                time_queries(lambda q: rerank(packed, q, centroids.candidates(q, budget).tolist()), queries),
                build, centroid_bytes, budget=budget)

        vectors = pooled(packed)
        query_vectors = {id(q): torch.nn.functional.normalize(q.float().mean(0), dim=0) for q in queries}
        position = {f'p{i}': i for i in range(args.pages)}
        for index_type in args.index_types.split(','):
            store, build = dense_store(vectors, workdir, index_type)
            milvus_bytes = sum(p.stat().st_size for p in Path(store.uri).rglob('*') if p.is_file())
            try:
                def candidates(q, budget):
                    return [position[p] for p, _ in store.search_pooled(query_vectors[id(q)], budget)]
                row(f'dense alone ({index_type})', time_queries(lambda q: candidates(q, K), queries), build,
                    milvus_bytes)
                for budget in budgets:
                    row(f'dense + rerank ({index_type}, budget {budget})',
                        time_queries(lambda q: rerank(packed, q, candidates(q, budget)), queries), build,
                        milvus_bytes, budget=budget)
            finally:
                store.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
