"""CPU cost of starting the command, and how fast a model that cannot be fetched fails.

Each row runs a fresh Python process ``--runs`` times and reports the median user+sys CPU seconds (from
``resource.getrusage(RUSAGE_CHILDREN)``) and wall seconds, with ``python -c pass`` as the baseline measured
in the same run:

* ``lazyllm-colpali --help`` and ``index --help`` (lazy imports: nothing heavy loads for help),
* ``import lazyllm_colpali`` (names load on first use),
* the full import the old eager ``__init__`` did (``lazyllm_colpali.pipelines`` pulls in all of it),
* a hub model name offline (``ModelNotFoundError`` naming the fix) - moved here from a timed unit test.

    python benchmarks/bench_startup.py --runs 5 --out benchmarks/results/startup.json
    # with the same rows for another checkout (e.g. before this change), same run:
    git archive a290225 | tar -x -C /tmp/before && python benchmarks/bench_startup.py --compare-tree /tmp/before
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402  (benchmarks/ is on sys.path when run or imported)

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    'python -c pass (baseline)': ['-c', 'pass'],
    'lazyllm-colpali --help': ['-m', 'lazyllm_colpali.cli', '--help'],
    'lazyllm-colpali index --help': ['-m', 'lazyllm_colpali.cli', 'index', '--help'],
    'import lazyllm_colpali': ['-c', 'import lazyllm_colpali'],
    'full import (what the old __init__ did)': ['-c', 'import lazyllm_colpali.pipelines, lazyllm_colpali.indexer'],
    'hub model offline -> clear error': ['-c', 'import lazyllm_colpali as lc\ntry:\n'
                                         '    lc.ColPaliEncoder("vidore/colqwen2-v1.0").load()\n'
                                         'except lc.ModelNotFoundError:\n    pass\n'],
}


def measure(args, env) -> tuple:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False, cwd=tempfile.gettempdir())   # not ROOT: -m/-c put the cwd first on sys.path
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--out', default='benchmarks/results/startup.json')
    parser.add_argument('--compare-tree', default=None, help='another checkout: its --help row is added')
    args = parser.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', PYTHONPATH=str(ROOT))
    cases = [(name, case, env) for name, case in CASES.items()]
    if args.compare_tree:
        other = dict(env, PYTHONPATH=str(Path(args.compare_tree).resolve()))
        cases.insert(2, (f'lazyllm-colpali --help ({args.compare_tree})', CASES['lazyllm-colpali --help'], other))
    rows = []
    for name, case, case_env in cases:
        cpu, wall = zip(*(measure(case, case_env) for _ in range(args.runs)))
        rows.append({'case': name, 'cpu_s': statistics.median(cpu), 'wall_s': statistics.median(wall)})
    base = rows[0]['cpu_s']
    width = max(len(r['case']) for r in rows)
    print(f'{"case":<{width}} {"CPU s":>7} {"wall s":>7} {"CPU x baseline":>15}')
    for row in rows:
        row['cpu_vs_baseline'] = row['cpu_s'] / base if base else None
        print(f'{row["case"]:<{width}} {row["cpu_s"]:>7.2f} {row["wall_s"]:>7.2f} {row["cpu_vs_baseline"]:>15.1f}')
    result = {'runs': args.runs, 'python': sys.version.split()[0], 'rows': rows}
    write_json(args.out, result, announce=False)
    return result


if __name__ == '__main__':
    main()
