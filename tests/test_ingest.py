"""Sources, hashing and page rendering on real PDFs (generated ones and the shared real corpus)."""
import pytest

from lazyllm_colpali import DocumentError
from lazyllm_colpali.ingest.records import make_doc_id, make_page_id
from lazyllm_colpali.ingest.render import count_pages, render_pages
from lazyllm_colpali.ingest.sources import expand_sources, file_sha256


def test_expand_sources_walks_folders_and_reports_bad_paths(pdf_dir, tmp_path):
    (pdf_dir / 'readme.txt').write_text('ignored inside folders')
    explicit = tmp_path / 'notes.txt'
    explicit.write_text('given explicitly')
    files, problems = expand_sources([pdf_dir, pdf_dir / 'manual.pdf', explicit, tmp_path / 'nope.pdf'])
    assert [f.name for f in files] == ['annual report.pdf', 'manual.pdf', 'memo.pdf']   # deduplicated, sorted
    assert {p for p, _ in problems} == {str(explicit), str(tmp_path / 'nope.pdf')}
    assert any('unsupported file type' in r for _, r in problems)


def test_render_pages_at_dpi(pdf_dir):
    pages = list(render_pages(pdf_dir / 'manual.pdf', dpi=72))
    assert [n for n, _ in pages] == [1, 2, 3]
    assert pages[0][1].size == (612, 792) and pages[0][1].mode == 'RGB'
    assert list(render_pages(pdf_dir / 'manual.pdf', dpi=144))[0][1].size == (1224, 1584)


def test_huge_pages_are_clamped(tmp_path):
    from tests.helpers.pdfs import make_text_pdf
    poster = make_text_pdf(tmp_path / 'poster.pdf', ['big'], size=(14400, 14400))   # 200 x 200 inches
    (_, image), = render_pages(poster, dpi=144, max_side=2048)
    assert max(image.size) == 2048


def test_ids_hash_content_and_location(pdf_dir, tmp_path):
    from lazyllm_colpali.ingest.sources import document_id

    copy = tmp_path / 'renamed.pdf'
    copy.write_bytes((pdf_dir / 'manual.pdf').read_bytes())
    assert file_sha256(copy) == file_sha256(pdf_dir / 'manual.pdf')
    doc_id, sha = document_id(copy)
    assert sha == file_sha256(copy) and doc_id == make_doc_id(sha, str(copy.resolve()))
    assert document_id(copy) == (doc_id, sha)                                 # stable
    assert document_id(pdf_dir / 'manual.pdf')[0] != doc_id                  # same bytes elsewhere: its own doc
    assert len(doc_id) == 16 and make_page_id(doc_id, 3) == f'{doc_id}-p00003'


@pytest.mark.parametrize('kind, reason', [
    ('truncated', 'corrupt or unreadable PDF'), ('garbage', 'corrupt or unreadable PDF'),
    ('empty', 'empty file'), ('png_named_pdf', 'not a PDF'), ('encrypted', 'encrypted PDF'),
    ('zero_pages', 'no pages'), ('not_an_image', 'not a readable image')])
def test_bad_inputs_raise_document_error_naming_the_file(bad_files, kind, reason):
    with pytest.raises(DocumentError, match=reason) as info:
        count_pages(bad_files[kind])
    assert info.value.path == str(bad_files[kind])
    assert count_pages(bad_files['good']) == 1


def test_real_corpus_renders(corpus_dir):
    assert count_pages(corpus_dir / 'arxiv_2407.01449v6_colpali_p1-5.pdf') == 5
    (number, image), = list(render_pages(corpus_dir / 'zh_scanned_book.pdf', dpi=50))[:1]
    assert number == 1 and min(image.size) > 100
