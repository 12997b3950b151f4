"""The layout arm reads born-digital pages as their text layer says them, and OCRs what the text layer misses.

Real pages (../shared/corpus/real: a two-column paper with a rotated figure label, a Chinese broker report
with charts and tables) and generated pages of the kinds that corpus lacks, written with real TrueType fonts
(``devtools/layout_pages.py``): a 10-K statement placed glyph by glyph, slides exported as pictures, and a
table scanned into a page under a typed heading.
"""
from __future__ import annotations

import re
from collections import Counter

import pytest

from lazyllm_colpali.devtools import layout_pages
from lazyllm_colpali.text import LayoutExtractor, TextLayerExtractor, get_extractor
from lazyllm_colpali.text.fidelity import compare_words, foreign_words, missing_words
from lazyllm_colpali.text.geometry import Line
from lazyllm_colpali.text.layout import Region, merge_runs, page_markdown, table_rows
from lazyllm_colpali.text.pdf_layer import text_layer_words

RAG, REPORT = 'arxiv_2005.11401v4_rag.pdf', 'zh_research_report.pdf'


@pytest.fixture(scope='module')
def layout():
    return LayoutExtractor()


@pytest.fixture(scope='module')
def kinds(tmp_path_factory):
    root = tmp_path_factory.mktemp('kinds')
    truth = {'statement': layout_pages.financial_statement_pdf(root / 'statement.pdf'),
             'slides': layout_pages.slide_deck_pdf(root / 'slides.pdf'),
             'scanned_table': layout_pages.scanned_table_pdf(root / 'scanned_table.pdf')}
    return root, truth


