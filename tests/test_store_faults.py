"""An operator's bad day (issue 23), each fault made on real parts: milvus-lite's gRPC server and Milvus 2.3.5
standalone (``server_uri``), Milvus Lite files, real PDFs and the tiny real model. See docs/faults.md."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from lazyllm_colpali import ColPaliIndex, MaxSimRetriever, MilvusMultiVectorStore, PageRecord, StoreError
from lazyllm_colpali.store.collections import HalfCreatedError
from tests.helpers.pdfs import make_text_pdf
from tests.helpers.store_worker import DIM, items_for, vectors_for

ROOT = Path(__file__).resolve().parents[1]


def _collection() -> str:
    return f'f{uuid.uuid4().hex[:10]}'


def cli(*args, timeout=300, stdin=None):
    return subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, input=stdin)


def _top(store, query, k=10):
    return [(h.page_id, round(h.score, 3)) for h in MaxSimRetriever(store, mode='exact').search_vectors(query, k)]


# -- 1. the same path on two machines --------------------------------------------------------------------------
def test_another_machines_file_at_the_same_path_is_another_document(server_uri, tiny_model_dir, tmp_path):
    """Machine B indexing its own, different /data/report.pdf never deletes machine A's; only a newer version
    from the same source prefix replaces a document, and an older copy never does."""
    path = make_text_pdf(tmp_path / 'data' / 'report.pdf', ['Machine A: revenue grew.', 'A, page two.'])
    collection = _collection()
    common = ['--db', server_uri, '--collection', collection, '--shared-dir', tmp_path / 'shared']
    index = ['index', path, '--model', tiny_model_dir('colpali'), '--dpi', 40, '--no-progress', *common]
    machine = {m: ['--data-dir', tmp_path / m, '--source-prefix', f'host-{m}'] for m in 'AB'}

    out = cli(*index, *machine['A'])
    assert out.returncode == 0 and '2 pages added' in out.stdout, out.stderr[-2000:]
    store = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'C', shared_dir=tmp_path / 'shared')
    (a_doc,) = [d['doc_id'] for d in store.documents()]

    make_text_pdf(path, ['Machine B: another report at the same path.'])
    out = cli(*index, *machine['B'])
    assert out.returncode == 0 and '1 pages added' in out.stdout, out.stderr[-2000:]
    docs = {d['doc_id']: d['pages'] for d in store.documents()}
    assert docs.pop(a_doc) == 2 and list(docs.values()) == [1], 'B replaced A\'s document'
    (b_doc,) = docs
    assert (tmp_path / 'shared' / 'pages' / a_doc).is_dir()
    listing = cli('docs', *common, '--data-dir', tmp_path / 'A').stdout
    assert '(from host-A)' in listing and '(from host-B)' in listing, listing

    time.sleep(0.05)
    make_text_pdf(path, ['Machine A: revenue grew, revised.', 'A, page two.', 'A, page three.'])
    out = cli(*index, *machine['A'])     # a newer version from A's own prefix replaces A's old one, not B's
    assert out.returncode == 0 and '3 pages added' in out.stdout, out.stderr[-2000:]
    docs = {d['doc_id']: d['pages'] for d in store.documents()}
    assert a_doc not in docs and docs.pop(b_doc) == 1 and list(docs.values()) == [3]
    assert not (tmp_path / 'shared' / 'pages' / a_doc).exists()

    make_text_pdf(path, ['Machine A: an old copy restored from a backup.'])
    os.utime(path, (time.time() - 86400, time.time() - 86400))
    out = cli(*index, *machine['A'])     # an older copy never replaces the newer version it finds
    assert 'a newer version of this file' in out.stdout and '0 pages added' in out.stdout, out.stdout
    assert store.count() == 4
    report = store.check()
    assert not any(v for v in report.values() if isinstance(v, list)), {k: v for k, v in report.items() if v}
    store.close()


def test_a_document_two_machines_hold_stays_until_both_replace_it(lite_server, colpali_encoder, tmp_path):
    path = make_text_pdf(tmp_path / 'shared-docs' / 'memo.pdf', ['Identical bytes on both machines.'])
    collection = _collection()
    stores = {m: MilvusMultiVectorStore(lite_server, collection, dim=colpali_encoder.dim, data_dir=tmp_path / m)
              for m in 'AB'}
    index = {m: ColPaliIndex(colpali_encoder, stores[m], dpi=40, progress=False, source_prefix=f'host-{m}')
             for m in 'AB'}
    assert index['A'].add([path]).added_pages == 1
    assert index['B'].add([path]).added_pages == 0                # same bytes, same path: one document
    (doc,) = [d['doc_id'] for d in stores['A'].documents()]
    assert sorted(c.prefix for c in stores['A'].source_documents()) == ['host-A', 'host-B']
    time.sleep(0.05)
    make_text_pdf(path, ['A edited its copy.'])
    index['A'].add([path])
    assert doc in stores['A'].doc_ids([doc]), 'B still holds this version'
    time.sleep(0.05)
    make_text_pdf(path, ['B edited its copy too.'])
    index['B'].add([path])
    assert not stores['A'].doc_ids([doc]) and len(stores['A'].documents()) == 2

    # Documents indexed before claims existed: kept on a server (another machine may hold them), with a warning
    legacy = items_for('0123456789abcdef', 1, dim=colpali_encoder.dim)
    legacy[0][0].source = str(path.resolve())
    stores['A'].add(legacy)
    time.sleep(0.05)
    make_text_pdf(path, ['A edits again.'])
    index['A'].add([path])
    assert stores['A'].doc_ids(['0123456789abcdef']) == {'0123456789abcdef'}
    for store in stores.values():
        store.close()


def test_a_kill_between_pages_and_claims_is_finished_by_the_rerun(lite_server, colpali_encoder, tmp_path):
    path = make_text_pdf(tmp_path / 'doc.pdf', ['version one'])
    store = MilvusMultiVectorStore(lite_server, _collection(), dim=colpali_encoder.dim, data_dir=tmp_path / 'A')
    index = ColPaliIndex(colpali_encoder, store, dpi=40, progress=False, source_prefix='host-A')
    index.add([path])
    (old,) = [d['doc_id'] for d in store.documents()]
    time.sleep(0.05)
    make_text_pdf(path, ['version two'])
    claim = store.claim_source
    store.claim_source = lambda *a: (_ for _ in ()).throw(KeyboardInterrupt())   # killed before its claim
    with pytest.raises(KeyboardInterrupt):
        index.add([path])
    store.claim_source = claim
    assert len(store.documents()) == 2                  # the new pages are stored, the old version is still there
    report = index.add([path])                          # the rerun encodes nothing, claims, replaces
    assert report.added_pages == 0 and [d['doc_id'] for d in store.documents()] != [old]
    assert len(store.documents()) == 1 and [c.prefix for c in store.source_documents()] == ['host-A']
    store.close()


def test_kill_9_while_new_versions_replace_old_ones_then_the_rerun_keeps_exactly_the_new(lite_server, tiny_model_dir,
                                                                                         tmp_path):
    from tests.helpers.store_worker import manifest_count

    folder, collection = tmp_path / 'pdfs', _collection()
    for d in range(6):
        make_text_pdf(folder / f'doc {d}.pdf', [f'version one of document {d}'])
    index = ['index', folder, '--model', tiny_model_dir('colpali'), '--db', lite_server, '--collection', collection,
             '--data-dir', tmp_path / 'A', '--dpi', 40, '--batch-size', 1, '--no-progress', '--source-prefix', 'host-A']
    assert cli(*index).returncode == 0
    time.sleep(0.05)
    for d in range(6):
        make_text_pdf(folder / f'doc {d}.pdf', [f'version two of document {d}', 'with a second page'])
    proc = subprocess.Popen([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, index)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while manifest_count(tmp_path / 'A' / 'vectors') < 9 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, 'the indexer finished before it could be killed'
    proc.kill()
    proc.wait(timeout=60)
    rerun = cli(*index)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    store = MilvusMultiVectorStore(lite_server, collection, data_dir=tmp_path / 'A')
    assert sorted(d['pages'] for d in store.documents()) == [2] * 6             # every old version gone, once
    claims = store.source_documents()
    assert len(claims) == 6 and {c.prefix for c in claims} == {'host-A'}
    report = store.check()
    assert not any(v for v in report.values() if isinstance(v, list)), {k: v for k, v in report.items() if v}
    store.close()


# -- 2. and 3. creation killed half-way --------------------------------------------------------------------------
@pytest.mark.parametrize('state', ['meta only', 'pages collection missing', 'no schema record (0.2.0 order)',
                                   'vectors but no schema record (0.2.0 order)'])
def test_a_creation_stopped_half_way_is_reported_finished_or_dropped(server_uri, tmp_path, state):
    collection = _collection()
    common = ['--db', server_uri, '--collection', collection, '--data-dir', tmp_path / 'A']
    store = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'A')
    client = store._client
    if state == 'meta only':
        for name in (collection, f'{collection}__vectors', f'{collection}__sources'):
            if client.has_collection(name):
                client.drop_collection(name)
    elif state == 'pages collection missing':
        client.drop_collection(collection)
    elif state == 'no schema record (0.2.0 order)':     # killed after the page collection, before the record
        client.delete(f'{collection}__meta', ids=['schema'])
    else:                                              # killed once <collection>__vectors existed
        client.drop_collection(collection)
        client.delete(f'{collection}__meta', ids=['schema'])
    store.close()

    check = cli('check', *common)
    assert check.returncode == 1 and 'half created' in check.stdout and 'Traceback' not in check.stderr, \
        check.stdout + check.stderr[-2000:]
    with pytest.raises(HalfCreatedError, match='check --repair'):   # a reader (search, docs): reported, not made
        MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'A', create=False)
    repair = cli('check', '--repair', *common)
    if state == 'vectors but no schema record (0.2.0 order)':   # nothing says the dimension: index or drop
        assert repair.returncode == 2 and 'drop' in repair.stderr, repair.stdout + repair.stderr
        writer = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'A')   # the rerun
    else:
        assert repair.returncode == 0 and 'finished creating' in repair.stdout, repair.stdout + repair.stderr
        writer = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'A')
    writer.add(items_for('aaaaaaaaaaaaaaaa', 3))
    assert writer.count() == 3 and not any(v for v in writer.check().values() if isinstance(v, list))
    writer.close()

    drop = cli('drop', *common, stdin='wrong-name\n')
    assert drop.returncode == 1 and 'not dropped' in drop.stderr
    drop = cli('drop', *common, stdin=f'{collection}\n')
    assert drop.returncode == 0 and 'dropped' in drop.stdout, drop.stdout + drop.stderr
    from pymilvus import MilvusClient
    names = MilvusClient(uri=server_uri).list_collections()
    assert not [n for n in names if n.startswith(collection)] and not (tmp_path / 'A' / 'vectors').exists()


def test_kill_9_during_creation_then_the_rerun_finishes_it(server_uri, tmp_path):
    """Real kills at several points of a creation (timed after the worker's imports), then a rerun."""
    for delay in (0.0, 0.15, 0.4, 0.8):
        collection = _collection()
        code = ('import sys; from lazyllm_colpali import MilvusMultiVectorStore; print("GO", flush=True); '
                'MilvusMultiVectorStore(sys.argv[1], sys.argv[2], dim=16, data_dir=sys.argv[3]); print("MADE")')
        proc = subprocess.Popen([sys.executable, '-c', code, server_uri, collection, str(tmp_path / collection)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert proc.stdout.readline().strip() == 'GO'
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=30)
        store = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / collection)
        store.add(items_for('bbbbbbbbbbbbbbbb', 2))
        report = store.check()
        assert store.count() == 2 and not any(v for v in report.values() if isinstance(v, list)), (delay, report)
        store.close()


def test_another_collection_can_join_the_store(server_uri, tmp_path):
    """A companion collection (e.g. a dense arm's) is created resumably, reloaded and dropped with the store."""
    from pymilvus import DataType

    from lazyllm_colpali.store.collections import OwnedCollection

    collection = _collection()
    store = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'A')
    client, name = store._client, f'{collection}__dense'

    def schema():
        schema = client.create_schema(auto_id=False)
        schema.add_field('page_id', DataType.VARCHAR, max_length=64, is_primary=True)
        schema.add_field('v', DataType.FLOAT_VECTOR, dim=8)
        return schema

    def index():
        params = client.prepare_index_params()
        params.add_index(field_name='v', index_type='FLAT', metric_type='IP')
        return params
    client.create_collection(name, schema=schema())        # a creation stopped before its index
    store.add_companion(OwnedCollection(name, schema, index))
    assert name in [s.name for s in store.owned_collections()] and client.list_indexes(name)
    client.insert(name, [{'page_id': 'p', 'v': [0.0] * 8}])  # loaded: usable at once
    with pytest.raises(ValueError, match='must be named'):
        store.add_companion(OwnedCollection('elsewhere', schema, index))
    store.close()
    out = cli('drop', '--yes', '--db', server_uri, '--collection', collection, '--data-dir', tmp_path / 'A')
    assert out.returncode == 0 and name in out.stdout, out.stdout + out.stderr


