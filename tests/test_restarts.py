"""A Milvus server that is killed -9 and started again under long-running clients (issue 23, item 2): the
store, serve-api, the chat and the indexer recover by themselves; while the server is down, serve-api
answers 503 with JSON saying what is down. Runs on milvus-lite's server and on Milvus 2.3.5."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import pytest

from lazyllm_colpali import ColPaliIndex, MaxSimRetriever, MilvusMultiVectorStore, StoreUnavailableError
from lazyllm_colpali.serving.api import create_app
from tests.helpers.pdfs import make_text_pdf
from tests.helpers.servers import serve_in_thread
from tests.helpers.store_worker import DIM, items_for, manifest_count, vectors_for


def _collection() -> str:
    return f'r{uuid.uuid4().hex[:10]}'


def _until(what, seconds: float):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return what()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_long_running_reader_and_writer_recover_after_a_restart(restartable, tmp_path):
    uri, collection = restartable.uri, _collection()
    store = MilvusMultiVectorStore(uri, collection, dim=DIM, data_dir=tmp_path / 'A', sync_interval=0,
                                   retry_delays=(0.2, 0.5))
    store.add(items_for('aaaaaaaaaaaaaaaa', 3))
    exact = MaxSimRetriever(store, mode='exact')
    candidates = MaxSimRetriever(store, mode='candidates', candidate_budget=2)
    query = vectors_for('aaaaaaaaaaaaaaaa-p00002')
    assert exact.search_vectors(query, 1)[0].page_id == 'aaaaaaaaaaaaaaaa-p00002'

    restartable.stop()
    with pytest.raises(StoreUnavailableError, match='is the server running'):
        exact.search_vectors(query, 1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        store.count()
    assert time.monotonic() - started < 2, 'a known-down server must fail fast (a quick 503), not retry again'
    assert 'Fail connecting' in store.unavailable or store.unavailable

    restartable.start()
    started = time.monotonic()
    # the same objects, never reopened: the first calls after the restart load what the server released
    hits = _until(lambda: exact.search_vectors(query, 1), 60)
    assert hits[0].page_id == 'aaaaaaaaaaaaaaaa-p00002'
    assert candidates.search_vectors(query, 1)[0].page_id == 'aaaaaaaaaaaaaaaa-p00002'
    store.add(items_for('bbbbbbbbbbbbbbbb', 2))
    assert store.count() == 5 and not store.unavailable
    print(f'\nrecovered {time.monotonic() - started:.1f} s after the server answered again')
    store.close()


# Milvus 2.3.5 restarts under the serving layers: a restarted 2.3.5 in a long test session took over 5 minutes
# to answer again (CI run of the integration branch), so these two run on milvus-lite's server; the store-level
# recovery test above keeps both servers.
@pytest.mark.parametrize('restartable_server', ['lite-server'], indirect=True)
def test_serve_api_answers_503_while_milvus_is_down_and_recovers(restartable, colpali_encoder, tmp_path):
    folder = tmp_path / 'docs'
    make_text_pdf(folder / 'report.pdf', ['Revenue grew 12% in 2023.', 'Costs by region.'])
    store = MilvusMultiVectorStore(restartable.uri, _collection(), dim=colpali_encoder.dim,
                                   data_dir=tmp_path / 'A', retry_delays=(0.2, 0.5), sync_interval=0)
    index = ColPaliIndex(colpali_encoder, store, dpi=40, progress=False)
    index.add([folder])
    with serve_in_thread(create_app(index)) as url:
        assert httpx.get(f'{url}/health').json() == {'status': 'ok', 'pages': 2}
        restartable.stop()
        r = httpx.post(f'{url}/search', json={'query': 'revenue'}, timeout=60)
        assert r.status_code == 503 and r.headers['retry-after'] and 'is the server running' in r.json()['detail']
        r = httpx.get(f'{url}/health', timeout=60)
        assert r.status_code == 503 and r.json()['status'] == 'unavailable' and r.json()['down'] == ['milvus']
        assert restartable.uri in r.json()['detail']
        restartable.start()
        r = _until(lambda: _ok(httpx.post(f'{url}/search', json={'query': 'revenue'}, timeout=60)), 60)
        assert len(r.json()['hits']) == 2
        assert httpx.get(f'{url}/health').json() == {'status': 'ok', 'pages': 2}
    store.close()


def _ok(response):
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize('restartable_server', ['lite-server'], indirect=True)
def test_the_chat_recovers_after_a_restart(restartable, colpali_encoder, tmp_path, monkeypatch):
    from lazyllm_colpali.lazyllm_glue.components import ColPaliDocument
    from lazyllm_colpali.lazyllm_glue.embed import ColPaliEmbed
    from lazyllm_colpali.serving.chat import VisualChat

    monkeypatch.setenv('LAZYLLM_COLPALI_HOME', str(tmp_path / 'home'))
    make_text_pdf(tmp_path / 'docs' / 'manual.pdf', ['Install the pump.', 'Replace the filter.'])
    doc = ColPaliDocument(tmp_path / 'docs', embed=ColPaliEmbed(colpali_encoder), db=restartable.uri,
                          collection=_collection(), data_dir=str(tmp_path / 'A'), dpi=40, progress=False)
    chat = VisualChat(doc, None)
    try:
        assert 'manual.pdf' in chat('how to install the pump')
        restartable.restart(down_seconds=1)
        answer = _until(lambda: _answered(chat('how to install the pump')), 60)
        assert 'manual.pdf' in answer
    finally:
        chat.close()
        doc.close()


def _answered(text: str) -> str:
    assert '**Error:**' not in text, text
    return text


def test_the_indexer_rides_through_a_quick_restart(tiny_model_dir, tmp_path):
    """A server back within the retry budget: `index` finishes by itself, every page stored once."""
    from lazyllm_colpali.devtools.milvus_servers import LiteServer

    server = LiteServer(tmp_path / 'server').start()
    collection = _collection()
    folder = tmp_path / 'pdfs'
    for d in range(6):
        make_text_pdf(folder / f'doc {d}.pdf', [f'document {d} page {p}' for p in range(3)])
    cmd = [sys.executable, '-m', 'lazyllm_colpali.cli', 'index', folder, '--model', tiny_model_dir('colpali'),
           '--db', server.uri, '--collection', collection, '--data-dir', tmp_path / 'A', '--dpi', 40,
           '--batch-size', 1, '--no-progress']
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while manifest_count(tmp_path / 'A' / 'vectors') < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, 'the indexer finished before the restart'
        server.restart(down_seconds=1)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and '18 pages added' in out, err[-3000:]
        store = MilvusMultiVectorStore(server.uri, collection, data_dir=tmp_path / 'B', shared_dir=tmp_path / 'A')
        report = store.check()
        assert store.count() == 18 and not any(v for v in report.values() if isinstance(v, list)), report
        store.close()
    finally:
        proc.kill()
        server.stop()
