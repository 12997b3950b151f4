"""MaxSim search paths side by side on synthetic ColPali-shaped multi-vectors.

For each collection size: query latency p50/p95 and queries/s of every path, recall@10 against
exhaustive exact MaxSim (float32, computed in the same run), and bytes per page in memory / on disk.

Every row reports wall and CPU-seconds per query (the machine is shared: CPU-seconds are the fair measure)
and its CPU ratio against the previous default (chunked matmul over a float32 cache) measured in the same run.

Beside each exhaustive path: the same run's time to read that path's bytes from memory once (``read ms``,
the best of a few full passes over its tensors) and the ratio ``x mem`` = p50 / read time ("x memory bound").

Paths: the matrix-unit paths where the CPU has them (bf16 GEMM tiles over bf16 tokens; int8 GEMM tiles over
int8 codes + scale, alone and with the retriever's exact rerank of its best candidates from the fp16 tokens;
both also for a batch of all queries in one call; the bf16 rows run last, on the fp16 tokens rounded to bf16
in place), our fused numba kernel (fp16 as stored, bf16, int8 + scale, fp32), the previous chunked-matmul
path (float32 cache; fp16 streamed; int8 decoded; skip with ``--skip previous``, which also takes the exact
truth from the fused kernel and so never builds a float32 copy: what lets 10k pages fit in ~4 GB),
colpali-engine's ``score_multi_vector``, a byaldi-style per-page loop, binary (sign) codes + exact rerank,
the centroid index + exact rerank, Milvus Lite pooled-vector candidates + exact rerank (our store and
retriever), and hierarchical token pooling (factor 2 and 3, on a subset: it costs ~0.26 s/page).

    python benchmarks/bench_maxsim.py --sizes 1000,10000 --out benchmarks/results/maxsim.json
    python benchmarks/bench_maxsim.py --sizes 300 --tokens 64 --queries 4 --pool-pages 20   # smoke
    nice python benchmarks/bench_maxsim.py --sizes 5000,10000 --skip engine,byaldi,binary,milvus,pooling \
        --out benchmarks/results/maxsim_fused.json                                             # kernel rows
    heavy python benchmarks/bench_maxsim.py --sizes 10000 --queries 8 \
        --skip previous,engine,byaldi,binary,centroids,milvus,pooling --out benchmarks/results/maxsim_units.json
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report_io import write_json  # noqa: E402  (benchmarks/ is on sys.path when run or imported)

import lazyllm_colpali  # noqa: E402,F401  (environment fixes before colpali_engine)
from synthetic import make_pages, make_queries  # noqa: E402

from lazyllm_colpali import MaxSimRetriever, MilvusMultiVectorStore, PageRecord  # noqa: E402
from lazyllm_colpali.retrieve.candidates import CentroidIndex  # noqa: E402
from lazyllm_colpali.retrieve.compression import compress, token_bytes  # noqa: E402
from lazyllm_colpali.retrieve import kernel, kernel_units  # noqa: E402
from lazyllm_colpali.retrieve.cpu_features import matrix_units  # noqa: E402
from lazyllm_colpali.retrieve.maxsim import maxsim_matmul, maxsim_packed  # noqa: E402
from lazyllm_colpali.retrieve.retriever import RERANK_FACTOR  # noqa: E402
from lazyllm_colpali.store.vector_file import PackedMultiVectors  # noqa: E402

K = 10


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def recall_at_k(found: List[List[int]], truth: torch.Tensor) -> float:
    return statistics.mean(len(set(f[:K]) & set(t.tolist())) / K for f, t in zip(found, truth))


def time_queries(search: Callable[[torch.Tensor], List[int]], queries: List[torch.Tensor]) -> Dict:
    search(queries[0])  # warm-up: caches, lazy builds, JIT compile
    found, times = [], []
    cpu_start = time.process_time()   # all threads of this process
    for q in queries:
        start = time.perf_counter()
        found.append(search(q))
        times.append((time.perf_counter() - start) * 1000)
    cpu_s = (time.process_time() - cpu_start) / len(queries)
    return {'found': found, 'p50_ms': percentile(times, 50), 'p95_ms': percentile(times, 95),
            'qps': 1000 / statistics.mean(times), 'queries': len(queries), 'cpu_s': cpu_s}


def read_seconds(*tensors: torch.Tensor, repeats: int = 3) -> float:
    """Best time of reading every byte of ``tensors`` once (a max over 8-byte words where the size allows),
    with torch's threads: the memory-read bound of a path that reads these tensors."""
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        for t in tensors:
            flat = t.reshape(-1).view(torch.uint8)
            (flat.view(torch.int64) if flat.numel() % 8 == 0 else flat).max()
        best = min(best, time.perf_counter() - start)
    return best


