"""Out-of-core scale run: a collection larger than this machine's memory, streamed from a disk memmap.

100k ColPali-shaped pages (1030 x 128) are 26 GB in fp16: more than 24 GB of RAM, so the fp32 cache
of bench_maxsim.py cannot exist. This script generates the pages into a memmap file, measures the
exhaustive exact scan (fp16 streamed from disk) as the baseline and ground truth, then the centroid
index (trained on a sample, pages assigned in one pass) + exact rerank of candidates read from disk.

    python benchmarks/bench_scale.py --pages 100000 --workdir /tmp/scale --out benchmarks/results/scale.json
    nice python benchmarks/bench_scale.py --pages 30000 --centroids 1024 --nprobes 2,4,8 --budgets 256,512,1024
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import lazyllm_colpali  # noqa: E402,F401
    from bench_maxsim import K, percentile, recall_at_k  # noqa: E402
except ImportError:   # a machine without lazyllm (the GPU box): load the retrieve modules on their own
    from bench_gpu import import_maxsim  # noqa: E402
    import_maxsim()
    K = 10

    def percentile(values, q):
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def recall_at_k(found, truth):
        return statistics.mean(len(set(f[:K]) & set(t.tolist())) / K for f, t in zip(found, truth))

from report_io import write_json  # noqa: E402
from synthetic import make_pages, make_queries  # noqa: E402

from lazyllm_colpali.retrieve.candidates import CentroidIndex  # noqa: E402
from lazyllm_colpali.retrieve.maxsim import maxsim_packed  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pages', type=int, default=100000)
    parser.add_argument('--tokens', type=int, default=1030)
    parser.add_argument('--queries', type=int, default=10)
    parser.add_argument('--exhaustive-queries', type=int, default=3, help='queries timed one by one exhaustively')
    parser.add_argument('--centroids', type=int, default=0, help='0: CentroidIndex.default_k')
    parser.add_argument('--nprobes', default='4', help='comma-separated centroids probed per query token')
    parser.add_argument('--budgets', default='256,1024')
    parser.add_argument('--workdir', default='/tmp/lazyllm_colpali_scale')
    parser.add_argument('--in-memory', action='store_true', help='keep the pages in RAM instead of a disk memmap')
    parser.add_argument('--out', default='benchmarks/results/scale.json')
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    n, dim = args.pages, 128
    path = work / f'tokens_{n}x{args.tokens}.f16'
    shape = (n * args.tokens, dim)
    start = time.perf_counter()
    if args.in_memory:
        corpus = make_pages(n, args.tokens)
    else:
        table = np.memmap(path, dtype=np.float16, mode='w+', shape=shape)
        corpus = make_pages(n, args.tokens, out=torch.from_numpy(table))
        table.flush()
    gen_s = time.perf_counter() - start
    print(f'{n} pages ({shape[0] * dim * 2 / 2**30:.1f} GiB fp16 {"in memory" if args.in_memory else "on disk"}) '
          f'ready in {gen_s:.0f} s; {torch.get_num_threads()} threads', flush=True)
    queries = make_queries(corpus, args.queries)

    start = time.perf_counter()
    truth_scores = maxsim_packed(queries, corpus.pages)   # one pass of the fused kernel for all queries
    truth = truth_scores.topk(K, dim=1).indices
    batch_s = time.perf_counter() - start
    times, cpu_start = [], time.process_time()
    for q in queries[:args.exhaustive_queries]:
        start = time.perf_counter()
        maxsim_packed([q], corpus.pages)
        times.append((time.perf_counter() - start) * 1000)
    exhaustive_cpu = (time.process_time() - cpu_start) / len(times)
    exhaustive_ms = statistics.median(times)
    print(f'exhaustive exact (fused kernel): {exhaustive_ms / 1000:.2f} s, {exhaustive_cpu:.2f} CPU-s per query; '
          f'{batch_s:.1f} s for {len(queries)} queries in one pass', flush=True)

    start = time.perf_counter()
    index = CentroidIndex(n_centroids=args.centroids or None).build(corpus.pages)
    build_s = time.perf_counter() - start
    print(f'centroid index k={len(index.centroids)}: built in {build_s:.0f} s, {index.nbytes / 2**20:.0f} MiB',
          flush=True)
    rows = [{'path': 'exhaustive exact (fused kernel)', 'p50_ms': exhaustive_ms,
             'p95_ms': max(times), 'recall@10': 1.0, 'speedup': 1.0, 'cpu_s_per_query': exhaustive_cpu,
             'cpu_speedup': 1.0, 'queries': len(times)}]
    for nprobe, budget in ((int(p), int(b)) for p in args.nprobes.split(',') for b in args.budgets.split(',')):
        index.nprobe = nprobe
        found, times = [], []
        cpu_start = time.process_time()
        for q in queries:
            t = time.perf_counter()
            cands = index.candidates(q, budget).tolist()
            scores = maxsim_packed([q], corpus.pages, pages=cands)[0]   # in place: no copy of the candidates
            found.append([cands[i] for i in scores.topk(K).indices.tolist()])
            times.append((time.perf_counter() - t) * 1000)
        cpu = (time.process_time() - cpu_start) / len(queries)
        p50 = percentile(times, 50)
        rows.append({'path': f'centroids k={len(index.centroids)} nprobe={nprobe} + rerank@{budget}', 'p50_ms': p50,
                     'p95_ms': percentile(times, 95), 'recall@10': recall_at_k(found, truth),
                     'speedup': exhaustive_ms / statistics.median(times), 'cpu_s_per_query': cpu,
                     'cpu_speedup': exhaustive_cpu / cpu, 'queries': len(queries)})
    print(f'\n{"path":<52}{"p50 ms":>10}{"p95 ms":>10}{"R@10":>7}{"x wall":>8}{"CPU s":>8}{"x CPU":>7}')
    for r in rows:
        print(f'{r["path"]:<52}{r["p50_ms"]:>10.1f}{r["p95_ms"]:>10.1f}{r["recall@10"]:>7.3f}{r["speedup"]:>8.1f}'
              f'{r["cpu_s_per_query"]:>8.3f}{r["cpu_speedup"]:>7.1f}')
    result = {'pages': n, 'tokens': args.tokens, 'threads': torch.get_num_threads(), 'in_memory': args.in_memory,
              'gen_s': gen_s, 'index_build_s': build_s, 'k': len(index.centroids),
              'index_mib': index.nbytes / 2**20, 'batch_pass_s': batch_s, 'rows': rows}
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
