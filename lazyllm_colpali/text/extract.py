"""Page text for the text arms: the PDF text layer, OCR (rapidocr, offline PP-OCR models), or MinerU layout.

Every extractor maps a file to ``[(page_number, text), ...]`` (1-based, one entry per page) and raises
``DocumentError`` naming the file when it cannot be read.

    >>> from lazyllm_colpali.text.extract import get_extractor
    >>> get_extractor('auto').name
    'auto'
"""
from __future__ import annotations

import shutil
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator, List, Optional, Set, Tuple

import numpy as np

from ..errors import ColPaliError, DocumentError
from ..ingest.render import _open_pdf, render_pages
from ..ingest.sources import IMAGE_SUFFIXES

PageTexts = List[Tuple[int, str]]


class ExtractorUnavailableError(ColPaliError):
    """An optional text backend (OCR engine, MinerU) is not installed or has no models."""


class TextExtractor(ABC):
    name: str = ''

    @abstractmethod
    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        """Yield ``(page_number, text)`` for each page of ``path`` (only pages in ``todo`` when given)."""

    def extract(self, path: Path | str) -> PageTexts:
        return list(self.pages(Path(path)))


class TextLayerExtractor(TextExtractor):
    """The text a born-digital PDF carries (pypdfium2). Scans and images have none: their pages are ''."""

    name = 'text-layer'

    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            yield 1, ''
            return
        pdf = _open_pdf(path)
        try:
            for index in range(len(pdf)):
                if todo is not None and index + 1 not in todo:
                    continue
                page = pdf[index]
                textpage = page.get_textpage()
                try:
                    # PDFium marks line ends with \r\n; normalise so downstream tokenisers see plain newlines.
                    yield index + 1, textpage.get_text_bounded().replace('\r\n', '\n').replace('\r', '\n').strip()
                finally:
                    textpage.close()
                    page.close()
        finally:
            pdf.close()


class OcrExtractor(TextExtractor):
    """OCR of the rendered page with rapidocr (PP-OCR ONNX models shipped in its wheel: Chinese + English).

    About 10 s per page on one CPU core at 150 DPI: used for pages without a text layer, or for every page
    when asked (``extractor='ocr'``).
    """

    name = 'ocr'
    _engine = None
    _engine_lock = threading.Lock()

    def __init__(self, dpi: int = 150, max_side: int = 2400, min_confidence: float = 0.5):
        self.dpi = dpi
        self.max_side = max_side
        self.min_confidence = min_confidence

    @classmethod
    def engine(cls):
        with cls._engine_lock:
            if cls._engine is None:
                try:
                    import logging

                    from rapidocr import RapidOCR
                    logging.getLogger('RapidOCR').setLevel(logging.WARNING)
                except ImportError as e:
                    raise ExtractorUnavailableError(
                        'OCR needs rapidocr and onnxruntime: pip install "lazyllm-colpali[ocr]" '
                        '(the rapidocr wheel ships its models, no download)') from e
                cls._engine = RapidOCR()
            return cls._engine

    def ocr_image(self, image) -> str:
        result = self.engine()(np.asarray(image.convert('RGB')))
        texts, scores = result.txts or (), result.scores or ()
        return '\n'.join(t for t, s in zip(texts, scores) if s >= self.min_confidence).strip()

    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        for number, image in render_pages(path, dpi=self.dpi, max_side=self.max_side):
            if todo is None or number in todo:
                yield number, self.ocr_image(image)


class AutoExtractor(TextExtractor):
    """Text layer where a page has one (fast, exact), OCR for pages with fewer than ``min_chars`` characters
    (scans, image-only pages, photos)."""

    name = 'auto'

    def __init__(self, min_chars: int = 20, ocr: Optional[OcrExtractor] = None):
        self.min_chars = min_chars
        self.layer = TextLayerExtractor()
        self.ocr = ocr or OcrExtractor()

    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        layer = dict(self.layer.pages(path, todo))
        if all(len(text) >= self.min_chars for text in layer.values()):
            yield from layer.items()
            return
        for number, image in render_pages(path, dpi=self.ocr.dpi, max_side=self.ocr.max_side):
            if number not in layer:
                continue
            text = layer[number]
            yield number, text if len(text) >= self.min_chars else self.ocr.ocr_image(image)


