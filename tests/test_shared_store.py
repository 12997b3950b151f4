"""Many machines on one collection: Milvus is the source of truth, each machine's vector file is a cache.

Two data dirs stand in for two machines A and B. Every scenario runs on two real servers: milvus-lite's gRPC
server mode and a real Milvus 2.3.5 standalone (PyPI `milvus`, installed by scripts/setup-milvus.sh).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from lazyllm_colpali import MaxSimRetriever, MilvusMultiVectorStore
from tests.helpers.pdfs import make_text_pdf
from lazyllm_colpali.devtools.milvus_servers import free_port, start_lite_server
from tests.helpers.store_worker import DIM, items_for, manifest_count, vectors_for

ROOT = Path(__file__).resolve().parents[1]


def _collection() -> str:
    return f'c{uuid.uuid4().hex[:10]}'


def cli(*args, timeout=300):
    out = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, args)], capture_output=True,
                         text=True, timeout=timeout)
    return out


def _worker(*args):
    return [sys.executable, '-m', 'tests.helpers.store_worker', *map(str, args)]


def _assert_own_vectors(store: MilvusMultiVectorStore, page_ids):
    """Every page's cached vectors (and Milvus's) are its own, to fp16 precision."""
    cached = store.vectors.get(list(page_ids))
    in_milvus = store.layout.read({p: len(cached[p]) for p in cached})
    assert set(cached) == set(page_ids)
    for page_id in page_ids:
        expected = vectors_for(page_id)
        assert torch.allclose(cached[page_id].float(), expected, atol=2e-3), page_id
        assert torch.allclose(torch.from_numpy(in_milvus[page_id].astype('float32')), expected, atol=2e-3), page_id


def test_b_searches_deletes_and_repairs_what_a_indexed(server_uri, tiny_model_dir, tmp_path):
    """The issue's walk-through, as users run it: A indexes; B (another data dir) gets identical rankings; B's
    check is clean; an empty machine's check --repair restores from Milvus and deletes nothing; B deletes a
    document and A's long-running store stops returning it; B re-indexing A's file encodes nothing."""
    folder = tmp_path / 'pdfs'
    make_text_pdf(folder / 'report.pdf', ['Revenue grew 12% in 2023.', 'Costs by region.', 'Outlook.'])
    make_text_pdf(folder / 'manual.pdf', ['Install the pump.', 'Replace the filter.'])
    model, collection = tiny_model_dir('colpali'), _collection()
    common = ['--db', server_uri, '--collection', collection]
    machine = {m: ['--data-dir', tmp_path / m, '--shared-dir', tmp_path / 'shared'] for m in 'ABC'}

    out = cli('index', folder, '--model', model, '--dpi', 40, '--no-progress', *common, *machine['A'])
    assert out.returncode == 0 and '5 pages added' in out.stdout, out.stderr[-2000:]
    ranks = {}
    for m in 'AB':   # B has never seen these pages; it does not pass --model: the collection recorded it
        out = cli('search', 'revenue in 2023', '-k', 5, '--json', *common, *machine[m])
        assert out.returncode == 0, out.stderr[-2000:]
        ranks[m] = [json.loads(line) for line in out.stdout.splitlines()]
    assert [h['page_id'] for h in ranks['B']] == [h['page_id'] for h in ranks['A']] and len(ranks['A']) == 5
    assert [h['score'] for h in ranks['B']] == pytest.approx([h['score'] for h in ranks['A']], abs=1e-4)
    assert all(h['image_key'] and os.path.isfile(h['image_path']) for h in ranks['B'])
    check = cli('check', *common, *machine['B'])
    assert check.returncode == 0 and 'consistent' in check.stdout, check.stdout + check.stderr[-2000:]

    repair = cli('check', '--repair', *common, *machine['C'])      # a fresh machine
    assert repair.returncode == 0 and '5 pages' in repair.stdout, repair.stdout + repair.stderr[-2000:]
    c_store = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'C', shared_dir=tmp_path / 'shared')
    assert c_store.count() == 5 and c_store.vectors.count() == 5
    a_only = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'A')
    a_vectors = a_only.vectors
    for page_id, v in c_store.vectors.get(c_store.page_ids()).items():
        assert torch.equal(v, a_vectors.get([page_id])[page_id])

    a_store = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'A', shared_dir=tmp_path / 'shared',
                                     sync_interval=0)
    retriever = MaxSimRetriever(a_store, mode='exact')
    query = a_store.vectors.get(a_store.page_ids({'file': 'manual.pdf'}))
    manual_query = next(iter(query.values()))[:4].float()
    assert retriever.search_vectors(manual_query, 5)[0].file_name == 'manual.pdf'
    manual_id = next(d['doc_id'] for d in a_store.documents() if d['file_name'] == 'manual.pdf')
    out = cli('delete', manual_id, *common, *machine['B'])
    assert out.returncode == 0 and 'deleted 1 documents (2 pages); 3 pages left' in out.stdout, out.stderr[-2000:]
    deadline = time.monotonic() + 15    # the sync interval (0 here) + Milvus's Bounded staleness (5 s at most)
    while {h.file_name for h in retriever.search_vectors(manual_query, 5)} != {'report.pdf'}:
        assert time.monotonic() < deadline, 'A still returns pages B deleted'
        time.sleep(0.5)
    assert len(retriever.search_vectors(manual_query, 5)) == 3
    assert len(a_store.packed()) == 3                      # A's cache dropped them too
    assert not (tmp_path / 'shared' / 'pages' / manual_id).exists()

    out = cli('index', folder / 'report.pdf', '--no-progress', *common, *machine['B'])
    assert out.returncode == 0 and '0 pages added, 3 already indexed' in out.stdout, out.stderr[-2000:]
    for store in (a_store, c_store, a_only):
        store.close()


def test_a_long_running_reader_sees_another_process_pages_within_the_sync_interval(server_uri, tmp_path):
    collection = _collection()
    reader = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'A', sync_interval=1.0)
    reader.add(items_for('aaaaaaaaaaaaaaaa', 2))
    retriever = MaxSimRetriever(reader, mode='exact')
    assert len(reader.packed()) == 2
    writer = subprocess.run(_worker('write', server_uri, collection, tmp_path / 'B', 'bbbbbbbbbbbbbbbb', 4),
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert writer.returncode == 0, writer.stderr[-2000:]
    committed = time.monotonic()
    while len(reader.packed()) < 6:
        assert time.monotonic() - committed < 1.0 + 5.0, 'the reader did not see the new pages'
        time.sleep(0.1)
    new_page = 'bbbbbbbbbbbbbbbb-p00003'
    assert retriever.search_vectors(vectors_for(new_page), 1)[0].page_id == new_page
    _assert_own_vectors(reader, reader.page_ids())
    reader.close()


def test_two_concurrent_writers_on_one_data_dir_keep_every_page_with_its_own_vectors(server_uri, tmp_path):
    collection = _collection()
    MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'shared-dir').close()
    procs = [subprocess.Popen(_worker('write', server_uri, collection, tmp_path / 'shared-dir', doc * 16, 60),
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for doc in ('c', 'd')]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    store = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'shared-dir')
    assert store.count() == 120 and store.vectors.count() == 120
    _assert_own_vectors(store, store.page_ids())
    report = store.check()
    assert not any(v for v in report.values() if isinstance(v, list)), report
    store.close()


def test_kill_9_mid_sync_then_resync_restores_every_page(server_uri, tmp_path):
    collection = _collection()
    source = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'A')
    items = items_for('eeeeeeeeeeeeeeee', 300)
    for start in range(0, len(items), 50):
        source.add(items[start:start + 50])
    cmd = _worker('sync', server_uri, collection, tmp_path / 'B')
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while manifest_count(tmp_path / 'B' / 'vectors') < 40 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, 'the sync finished before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert 40 <= manifest_count(tmp_path / 'B' / 'vectors') < 300
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    store = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'B')
    assert store.vectors.count() == 300 and store.vectors.validate()['damaged'] == []
    _assert_own_vectors(store, store.page_ids())
    for s in (store, source):
        s.close()


def test_server_restart_mid_ingest_loses_nothing_and_resumes(tiny_model_dir, tmp_path):
    port = free_port()
    server = start_lite_server(tmp_path / 'server', port)
    uri, collection = f'http://127.0.0.1:{port}', _collection()
    folder = tmp_path / 'pdfs'
    for d in range(6):
        make_text_pdf(folder / f'doc {d}.pdf', [f'document {d} page {p}' for p in range(3)])
    cmd = [sys.executable, '-m', 'lazyllm_colpali.cli', 'index', folder, '--model', tiny_model_dir('colpali'),
           '--db', uri, '--collection', collection, '--data-dir', tmp_path / 'A', '--dpi', 40, '--batch-size', 1,
           '--no-progress']
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while manifest_count(tmp_path / 'A' / 'vectors') < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    server.kill()
    server.wait(timeout=30)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and 'is the server running' in err and 'Traceback' not in err
    server = start_lite_server(tmp_path / 'server', port)
    try:
        rerun = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        store = MilvusMultiVectorStore(uri, collection, data_dir=tmp_path / 'B', shared_dir=tmp_path / 'A')
        report = store.check()
        assert store.count() == 18 and not any(v for v in report.values() if isinstance(v, list)), \
            {k: v for k, v in report.items() if v}
        assert store.vectors.count() == 18
        store.close()
    finally:
        server.kill()
        server.wait(timeout=30)
