"""End to end on real parts: generated PDFs -> pypdfium2 -> tiny ColPali/ColQwen2 -> Milvus Lite -> MaxSim."""
import os
import shutil

import pytest
import torch

from lazyllm_colpali import ColPaliIndex, EmptyQueryError, MaxSimRetriever, MilvusMultiVectorStore
from lazyllm_colpali.retrieve.maxsim import maxsim_reference
from tests.helpers.pdfs import make_text_pdf


@pytest.fixture
def index(colpali_encoder, db_path):
    store = MilvusMultiVectorStore(db_path, dim=colpali_encoder.dim)
    yield ColPaliIndex(colpali_encoder, store, dpi=50, progress=False)
    store.close()


def test_index_search_and_reingest_adds_nothing(index, pdf_dir):
    report = index.add([pdf_dir])
    assert (report.added_pages, report.skipped_pages, len(report.documents), report.failures) == (6, 0, 3, [])
    hits = index.search('revenue growth', topk=4)
    assert len(hits) == 4 and hits[0].score >= hits[-1].score
    assert {h.file_name for h in hits} <= {'annual report.pdf', 'manual.pdf', 'memo.pdf'}
    assert all(os.path.isfile(h.image_path) and h.page >= 1 for h in hits)

    again = index.add([pdf_dir, pdf_dir / 'manual.pdf'])
    assert (again.added_pages, again.skipped_pages) == (0, 6)
    assert index.store.count() == 6


def test_bad_files_are_reported_by_name_and_the_rest_is_indexed(index, bad_files):
    report = index.add([bad_files['good'].parent])
    assert report.added_pages == 1
    reported = {os.path.basename(f.path): f.reason for f in report.failures}
    assert set(reported) == {'truncated.pdf', 'garbage.pdf', 'empty.pdf', 'picture.pdf', 'encrypted.pdf',
                             'zero pages.pdf', 'notes.png'}
    assert 'encrypted' in reported['encrypted.pdf'] and 'no pages' in reported['zero pages.pdf']
    assert index.store.count() == 1


def test_changed_file_replaces_its_old_pages(index, tmp_path):
    path = make_text_pdf(tmp_path / 'live.pdf', ['version one', 'page two'])
    index.add([path])
    old_docs = [d['doc_id'] for d in index.store.documents()]
    make_text_pdf(path, ['version two has one page'])
    report = index.add([path])
    docs = index.store.documents()
    assert report.added_pages == 1 and len(docs) == 1 and docs[0]['doc_id'] not in old_docs
    assert docs[0]['pages'] == 1 and index.store.count() == 1


def test_remove_document(index, pdf_dir):
    index.add([pdf_dir])
    manual = next(d for d in index.store.documents() if d['file_name'] == 'manual.pdf')
    assert index.remove([manual['doc_id']]) == 3
    assert all(h.file_name != 'manual.pdf' for h in index.search('pump', topk=10))


def test_filters_restrict_results(index, pdf_dir):
    index.add([pdf_dir])
    hits = index.search('filter', topk=10, filters={'file': 'manual.pdf', 'pages': (2, 3)})
    assert sorted(h.page for h in hits) == [2, 3] and {h.file_name for h in hits} == {'manual.pdf'}


def test_a_page_finds_itself_first(index, pdf_dir, colpali_encoder):
    # MaxSim of a page's own (unit) vectors against itself is the maximum possible score.
    index.add([pdf_dir])
    packed = index.store.packed()
    target = packed.page_ids[4]
    hits = index.retriever.search_vectors(packed.page(4).float()[:40], topk_=1)
    assert hits[0].page_id == target


def test_exact_scores_equal_the_reference_over_the_whole_collection(index, pdf_dir):
    index.add([pdf_dir])
    query = index.encoder.encode_queries(['operating costs'])[0]
    hits = index.retriever.search_vectors(query, topk_=6)
    packed = index.store.packed()
    reference = maxsim_reference([query], [p.float() for p in packed.unpack()])[0]
    expected = sorted(zip(reference.tolist(), packed.page_ids), key=lambda t: -t[0])
    assert [h.page_id for h in hits] == [p for _, p in expected]
    assert torch.allclose(torch.tensor([h.score for h in hits]), torch.tensor([s for s, _ in expected]), atol=1e-4)


def test_candidate_mode_with_full_budget_equals_exact(index, pdf_dir):
    index.add([pdf_dir])
    query = index.encoder.encode_queries(['warranty terms'])[0]
    exact = MaxSimRetriever(index.store, mode='exact').search_vectors(query, 5)
    candidates = MaxSimRetriever(index.store, mode='candidates', candidate_budget=6).search_vectors(query, 5)
    assert [h.page_id for h in exact] == [h.page_id for h in candidates]


def test_empty_query_is_a_clear_error(index):
    with pytest.raises(EmptyQueryError):
        index.search('   ')


def test_colqwen2_variable_length_pages(colqwen2_encoder, db_path, pdf_dir, tmp_path):
    wide = make_text_pdf(tmp_path / 'wide.pdf', ['landscape slide'], size=(792, 400))
    store = MilvusMultiVectorStore(db_path, dim=colqwen2_encoder.dim)
    index = ColPaliIndex(colqwen2_encoder, store, dpi=50, progress=False)
    report = index.add([pdf_dir / 'nested' / 'memo.pdf', wide])
    assert report.failures == []
    lengths = store.packed().lengths.tolist()
    assert len(set(lengths)) == 2                 # ColQwen2 page length follows the aspect ratio
    assert len(index.search('slide', topk=2)) == 2
    store.close()


def test_persisted_index_reopens_in_a_new_store(colpali_encoder, db_path, pdf_dir):
    store = MilvusMultiVectorStore(db_path, dim=colpali_encoder.dim)
    ColPaliIndex(colpali_encoder, store, dpi=50, progress=False).add([pdf_dir / 'manual.pdf'])
    first = [h.page_id for h in ColPaliIndex(colpali_encoder, store).search('pump', 3)]
    store.close()
    reopened = MilvusMultiVectorStore(db_path)
    assert [h.page_id for h in ColPaliIndex(colpali_encoder, reopened).search('pump', 3)] == first
    reopened.close()


def test_real_corpus_pdfs_index(colpali_encoder, db_path, corpus_dir, tmp_path):
    folder = tmp_path / 'real'
    folder.mkdir()
    shutil.copy(corpus_dir / 'arxiv_2407.01449v6_colpali_p1-5.pdf', folder)
    shutil.copy(corpus_dir / 'zh_research_report.pdf', folder)
    store = MilvusMultiVectorStore(db_path, dim=colpali_encoder.dim)
    report = ColPaliIndex(colpali_encoder, store, dpi=40, progress=False).add([folder])
    assert report.failures == [] and report.added_pages == store.count() >= 6
    store.close()
