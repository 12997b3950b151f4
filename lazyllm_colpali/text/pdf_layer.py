"""A PDF page's text layer and image objects as geometry, in the pixels of the page's rendered image.

Every character PDFium reads is used once: characters become words at PDFium's own whitespace (the spaces
and line breaks of the text layer the ``text`` arm indexes), so a word of the layout arm is a word of the
text layer. Asking PDFium for the text inside each of its text rectangles instead (``get_text_bounded`` per
``get_rect``) returns every character a rectangle touches, and those rectangles overlap on kerned, rotated
and letter-spaced text: the neighbours' characters came back twice ("affffefected", "CO N SO LI DATATE D").

Image objects (``image_boxes``) tell where a born-digital page carries pixels: a scanned table or a
screenshot under a text-layer heading, which OCR reads and the text layer cannot.
"""
from __future__ import annotations

import ctypes
from typing import Callable, Iterable, List, Tuple

from .geometry import Box, Line, area, union

SOFT_HYPHENS = ('\x02', '\u00ad')   # PDFium marks a hyphenated line end with \x02

Transform = Callable[[float, float], Tuple[float, float]]

_PRECISION = 1000   # FPDF_PageToDevice answers in whole pixels: map at 1000x and divide


def page_to_pixels(page, width: int, height: int) -> Transform:
    """The affine map from PDF page coordinates to the pixels of ``page`` rendered at ``width`` x ``height``
    (PDFium's own: crop box offsets and the page's /Rotate included)."""
    import pypdfium2.raw as raw

    def device(x: float, y: float) -> Tuple[float, float]:
        dx, dy = ctypes.c_int(), ctypes.c_int()
        raw.FPDF_PageToDevice(page.raw, 0, 0, width * _PRECISION, height * _PRECISION, 0, x, y,
                              ctypes.byref(dx), ctypes.byref(dy))
        return dx.value / _PRECISION, dy.value / _PRECISION

    (ox, oy), (ax, ay), (bx, by) = device(0, 0), device(100, 0), device(0, 100)
    a, b, c, d = (ax - ox) / 100, (ay - oy) / 100, (bx - ox) / 100, (by - oy) / 100
    return lambda x, y: (ox + a * x + c * y, oy + b * x + d * y)


def _pixel_box(to_px: Transform, left: float, bottom: float, right: float, top: float) -> Box:
    xs, ys = zip(to_px(left, bottom), to_px(right, top), to_px(left, top), to_px(right, bottom))
    return min(xs), min(ys), max(xs), max(ys)


def text_layer_words(page, textpage, width: int, height: int) -> List[Line]:
    """The page's text-layer words in reading-stream order, each with the union box of its characters.

    A word ends where PDFium's text layer has whitespace: a space (real or generated), or a generated line
    break after which the baseline moved (after a superscript the text layer goes on: "Perez†,"). A word
    hyphenated at a line end (PDFium's ``\x02``) stays one word, boxed where it starts, as the text layer has
    it. A jump back along the line without whitespace (two chart labels run together) starts a new word,
    marked ``glued``. Characters off the page are not in the text layer and are skipped.
    """
    import pypdfium2.raw as raw

    to_px = page_to_pixels(page, width, height)
    handle = textpage.raw
    rect = raw.FS_RECTF()
    origin_x, origin_y = ctypes.c_double(), ctypes.c_double()
    words: List[Line] = []
    chars: List[str] = []
    box: Box = (0.0, 0.0, 0.0, 0.0)
    last: Box = box
    glued = False          # the word being read continues the previous one (no whitespace between them)
    line_break = False     # PDFium generated a line break since the last character
    hyphenated = False     # the word went on after a soft hyphen: its box stays on its first line
    last_rotated, baseline = False, 0.0

    def flush() -> None:
        nonlocal hyphenated
        if chars:
            words.append(Line(box, ''.join(chars), glued))
            chars.clear()
        hyphenated = False

    for index in range(textpage.count_chars()):
        code = raw.FPDFText_GetUnicode(handle, index)
        char = chr(code) if 0 < code < 0x110000 else ''
        if char in ('\r', '\n') and raw.FPDFText_IsGenerated(handle, index):
            line_break = True
            continue
        if not char or char.isspace() or not raw.FPDFText_GetLooseCharBox(handle, index, rect):
            flush()
            glued = line_break = False
            continue
        char_box = _pixel_box(to_px, rect.left, rect.bottom, rect.right, rect.top)
        if char_box[0] >= width or char_box[2] <= 0 or char_box[1] >= height or char_box[3] <= 0:
            continue
        rotated = 0.01 < raw.FPDFText_GetCharAngle(handle, index) % 6.2832 < 6.27
        moved = False
        if line_break:
            raw.FPDFText_GetCharOrigin(handle, index, origin_x, origin_y)
            moved, baseline = origin_y.value != baseline, origin_y.value
        if chars and chars[-1] in SOFT_HYPHENS:
            hyphenated = True          # "knowl\x02" + "edge": one word, as in the text layer
        elif chars and line_break and (moved or rotated or last_rotated):
            flush()
            glued = False
        elif (chars and not rotated and not hyphenated and not '\u0590' <= char <= '\u08ff'   # RTL runs back
              and char_box[0] < last[0] - 0.5 * (last[3] - last[1])):
            flush()
            glued = True
        line_break = False
        if not hyphenated:
            box = union(box, char_box) if chars else char_box
        chars.append(char)
        last, last_rotated = char_box, rotated
    flush()
    return words


