"""The dense arm: one vector per page from a visual bi-encoder (colpali-engine Bi* families, DSE/gme last-token
pooling of Qwen2-VL), stored as an ordinary dense field in Milvus and searched by Milvus itself, with the visual
arm's ids, filters, image store, delete and check; on a Milvus Lite file and on Milvus servers."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
import torch
from PIL import Image, ImageDraw

from lazyllm_colpali.dense import DenseIndex, DenseThenMaxSim, dense_collection
from lazyllm_colpali.errors import UnsupportedModelError
from lazyllm_colpali.models.dense import DenseEncoder, detect_dense_family
from lazyllm_colpali.models.identity import ModelMismatchError
from lazyllm_colpali.store.milvus_store import MilvusMultiVectorStore

FAMILIES = ['biqwen2', 'biqwen2_5', 'biidefics3', 'bimodernvbert', 'bipali', 'dse_qwen2', 'gme_qwen2']


def _page(text: str, size=(400, 520)) -> Image.Image:
    image = Image.new('RGB', size, 'white')
    ImageDraw.Draw(image).text((30, 40), text, fill='black')
    return image


@pytest.fixture(scope='module')
def dense_encoder(tiny_model_dir):
    return DenseEncoder(str(tiny_model_dir('biqwen2')), device='cpu', batch_size=2).load()


@pytest.mark.parametrize('family', FAMILIES)
def test_tiny_dense_families_give_one_unit_vector_per_page_and_query(tiny_model_dir, family):
    encoder = DenseEncoder(str(tiny_model_dir(family)), device='cpu', batch_size=2)
    assert encoder.family.name == family   # detected from config.json (and the folder name for gme vs DSE)
    pages = encoder.encode_images([_page('Revenue 2023'), _page('Pump manual', (300, 600))])
    queries = encoder.encode_queries(['revenue in 2023', 'how do I replace the filter of the pump'])
    for vector in pages + queries:
        assert vector.shape == (1, encoder.dim) and vector.dtype == torch.float32
        assert torch.isfinite(vector).all() and abs(float(vector.norm()) - 1) < 1e-4
    # left padding: a query embedded in a batch with a longer one equals the query embedded alone
    alone = DenseEncoder(str(tiny_model_dir(family)), device='cpu', query_cache_size=0)
    assert torch.allclose(alone.encode_queries(['revenue in 2023'])[0], queries[0], atol=1e-4)


def test_dense_family_detection_names_what_it_found(tiny_model_dir, tmp_path):
    assert detect_dense_family(str(tiny_model_dir('biqwen2_5'))).name == 'biqwen2_5'
    with pytest.raises(UnsupportedModelError, match=r"architectures \['ColQwen2'\].*--dense-family"):
        detect_dense_family(str(tiny_model_dir('colqwen2')))
    # a transformers-format multi-vector folder is not taken for a dense one
    from lazyllm_colpali.models.tiny import build_tiny_model
    hf = build_tiny_model('colqwen2', tmp_path / 'hf', format='transformers')
    with pytest.raises(UnsupportedModelError, match=r"ColQwen2ForRetrieval"):
        DenseEncoder(str(hf)).load()
    # and the visual arm given a dense checkpoint says where it belongs
    from lazyllm_colpali import ColPaliEncoder
    with pytest.raises(UnsupportedModelError, match=r"BiQwen2.*--dense-model"):
        ColPaliEncoder(str(tiny_model_dir('biqwen2'))).load()


def test_dense_arm_round_trip_on_a_lite_file(dense_encoder, pdf_dir, db_path):
    store = MilvusMultiVectorStore(db_path, dense_collection('pages'), dim=dense_encoder.dim)
    try:
        index = DenseIndex(dense_encoder, store, progress=False)
        report = index.add([pdf_dir])
        assert report.added_pages == 6 and store.count() == 6 and store.index_type == 'FLAT'
        assert store.model_info()['family'] == 'biqwen2'
        assert set(store.vectors.page_lengths().values()) == {1}   # one vector per page

        query = 'Replace the filter every month'
        hits = index.search(query, topk=6)
        assert len(hits) == 6 and all(h.image_path for h in hits)
        # Milvus's own search gives the exact inner products, best first
        q = dense_encoder.encode_queries([query])[0][0]
        pages = store.vectors.get([h.page_id for h in hits])
        for hit in hits:
            assert hit.score == pytest.approx(float(pages[hit.page_id].float()[0] @ q), abs=2e-3)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        # the visual arm's filters
        assert {h.file_name for h in index.search(query, 6, {'file': 'manual.pdf'})} == {'manual.pdf'}
        assert {h.page for h in index.search(query, 6, {'file': 'manual.pdf', 'pages': (2, 3)})} == {2, 3}

        assert index.add([pdf_dir]).added_pages == 0   # incremental, as the visual arm
        manual = next(d for d in store.documents() if d['file_name'] == 'manual.pdf')
        assert store.delete_docs([manual['doc_id']]) == 3
        assert 'manual.pdf' not in {h.file_name for h in index.search(query, 6)}
        report = store.check()
        assert report['pages'] == 3 and not [k for k, v in report.items() if isinstance(v, list) and v]
    finally:
        store.close()

    # the collection remembers its model: another dense model is refused
    store = MilvusMultiVectorStore(db_path, dense_collection('pages'))
    try:
        other = DenseEncoder('tiny:biqwen2_5', device='cpu')
        with pytest.raises(ModelMismatchError):
            DenseIndex(other, store, progress=False).search('x')
    finally:
        store.close()


def _eventually(get, want, seconds=30.0):
    """Servers answer searches with Bounded consistency (a few seconds of staleness, as the visual arm's reads):
    poll until the answer is the expected one."""
    deadline = time.monotonic() + seconds
    while True:
        got = get()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def _coloured_pages(folder):
    # distinct pages: a random tiny model scores near-blank text pages within 1e-4 of each other (ties)
    folder.mkdir()
    for i, colour in enumerate(['red', 'navy', 'gold', 'green', 'black', 'orchid']):
        Image.new('RGB', (200 + 40 * i, 300), colour).save(folder / f'{colour}.png')
    return folder


def test_dense_arm_on_a_server_seen_from_another_machine(server_uri, dense_encoder, tmp_path):
    collection = dense_collection(f'c{uuid.uuid4().hex[:10]}')
    shared = tmp_path / 'shared'
    pdf_dir = _coloured_pages(tmp_path / 'pages')
    a = MilvusMultiVectorStore(server_uri, collection, dim=dense_encoder.dim, data_dir=tmp_path / 'a',
                               shared_dir=shared)
    b = None
    try:
        assert a.index_type == 'HNSW'
        index_a = DenseIndex(dense_encoder, a, progress=False)
        assert index_a.add([pdf_dir]).added_pages == 6
        query = 'Warranty terms'
        q = dense_encoder.encode_queries([query])[0][0]
        stored = a.vectors.get(list(a.vectors.page_lengths()))   # what A wrote (Milvus listings may lag)
        exact = {p: float(v.float()[0] @ q) for p, v in stored.items()}
        assert len(exact) == 6
        # machine B: its own (empty) data dir, the same server and shared folder
        b = MilvusMultiVectorStore(server_uri, collection, data_dir=tmp_path / 'b', shared_dir=shared)
        index_b = DenseIndex(dense_encoder, b, progress=False)
        ids = lambda index: [h.page_id for h in index.search(query, topk=4)]  # noqa: E731
        assert _eventually(lambda: ids(index_b) == ids(index_a), True)   # one server, one answer
        hits_b = index_b.search(query, topk=4)
        assert len(hits_b) == 4 and all(h.image_path.startswith(str(shared)) for h in hits_b)
        for hit in hits_b:   # Milvus's scores are the inner products of the vectors A stored
            assert hit.score == pytest.approx(exact[hit.page_id], abs=2e-3)
        report = b.check()   # B rebuilds its cache of the one-vector pages from Milvus and agrees
        assert report['pages'] == 6 and not [k for k, v in report.items() if isinstance(v, list) and v]
        doc = hits_b[0].doc_id
        assert b.delete_docs([doc]) >= 1
        gone = lambda: doc not in {h.doc_id for h in index_a.search(query, topk=6)}  # noqa: E731
        assert _eventually(gone, True)
        assert not [k for k, v in a.check().items() if isinstance(v, list) and v]
    finally:
        a.close()
        if b is not None:
            b.close()


def test_dense_candidates_reranked_by_maxsim(dense_encoder, colpali_encoder, pdf_dir, tmp_path):
    from lazyllm_colpali.indexer import ColPaliIndex
    from lazyllm_colpali.retrieve.retriever import MaxSimRetriever

    db = str(tmp_path / 'both.db')
    visual_store = MilvusMultiVectorStore(db, 'pages', dim=colpali_encoder.dim)
    dense_store = MilvusMultiVectorStore(db, dense_collection('pages'), dim=dense_encoder.dim)
    try:
        visual = ColPaliIndex(colpali_encoder, visual_store, retriever=MaxSimRetriever(visual_store, mode='exact'),
                              progress=False)
        dense = DenseIndex(dense_encoder, dense_store, progress=False)
        visual.add([pdf_dir])
        dense.add([pdf_dir])
        query = 'Operating costs by region'
        exact = visual.search(query, topk=6)
        # a budget that covers every page gives exactly the exhaustive MaxSim ranking
        assert [h.page_id for h in DenseThenMaxSim(visual, dense, budget=6).search(query, 6)] == \
            [h.page_id for h in exact]
        # a small budget reranks only the dense arm's top pages, by their exact MaxSim scores
        top3 = {h.page_id for h in dense.search(query, 3)}
        hits = DenseThenMaxSim(visual, dense, budget=3).search(query, 3)
        assert {h.page_id for h in hits} == top3
        scores = {h.page_id: h.score for h in exact}
        assert [h.score for h in hits] == pytest.approx(sorted((scores[p] for p in top3), reverse=True), abs=1e-4)
        # a budget below top-k still returns top-k pages
        assert len(DenseThenMaxSim(visual, dense, budget=1).search(query, 4)) == 4
    finally:
        visual_store.close()
        dense_store.close()


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_cli_dense_arm_index_search_delete_check(pdf_dir, tmp_path):
    db = tmp_path / 'cli.db'
    out = _cli('make-tiny-model', tmp_path / 'bi', '--family', 'biqwen2')
    assert out.returncode == 0 and 'biqwen2' in out.stdout, out.stderr
    out = _cli('index', pdf_dir, '--db', db, '--model', 'tiny:colpali', '--dense-model', tmp_path / 'bi')
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('6 pages added') == 2   # the visual arm and the dense arm
    out = _cli('search', 'Replace the filter', '--db', db, '--arm', 'dense', '--file', 'manual.pdf', '--json')
    assert out.returncode == 0, out.stderr
    assert {line.count('"file_name": "manual.pdf"') for line in out.stdout.splitlines()} == {1}
    out = _cli('search', 'Replace the filter', '--db', db, '--mode', 'dense', '-k', '2')
    assert out.returncode == 0 and out.stdout.count('.pdf') == 2, out.stderr
    out = _cli('check', '--db', db)
    assert out.returncode == 0 and out.stdout.count('consistent') == 2, out.stdout + out.stderr
    doc = next(line.split()[0] for line in _cli('docs', '--db', db).stdout.splitlines() if 'memo.pdf' in line)
    out = _cli('delete', doc, '--db', db)
    assert out.returncode == 0 and out.stdout.count('(1 pages)') == 2, out.stdout + out.stderr
    assert 'memo.pdf' not in _cli('search', 'hiring memo', '--db', db, '--arm', 'dense', '-k', '6').stdout
    # no dense model recorded and none given: one clear line
    out = _cli('search', 'x', '--db', db, '--arm', 'dense', '--collection', 'other')
    assert out.returncode != 0 and 'error:' in out.stderr


def test_dense_arm_as_a_lazyllm_component_fused_with_a_text_arm(pdf_dir, tmp_path):
    from lazyllm.tools.rag.doc_node import ImageDocNode

    from lazyllm_colpali.pipelines import dense_arm, hybrid_arm, text_arm

    dense = dense_arm(pdf_dir, model='tiny:biqwen2', db=str(tmp_path / 'dense.db'), topk=3)
    nodes = dense('Replace the filter every month', filters={'file': 'manual.pdf'})
    assert len(nodes) == 3 and all(isinstance(n, ImageDocNode) for n in nodes)
    assert {n.metadata['file_name'] for n in nodes} == {'manual.pdf'}
    assert dense.doc.index.store.collection.endswith('_dense')
    fused = hybrid_arm(dense, text_arm(pdf_dir, extractor='text-layer', workdir=str(tmp_path / 'text')), topk=2)
    hits = fused.search('Replace the filter every month')
    assert hits[0].file_name == 'manual.pdf' and set(hits[0].metadata['ranks']) == {'dense', 'text-layer'}
    dense.doc.close()


def test_cli_both_arms_with_one_data_dir_and_shared_dir_keep_their_own_files(pdf_dir, tmp_path):
    # --data-dir / --shared-dir name the visual arm's folders; the dense arm gets sub-folders of them, so the two
    # never share a vector file (different dims) and repairing one never reclaims the other's page images
    from tests.helpers.pdfs import make_text_pdf

    folders = ['--db', tmp_path / 'c.db', '--data-dir', tmp_path / 'cache', '--shared-dir', tmp_path / 'shared']
    out = _cli('index', pdf_dir, '--model', 'tiny:colpali', '--dense-model', 'tiny:biqwen2', *folders)
    assert out.returncode == 0 and out.stdout.count('6 pages added') == 2, out.stderr
    make_text_pdf(tmp_path / 'later' / 'visual only.pdf', ['Indexed by the visual arm alone.'])
    assert _cli('index', tmp_path / 'later', '--model', 'tiny:colpali', *folders).returncode == 0
    assert (tmp_path / 'cache' / 'colpali_pages_dense' / 'vectors').is_dir()
    out = _cli('check', '--repair', *folders)
    assert out.returncode == 0 and out.stdout.count('consistent') == 2, out.stdout + out.stderr
    out = _cli('check', *folders)   # the visual-only document's page image is still there
    assert out.returncode == 0 and 'missing_images' not in out.stdout, out.stdout + out.stderr


def test_serve_api_answers_from_the_dense_arm(pdf_dir, tmp_path):
    # serve-api --arm dense: the dense encoder (warmed up at start) and Milvus's search behind the HTTP API
    import httpx

    from lazyllm_colpali.serving.chat import free_port
    from tests.test_hostile_serving import _start, _stop_within

    db = tmp_path / 'c.db'
    out = _cli('index', pdf_dir, '--db', db, '--dense-model', 'tiny:biqwen2', '--dense-only')
    assert out.returncode == 0 and out.stdout.count('6 pages added') == 1, out.stdout + out.stderr
    url = f'http://127.0.0.1:{free_port()}'
    proc, log = _start(['serve-api', '--db', str(db), '--arm', 'dense', '--port', url.rsplit(':', 1)[1]], tmp_path,
                       f'{url}/health')
    try:
        assert httpx.get(f'{url}/health', timeout=30).json()['pages'] == 6
        body = {'query': 'Replace the filter every month', 'topk': 3, 'filters': {'file': 'manual.pdf'}}
        hits = httpx.post(f'{url}/search', json=body, timeout=60).json()['hits']
        assert len(hits) == 3 and {h['file_name'] for h in hits} == {'manual.pdf'}
        assert [h['score'] for h in hits] == sorted((h['score'] for h in hits), reverse=True)
    finally:
        rc = _stop_within(proc, 20, tmp_path / 'serve-api.log')
        log.close()
    assert rc == 0, (tmp_path / 'serve-api.log').read_text()[-3000:]
