"""The JSON search API on loopback: N parallel search clients for a bounded time while an ingestion runs
through the same server (one process owns the Milvus Lite file)."""
import json
import statistics
import threading
import time

import httpx
import pytest

from lazyllm_colpali import ColPaliIndex, MilvusMultiVectorStore
from lazyllm_colpali.serving.api import create_app
from tests.helpers.pdfs import make_text_pdf
from tests.helpers.servers import serve_in_thread


@pytest.fixture
def served(colpali_encoder, db_path, pdf_dir, tmp_path):
    store = MilvusMultiVectorStore(db_path, dim=colpali_encoder.dim)
    index = ColPaliIndex(colpali_encoder, store, dpi=40, progress=False)
    index.add([pdf_dir])                                   # 6 pages before the clients start
    with serve_in_thread(create_app(index, allow_roots=[tmp_path])) as url:
        yield url, index
    store.close()


def test_parallel_searches_while_ingesting(served, tmp_path):
    url, index = served
    folder = tmp_path / 'incoming'
    for d in range(8):
        make_text_pdf(folder / f'batch {d}.pdf', [f'incoming {d} page {p}' for p in range(3)])
    job = httpx.post(f'{url}/index', json={'paths': [str(folder)]}, timeout=30).json()['job']

    latencies, errors, responses = [], [], []
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(timeout=60) as http:
            for i in range(400):                                  # bounded in count and in time
                if stop.is_set():
                    return
                start = time.perf_counter()
                r = http.post(f'{url}/search', json={'query': f'page {i % 7} of incoming {n}', 'topk': 3})
                latencies.append((time.perf_counter() - start) * 1000)
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    responses.append(r.json())

    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for c in clients:
        c.start()
    deadline = time.time() + 180
    while time.time() < deadline:
        state = httpx.get(f'{url}/jobs/{job}', timeout=30).json()
        if state['state'] in ('done', 'failed'):
            break
        time.sleep(0.2)
    stop.set()
    for c in clients:
        c.join(timeout=60)

    assert state['state'] == 'done' and state['report']['added_pages'] == 24, state
    assert errors == [] and len(responses) >= 8
    assert any(r['pages'] < 30 for r in responses)                # some searches ran mid-ingestion
    final_ids = set(index.store.page_ids())
    for r in responses:
        scores = [h['score'] for h in r['hits']]
        assert scores == sorted(scores, reverse=True)
        # Fails now and then: a page whose vectors are stored but whose Milvus row is not yet visible is
        # dropped by MaxSimRetriever.search_vectors instead of replaced by the next page (store snapshot issue).
        assert len(r['hits']) == 3, r['hits']
        assert all(h['page_id'] in final_ids for h in r['hits'])   # only whole, committed pages are served
    p50, p95 = statistics.median(latencies), sorted(latencies)[int(0.95 * (len(latencies) - 1))]
    print(f'\n{len(latencies)} searches by 4 clients during ingestion of 24 pages: p50 {p50:.0f} ms, p95 {p95:.0f} ms')
    (tmp_path / 'latency.json').write_text(json.dumps({'p50_ms': p50, 'p95_ms': p95, 'n': len(latencies)}))

    # Consistent: after ingestion the API answers exactly what the library answers.
    api = httpx.post(f'{url}/search', json={'query': 'incoming 3 page 1', 'topk': 5}, timeout=60).json()['hits']
    direct = index.search('incoming 3 page 1', 5)
    assert [h['page_id'] for h in api] == [h.page_id for h in direct]


def test_bad_requests_are_clear(served):
    url, _ = served
    r = httpx.post(f'{url}/search', json={'query': '  '}, timeout=30)
    assert r.status_code == 400 and 'empty query' in r.json()['detail']
    r = httpx.post(f'{url}/search', json={'query': 'x', 'filters': {'colour': 'red'}}, timeout=30)
    assert r.status_code == 400 and r.json()['detail'].startswith('filters.colour: unknown filter')
    assert httpx.get(f'{url}/jobs/999', timeout=30).status_code == 404
    assert httpx.get(f'{url}/health', timeout=30).json() == {'status': 'ok', 'pages': 6}


def test_load_eight_clients_search_while_a_large_pdf_uploads(tmp_path, tiny_model_dir):
    """Bounded load on loopback (benchmarks/bench_serving.py at a small size): zero errors, and the p95 search
    latency during ingestion printed next to p95 without it (no time asserted)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
    import bench_serving

    out = tmp_path / 'serving.json'
    result = bench_serving.main(['--model', str(tiny_model_dir('colpali')), '--clients', '8', '--base-pages', '6',
                                 '--upload-pages', '80', '--baseline-searches', '5', '--max-searches', '200',
                                 '--workdir', str(tmp_path / 'w'), '--out', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result['job'] == 'done' and result['added_pages'] == 80
    for phase in ('without_ingestion', 'during_ingestion'):
        assert result[phase]['errors'] == 0, result[phase]['error_samples']
    # No short result without ingestion. During it, a search can return fewer hits than asked: the retriever
    # drops pages whose vectors are stored but whose Milvus row is not visible yet (a store issue, reported).
    assert result['without_ingestion']['short_results'] == 0
    assert result['without_ingestion']['searches'] == 40 and result['during_ingestion']['during_ingestion'] > 0
