"""Search latency under load on the JSON API (loopback): N clients searching, first alone, then while one
client uploads a large PDF through POST /index. Reports errors and p50/p95 for both phases, same run.

    nice python benchmarks/bench_serving.py --clients 8 --upload-pages 200 --out benchmarks/results/serving.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402  (benchmarks/ is on sys.path when run or imported)

from lazyllm_colpali import ColPaliEncoder, ColPaliIndex, MilvusMultiVectorStore  # noqa: E402


def _pdf(path: Path, pages: List[str]) -> Path:
    from fpdf import FPDF

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = FPDF(unit='pt', format=(612, 792))
    pdf.set_font('helvetica', size=20)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 30, text)
        pdf.rect(72, 400, 300, 150)
    pdf.output(str(path))
    return path


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] if ordered else float('nan')


def _clients(url: str, n: int, per_client: int, stop: threading.Event, during=None) -> Dict:
    import httpx

    latencies: List[float] = []
    errors: List[str] = []
    short: List[int] = []      # 200s with fewer hits than asked although enough pages are stored
    overlapped = [0]

    def client(c: int) -> None:
        with httpx.Client(timeout=120) as http:
            for i in range(per_client):
                if stop.is_set():
                    return
                start = time.perf_counter()
                try:
                    r = http.post(f'{url}/search', json={'query': f'maintenance step {(c * 7 + i) % 50}', 'topk': 5})
                    if r.status_code != 200:
                        errors.append(f'{r.status_code} {r.text[:200]}')
                    elif len(r.json()['hits']) < 5:
                        short.append(len(r.json()['hits']))
                except Exception as e:   # a reset or timeout is an error the benchmark must count, not hide
                    errors.append(f'{type(e).__name__}: {e}')
                    continue
                latencies.append((time.perf_counter() - start) * 1000)
                if during is not None and during():
                    overlapped[0] += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
    for t in threads:
        t.start()
    return {'threads': threads, 'latencies': latencies, 'errors': errors, 'short': short, 'overlapped': overlapped}


def _summary(run: Dict) -> Dict:
    lat = run['latencies']
    return {'searches': len(lat), 'errors': len(run['errors']), 'error_samples': run['errors'][:5],
            'short_results': len(run['short']), 'short_hit_counts': sorted(set(run['short'])),
            'p50_ms': statistics.median(lat) if lat else float('nan'), 'p95_ms': _percentile(lat, 0.95),
            'during_ingestion': run['overlapped'][0]}


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='tiny:colpali')
    parser.add_argument('--clients', type=int, default=8)
    parser.add_argument('--base-pages', type=int, default=20, help='pages indexed before the clients start')
    parser.add_argument('--upload-pages', type=int, default=200, help='pages of the PDF uploaded under load')
    parser.add_argument('--baseline-searches', type=int, default=10, help='per client, without ingestion')
    parser.add_argument('--max-searches', type=int, default=400, help='per client, during ingestion (a bound)')
    parser.add_argument('--dpi', type=int, default=72)
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--out', default=None)
    args = parser.parse_args(argv)

    from lazyllm_colpali.serving.api import create_app
    from tests.helpers.servers import serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        base = _pdf(work / 'base' / 'base.pdf',
                    [f'Maintenance step {i}: check the pump.' for i in range(args.base_pages)])
        upload = _pdf(work / 'uploads' / 'large.pdf',
                      [f'Section {i}: maintenance step {i % 50} and the filter.' for i in range(args.upload_pages)])
        encoder = ColPaliEncoder(args.model, device='cpu', batch_size=4).load()
        store = MilvusMultiVectorStore(str(work / 'db' / 'c.db'), dim=encoder.dim)
        index = ColPaliIndex(encoder, store, dpi=args.dpi, progress=False)
        index.add([base])
        try:
            with serve_in_thread(create_app(index, allow_roots=[work / 'uploads'])) as url:
                import httpx

                idle = _clients(url, args.clients, args.baseline_searches, threading.Event())
                for t in idle['threads']:
                    t.join()
                start = time.perf_counter()
                job = httpx.post(f'{url}/index', json={'paths': [str(upload)]}, timeout=30).json()['job']
                state = {'state': 'queued'}
                stop = threading.Event()
                busy = _clients(url, args.clients, args.max_searches, stop,
                                during=lambda: state['state'] in ('queued', 'running'))
                while state['state'] in ('queued', 'running'):
                    time.sleep(0.2)
                    state = httpx.get(f'{url}/jobs/{job}', timeout=30).json()
                ingest_s = time.perf_counter() - start
                stop.set()
                for t in busy['threads']:
                    t.join()
        finally:
            store.close()
    result = {'clients': args.clients, 'model': args.model, 'base_pages': args.base_pages,
              'upload_pages': args.upload_pages, 'job': state['state'],
              'added_pages': (state.get('report') or {}).get('added_pages', 0), 'ingest_s': ingest_s,
              'without_ingestion': _summary(idle), 'during_ingestion': _summary(busy)}
    a, b = result['without_ingestion'], result['during_ingestion']
    print(f'\n{"phase":<20}{"searches":>9}{"errors":>8}{"short":>7}{"p50 ms":>9}{"p95 ms":>9}')
    for name, row in (('without ingestion', a), ('during ingestion', b)):
        print(f'{name:<20}{row["searches"]:>9}{row["errors"]:>8}{row["short_results"]:>7}{row["p50_ms"]:>9.0f}'
              f'{row["p95_ms"]:>9.0f}')
    print(f'{args.clients} clients; upload of {args.upload_pages} pages indexed in {ingest_s:.1f} s '
          f'({state["state"]}); p95 during/without = {b["p95_ms"] / a["p95_ms"]:.2f}x')
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