# -- 4. silent cache corruption ----------------------------------------------------------------------------------
def _rot(vector_dir: Path, fraction: float = 0.5, size: int = 8192) -> None:
    """Zero bytes in the middle of a cache file, size unchanged (what a bad disk or a stray write does)."""
    tokens = next(vector_dir.glob('tokens*.bin'))
    with open(tokens, 'r+b') as f:
        f.seek(int(tokens.stat().st_size * fraction))
        f.write(b'\0' * size)


def test_rotten_cache_bytes_are_found_and_refetched_and_a_truncated_cache_refetches(server_uri, tmp_path):
    collection = _collection()
    writer = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'A')
    for doc in ('cccccccccccccccc', 'dddddddddddddddd', 'eeeeeeeeeeeeeeee'):
        writer.add(items_for(doc, 20))
    query = vectors_for('dddddddddddddddd-p00007')
    expected = _top(writer, query)

    b = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'B')
    b.sync(force=True)
    _rot(tmp_path / 'B' / 'vectors')
    report = b.check()
    assert report['corrupt_vectors'] and report['needs_encoding'] == [], report   # found; Milvus still has them
    repaired = b.check(repair=True)
    assert not any(v for v in repaired.values() if isinstance(v, list)), repaired
    assert _top(b, query) == expected
    b.close()

    # A long-running reader finds rot by itself (sampled checksums) and a truncated cache by itself
    c = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'C', verify_interval=0, verify_pages=100)
    assert _top(c, query) == expected
    _rot(tmp_path / 'C' / 'vectors', fraction=0.3)
    assert _top(c, query) == expected and len(c.packed()) == 60
    c.close()
    tokens = next((tmp_path / 'C' / 'vectors').glob('tokens*.bin'))
    with open(tokens, 'r+b') as f:
        f.truncate(tokens.stat().st_size // 3)
    c = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'C')
    assert len(c.packed()) == 60 and _top(c, query) == expected
    for store in (c, writer):
        store.close()


