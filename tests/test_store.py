"""The Milvus multi-vector store on real Milvus Lite files, and the local vector file under it."""
import numpy as np
import pytest
import torch
from PIL import Image

from lazyllm_colpali import DimensionMismatchError, LocalVectorFile, MilvusMultiVectorStore, PageRecord, StoreError
from lazyllm_colpali.ingest.records import make_page_id
from lazyllm_colpali.store.milvus_store import default_data_dir, filter_expression


def _item(doc, page, n=5, dim=16, seed=None, file_name=None):
    torch.manual_seed(seed if seed is not None else hash((doc, page)) % 1000)
    record = PageRecord(page_id=make_page_id(doc, page), doc_id=doc, source=f'/data/{doc}.pdf',
                        file_name=file_name or f'{doc}.pdf', page_number=page, width=40, height=50)
    return record, torch.nn.functional.normalize(torch.randn(n, dim), dim=1), Image.new('RGB', (40, 50), 'white')


def test_add_reopen_and_read_back(db_path):
    store = MilvusMultiVectorStore(db_path, dim=16)
    items = [_item('aaaa', p, n=3 + p) for p in (1, 2, 3)] + [_item('bbbb', 1)]
    store.add(items)
    assert store.count() == 4
    store.close()

    store = MilvusMultiVectorStore(db_path)          # dim comes from the collection
    assert store.dim == 16 and store.count() == 4
    packed = store.packed()
    by_id = {pid: packed.page(i) for i, pid in enumerate(packed.page_ids)}
    for record, vectors, _ in items:
        assert torch.allclose(by_id[record.page_id].float(), vectors, atol=1e-3)   # stored as fp16
    records = store.records([items[1][0].page_id])
    got = records[items[1][0].page_id]
    assert (got.file_name, got.page_number, got.n_vectors) == ('aaaa.pdf', 2, 5)
    assert Image.open(got.image_path).size == (40, 50)
    assert store.documents() == [{'doc_id': 'aaaa', 'source': '/data/aaaa.pdf', 'file_name': 'aaaa.pdf', 'pages': 3},
                                 {'doc_id': 'bbbb', 'source': '/data/bbbb.pdf', 'file_name': 'bbbb.pdf', 'pages': 1}]
    store.close()


def test_reopen_in_a_new_process_loads_the_collection(db_path):
    import subprocess
    import sys
    store = MilvusMultiVectorStore(db_path, dim=16)
    store.add([_item('aaaa', 1), _item('aaaa', 2)])
    store.close()
    code = ('import lazyllm_colpali as lc, sys\n'
            's = lc.MilvusMultiVectorStore(sys.argv[1])\n'
            'print("COUNT", s.count(), len(s.page_ids({"pages": (2, 2)})))\n')
    out = subprocess.run([sys.executable, '-c', code, db_path], capture_output=True, text=True, timeout=120)
    assert 'COUNT 2 1' in out.stdout, out.stderr[-2000:]


def test_upsert_is_idempotent_and_missing_reports_only_new_pages(db_path):
    store = MilvusMultiVectorStore(db_path, dim=16)
    store.add([_item('aaaa', 1), _item('aaaa', 2)])
    store.add([_item('aaaa', 1)])
    assert store.count() == 2
    assert store.missing([make_page_id('aaaa', p) for p in (1, 2, 3)]) == {make_page_id('aaaa', 3)}
    assert len(store.packed()) == 2
    store.close()


def test_delete_document_removes_rows_vectors_and_images(db_path):
    store = MilvusMultiVectorStore(db_path, dim=16)
    store.add([_item('aaaa', 1), _item('aaaa', 2), _item('bbbb', 1)])
    image = store.records([make_page_id('aaaa', 1)])[make_page_id('aaaa', 1)].image_path
    assert store.delete_docs(['aaaa']) == 2
    assert store.count() == 1 and store.packed().page_ids == [make_page_id('bbbb', 1)]
    assert not __import__('os').path.exists(image)
    assert store.vectors.dead_rows() == 10
    assert store.vectors.compact() == 10 and store.vectors.dead_rows() == 0
    assert torch.allclose(store.packed().page(0).float(), _item('bbbb', 1)[1], atol=1e-3)
    store.close()


