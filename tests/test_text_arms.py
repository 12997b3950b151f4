"""Text arms on real parts: pypdfium2 text layers, rapidocr on real scans, LazyLLM BM25 / embedding
retrieval (map store and a Milvus Lite file), caption+QA through a local OpenAI-compatible server."""
from __future__ import annotations

import hashlib
import math
import os
import re
import shutil

import pytest

from lazyllm_colpali.text import (AutoExtractor, CaptionQAAugmenter, MinerUExtractor, OcrExtractor, PageTextIndex,
                                  TextLayerExtractor, mostly_chinese)
from lazyllm_colpali.text.extract import ExtractorUnavailableError
from tests.conftest import chat_module


def words(text: str) -> set:
    return set(re.findall(r'[a-z]{4,}', text.lower()))


def test_ocr_of_a_real_scan_recovers_the_original_text_layer(corpus_dir):
    # en_image_only.pdf page 1 is page 2 of the RAG paper, rendered, rotated, noised and blurred like a scan.
    truth = dict(TextLayerExtractor().pages(corpus_dir / 'arxiv_2005.11401v4_rag.pdf', {2}))[2]
    assert dict(TextLayerExtractor().pages(corpus_dir / 'en_image_only.pdf', {1}))[1] == ''  # no text layer
    ocr = dict(OcrExtractor().pages(corpus_dir / 'en_image_only.pdf', {1}))[1]
    overlap = len(words(ocr) & words(truth)) / len(words(truth))
    assert overlap >= 0.6, f'OCR recovered only {overlap:.0%} of the words'


def test_ocr_reads_a_chinese_scan(corpus_dir):
    text = dict(OcrExtractor().pages(corpus_dir / 'zh_scanned_book.pdf', {1}))[1]
    assert mostly_chinese([text]) and len(text) > 200
    assert '商品' in text


def test_auto_extractor_ocrs_only_pages_without_a_text_layer(sample_dataset):
    class CountingOcr(OcrExtractor):
        calls = 0

        def ocr_image(self, image):
            CountingOcr.calls += 1
            return super().ocr_image(image)

    extractor = AutoExtractor(ocr=CountingOcr())
    report = dict(extractor.pages(sample_dataset.corpus_dir / 'northwind_annual_report_2023.pdf'))
    assert 'Gothenburg' in report[1] and 'Nordics' in report[2]
    # Page 3's text layer is only the heading "Figure 3. Our people" (17 non-space characters): the chart's
    # labels are pixels, so that page, and only that page, is OCRed (regression: it used to count spaces).
    assert CountingOcr.calls == 1 and 'engineering' in report[3].lower()
    scan = dict(extractor.pages(sample_dataset.corpus_dir / 'scans' / 'warehouse_visit_scan.pdf'))
    assert CountingOcr.calls == 2
    assert {'roof', 'leak', 'forklift', 'charger'} <= words(scan[1])


def test_bm25_text_index_finds_pages_resumes_and_replaces_changed_files(tmp_path, sample_dataset):
    corpus = tmp_path / 'corpus'
    shutil.copytree(sample_dataset.corpus_dir, corpus, ignore=shutil.ignore_patterns('scans'))
    index = PageTextIndex(tmp_path / 'text', extractor='text-layer', progress=False)
    first = index.add([corpus])
    assert (first.added_pages, first.skipped_pages, first.failures) == (8, 0, [])
    top = index.search('How often should the filter cartridge be replaced?', topk=3)
    assert (top[0].file_name, top[0].page) == ('hydra_pump_manual.pdf', 2)
    assert [h.score for h in top] == sorted((h.score for h in top), reverse=True)
    gothenburg = index.search('Gothenburg distribution centre', 1)[0]
    assert (gothenburg.file_name, gothenburg.page) == ('northwind_annual_report_2023.pdf', 1)
    # Same page ids as the visual arm: a hash of the file's bytes and path, + page number.
    from lazyllm_colpali.ingest.records import make_page_id
    from lazyllm_colpali.ingest.sources import document_id
    assert top[0].page_id == make_page_id(document_id(corpus / 'hydra_pump_manual.pdf')[0], 2)

    again = index.add([corpus])
    assert (again.added_pages, again.skipped_pages) == (0, 8)

    from tests.helpers.pdfs import make_text_pdf
    make_text_pdf(corpus / 'hydra_pump_manual.pdf', ['The filter cartridge is now replaced every 9 months.'])
    changed = index.add([corpus])
    assert changed.added_pages == 1 and index.count() == 6
    hit = index.search('filter cartridge replaced', 1)[0]
    assert (hit.file_name, hit.page) == ('hydra_pump_manual.pdf', 1)
    assert index.remove([hit.doc_id]) == 1 and index.count() == 5
    assert not any(h.file_name == 'hydra_pump_manual.pdf' for h in index.search('filter cartridge', 5))