def layer_and_margins(path, number):
    """The page's text layer and its words in the top/bottom 12% (running headers and footers)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        page = pdf[number - 1]
        textpage = page.get_textpage()
        width, height = (round(v) for v in page.get_size())
        words = text_layer_words(page, textpage, width, height)
        margins = [w.text for w in words if not 0.12 * height < (w.box[1] + w.box[3]) / 2 < 0.88 * height]
        return textpage.get_text_bounded(), margins
    finally:
        pdf.close()


def test_text_layer_words_hold_every_character_of_the_text_layer_once(corpus_dir):
    import pypdfium2 as pdfium

    # RAG p.7 has a figure with rotated text, whose PDFium rectangles overlap; the report's p.1 has chart axes.
    for name, number in ((RAG, 7), (RAG, 1), (REPORT, 1), (REPORT, 2)):
        pdf = pdfium.PdfDocument(str(corpus_dir / name))
        page = pdf[number - 1]
        textpage = page.get_textpage()
        words = text_layer_words(page, textpage, 1275, 1650)
        layer = textpage.get_text_bounded()
        pdf.close()
        assert Counter(c for w in words for c in w.text) == Counter(c for c in layer if not c.isspace()), name
        assert all(0 <= w.box[0] <= w.box[2] <= 1275 and 0 <= w.box[1] <= w.box[3] <= 1650 for w in words)


def test_real_born_digital_pages_have_no_foreign_words(corpus_dir, layout):
    # A two-column paper page, its figure page (rotated labels), its table page, and the Chinese report.
    for name, numbers in ((RAG, {1, 6, 7}), (REPORT, {1, 2})):
        texts = dict(layout.pages(corpus_dir / name, numbers))
        for number in numbers:
            layer, margins = layer_and_margins(corpus_dir / name, number)
            foreign, split = compare_words(texts[number], layer)
            # Split: two stacked chart labels PDFium ran together ("-20%0%") read apart by position.
            assert foreign == [] and len(split) <= 2, (name, number, split)
            missing = missing_words(texts[number], layer, allowed=margins)
            assert len(missing) <= 0.01 * len(layer.split()), (name, number, missing[:20])
    page1 = dict(layout.pages(corpus_dir / RAG, {1}))[1]
    # Two columns of the abstract page stay in reading order, with the author block and the title first.
    assert page1.startswith('## Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks')
    assert page1.index('Abstract') < page1.index('1 Introduction')


def test_a_financial_statement_placed_glyph_by_glyph_reads_clean(kinds, layout):
    root, truth = kinds[0], kinds[1]['statement']
    pdf = root / 'statement.pdf'
    md = dict(layout.pages(pdf))[1]
    layer, margins = layer_and_margins(pdf, 1)
    assert compare_words(md, layer) == ([], [])
    assert missing_words(md, layer, allowed=margins) == []             # only the running header and footer
    assert not re.search(r'afaf|ffff|rere|apap|C O N S', md)              # the garbling the issue saw
    assert md.startswith('## CONSOLIDATED STATEMENTS OF OPERATIONS')     # the title, not a dropped "header"
    assert 'affected by approximately $412 million of restructuring charges' in md
    rows = [line for line in md.splitlines() if line.startswith('| ')]
    assert rows[0] == '|  | Fiscal 2023 | Fiscal 2022 | Fiscal 2021 |'
    for label, *values in truth['rows']:
        assert f"| {label} | {' | '.join(values)} |" in rows                # one row per line, cells in columns
    assert 'NORTHRIDGE ENERGY' not in md and 'F-4' not in md


def test_slide_titles_survive_on_ocr_pages_and_over_images(kinds, layout):
    root, truth = kinds[0], kinds[1]['slides']
    pdf = root / 'slides.pdf'
    md = dict(layout.pages(pdf))
    text = dict(get_extractor('auto').pages(pdf))
    for number, title in enumerate(truth['titles'], start=1):
        first_line = text[number].splitlines()[0]                        # what the text arm reads first
        assert first_line == title and title in md[number], (number, md[number])
        assert md[number].index(title) < md[number].index(truth['bullets'][2 * number - 2][:20])
    assert md[4].startswith(f"## {truth['titles'][3]}")                   # born-digital: a heading over the image


def test_a_scanned_table_under_a_typed_heading_is_ocred_per_region(kinds, layout):
    root, truth = kinds[0], kinds[1]['scanned_table']
    pdf = root / 'scanned_table.pdf'
    layer = dict(TextLayerExtractor().pages(pdf))[1]
    assert layer == truth['header']                                      # 31 characters: "usable" as a page
    md = dict(layout.pages(pdf))[1]
    rows = [line for line in md.splitlines() if line.startswith('| ')]
    assert rows[0].startswith('| Region | Units sold |')
    assert '| Nordics | 18,240 | 4,312,900 |' in rows and '| Total | 43,648 | 10,224,930 |' in rows
    text = dict(get_extractor('auto').pages(pdf))[1]                      # the text arm finds the image too
    assert text.startswith(truth['header']) and '4,312,900' in text and 'Baltics' in text
    off = dict(LayoutExtractor(region_ocr=False).pages(pdf))[1]           # the switch, and what it saves
    assert '4,312,900' not in off


def test_words_join_into_lines_and_cells():
    h = 10.0
    words = [Line((0, 0, 30, h), 'Net'), Line((33, 0, 70, h), 'income'),          # one cell: a word gap
             Line((150, 0, 158, h), '$'), Line((200, 0, 240, h), '2,137'),       # "$" joins its figure
             Line((300, 0, 340, h), '1,864'),                                     # a column gap: a new cell
             Line((0, 20, 40, 20 + h), 'consoli'), Line((40, 20, 80, 20 + h), 'dated', glued=True)]  # cut, rejoined
    assert [w.text for w in merge_runs(words)] == ['Net income', '$ 2,137', '1,864', 'consolidated']
    rows = [[Line((0, 0, 50, h), 'Year'), Line((200, 0, 240, h), '2023')],
            [Line((0, 20, 50, 30), 'Revenue'), Line((120, 20, 160, 30), '5'), Line((200, 20, 240, 30), '7')]]
    assert table_rows(rows) == [['Year', '', '2023'], ['Revenue', '5', '7']]


def test_headers_are_titles_on_slides_and_when_large_running_heads_otherwise():
    page = 1000.0
    regions = [Region('header', (100, 20, 800, 60), 0.9), Region('header', (100, 80, 400, 95), 0.9),
               Region('text', (100, 300, 800, 700), 0.9)]
    heads = [Line((100, 20, 800, 60), 'QUARTERLY RESULTS'), Line((100, 80, 400, 95), 'Acme Corp. confidential')]
    body = [Line((100, 300 + 20 * i, 800, 315 + 20 * i), f'Line {i} of the report.') for i in range(15)]
    md = page_markdown(regions, heads + body, page).split('\n\n')
    assert md[0] == '## QUARTERLY RESULTS' and md[1].startswith('Line 0') and len(md) == 2   # small head dropped
    # A slide: two lines of body, so the short line the model calls a header is the slide's title.
    md = page_markdown(regions, heads[1:] + body[:2], page).split('\n\n')
    assert md == ['## Acme Corp. confidential', 'Line 0 of the report. Line 1 of the report.']