class MinerUExtractor(TextExtractor):
    """Layout-aware parsing with MinerU 4 (optional extra ``layout``): reading order, tables as Markdown,
    figure and table captions; headers, page numbers and margin notes dropped.

    Runs ``mineru-kit parse --tier flash --ocr-mode txt`` in a subprocess (MinerU spawns workers, which a
    library must not do in its caller's process). The flash tier needs no model weights and reads the text
    layer; its other tiers need MinerU's models (``mineru-kit models download``): without them MinerU fails
    and this raises ExtractorUnavailableError saying so. Pages MinerU leaves empty (scans: flash does no
    OCR) are OCRed with rapidocr when ``ocr_fallback`` is on.
    """

    name = 'mineru'
    SKIP_BLOCKS = frozenset({'header', 'footer', 'page_number', 'aside_text'})

    def __init__(self, command: str = 'mineru-kit', tier: str = 'flash', ocr_fallback: bool = True,
                 min_chars: int = 20, timeout: float = 1800):
        self.command = command
        self.tier = tier
        self.ocr_fallback = ocr_fallback
        self.min_chars = min_chars
        self.timeout = timeout

    def available(self) -> bool:
        return shutil.which(self.command) is not None

    def _parse(self, path: Path) -> dict:
        import json
        import os
        import subprocess
        import tempfile
        import zipfile

        if not self.available():
            raise ExtractorUnavailableError(
                f'layout parsing needs MinerU: `{self.command}` is not on PATH. Install it with '
                'pip install "lazyllm-colpali[layout]", or use the "auto" extractor (text layer + OCR).')
        # Local model source: a missing model fails in seconds with a clear message instead of ~30 s of
        # retries against hubs that are not reachable.
        env = {**os.environ, 'MINERU_MODEL_SOURCE': os.environ.get('MINERU_MODEL_SOURCE', 'local')}
        with tempfile.TemporaryDirectory(prefix='mineru_') as out:
            target = Path(out) / 'result.zip'
            try:
                run = subprocess.run([self.command, 'parse', str(path), '-o', str(target), '--tier', self.tier,
                                      '--ocr-mode', 'txt', '-f', 'zip'], capture_output=True, text=True, env=env,
                                     timeout=self.timeout)
            except subprocess.TimeoutExpired as e:
                raise DocumentError(str(path), f'MinerU took longer than {self.timeout:.0f} s') from e
            if run.returncode != 0 or not target.exists():
                tail = ' '.join((run.stderr or run.stdout).strip().splitlines()[-2:])
                if 'not ready' in tail or 'missing:' in tail or 'Connection' in tail:
                    raise ExtractorUnavailableError(
                        f'MinerU tier {self.tier!r} needs models that are not installed ({tail[:300]}). Download '
                        'them with `mineru-kit models download`, or use tier "flash" (no models).')
                raise DocumentError(str(path), f'MinerU failed: {tail[:300]}')
            with zipfile.ZipFile(target) as archive:
                return json.loads(archive.read('structured_content.json'))

    def page_text(self, page: dict) -> str:
        parts = []
        for block in page.get('blocks', []):
            if block.get('type') in self.SKIP_BLOCKS:
                continue
            parts.extend(c.get('content', '') for c in block.get('captions') or [])
            parts.append(block.get('content') or '')
            parts.extend(c.get('content', '') for c in block.get('footnotes') or [])
        return '\n'.join(p for p in parts if p).strip()

    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        if path.suffix.lower() in IMAGE_SUFFIXES:   # MinerU reads PDFs; an image is OCR territory
            yield from OcrExtractor().pages(path, todo)
            return
        n_pages = len(_open_pdf(path))
        parsed = self._parse(path)
        texts = {int(p.get('page_idx', 0)) + 1: self.page_text(p) for p in parsed.get('pages', [])}
        wanted = [n for n in range(1, n_pages + 1) if todo is None or n in todo]
        scans = {n for n in wanted if len(texts.get(n, '')) < self.min_chars} if self.ocr_fallback else set()
        ocr = dict(OcrExtractor().pages(path, scans)) if scans else {}
        for number in wanted:
            yield number, ocr.get(number, texts.get(number, ''))


EXTRACTORS = {'auto': AutoExtractor, 'text-layer': TextLayerExtractor, 'ocr': OcrExtractor, 'mineru': MinerUExtractor}


def get_extractor(name: str | TextExtractor = 'auto') -> TextExtractor:
    if isinstance(name, TextExtractor):
        return name
    if name not in EXTRACTORS:
        raise ValueError(f'unknown text extractor {name!r}; choose one of {", ".join(EXTRACTORS)}')
    return EXTRACTORS[name]()