def test_bm25s_backend_scores_pages_exactly_as_lazyllm_retriever(tmp_path, sample_dataset):
    # The fast path (one bm25s index per store version) must rank and score like LazyLLM's Retriever path.
    fast = PageTextIndex(tmp_path / 'text', extractor='text-layer', progress=False)
    fast.add([sample_dataset.corpus_dir])
    lazy = PageTextIndex(tmp_path / 'text', extractor='text-layer', progress=False, bm25_backend='lazyllm')
    for query in ('filter cartridge replaced', 'Nordics revenue 2022', 'engineering department employees',
                  'error code E4', 'no such words here zyxw'):
        ours, theirs = fast.search(query, 5), lazy.search(query, 5)
        assert [h.page_id for h in ours] == [h.page_id for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], rel=1e-5)
    assert fast.search('no such words here zyxw', 5) == []
    with pytest.raises(ValueError, match='bm25_backend'):
        PageTextIndex(tmp_path / 'x', bm25_backend='elastic')


def test_bm25_index_is_rebuilt_when_pages_change(tmp_path, pdf_dir):
    index = PageTextIndex(tmp_path / 'text', extractor='text-layer', progress=False)
    index.add([pdf_dir / 'manual.pdf'])
    assert index.search('hiring memo', 3) == []
    index.add([pdf_dir / 'nested' / 'memo.pdf'])                   # a new page after the first search
    assert index.search('hiring memo', 3)[0].file_name == 'memo.pdf'


def test_progress_counts_pages_not_files(tmp_path, pdf_dir, capsys, monkeypatch):
    # Regression: the bar counted files, so a long scan froze it (e.g. "40/54 files" for 11 minutes).
    import tqdm

    from lazyllm_colpali.text import page_index

    class EveryUpdate(tqdm.tqdm):                                 # a real bar that draws every update
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, 'mininterval': 0, 'miniters': 1})

    monkeypatch.setattr(page_index, 'tqdm', EveryUpdate)
    index = PageTextIndex(tmp_path / 'text', extractor='text-layer', progress=True)
    index.add([pdf_dir])                                          # 3 files: 2 + 3 + 1 pages
    err = capsys.readouterr().err
    assert all(f'{n}/6' in err for n in range(1, 7)) and 'page/s' in err and '3/3' not in err
    pages = TextLayerExtractor().extract(pdf_dir / 'manual.pdf', progress=True)
    assert len(pages) == 3 and '3/3' in capsys.readouterr().err


def test_auto_extractor_ocrs_a_page_whose_text_layer_is_junk(tmp_path, sample_dataset):
    from lazyllm_colpali.text import text_layer_usable

    scan = sample_dataset.corpus_dir / 'scans' / 'warehouse_visit_scan.pdf'
    junk = '\ue000\ue001\ue002 \ufffd\ue003' * 20                     # what fonts without a Unicode map give
    assert not text_layer_usable(junk) and text_layer_usable('A real sentence about the roof.')

    class JunkLayer(TextLayerExtractor):
        def pages(self, path, todo=None):
            for number, _ in super().pages(path, todo):
                yield number, junk

    extractor = AutoExtractor()
    extractor.layer = JunkLayer()
    text = dict(extractor.pages(scan))[1]
    assert {'roof', 'leak'} <= words(text)


def test_bad_files_are_reported_and_good_ones_indexed(tmp_path, bad_files, pdf_dir):
    index = PageTextIndex(tmp_path / 'text', extractor='text-layer', progress=False)
    report = index.add([bad_files['truncated'], bad_files['png_named_pdf'], pdf_dir / 'manual.pdf'])
    assert report.added_pages == 3
    assert {f.path for f in report.failures} == {str(bad_files['truncated']), str(bad_files['png_named_pdf'])}


def test_chinese_pages_get_the_chinese_bm25(tmp_path, corpus_dir):
    index = PageTextIndex(tmp_path / 'zh', extractor='text-layer', progress=False)
    index.add([corpus_dir / 'zh_research_report.pdf'])
    assert index._resolve_similarity() == 'bm25_chinese'
    page3 = index.store.get([i for i in index.store.all_ids() if i.endswith('p00003')], with_text=True)
    text = next(iter(page3.values())).text
    query = re.sub(r'\s+', '', text)[200:240]     # a sentence from the page, without its spaces
    assert index.search(query, 1)[0].page == 3


def hashing_embed(text, **kw):
    """A small deterministic bag-of-words embedding: a real function, standing in for a model's weights."""
    vector = [0.0] * 128
    for word in re.findall(r'\w+', text.lower()):
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % 128] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def test_embedding_text_arm_stored_in_milvus_lite(tmp_path, sample_dataset):
    db = tmp_path / 'text' / 'lazyllm_text.db'
    index = PageTextIndex(tmp_path / 'text', extractor='text-layer', embed=hashing_embed, progress=False,
                          store_conf={'type': 'milvus', 'kwargs': {'uri': str(db), 'index_kwargs': {
                              'index_type': 'FLAT', 'metric_type': 'COSINE'}}})
    index.add([sample_dataset.corpus_dir / 'hydra_pump_manual.pdf', sample_dataset.corpus_dir / 'climate_brief.pdf'])
    assert index._resolve_similarity() == 'cosine'
    hit = index.search('error code E4 means the motor is overheating', 1)[0]
    assert (hit.file_name, hit.page) == ('hydra_pump_manual.pdf', 3)
    assert db.exists()