def test_rot_in_a_lite_file_is_left_out_reported_and_re_encoded(tiny_model_dir, tmp_path):
    folder = tmp_path / 'pdfs'
    for d in range(3):
        make_text_pdf(folder / f'doc {d}.pdf', [f'document {d} page {p}' for p in range(4)])
    db = tmp_path / 'c.db'
    out = cli('index', folder, '--model', tiny_model_dir('colpali'), '--db', db, '--dpi', 40, '--no-progress')
    assert out.returncode == 0, out.stderr[-2000:]
    _rot(tmp_path / 'c.db.assets' / 'colpali_pages' / 'vectors')
    check = cli('check', '--db', db)
    assert check.returncode == 1 and 'corrupt_vectors' in check.stdout, check.stdout
    store = MilvusMultiVectorStore(str(db), verify_interval=0, verify_pages=100)
    assert 0 < len(store.packed()) < 12              # the rotten pages are left out, not scored as zeros
    store.close()
    repair = cli('check', '--repair', '--db', db)
    assert repair.returncode == 0 and 're-encoded' in repair.stdout, repair.stdout + repair.stderr[-2000:]
    assert cli('check', '--db', db).returncode == 0


# -- 5. a hostile image key ---------------------------------------------------------------------------------------
def test_a_hostile_image_key_is_refused_at_write_and_is_one_bad_page_at_read(db_path, tmp_path):
    real = make_text_pdf(tmp_path / 'real.pdf', ['a page whose image can be rendered again'])
    store = MilvusMultiVectorStore(db_path, dim=DIM)
    items = items_for('aaaaaaaaaaaaaaaa', 4)
    store.add([(r, v, Image.new('RGB', (8, 8))) for r, v, _ in items])
    for key in ('../../x', '/etc/passwd', 'bbbbbbbbbbbbbbbb/bbbbbbbbbbbbbbbb-p00001.jpg'):
        record = PageRecord(page_id='cccccccccccccccc-p00001', doc_id='cccccccccccccccc', source='/x.pdf',
                            file_name='x.pdf', page_number=1, width=8, height=8, image_key=key)
        with pytest.raises(ValueError, match='image key'):
            store.add([(record, vectors_for(record.page_id), None)])
    assert store.count() == 4
    # a row written by something that did not check (an older version, a hostile writer), whose page image
    # is missing and can be rendered again from its source: the old code saved it under the hostile key
    row = store._client.get(store.collection, ids=['aaaaaaaaaaaaaaaa-p00002'])[0]
    store._client.upsert(store.collection, [{**row, 'image_key': '../../../../etc/passwd', 'source': str(real),
                                             'content_sha': ''}])
    hits = MaxSimRetriever(store, mode='exact').search_vectors(vectors_for('aaaaaaaaaaaaaaaa-p00002'), 4)
    assert [h.page_id for h in hits] and 'aaaaaaaaaaaaaaaa-p00002' not in [h.page_id for h in hits]
    assert store.check()['bad_image_keys'] == ['aaaaaaaaaaaaaaaa-p00002']
    repaired = store.check(repair=True)
    assert not any(v for v in repaired.values() if isinstance(v, list)), repaired
    assert store.records(['aaaaaaaaaaaaaaaa-p00002'])['aaaaaaaaaaaaaaaa-p00002'].image_key.startswith('aaaa')
    store.close()