def image_boxes(page, width: int, height: int, min_fraction: float = 0.0) -> List[Box]:
    """Boxes (pixels) of the page's image objects covering at least ``min_fraction`` of the page, images
    inside form XObjects included."""
    import pypdfium2.raw as raw

    to_px = page_to_pixels(page, width, height)
    boxes = []
    for left, bottom, right, top in _image_bounds(page, raw):
        box = _pixel_box(to_px, left, bottom, right, top)
        box = (max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3]))
        if area(box) >= min_fraction * width * height and area(box) > 0:
            boxes.append(box)
    return boxes


def bare_images(page, textpage, min_fraction: float) -> List[Box]:
    """Image objects covering at least ``min_fraction`` of the page with no text-layer character touching
    them (a scanned table, a screenshot), as fractions of the rendered page (0-1 on both axes): the text
    arm renders only the pages that have one, and scales these to the image it gets."""
    import pypdfium2.raw as raw

    unit = 10000   # page_to_pixels is linear in the target size: map to a large square and divide
    to_unit = page_to_pixels(page, unit, unit)
    out = []
    for left, bottom, right, top in _image_bounds(page, raw):
        x0, y0, x1, y1 = _pixel_box(to_unit, left, bottom, right, top)
        box = (max(0.0, x0 / unit), max(0.0, y0 / unit), min(1.0, x1 / unit), min(1.0, y1 / unit))
        if area(box) >= min_fraction and not textpage.get_text_bounded(left, bottom, right, top).strip():
            out.append(box)
    return out


def _image_bounds(page, raw) -> Iterable[Tuple[float, float, float, float]]:
    """Page-space bounds of image objects; objects in a form are in the form's space, so its matrix
    (and those of the forms around it) maps their corners to the page."""
    def walk(objects, count, matrices):
        for i in range(count):
            obj = objects(i)
            kind = raw.FPDFPageObj_GetType(obj)
            if kind not in (raw.FPDF_PAGEOBJ_IMAGE, raw.FPDF_PAGEOBJ_FORM):
                continue
            if kind == raw.FPDF_PAGEOBJ_FORM:
                if len(matrices) < 8:
                    matrix = raw.FS_MATRIX()
                    if raw.FPDFPageObj_GetMatrix(obj, matrix):
                        inner = (matrix.a, matrix.b, matrix.c, matrix.d, matrix.e, matrix.f)
                        yield from walk(lambda k, o=obj: raw.FPDFFormObj_GetObject(o, k),
                                        raw.FPDFFormObj_CountObjects(obj), [inner, *matrices])
                continue
            l, b, r, t = ctypes.c_float(), ctypes.c_float(), ctypes.c_float(), ctypes.c_float()
            if not raw.FPDFPageObj_GetBounds(obj, l, b, r, t):
                continue
            corners = [(l.value, b.value), (r.value, t.value), (l.value, t.value), (r.value, b.value)]
            for a, bb, c, d, e, f in matrices:
                corners = [(a * x + c * y + e, bb * x + d * y + f) for x, y in corners]
            xs, ys = zip(*corners)
            yield min(xs), min(ys), max(xs), max(ys)

    yield from walk(lambda k: raw.FPDFPage_GetObject(page.raw, k), raw.FPDFPage_CountObjects(page.raw), [])