def test_caption_qa_through_a_local_openai_server_with_retries_concurrency_and_cache(tmp_path, sample_dataset):
    from lazyllm_colpali.devtools import StandinVLMServer

    pdf = sample_dataset.corpus_dir / 'hydra_pump_manual.pdf'
    with StandinVLMServer(fail_first=2, delay=0.3) as server:
        augmenter = CaptionQAAugmenter(chat_module(server), concurrency=2, retries=3, backoff=0.05,
                                       cache_dir=tmp_path / 'cache')
        index = PageTextIndex(tmp_path / 'captions', extractor=augmenter, progress=False)
        report = index.add([pdf])
        assert (report.added_pages, report.failures) == (3, [])
        ok = [r for r in server.requests if r['status'] == 200]
        assert len(ok) == 3 and len(server.requests) == 5          # two injected 500s were retried
        assert server.max_in_flight == 2                           # never more than the limit
        assert all(r['n_images'] == 1 and r['sizes'][0][0] > 500 for r in ok)   # the page image was sent
        texts = index.store.get(index.store.all_ids(), with_text=True)
        assert all(t.text.startswith('Stand-in caption') and '\nQ: ' in t.text for t in texts.values())
        hit = index.search('maximum operating pressure 16 bar', 1)[0]
        assert (hit.page, hit.metadata['arm_text']) == (1, 'caption-qa')

        calls = len(server.requests)
        assert index.add([pdf]).added_pages == 0                   # rerun: pages already described
        other = PageTextIndex(tmp_path / 'captions2', extractor=augmenter, progress=False)
        assert other.add([pdf]).added_pages == 3                   # another index, same pages: the cache answers
        assert len(server.requests) == calls


def test_caption_failures_name_the_page_and_a_rerun_fills_them_in(tmp_path, sample_dataset):
    from lazyllm_colpali.devtools import StandinVLMServer

    pdf = sample_dataset.corpus_dir / 'climate_brief.pdf'
    with StandinVLMServer(fail_first=1000) as server:
        augmenter = CaptionQAAugmenter(chat_module(server), retries=2, backoff=0.01, cache_dir=tmp_path / 'c')
        index = PageTextIndex(tmp_path / 'captions', extractor=augmenter, progress=False)
        report = index.add([pdf])
        assert report.added_pages == 0 and index.count() == 0
        assert sorted(f.path for f in report.failures) == [f'{pdf} p. 1', f'{pdf} p. 2']
        assert all('after 2 tries' in f.reason for f in report.failures)
        server.fail_first = 0
        assert index.add([pdf]).added_pages == 2


def test_mineru_layout_backend_missing_is_a_clear_error(tmp_path, sample_dataset):
    extractor = MinerUExtractor(command='mineru-kit-not-installed')
    with pytest.raises(ExtractorUnavailableError, match='lazyllm-colpali\\[layout\\]') as error:
        extractor.extract(sample_dataset.corpus_dir / 'hydra_pump_manual.pdf')
    assert 'scripts/setup-mineru.sh' in str(error.value) and 'LAZYLLM_COLPALI_MINERU_KIT' in str(error.value)
    index = PageTextIndex(tmp_path / 'layout', extractor=extractor, progress=False)
    with pytest.raises(ExtractorUnavailableError):
        index.add([sample_dataset.corpus_dir / 'hydra_pump_manual.pdf'])


def _need_mineru():
    """MinerU lives in its own venv (scripts/setup-mineru.sh; LAZYLLM_COLPALI_MINERU_KIT names its CLI). CI sets it
    up, so there a missing MinerU fails instead of skipping."""
    if not MinerUExtractor().available():
        message = f'MinerU not installed: {MinerUExtractor().install_hint()}'
        if os.environ.get('CI') == 'true':
            pytest.fail(message)
        pytest.skip(message)


def test_mineru_flash_tier_parses_a_born_digital_paper(corpus_dir):
    _need_mineru()
    pages = MinerUExtractor(ocr_fallback=False).extract(corpus_dir / 'arxiv_2407.01449v6_colpali_p1-5.pdf')
    assert [n for n, _ in pages] == [1, 2, 3, 4, 5]
    assert 'TEXTUAL RETRIEVAL METHODS' in pages[2][1]
    assert '| Dataset |' in pages[3][1]         # ViDoRe's Table 1 (page_idx 3), as Markdown
    with pytest.raises(ExtractorUnavailableError, match='models'):
        MinerUExtractor(tier='standard').extract(corpus_dir / 'arxiv_2407.01449v6_colpali_p1-5.pdf')