# -- 6. a writer killed before its change token ---------------------------------------------------------------
def test_readers_see_rows_a_writer_left_without_its_change_token(server_uri, tmp_path):
    collection = _collection()
    reader = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'A', sync_interval=1.0,
                                    full_sync_interval=3.0)
    reader.add(items_for('aaaaaaaaaaaaaaaa', 2))
    assert len(reader.packed()) == 2
    writer = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'B')
    writer._bump = lambda: None                   # what a kill between the rows and the token leaves
    writer.add(items_for('bbbbbbbbbbbbbbbb', 4))
    deadline = time.monotonic() + 1.0 + 5.0 + 3.0   # sync interval + Bounded staleness + slack
    while len(reader.packed()) < 6:
        assert time.monotonic() < deadline, f'the reader sees {len(reader.packed())} of 6 pages'
        time.sleep(0.2)
    writer.delete_docs(['aaaaaaaaaaaaaaaa'])      # a change that keeps the row count: 2 out, 2 in, no token
    writer.add(items_for('cccccccccccccccc', 2))
    deadline = time.monotonic() + 3.0 + 5.0 + 5.0   # full listing interval + staleness + slack
    while 'aaaaaaaaaaaaaaaa-p00001' in reader.packed().page_ids or len(reader.packed()) != 6:
        assert time.monotonic() < deadline, 'the reader never listed the rows again'
        time.sleep(0.2)
    for store in (reader, writer):
        store.close()