def test_filters_by_file_and_page_range(db_path):
    store = MilvusMultiVectorStore(db_path, dim=16)
    store.add([_item('aaaa', p, file_name='a "quoted" name.pdf') for p in range(1, 6)] + [_item('bbbb', 2)])
    assert sorted(store.page_ids({'file': 'a "quoted" name.pdf', 'pages': (2, 4)})) == \
        [make_page_id('aaaa', p) for p in (2, 3, 4)]
    assert store.page_ids({'page': 2, 'doc_id': ['bbbb']}) == [make_page_id('bbbb', 2)]
    assert store.page_ids({'file': 'nope.pdf'}) == []
    with pytest.raises(ValueError, match='unknown filter'):
        filter_expression({'colour': 'red'})
    store.close()


def test_dimension_mismatch_is_a_clear_error(db_path):
    MilvusMultiVectorStore(db_path, dim=16).close()
    with pytest.raises(DimensionMismatchError, match='16-dim.*32-dim'):
        MilvusMultiVectorStore(db_path, dim=32)
    store = MilvusMultiVectorStore(db_path, dim=16)
    with pytest.raises(DimensionMismatchError, match='do not fit'):
        store.add([_item('aaaa', 1, dim=8)])
    assert store.count() == 0
    store.close()


def test_missing_collection_without_dim_says_index_first(db_path):
    with pytest.raises(StoreError, match='index some files first'):
        MilvusMultiVectorStore(db_path)


def test_second_process_on_a_lite_file_gets_a_clear_error(db_path):
    import subprocess
    import sys
    store = MilvusMultiVectorStore(db_path, dim=16)
    code = ('import lazyllm_colpali as lc, sys\n'
            'try:\n    lc.MilvusMultiVectorStore(sys.argv[1], dim=16)\n'
            'except lc.StoreError as e:\n    print("STORE-ERROR", e)\n')
    out = subprocess.run([sys.executable, '-c', code, db_path], capture_output=True, text=True, timeout=120)
    assert 'STORE-ERROR' in out.stdout and db_path in out.stdout and 'one process' in out.stdout
    store.close()


def test_candidates_find_pages_by_pooled_vectors(db_path):
    store = MilvusMultiVectorStore(db_path, dim=16)
    items = [_item('dddd', p, seed=p) for p in range(1, 21)]
    store.add(items)
    query = items[6][1][:3]                 # tokens of page 7: its pooled vector should be found
    assert make_page_id('dddd', 7) in store.candidates(query, budget=5)
    assert len(store.candidates(query, budget=20)) == 20
    store.close()


def test_server_uris_keep_vectors_in_a_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('LAZYLLM_COLPALI_HOME', str(tmp_path))
    expected = tmp_path / 'servers' / 'milvus.internal_19530' / 'pages'
    assert default_data_dir('http://milvus.internal:19530', 'pages') == expected
    assert default_data_dir(str(tmp_path / 'x.db'), 'pages') == tmp_path / 'x.db.assets' / 'pages'


def test_vector_file_trims_a_torn_tail_and_keeps_committed_pages(tmp_path):
    vf = LocalVectorFile(tmp_path / 'v', dim=4, dtype='float32')
    vf.put([('p1', 'd', torch.ones(2, 4)), ('p2', 'd', torch.full((3, 4), 2.0))])
    tokens = vf._tokens_path()
    vf.close()
    with open(tokens, 'ab') as f:   # a crash mid-append: 1.5 rows, no manifest entry
        f.write(np.zeros(6, dtype=np.float32).tobytes())
    vf = LocalVectorFile(tmp_path / 'v', dim=4)
    assert vf.validate()['damaged'] == [] and vf.packed().page_ids == ['p1', 'p2']
    vf.put([('p3', 'd', torch.full((1, 4), 3.0))])     # the next writer trims the torn row before appending
    assert tokens.stat().st_size == (5 + 1 + 1) * 16
    got = vf.get(['p1', 'p2', 'p3'])
    assert [float(got[p][0, 0]) for p in ('p1', 'p2', 'p3')] == [1.0, 2.0, 3.0]
    assert vf.packed().page_ids == ['p1', 'p2', 'p3'] and vf.dtype == 'float32'
    vf.close()
