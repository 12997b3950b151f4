"""Turning a PDF or image file into page images (pypdfium2 for PDFs, Pillow for images)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator, Optional, Set, Tuple

from PIL import Image

from ..errors import DocumentError
from .sources import IMAGE_SUFFIXES, PDF_SUFFIXES

POINTS_PER_INCH = 72.0


def _scale_for(width_pt: float, height_pt: float, dpi: int, max_side: int) -> float:
    # Clamp huge pages (posters, 20000 px scans) so one page never blows up memory or the encoder.
    scale = dpi / POINTS_PER_INCH
    longest = max(width_pt, height_pt) * scale
    return scale if longest <= max_side else max_side / max(width_pt, height_pt)


def count_pages(path: Path) -> int:
    """Open the file the same way rendering does and return its page count (raises DocumentError)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        _open_image(path).close()
        return 1
    pdf = _open_pdf(path)
    try:
        return len(pdf)
    finally:
        pdf.close()


def render_pages(path: Path, dpi: int = 144, max_side: int = 2048,
                 pages: Optional[Set[int]] = None) -> Iterator[Tuple[int, Image.Image]]:
    """Yield ``(page_number, RGB image)`` for each page (or only the 1-based ``pages``), in page order.
    Raises DocumentError naming the file."""
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        yield from _render_pdf(path, dpi, max_side, pages)
    elif suffix in IMAGE_SUFFIXES:
        if pages is not None and 1 not in pages:
            return
        image = _open_image(path, max_side)
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side))
        yield 1, image
    else:
        raise DocumentError(str(path), f'unsupported file type {suffix!r}')


def _open_pdf(path: Path):
    import pypdfium2 as pdfium

    with open(path, 'rb') as f:
        head = f.read(1024)
    if not head:
        raise DocumentError(str(path), 'empty file (0 bytes)')
    if b'%PDF' not in head:
        raise DocumentError(str(path), 'not a PDF (no %PDF header); is it another format with a .pdf name?')
    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as e:
        raise DocumentError(str(path), _explain_load_failure(path, e)) from e
    if len(pdf) == 0:
        pdf.close()
        raise DocumentError(str(path), 'PDF has no pages')
    return pdf


def _explain_load_failure(path: Path, error: Exception) -> str:
    """Why PDFium could not open ``path``. PDFium's error code is process-global and can be stale (a
    page-less file reports the previous file's 'Incorrect password'), so pypdf gives the diagnosis."""
    try:
        from pypdf import PdfReader

        reader = PdfReader(str(path))
        if reader.is_encrypted:
            return 'encrypted PDF (needs a password); decrypt it first'
        if len(reader.pages) == 0:
            return 'PDF has no pages'
    except Exception:  # pypdf cannot parse it either: it is corrupt
        pass
    return f'corrupt or unreadable PDF ({error})'


def pdf_pages(path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, object]]:
    """Open a PDF once and yield ``(page_number, pypdfium2 page)`` for the wanted 1-based pages (None: all);
    each page is closed when the caller moves on, the document when the loop ends (raises DocumentError)."""
    pdf = _open_pdf(path)
    try:
        for index in range(len(pdf)):
            if todo is not None and index + 1 not in todo:
                continue
            page = pdf[index]
            try:
                yield index + 1, page
            finally:
                page.close()
    finally:
        pdf.close()


def _render_pdf(path: Path, dpi: int, max_side: int,
                pages: Optional[Set[int]] = None) -> Iterator[Tuple[int, Image.Image]]:
    import pypdfium2 as pdfium

    for number, page in pdf_pages(path, pages):
        try:
            width_pt, height_pt = page.get_size()
            bitmap = page.render(scale=_scale_for(width_pt, height_pt, dpi, max_side))
            image = bitmap.to_pil().convert('RGB')
        except pdfium.PdfiumError as e:
            raise DocumentError(str(path), f'page {number} cannot be rendered ({e})') from e
        yield number, image


# Scans and posters of 20000 x 20000 px (4e8 px) are legitimate pages; PIL refuses > 2 x 89e6 px by default.
MAX_IMAGE_PIXELS = 1_000_000_000
_PIL_LIMIT_LOCK = threading.Lock()


def _open_image(path: Path, max_side: int = 2048) -> Image.Image:
    if path.stat().st_size == 0:
        raise DocumentError(str(path), 'empty file (0 bytes)')
    try:
        with _PIL_LIMIT_LOCK:
            default, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = default
        with image:
            image.draft('RGB', (max_side, max_side))  # JPEG decodes at a reduced scale: huge scans stay cheap
            image.load()
            return image.convert('RGB')
    except Image.DecompressionBombError as e:
        raise DocumentError(str(path), f'image too large to open safely ({e})') from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DocumentError(str(path), f'not a readable image ({e})') from e


def render_page(path: Path, page_number: int, width: int, height: int) -> Image.Image:
    """Render one page (1-based) at the pixel size it was indexed at, to restore a lost page image."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = _open_image(path, max(width, height))
        return image if image.size == (width, height) else image.resize((width, height))
    pdf = _open_pdf(path)
    try:
        if not 1 <= page_number <= len(pdf):
            raise DocumentError(str(path), f'has no page {page_number}')
        page = pdf[page_number - 1]
        try:
            width_pt, _ = page.get_size()
            image = page.render(scale=width / width_pt).to_pil().convert('RGB')
        finally:
            page.close()
    finally:
        pdf.close()
    return image if image.size == (width, height) else image.resize((width, height))