# -- also: images of documents another machine deleted ----------------------------------------------------------
def test_images_of_documents_deleted_elsewhere_leave_a_machine_with_its_own_image_folder(server_uri, tmp_path):
    collection = _collection()
    a = MilvusMultiVectorStore(server_uri, collection, dim=DIM, data_dir=tmp_path / 'A')
    items = items_for('aaaaaaaaaaaaaaaa', 2) + items_for('bbbbbbbbbbbbbbbb', 1)
    a.add([(r, v, Image.new('RGB', (8, 8))) for r, v, _ in items])
    b = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'B', sync_interval=0)  # own folder
    b.sync(force=True)
    for record, _, _ in items:   # B's own copies (B rendered them from its sources, say)
        b.images.save(record.image_key or b.images.key_for(record.doc_id, record.page_id), Image.new('RGB', (8, 8)))
    a.delete_docs(['aaaaaaaaaaaaaaaa'])
    deadline = time.monotonic() + 10
    while (tmp_path / 'B' / 'pages' / 'aaaaaaaaaaaaaaaa').exists():
        assert time.monotonic() < deadline, 'B kept the images of a document A deleted'
        b.packed()
        time.sleep(0.3)
    assert (tmp_path / 'B' / 'pages' / 'bbbbbbbbbbbbbbbb').is_dir() and b.check()['orphan_image_docs'] == []
    for store in (a, b):
        store.close()


def test_store_errors_name_the_state_not_a_traceback(tmp_path):
    with pytest.raises(StoreError, match='does not exist'):
        MilvusMultiVectorStore(str(tmp_path / 'x.db'), 'nothing_here')
    store = MilvusMultiVectorStore(str(tmp_path / 'x.db'), dim=DIM)
    with pytest.raises(ValueError, match='control characters'):
        store.page_ids({'file': 'a\x01b.pdf'})
    with pytest.raises(ValueError, match='out of range'):
        store.page_ids({'pages': (1, 10 ** 20)})
    store.add(items_for('aaaaaaaaaaaaaaaa', 2))
    with pytest.raises(ValueError, match='invalid doc id'):   # checked before anything is deleted
        store.delete_docs(['aaaaaaaaaaaaaaaa', '../x'])
    assert store.count() == 2
    store.close()
