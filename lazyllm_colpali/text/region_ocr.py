"""OCR where a born-digital page's text layer says nothing: a large figure, table or image object with no
text-layer character over it (a table scanned into a report under a typed heading, a screenshot, a chart
pasted as a picture). Decided per region, not per page: a page with a heading in its text layer is not a
page without text, and OCRing the whole of it would re-read what the text layer holds exactly.

    >>> from lazyllm_colpali.text.geometry import Line
    >>> bare_boxes([(0, 0, 100, 100), (200, 0, 300, 100), (0, 0, 5, 5)], [Line((10, 10, 30, 20), 'Revenue')],
    ...            page_area=1000 * 1000, min_fraction=0.005)
    [(200, 0, 300, 100)]
"""
from __future__ import annotations

from typing import List, Sequence

from .geometry import Box, Line, area, centre, contains_point, intersection

# Part of the page a region or image must cover to be OCRed: below it (icons, logos, bullets) OCR finds
# little and costs a detector pass each; and at most this many per page, the largest (a page of thumbnails
# stays a bounded cost). benchmarks/bench_layout_words.py measures what they cost on real pages.
MIN_FRACTION = 0.03
MAX_BOXES = 8


def bare_boxes(boxes: Sequence[Box], words: Sequence[Line], page_area: float,
               min_fraction: float = MIN_FRACTION, limit: int = MAX_BOXES) -> List[Box]:
    """The boxes covering at least ``min_fraction`` of the page with no text-layer word centred in them,
    largest first (at most ``limit``), leaving out a box mostly inside one already chosen (each pixel is
    OCRed once)."""
    centres = [centre(w.box) for w in words]
    chosen: List[Box] = []
    for box in sorted(boxes, key=area, reverse=True):
        if area(box) < min_fraction * page_area or any(contains_point(box, x, y) for x, y in centres):
            continue
        if any(intersection(box, kept) >= 0.5 * area(box) for kept in chosen):
            continue
        chosen.append(box)
        if len(chosen) == limit:
            break
    return chosen


def ocr_boxes(image, boxes: Sequence[Box], ocr, pad: int = 4) -> List[Line]:
    """OCR lines of each box's crop of the page ``image``, in page pixels."""
    lines: List[Line] = []
    for x0, y0, x1, y1 in boxes:
        left, top = max(0, int(x0) - pad), max(0, int(y0) - pad)
        crop = image.crop((left, top, min(image.size[0], int(x1) + pad), min(image.size[1], int(y1) + pad)))
        if min(crop.size) < 8:
            continue
        lines.extend(Line((ln.box[0] + left, ln.box[1] + top, ln.box[2] + left, ln.box[3] + top), ln.text)
                     for ln in ocr.lines(crop))
    return lines
