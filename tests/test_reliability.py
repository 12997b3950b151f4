"""Faults injected on real parts: kill -9 in the middle of indexing, a Milvus server (milvus-lite's gRPC
server mode) that runs, goes down and comes back."""
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from lazyllm_colpali import MilvusMultiVectorStore, PageRecord, StoreError
from tests.helpers.pdfs import make_text_pdf


def _manifest_pages(manifest: Path) -> int:
    if not manifest.exists():
        return 0
    try:
        with sqlite3.connect(f'file:{manifest}?mode=ro', uri=True, timeout=1) as db:
            return db.execute('SELECT COUNT(*) FROM pages').fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_kill_9_mid_index_then_rerun_stores_every_page_exactly_once(tiny_model_dir, tmp_path):
    folder = tmp_path / 'pdfs'
    for d in range(10):
        make_text_pdf(folder / f'doc {d}.pdf', [f'document {d} page {p}' for p in range(3)])
    db = tmp_path / 'c.db'
    cmd = [sys.executable, '-m', 'lazyllm_colpali.cli', 'index', str(folder), '--model', str(tiny_model_dir('colpali')),
           '--db', str(db), '--dpi', '40', '--batch-size', '2', '--no-progress']
    manifest = tmp_path / 'c.db.assets' / 'colpali_pages' / 'vectors' / 'manifest.sqlite'
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while _manifest_pages(manifest) < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, 'the indexer finished before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    done_before = _manifest_pages(manifest)
    assert 6 <= done_before < 30

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    added = int(rerun.stdout.split(' pages added')[0].split()[-1])
    assert added < 30 and 'already indexed' in rerun.stdout          # it resumed, not restarted

    store = MilvusMultiVectorStore(str(db))
    records = store.records(store.page_ids())
    packed = store.packed()
    assert store.count() == 30 and len(records) == 30 and len(set(packed.page_ids)) == 30
    assert sorted(packed.page_ids) == sorted(records)
    for i, page_id in enumerate(packed.page_ids):                   # all of each page, or nothing
        assert len(packed.page(i)) == records[page_id].n_vectors
        assert Image.open(records[page_id].image_path).size[0] > 0
    assert {d['pages'] for d in store.documents()} == {3}
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _start_server(data_dir: Path, port: int) -> subprocess.Popen:
    exe = Path(sys.executable).with_name('milvus-lite')
    proc = subprocess.Popen([str(exe), 'server', '--data-dir', str(data_dir), '--port', str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:   # the port opens before gRPC answers: wait until a real call succeeds
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0 and _answers(port):
                return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail('milvus-lite server did not start')


def _answers(port: int) -> bool:
    from pymilvus import MilvusClient
    try:
        client = MilvusClient(uri=f'http://127.0.0.1:{port}', timeout=5, alias=f'probe-{port}-{time.time()}')
        client.list_collections()
        client.close()
        return True
    except Exception:
        return False


@pytest.fixture
def milvus_server(tmp_path):
    port = _free_port()
    proc = _start_server(tmp_path / 'server-data', port)
    state = {'proc': proc, 'port': port, 'data': tmp_path / 'server-data'}
    yield state
    state['proc'].kill()
    state['proc'].wait(timeout=30)


def _item(doc: str, page: int):
    torch.manual_seed(page)
    record = PageRecord(page_id=f'{doc}-p{page:05d}', doc_id=doc, source=f'/x/{doc}.pdf', file_name=f'{doc}.pdf',
                        page_number=page, width=10, height=10)
    return record, torch.nn.functional.normalize(torch.randn(6, 16), dim=1), None


def test_same_store_code_on_a_milvus_server_uri(milvus_server, tmp_path):
    uri = f'http://127.0.0.1:{milvus_server["port"]}'
    store = MilvusMultiVectorStore(uri, dim=16, data_dir=tmp_path / 'vectors')
    assert store.remote and store.index_type == 'HNSW'
    store.add([_item('aaaa', p) for p in (1, 2, 3)] + [_item('bbbb', 1)])
    assert store.count() == 4 and store.page_ids({'file': 'aaaa.pdf', 'pages': (2, 3)}) == ['aaaa-p00002', 'aaaa-p00003']
    assert store.delete_docs(['bbbb']) == 1 and store.count() == 3
    from lazyllm_colpali import MaxSimRetriever
    hits = MaxSimRetriever(store, mode='candidates', candidate_budget=3).search_vectors(_item('aaaa', 2)[1], 1)
    assert hits[0].page_id == 'aaaa-p00002'
    store.close()


def test_server_down_gives_a_clear_error_and_recovers(milvus_server, tmp_path):
    uri = f'http://127.0.0.1:{milvus_server["port"]}'
    store = MilvusMultiVectorStore(uri, dim=16, data_dir=tmp_path / 'vectors')
    store.add([_item('aaaa', 1)])
    milvus_server['proc'].kill()
    milvus_server['proc'].wait(timeout=30)
    with pytest.raises(StoreError, match=uri.replace('.', r'\.')):
        store.count()
    with pytest.raises(StoreError, match='is the server running'):
        MilvusMultiVectorStore(uri, dim=16, data_dir=tmp_path / 'vectors')
    milvus_server['proc'] = _start_server(milvus_server['data'], milvus_server['port'])
    again = MilvusMultiVectorStore(uri, dim=16, data_dir=tmp_path / 'vectors')
    assert again.count() == 1 and again.missing(['aaaa-p00001']) == set()     # nothing indexed was lost
    again.close()


def test_check_finds_and_repairs_what_a_crash_can_leave(db_path):
    store = MilvusMultiVectorStore(db_path, dim=16)
    store.add([(r, v, Image.new('RGB', (8, 8))) for r, v, _ in (_item('aaaa', 1), _item('aaaa', 2), _item('bbbb', 1))])
    clean = store.check()
    assert clean['pages'] == 3 and clean['dead_vector_rows'] == 0
    assert not any(v for v in clean.values() if isinstance(v, list)), clean
    # What a kill between commit steps leaves: vectors and an image with no row; and a row with no vectors.
    record, vectors, _ = _item('cccc', 1)
    store.vectors.put([(record.page_id, 'cccc', vectors)])
    store.images.save(store.images.key_for('cccc', record.page_id), Image.new('RGB', (8, 8)))
    store.vectors.delete_pages(['bbbb-p00001'])
    report = store.check()
    assert report['vectors_without_rows'] == ['cccc-p00001'] and report['rows_without_vectors'] == ['bbbb-p00001']
    assert report['orphan_image_docs'] == ['cccc'] and report['dead_vector_rows'] == 6
    assert report['needs_encoding'] == ['bbbb-p00001']
    repaired = store.check(repair=True)
    assert repaired['reclaimed_vector_rows'] == 12
    # The row whose vectors are lost is kept (its source is gone here, so it cannot be re-encoded): re-indexing
    # the file restores it, and `missing` says so.
    assert repaired['pages'] == 3 and repaired['needs_encoding'] == ['bbbb-p00001']
    assert not any(repaired[k] for k in ('vectors_without_rows', 'orphan_image_docs', 'damaged_vectors'))
    assert repaired['dead_vector_rows'] == 0 and store.missing(['bbbb-p00001']) == {'bbbb-p00001'}
    store.close()


def test_huge_image_and_unicode_paths_are_indexed(tmp_path):
    from lazyllm_colpali.ingest.render import count_pages, render_pages

    folder = tmp_path / '年度 报告 ünïcode'
    folder.mkdir()
    huge = folder / 'poster 20000px.png'
    Image.new('L', (20000, 20000), 255).save(huge)    # 4e8 pixels: over PIL's default bomb limit
    assert count_pages(huge) == 1
    (number, image), = render_pages(huge, max_side=2048)
    assert number == 1 and image.size == (2048, 2048) and image.mode == 'RGB'
    pdf = make_text_pdf(folder / 'résumé – copy (1).pdf', ['unicode path', ''])   # page 2 has no text at all
    assert [n for n, _ in render_pages(pdf, dpi=30)] == [1, 2]


def test_empty_and_overlong_queries_are_clear_errors(colpali_encoder, db_path):
    from lazyllm_colpali import ColPaliIndex, EmptyQueryError, QueryTooLongError

    store = MilvusMultiVectorStore(db_path, dim=colpali_encoder.dim)
    index = ColPaliIndex(colpali_encoder, store, progress=False)
    with pytest.raises(EmptyQueryError):
        index.search('')
    with pytest.raises(QueryTooLongError, match='longer than 2000'):
        index.search('revenue ' * 400)
    assert index.search('revenue') == []          # an empty collection: no pages, no error
    store.close()