def path_tensors(tokens) -> List[torch.Tensor]:
    return [tokens.codes, tokens.scales] if hasattr(tokens, 'codes') else [tokens]


def time_batch(score: Callable[[List[torch.Tensor]], torch.Tensor], queries: List[torch.Tensor]) -> Dict:
    """All queries in one call (one pass over the tokens for the batch): per-query wall and CPU-seconds."""
    score(queries[:1])
    start, cpu_start = time.perf_counter(), time.process_time()
    scores = score(queries)
    wall = (time.perf_counter() - start) * 1000 / len(queries)
    found = [top_indices(row) for row in scores]
    return {'found': found, 'p50_ms': wall, 'p95_ms': wall, 'qps': 1000 / wall, 'queries': len(queries),
            'cpu_s': (time.process_time() - cpu_start) / len(queries)}


def top_indices(scores: torch.Tensor) -> List[int]:
    return scores.topk(min(K, len(scores))).indices.tolist()


def rerank(packed: PackedMultiVectors, query: torch.Tensor, candidates: List[int]) -> List[int]:
    scores = maxsim_packed([query], packed, pages=candidates)[0]
    return [candidates[i] for i in top_indices(scores)]


def screen_and_rerank(approx: PackedMultiVectors, exact: PackedMultiVectors, query: torch.Tensor) -> List[int]:
    """What the retriever does for scoring_dtype='int8' / 'bfloat16': every page on the approximate layout,
    then its best RERANK_FACTOR x (2k + 8) pages re-scored exactly from the stored tokens."""
    scores = maxsim_packed([query], approx)[0]
    candidates = scores.topk(min(RERANK_FACTOR * (2 * K + 8), len(scores))).indices.tolist()
    return rerank(exact, query, candidates)


def compile_times() -> Dict:
    """First-call seconds of the fused kernel in fresh processes: with an empty numba cache (compile and
    write it) and again with that cache (what a CLI user pays on every later start)."""
    code = ('import time, torch; from lazyllm_colpali.retrieve.kernel import maxsim_fused; '
            'p = torch.randn(40, 128).half(); o = torch.tensor([0, 20, 40]); t = time.perf_counter(); '
            'maxsim_fused([torch.randn(3, 128)], p, o); print(time.perf_counter() - t)')
    result = {}
    with tempfile.TemporaryDirectory(prefix='numba_cache_') as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ('cold_compile_s', 'cached_load_s'):
            done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
            result[label] = float(done.stdout.strip().splitlines()[-1])
    print(f'fused kernel first call: {result["cold_compile_s"]:.2f} s compiling, {result["cached_load_s"]:.2f} s '
          f'from the on-disk cache', flush=True)
    return result


def colpali_engine_path(pages: List[torch.Tensor]) -> Callable:
    import lazyllm_colpali.models  # noqa: F401  (torchvision shim before colpali_engine imports it)
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    return lambda q: top_indices(BaseVisualRetrieverProcessor.score_multi_vector([q], pages, batch_size=128,
                                                                                   device='cpu')[0])


def byaldi_loop_path(pages: List[torch.Tensor]) -> Callable:
    # byaldi keeps a list of per-page tensors in memory and scores them one by one.
    return lambda q: top_indices(torch.stack([(q @ p.T).max(dim=1).values.sum() for p in pages]))


