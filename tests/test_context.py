"""Context enhancement: a page's multi-vector = image patch vectors + token vectors of its context text (title,
heading, captions, text layer) from the same model's text path; counted apart, so one index is scored both ways;
stored, counted, checked and deleted with its page."""
from __future__ import annotations

import pytest
import torch
from fpdf import FPDF

from lazyllm_colpali import ColPaliIndex, MaxSimRetriever, MilvusMultiVectorStore
from lazyllm_colpali.errors import ColPaliError
from lazyllm_colpali.ingest.context import CONTEXT_KEY, PageContext, document_title
from lazyllm_colpali.ingest.records import PageRecord
from lazyllm_colpali.retrieve.context import ImageOnlyMaxSimRetriever


@pytest.fixture(scope='module')
def report_pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp('ctx') / 'q3_report.pdf'
    pdf = FPDF()
    pdf.set_title('Quarterly Report Q3')
    pdf.set_font('Helvetica', size=12)
    for heading, lines in (('Revenue', ['Revenue grew 12% in the third quarter.', 'Figure 1: Revenue by month']),
                           ('Costs', ['Operating costs fell.', 'Table 2: Costs by region', 'North 4.1 South 3.9'])):
        pdf.add_page()
        pdf.cell(0, 10, heading, new_x='LMARGIN', new_y='NEXT')
        for line in lines:
            pdf.cell(0, 10, line, new_x='LMARGIN', new_y='NEXT')
    pdf.output(str(path))
    return path


def _record(path, page):
    return PageRecord(page_id=f'x-p{page}', doc_id='x', source=str(path), file_name=path.name, page_number=page,
                      width=10, height=10)


def test_context_text_has_title_heading_captions_and_text(report_pdf):
    assert document_title(report_pdf) == 'Quarterly Report Q3'
    texts = PageContext().texts([_record(report_pdf, 2), _record(report_pdf, 1)])
    assert texts[0].split('\n')[:3] == ['Quarterly Report Q3', 'Costs', 'Table 2: Costs by region']
    assert 'North 4.1 South 3.9' in texts[0] and 'Figure 1: Revenue by month' in texts[1]
    capped = PageContext(text_chars=10, caption_chars=5).texts([_record(report_pdf, 1)])[0]
    assert capped.split('\n')[2:] == ['Figur', 'Revenue Re']   # each part capped; the text starts at the heading


def test_context_vectors_are_stored_counted_scored_and_deleted_with_their_page(colpali_encoder, report_pdf, pdf_dir,
                                                                               tmp_path):
    plain = MilvusMultiVectorStore(str(tmp_path / 'plain.db'), 'pages', dim=colpali_encoder.dim)
    store = MilvusMultiVectorStore(str(tmp_path / 'ctx.db'), 'pages', dim=colpali_encoder.dim)
    try:
        ColPaliIndex(colpali_encoder, plain, progress=False).add([report_pdf, pdf_dir])
        index = ColPaliIndex(colpali_encoder, store, progress=False, context=PageContext(max_tokens=40),
                             retriever=MaxSimRetriever(store, mode='exact'))
        assert index.add([report_pdf, pdf_dir]).added_pages == 8
        assert store.get_meta('context')['max_tokens'] == 40           # recorded with the collection
        records = store.records(store.page_ids(), images=False)
        plain_records = plain.records(plain.page_ids(), images=False)
        lengths = store.vectors.page_lengths()
        for page_id, record in records.items():
            context = record.metadata[CONTEXT_KEY]
            assert 0 < context <= 40                                       # capped
            assert record.n_vectors == plain_records[page_id].n_vectors + context == lengths[page_id]
            # image vectors first, exactly the image-only index's; the context after them
            ours, theirs = store.vectors.get([page_id])[page_id], plain.vectors.get([page_id])[page_id]
            assert torch.equal(ours[:len(theirs)], theirs)

        # one index, both scorings: image-only equals the image-only index's exact scores
        query = colpali_encoder.encode_queries(['Costs by region'])[0]
        image_only = ImageOnlyMaxSimRetriever(store, mode='exact').search_vectors(query, 8)
        reference = MaxSimRetriever(plain, mode='exact').search_vectors(query, 8)
        assert [(h.page_id, round(h.score, 3)) for h in image_only] == \
            [(h.page_id, round(h.score, 3)) for h in reference]
        for dtype in ('int8', 'bfloat16'):   # approximate layouts re-score exactly: from the image vectors too
            approximate = ImageOnlyMaxSimRetriever(store, mode='exact', scoring_dtype=dtype).search_vectors(query, 8)
            assert [(h.page_id, round(h.score, 3)) for h in approximate] == \
                [(h.page_id, round(h.score, 3)) for h in reference]
        with_context = index.search('Costs by region', 8)
        # similarity maps of a context page: the image part, exactly the image-only index's maps
        plain_index = ColPaliIndex(colpali_encoder, plain, progress=False, retriever=MaxSimRetriever(plain, mode='exact'))
        shown, expected = index.explain('Costs by region', with_context[0]), \
            plain_index.explain('Costs by region', with_context[0].page_id)
        assert torch.allclose(torch.as_tensor(shown.token_maps), torch.as_tensor(expected.token_maps))
        assert all(h.score >= r.score - 1e-3 for h in with_context for r in reference if r.page_id == h.page_id)
        assert any(h.score > r.score + 1e-3 for h in with_context for r in reference if r.page_id == h.page_id)

        assert not [k for k, v in store.check().items() if isinstance(v, list) and v]
        doc = records[next(iter(records))].doc_id
        removed = store.delete_docs([doc])
        assert removed >= 1 and not set(store.vectors.page_lengths()) & {p for p, r in records.items()
                                                                        if r.doc_id == doc}
        assert not [k for k, v in store.check().items() if isinstance(v, list) and v]

        # a later write without context options keeps building context (the recorded settings)
        again = ColPaliIndex(colpali_encoder, store, progress=False)
        assert again.add([report_pdf, pdf_dir]).added_pages == removed
        assert all(r.metadata.get(CONTEXT_KEY) for r in store.records(store.page_ids(), images=False).values())
        # and an image-only collection cannot gain context halfway
        with pytest.raises(ColPaliError, match='without context'):
            ColPaliIndex(colpali_encoder, plain, progress=False, context=PageContext()).add([report_pdf])
    finally:
        plain.close()
        store.close()


def test_repair_reencodes_lost_pages_with_their_context(colpali_encoder, report_pdf, tmp_path):
    store = MilvusMultiVectorStore(str(tmp_path / 'ctx.db'), 'pages', dim=colpali_encoder.dim)
    try:
        ColPaliIndex(colpali_encoder, store, progress=False, context=PageContext()).add([report_pdf])
        before = store.vectors.page_lengths()
        store.vectors.delete_pages(list(before))                 # vectors lost on this (Lite) machine
        report = store.check()
        assert sorted(report['needs_encoding']) == sorted(before)
        assert ColPaliIndex(colpali_encoder, store, progress=False).reencode(report['needs_encoding']) == 2
        assert store.vectors.page_lengths() == before            # image + context again, same counts
    finally:
        store.close()
