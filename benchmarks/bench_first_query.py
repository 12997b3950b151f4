"""What a process's first query costs against a repeat, and what a new query length costs, on real-size
architectures at random weights (ColSmol-256M, ColQwen2-2B: built from their published configs by
bench_encode.py), with and without :meth:`ColPaliEncoder.warm_up` at start-up.

Each configuration runs in a fresh process (one-time costs are per process), with the model's files in the OS
page cache (a restart) or evicted from it first (a first start): load, optionally warm up, then queries of
growing and repeated lengths. Per call: wall, CPU-seconds, page faults (minor / major) and RSS, so
the first call's extra time can be told apart into paging in the memory-mapped weights and the rest.
Ratios are taken within a process (same moment, same load).

    heavy python benchmarks/bench_first_query.py --models colsmol-256m,colqwen2-2b \\
        --out benchmarks/results/first_query.json
    python benchmarks/bench_first_query.py --tiny --out /tmp/first_query_smoke.json     # smoke, tiny towers
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402

WORDS = ['pump', 'revenue', 'the', 'maintenance', 'of', 'cooling', 'system', 'quarterly', 'growth', 'region']
# (words in the query, a label): the first call, a repeat, then new lengths each followed by a repeat
SEQUENCE = [3, 3, 3, 6, 6, 9, 9, 2, 2, 12, 12]


def query_of(n: int) -> str:
    return ' '.join(WORDS[i % len(WORDS)] for i in range(n))


def _rss_gib() -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 2 ** 20
    return 0.0


def child(folder: str, dtype: str, warm: bool) -> Dict:
    """One process: load, optionally warm up, then the query sequence."""
    import torch

    import lazyllm_colpali  # noqa: F401
    from lazyllm_colpali.models.encoder import ColPaliEncoder

    started = time.perf_counter()
    enc = ColPaliEncoder(folder, device='cpu', dtype=dtype, batch_size=1, query_batch_size=1,
                         query_cache_size=0).load()
    out = {'load_s': time.perf_counter() - started, 'rss_after_load_gib': _rss_gib(), 'warm_up_s': None,
           'calls': []}
    if warm:
        out['warm_up_s'] = enc.warm_up()
    out['rss_before_first_gib'] = _rss_gib()
    embeddings = None
    for n in SEQUENCE:
        before = resource.getrusage(resource.RUSAGE_SELF)
        wall, cpu = time.perf_counter(), time.process_time()
        emb = enc.encode_queries([query_of(n)])[0]
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = resource.getrusage(resource.RUSAGE_SELF)
        out['calls'].append({'words': n, 'tokens': len(emb), 'wall_s': wall, 'cpu_s': cpu,
                             'minor_faults': after.ru_minflt - before.ru_minflt,
                             'major_faults': after.ru_majflt - before.ru_majflt, 'rss_gib': _rss_gib()})
        if embeddings is None:
            embeddings = emb
    out['first_embedding_sum'] = float(embeddings.double().sum())   # warm or not, the same numbers
    out['threads'] = torch.get_num_threads()
    return out


def evict_from_page_cache(folder: Path) -> int:
    """Drop this model folder's files (only those) from the OS page cache, as after a reboot or when other
    work has pushed them out: the next process reads its memory-mapped weights from disk. Returns bytes."""
    total = 0
    for path in folder.rglob('*'):
        if path.is_file():
            with open(path, 'rb') as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            total += path.stat().st_size
    return total


def summarise(run: Dict) -> Dict:
    calls = run['calls']
    repeats = [c for i, c in enumerate(calls) if i and calls[i - 1]['words'] == c['words']]
    new = [c for i, c in enumerate(calls) if i and c['words'] not in {p['words'] for p in calls[:i]}]
    repeat_cpu = statistics.median(c['cpu_s'] for c in repeats)
    repeat_wall = statistics.median(c['wall_s'] for c in repeats)
    by_words = {c['words']: c for c in repeats}
    return {'first_cpu_s': calls[0]['cpu_s'], 'first_wall_s': calls[0]['wall_s'],
            'repeat_cpu_s': repeat_cpu, 'repeat_wall_s': repeat_wall,
            'first_vs_repeat_cpu': calls[0]['cpu_s'] / by_words[calls[0]['words']]['cpu_s'],
            'first_vs_repeat_wall': calls[0]['wall_s'] / by_words[calls[0]['words']]['wall_s'],
            'new_length_vs_repeat_cpu_max': max(c['cpu_s'] / by_words[c['words']]['cpu_s'] for c in new),
            'new_length_vs_repeat_wall_max': max(c['wall_s'] / by_words[c['words']]['wall_s'] for c in new),
            'first_major_faults': calls[0]['major_faults'], 'first_minor_faults': calls[0]['minor_faults'],
            'rss_growth_first_call_gib': calls[0]['rss_gib'] - run['rss_before_first_gib']}


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='colsmol-256m,colqwen2-2b')
    parser.add_argument('--dtypes', default='bfloat16', help='comma list: bfloat16, float32')
    parser.add_argument('--workdir', default='/tmp/lazyllm_colpali_encode')
    parser.add_argument('--tiny', action='store_true', help='shrunk towers (smoke test of the script)')
    parser.add_argument('--page-cache', default='warm,cold', help='warm: weights already in the OS page cache '
                        '(a restart); cold: evicted first (a first start, or memory pressure)')
    parser.add_argument('--child', nargs=3, metavar=('FOLDER', 'DTYPE', 'WARM'), help=argparse.SUPPRESS)
    parser.add_argument('--out', default='benchmarks/results/first_query.json')
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.child[2] == '1')))
        return {}
    import bench_encode

    result = {'args': vars(args), 'load_avg_at_start': os.getloadavg(), 'runs': []}
    for family in args.models.split(','):
        folder = bench_encode.build_folder(family, Path(args.workdir), args.tiny)
        for dtype, cache, warm in ((d, c, w) for d in args.dtypes.split(',') for c in args.page_cache.split(',')
                                   for w in (False, True)):
            evicted = evict_from_page_cache(folder) if cache == 'cold' else 0
            done = subprocess.run([sys.executable, __file__, '--child', str(folder), dtype, '1' if warm else '0'],
                                  capture_output=True, text=True, check=True,
                                  env={**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'})
            run = json.loads(done.stdout.strip().splitlines()[-1])
            run.update(model=family, dtype=dtype, warm_up=warm, page_cache=cache, evicted_bytes=evicted,
                       **summarise(run))
            result['runs'].append(run)
            warm_s = f'warm-up {run["warm_up_s"]:.2f} s, ' if warm else ''
            print(f'{family:<13} {dtype:<8} {cache} page cache, {"warm-up" if warm else "no warm-up"}: load '
                  f'{run["load_s"]:5.1f} s, {warm_s}first query {run["first_wall_s"]:.3f} s wall = '
                  f'{run["first_vs_repeat_wall"]:.2f}x a repeat ({run["repeat_wall_s"]:.3f} s; CPU '
                  f'{run["first_vs_repeat_cpu"]:.2f}x), new length <= {run["new_length_vs_repeat_wall_max"]:.2f}x, '
                  f'first call: {run["first_major_faults"]} major / {run["first_minor_faults"]} minor faults, '
                  f'RSS +{run["rss_growth_first_call_gib"]:.2f} GiB', flush=True)
    result['load_avg_at_end'] = os.getloadavg()
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