def start_milvus_server(data_dir: Path):
    """A real Milvus gRPC endpoint on this machine (`milvus-lite server`): the same client path as a cluster."""
    import socket
    import subprocess

    from pymilvus import MilvusClient

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name('milvus-lite')
    proc = subprocess.Popen([str(exe), 'server', '--data-dir', str(data_dir), '--port', str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f'http://127.0.0.1:{port}'
    for _ in range(300):
        try:
            MilvusClient(uri=uri, timeout=3).list_collections()
            return proc, uri
        except Exception:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError('milvus-lite server did not start')


def milvus_path(packed: PackedMultiVectors, workdir: Path, budget: int, uri: str = ''):
    store = MilvusMultiVectorStore(uri or str(workdir / 'bench.db'), dim=packed.tokens.shape[1],
                                   data_dir=workdir / 'data')
    start = time.perf_counter()
    for a in range(0, len(packed), 500):
        store.add([(PageRecord(page_id=packed.page_ids[i], doc_id=f'd{i // 100}', source='synthetic',
                               file_name=f'd{i // 100}.pdf', page_number=i % 100 + 1, width=0, height=0),
                    packed.page(i), None) for i in range(a, min(a + 500, len(packed)))])
    build_s = time.perf_counter() - start
    retriever = MaxSimRetriever(store, mode='candidates', candidate_budget=budget)
    position = {p: i for i, p in enumerate(packed.page_ids)}
    search = lambda q: [position[h.page_id] for h in retriever.search_vectors(q.float(), K)]  # noqa: E731
    disk = sum(store.storage_bytes().values())
    return store, search, build_s, disk


def run_size(n: int, args, workdir: Path) -> List[Dict]:
    corpus = make_pages(n, args.tokens, variable=args.variable, seed=0)
    fp16 = corpus.pages
    skip = set(args.skip)
    queries = make_queries(corpus, args.queries, query_tokens=args.query_tokens)
    slow_queries = queries[:args.slow_queries]
    # The truth: exact MaxSim in float32 arithmetic over the stored tokens (a float32 copy, or the fused
    # kernel, which accumulates in float32 and needs no copy: 10k pages in fp32 would be 5.3 GB more).
    fp32 = None if 'previous' in skip and kernel.available() else compress(fp16, 'float32')
    truth_scores = maxsim_matmul(queries, fp32) if fp32 is not None else kernel.maxsim_fused(queries, fp16.tokens,
                                                                                              fp16.offsets)
    truth = truth_scores.topk(min(K, n), dim=1).indices
    truth_slow = truth[:len(slow_queries)]
    disk_fp16 = 2 * fp16.tokens.shape[1]
    rows = []
    baseline = {}

    def add(path: str, result: Dict, mem_bytes: float, disk_bytes: float, truth_rows=truth, build_s=0.0, note='',
            reads: Optional[List[torch.Tensor]] = None):
        if not baseline:
            baseline.update(result)
        read_s = read_seconds(*reads) if reads else None   # same run, same moment as the path's own timing
        rows.append({'pages': n, 'path': path, 'p50_ms': result['p50_ms'], 'p95_ms': result['p95_ms'],
                     'qps': result['qps'], 'cpu_s_per_query': result['cpu_s'],
                     'cpu_vs_previous': baseline['cpu_s'] / result['cpu_s'],
                     'recall@10': recall_at_k(result['found'], truth_rows),
                     'mem_bytes_per_page': mem_bytes / n, 'disk_bytes_per_page': disk_bytes / n,
                     'memory_read_ms': read_s * 1000 if read_s else None,
                     'x_memory_bound': result['p50_ms'] / (read_s * 1000) if read_s else None,
                     'build_s': build_s, 'queries': result['queries'], 'note': note})
        bound = f'  read {read_s * 1000:7.1f} ms ({rows[-1]["x_memory_bound"]:5.1f}x mem)' if read_s else ''
        print(f'  {path:<50} p50 {result["p50_ms"]:9.1f} ms  CPU {result["cpu_s"]:7.3f} s '
              f'({rows[-1]["cpu_vs_previous"]:5.1f}x less)  recall@10 {rows[-1]["recall@10"]:.3f}{bound}', flush=True)

    tokens = int(fp16.offsets[-1])
    if fp32 is not None:   # the previous default first: chunked matmul over a float32 copy kept in memory
        add('matmul fp32 cache (previous default)',
            time_queries(lambda q: top_indices(maxsim_matmul([q], fp32)[0]), queries),
            token_bytes(fp32) + token_bytes(fp16), tokens * disk_fp16, note='baseline of cpu_vs_previous',
            reads=[fp32.tokens])
    if kernel.available():
        add('fused kernel fp16 (ours, default)', time_queries(lambda q: top_indices(maxsim_packed([q], fp16)[0]),
                                                              queries), token_bytes(fp16), tokens * disk_fp16,
            reads=[fp16.tokens])
    start = time.perf_counter()
    int8 = compress(fp16, 'int8')
    int8_rows(fp16, int8, queries, add, encode_s=time.perf_counter() - start)
    if kernel.available():
        add('fused kernel int8 + scale (numba)',
            time_queries(lambda q: top_indices(kernel.maxsim_fused([q], int8.tokens, int8.offsets)[0]), queries),
            token_bytes(int8), token_bytes(int8), reads=path_tensors(int8.tokens))
        if fp32 is not None:
            add('fused kernel fp32 (ours)', time_queries(lambda q: top_indices(maxsim_packed([q], fp32)[0]),
                                                         queries), token_bytes(fp32), tokens * disk_fp16,
                reads=[fp32.tokens])
    if 'previous' not in skip:
        add('matmul fp16 streamed (previous)',
            time_queries(lambda q: top_indices(maxsim_matmul([q], fp16)[0]), slow_queries),
            token_bytes(fp16), tokens * disk_fp16, truth_slow, reads=[fp16.tokens])
        add('matmul int8 decoded (previous)',
            time_queries(lambda q: top_indices(maxsim_matmul([q], int8)[0]), slow_queries),
            token_bytes(int8), token_bytes(int8), truth_slow, reads=path_tensors(int8.tokens))
    del int8
    if fp32 is not None:
        pages32 = fp32.unpack()
        if 'engine' not in skip:
            add('colpali-engine score_multi_vector', time_queries(colpali_engine_path(pages32), slow_queries),
                token_bytes(fp32), tokens * disk_fp16, truth_slow)
        if 'byaldi' not in skip:
            add('byaldi-style per-page loop', time_queries(byaldi_loop_path(pages32), slow_queries),
                token_bytes(fp32), tokens * disk_fp16, truth_slow)
    if 'binary' not in skip:
        binary = compress(fp16, 'binary')
        for budget in args.budgets:
            add(f'binary candidates + rerank@{budget}',
                time_queries(lambda q: rerank(fp16, q, maxsim_packed([q], binary)[0].topk(min(budget, n)).indices
                                              .tolist()), slow_queries), token_bytes(binary) + token_bytes(fp16),
                token_bytes(binary) + tokens * disk_fp16, truth_slow, note='memory: binary codes + fp16 rerank')
    if 'centroids' not in skip:
        start = time.perf_counter()
        index = CentroidIndex(nprobe=args.nprobe).build(fp16)
        build_s = time.perf_counter() - start
        for budget in args.budgets:
            add(f'centroids (k={len(index.centroids)}, nprobe={args.nprobe}) + rerank@{budget}',
                time_queries(lambda q: rerank(fp16, q, index.candidates(q, budget).tolist()), queries),
                index.nbytes + token_bytes(fp16), index.nbytes + tokens * disk_fp16, build_s=build_s,
                note='memory: index + fp16 tokens (the fused rerank reads them as stored)')
    if 'milvus' not in skip:
        store, search, build_s, disk = milvus_path(fp16, workdir / f'milvus_{n}', args.budgets[-1])
        add(f'milvus lite pooled candidates + rerank@{args.budgets[-1]}', time_queries(search, queries),
            token_bytes(fp16), disk, build_s=build_s, note='our store + retriever, mode=candidates')
        store.close()
    if args.milvus_server:
        proc, uri = start_milvus_server(workdir / f'server_{n}')
        try:
            store, search, build_s, disk = milvus_path(fp16, workdir / f'milvus_server_{n}', args.budgets[-1], uri)
            add(f'milvus server (gRPC, HNSW) pooled candidates + rerank@{args.budgets[-1]}',
                time_queries(search, queries), token_bytes(fp16), disk, build_s=build_s,
                note=f'same store code on {uri} (milvus-lite server)')
            store.close()
        finally:
            proc.kill()
            proc.wait(30)
    if args.pool_pages and 'pooling' not in skip and fp32 is not None:
        rows.extend(pooling_rows(fp32, queries, min(args.pool_pages, n)))
    if not args.skip_bf16:
        bf16_rows(fp16, queries, add)   # last: it turns the fp16 tokens into bf16 in place
    return rows


def int8_rows(fp16: PackedMultiVectors, int8: PackedMultiVectors, queries: List[torch.Tensor], add: Callable,
              encode_s: float) -> None:
    """int8 codes on the matrix units (where this CPU has them), alone, with the retriever's exact rerank from
    the fp16 tokens, and for a batch of all queries in one call. ``build s``: deriving the codes from fp16."""
    if not kernel_units.has_units('int8'):
        return
    tokens = int(fp16.offsets[-1])
    disk_fp16 = 2 * fp16.tokens.shape[1]
    add('matrix units int8 + scale (VNNI/AMX)',
        time_queries(lambda q: top_indices(maxsim_packed([q], int8)[0]), queries),
        token_bytes(int8), token_bytes(int8), reads=path_tensors(int8.tokens), build_s=encode_s)
    add('matrix units int8 + exact fp16 rerank (retriever int8)',
        time_queries(lambda q: screen_and_rerank(int8, fp16, q), queries),
        token_bytes(int8) + token_bytes(fp16), tokens * disk_fp16, reads=path_tensors(int8.tokens), build_s=encode_s,
        note=f'int8 over every page, best {RERANK_FACTOR}x(2k+8) re-scored exactly; memory: codes + fp16')
    with intra_op_threads():
        add('matrix units int8, intra-op threads (no workers)',
            time_queries(lambda q: top_indices(maxsim_packed([q], int8)[0]), queries),
            token_bytes(int8), token_bytes(int8), reads=path_tensors(int8.tokens),
            note='LAZYLLM_COLPALI_TILE_WORKERS=0: each op forks and joins torch\'s threads')
    add(f'matrix units int8, batch of {len(queries)} queries',
        time_batch(lambda qs: maxsim_packed(qs, int8), queries), token_bytes(int8), token_bytes(int8),
        reads=path_tensors(int8.tokens), note='per query; one pass over the codes for the whole batch')


@contextlib.contextmanager
def intra_op_threads():
    """The tile loop on the calling thread with torch's intra-op threads (the workers switched off)."""
    os.environ['LAZYLLM_COLPALI_TILE_WORKERS'] = '0'
    try:
        yield
    finally:
        del os.environ['LAZYLLM_COLPALI_TILE_WORKERS']


def bf16_rows(fp16: PackedMultiVectors, queries: List[torch.Tensor], add: Callable) -> None:
    """bf16 tokens on the matrix units (where this CPU has them) and in the numba kernel. The fp16 tokens are
    rounded to bf16 in place (same size): 10k pages never exist in both formats at once."""
    if not (kernel_units.has_units('bfloat16') or kernel.available()):
        return
    tokens = int(fp16.offsets[-1])
    disk_fp16 = 2 * fp16.tokens.shape[1]
    in_place = fp16.tokens.view(torch.bfloat16)
    for a in range(0, tokens, 1 << 18):
        in_place[a:a + (1 << 18)] = fp16.tokens[a:a + (1 << 18)].float()
    bf16 = PackedMultiVectors(fp16.page_ids, in_place, fp16.offsets)
    if kernel_units.has_units('bfloat16'):
        add('matrix units bf16 (AVX-512 BF16/AMX)',
            time_queries(lambda q: top_indices(maxsim_packed([q], bf16)[0]), queries),
            token_bytes(bf16), tokens * disk_fp16, reads=[bf16.tokens])
        add(f'matrix units bf16, batch of {len(queries)} queries',
            time_batch(lambda qs: maxsim_packed(qs, bf16), queries), token_bytes(bf16), tokens * disk_fp16,
            reads=[bf16.tokens], note='per query; one pass over the tokens for the whole batch')
    if kernel.available():
        add('fused kernel bf16 (numba)',
            time_queries(lambda q: top_indices(kernel.maxsim_fused([q], bf16.tokens, bf16.offsets)[0]), queries),
            token_bytes(bf16), tokens * disk_fp16, reads=[bf16.tokens])


def pooling_rows(fp32: PackedMultiVectors, queries: List[torch.Tensor], m: int) -> List[Dict]:
    from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

    subset = fp32.subset(list(range(m)))
    truth = maxsim_packed(queries, subset).topk(min(K, m), dim=1).indices
    rows = []
    for factor in (2, 3):
        start = time.perf_counter()
        pooled = HierarchicalTokenPooler().pool_embeddings(subset.unpack(), pool_factor=factor)
        pool_s = (time.perf_counter() - start) / m
        packed = PackedMultiVectors.from_list(subset.page_ids, [p.float() for p in pooled])
        result = time_queries(lambda q: top_indices(maxsim_packed([q], packed)[0]), queries)
        rows.append({'pages': m, 'path': f'token pooling x{factor} (subset)', 'p50_ms': result['p50_ms'],
                     'p95_ms': result['p95_ms'], 'qps': result['qps'], 'cpu_s_per_query': result['cpu_s'],
                     'recall@10': recall_at_k(result['found'], truth),
                     'mem_bytes_per_page': token_bytes(packed) / m, 'disk_bytes_per_page': token_bytes(packed) / 2 / m,
                     'build_s': pool_s * m, 'queries': result['queries'],
                     'note': f'{pool_s:.2f} s/page to pool; recall vs exact on the same {m} pages'})
        print(f'  {rows[-1]["path"]:<38} p50 {result["p50_ms"]:9.1f} ms  recall@10 {rows[-1]["recall@10"]:.3f}')
    return rows


def print_table(rows: List[Dict]) -> None:
    print(f'\n{"pages":>7}  {"path":<56}{"p50 ms":>9}{"p95 ms":>9}{"q/s":>8}{"CPU s/q":>8}{"x less":>7}{"R@10":>7}'
          f'{"read ms":>9}{"x mem":>7}{"mem KiB/pg":>11}{"disk KiB/pg":>12}{"build s":>9}')
    for r in rows:
        read, bound = r.get('memory_read_ms'), r.get('x_memory_bound')
        print(f'{r["pages"]:>7}  {r["path"]:<56}{r["p50_ms"]:>9.1f}{r["p95_ms"]:>9.1f}{r["qps"]:>8.2f}'
              f'{r["cpu_s_per_query"]:>8.3f}{r.get("cpu_vs_previous", float("nan")):>7.1f}{r["recall@10"]:>7.3f}'
              f'{read if read else float("nan"):>9.1f}{bound if bound else float("nan"):>7.2f}'
              f'{r["mem_bytes_per_page"] / 1024:>11.1f}{r["disk_bytes_per_page"] / 1024:>12.1f}'
              f'{r["build_s"]:>9.1f}')


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', default='1000,10000')
    parser.add_argument('--tokens', type=int, default=1030, help='tokens per page (ColPali: 1030)')
    parser.add_argument('--variable', action='store_true', help='ColQwen2-like variable page lengths')
    parser.add_argument('--queries', type=int, default=20)
    parser.add_argument('--slow-queries', type=int, default=3, help='queries for the slow exhaustive paths')
    parser.add_argument('--query-tokens', type=int, default=20)
    parser.add_argument('--budgets', default='100,256', help='candidate budgets for rerank paths')
    parser.add_argument('--nprobe', type=int, default=4)
    parser.add_argument('--pool-pages', type=int, default=200, help='pages to pool for the pooling rows (0: skip)')
    parser.add_argument('--no-milvus', action='store_true', help='same as --skip milvus')
    parser.add_argument('--skip', default='', help='comma list of path groups to leave out: previous, engine, '
                                                   'byaldi, binary, centroids, milvus, pooling')
    parser.add_argument('--skip-bf16', action='store_true', help='no bf16 rows')
    parser.add_argument('--milvus-server', action='store_true', help='also run the store against a local Milvus '
                                                                     'server (milvus-lite server, gRPC)')
    parser.add_argument('--out', default='benchmarks/results/maxsim.json')
    args = parser.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(',')]
    args.skip = [g for g in args.skip.split(',') if g] + (['milvus'] if args.no_milvus else [])
    torch.manual_seed(0)
    rows: List[Dict] = []
    load_start = os.getloadavg()
    print(f'matrix units: {matrix_units()}; load average {load_start[0]:.2f} (a quiet machine is < ~0.5)', flush=True)
    compile_s = compile_times() if kernel.available() else None
    with tempfile.TemporaryDirectory(prefix='bench_maxsim_') as work:
        for n in (int(s) for s in args.sizes.split(',')):
            print(f'{n} pages x {args.tokens} tokens ({"variable" if args.variable else "fixed"}), '
                  f'{torch.get_num_threads()} threads', flush=True)
            rows.extend(run_size(n, args, Path(work)))
    print_table(rows)
    result = {'args': vars(args), 'torch_threads': torch.get_num_threads(), 'kernel_compile': compile_s,
              'numba_threads': kernel.numba.get_num_threads() if kernel.available() else None,
              'matrix_units': str(matrix_units()), 'load_avg_at_start': load_start,
              'load_avg_at_end': os.getloadavg(), 'rows': rows}
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
