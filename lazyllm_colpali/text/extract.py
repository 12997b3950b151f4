"""Page text for the text arms: the PDF text layer, OCR (rapidocr, offline PP-OCR models), offline layout
parsing (``text/layout.py``: rapid-layout regions + text layer or OCR), or MinerU.

Every extractor maps a file to ``[(page_number, text), ...]`` (1-based, one entry per page) and raises
``DocumentError`` naming the file when it cannot be read.

    >>> from lazyllm_colpali.text.extract import get_extractor, text_layer_usable
    >>> get_extractor('auto').name, get_extractor('layout').name
    ('auto', 'layout')
    >>> text_layer_usable('Revenue grew 12% in 2023.'), text_layer_usable('\ue012\ue013\ue014 ' * 10)
    (True, False)
"""
from __future__ import annotations

import os
import shutil
import threading
import unicodedata
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import numpy as np

from ..errors import ColPaliError, DocumentError
from ..ingest.render import count_pages, pdf_pages, render_pages
from ..ingest.sources import IMAGE_SUFFIXES
from .geometry import Line

PageTexts = List[Tuple[int, str]]


def text_layer_usable(text: str, min_chars: int = 20, max_junk: float = 0.2) -> bool:
    """True when a page's text layer has ``min_chars`` characters and is not mostly junk: private-use glyph
    codes, replacement or control characters (fonts without a Unicode map give those; OCR does better)."""
    chars = [c for c in text if not c.isspace()]
    if len(chars) < min_chars:
        return False
    junk = sum(1 for c in chars if c == '\ufffd' or unicodedata.category(c) in ('Co', 'Cc', 'Cs', 'Cn'))
    return junk / len(chars) <= max_junk


class ExtractorUnavailableError(ColPaliError):
    """An optional text backend (OCR engine, MinerU) is not installed or has no models."""


class TextExtractor(ABC):
    name: str = ''

    @abstractmethod
    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        """Yield ``(page_number, text)`` for each page of ``path`` (only pages in ``todo`` when given)."""

    def extract(self, path: Path | str, progress: bool = False) -> PageTexts:
        """Every page of ``path``; ``progress`` shows a per-page bar (pages/s and ETA)."""
        from tqdm.auto import tqdm

        path = Path(path)
        total = count_pages(path)
        with tqdm(total=total, desc=f'{self.name}: {path.name[-40:]}', unit='page', disable=not progress) as bar:
            out = []
            for item in self.pages(path):
                out.append(item)
                bar.update(1)
            return out


class TextLayerExtractor(TextExtractor):
    """The text a born-digital PDF carries (pypdfium2). Scans and images have none: their pages are ''."""

    name = 'text-layer'

    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            yield 1, ''
            return
        for number, page in pdf_pages(path, todo):
            textpage = page.get_textpage()
            try:
                yield number, self.normalise(textpage.get_text_bounded())
            finally:
                textpage.close()

    @staticmethod
    def normalise(text: str) -> str:
        # PDFium marks line ends with \r\n; normalise so downstream tokenisers see plain newlines.
        return text.replace('\r\n', '\n').replace('\r', '\n').strip()


class OcrExtractor(TextExtractor):
    """OCR of the rendered page with rapidocr (PP-OCR ONNX models shipped in its wheel: Chinese + English).

    About 10 s per page on these 2 shared CPU cores at 150 DPI: used for pages without a usable text layer, or
    for every page when asked (``extractor='ocr'``).
    """

    name = 'ocr'
    _engines: Dict[Tuple, object] = {}
    _engine_lock = threading.Lock()

    # The 180-degree text-line classifier off: 1.2x faster with the same characters recovered on a real scan
    # (benchmarks/bench_ocr.py); pass {'Global.use_cls': True} for pages with upside-down lines.
    DEFAULT_PARAMS: Dict[str, object] = {'Global.use_cls': False}

    def __init__(self, dpi: int = 150, max_side: int = 2400, min_confidence: float = 0.5,
                 params: Optional[Dict[str, object]] = None):
        self.dpi = dpi
        self.max_side = max_side
        self.min_confidence = min_confidence
        # rapidocr settings (dotted config keys), e.g. {'Det.limit_type': 'max', 'Det.limit_side_len': 960}.
        # Its own logger prints model paths at INFO as each engine starts: only with LAZYLLM_COLPALI_VERBOSE.
        from ..logging import verbose
        self.params = {**self.DEFAULT_PARAMS, 'Global.log_level': 'info' if verbose() else 'warning',
                       **(params or {})}

    def engine(self):
        """One rapidocr engine per distinct ``params`` in the process (loading the models takes seconds)."""
        key = tuple(sorted(self.params.items()))
        with self._engine_lock:
            if key not in self._engines:
                try:
                    from rapidocr import RapidOCR
                except ImportError as e:
                    raise ExtractorUnavailableError(
                        'OCR needs rapidocr and onnxruntime: pip install "rapidocr>=3.10,<4" onnxruntime '
                        '(the rapidocr wheel ships its models, no download)') from e
                from ..logging import drop_ocr_noise

                drop_ocr_noise()   # its INFO lines and "detection result is empty" warnings: only with -v
                self._engines[key] = RapidOCR(params=self.params or None)
            return self._engines[key]

    def ocr_image(self, image) -> str:
        return '\n'.join(line.text for line in self.lines(image)).strip()

    def lines(self, image) -> List[Line]:
        """The text lines OCR reads in ``image`` (PIL), with their boxes in its pixels, in reading order."""
        result = self.engine()(np.asarray(image.convert('RGB')))
        if result.boxes is None or not result.txts:
            return []
        return [Line((float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 0].max()), float(b[:, 1].max())), t)
                for b, t, s in zip(np.asarray(result.boxes), result.txts, result.scores)
                if s >= self.min_confidence and t.strip()]

    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        for number, image in render_pages(path, dpi=self.dpi, max_side=self.max_side, pages=todo):
            yield number, self.ocr_image(image)


class AutoExtractor(TextExtractor):
    """Text layer where a page has a usable one (fast, exact), OCR for the others: fewer than ``min_chars``
    characters (scans, image-only pages, photos) or mostly junk glyph codes. On a page with a usable text
    layer, image objects covering ``image_min_fraction`` of the page or more with no text-layer character
    over them (a scanned table under a typed heading, a screenshot) are OCRed too and their text follows the
    layer's (``image_ocr``). Only pages that need OCR are rendered."""

    name = 'auto'

    def __init__(self, min_chars: int = 20, ocr: Optional[OcrExtractor] = None, image_ocr: bool = True,
                 image_min_fraction: Optional[float] = None):
        from .region_ocr import MIN_FRACTION

        self.min_chars = min_chars
        self.layer = TextLayerExtractor()
        self.ocr = ocr or OcrExtractor()
        self.image_ocr = image_ocr
        self.image_min_fraction = MIN_FRACTION if image_min_fraction is None else image_min_fraction

    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        layer, bare = self._read_layer(path, todo)
        scans = {n for n, text in layer.items() if not text_layer_usable(text, self.min_chars)}
        wanted = scans | set(bare)
        images = render_pages(path, dpi=self.ocr.dpi, max_side=self.ocr.max_side, pages=wanted) if wanted else iter(())
        ocr_next = next(images, None)
        for number in sorted(layer):
            if ocr_next is None or ocr_next[0] != number:
                yield number, layer[number]
                continue
            image = ocr_next[1]
            ocr_next = next(images, None)
            if number in scans:
                yield number, self.ocr.ocr_image(image)
            else:
                yield number, '\n'.join([layer[number], *self._ocr_images(image, bare[number])]).strip()

    def _read_layer(self, path: Path, todo: Optional[Set[int]]) -> Tuple[Dict[int, str], Dict[int, List]]:
        """Each page's text layer, and the bare image objects (fractions of the page) of the usable ones."""
        from .pdf_layer import bare_images

        if path.suffix.lower() in IMAGE_SUFFIXES or not self.image_ocr:
            return dict(self.layer.pages(path, todo)), {}
        layer, bare = {}, {}
        for number, page in pdf_pages(path, todo):
            textpage = page.get_textpage()
            try:
                layer[number] = TextLayerExtractor.normalise(textpage.get_text_bounded())
                if text_layer_usable(layer[number], self.min_chars):
                    boxes = bare_images(page, textpage, self.image_min_fraction)
                    if boxes:
                        bare[number] = boxes
            finally:
                textpage.close()
        return layer, bare

    def _ocr_images(self, image, fractions: List) -> List[str]:
        from .region_ocr import bare_boxes, ocr_boxes

        width, height = image.size
        boxes = bare_boxes([(x0 * width, y0 * height, x1 * width, y1 * height) for x0, y0, x1, y1 in fractions],
                           [], width * height, 0.0)   # each pixel once where images overlap
        lines = ocr_boxes(image, sorted(boxes, key=lambda b: (b[1], b[0])), self.ocr)
        return [line.text for line in lines]


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

    def __init__(self, command: Optional[str] = None, tier: str = 'flash', ocr_fallback: bool = True,
                 min_chars: int = 20, timeout: float = 1800):
        # MinerU pins its own torch/transformers, so it often lives in a venv of its own: point at its CLI.
        self.command = command or os.environ.get('LAZYLLM_COLPALI_MINERU_KIT', 'mineru-kit')
        self.tier = tier
        self.ocr_fallback = ocr_fallback
        self.min_chars = min_chars
        self.timeout = timeout

    def available(self) -> bool:
        return shutil.which(self.command) is not None

    def install_hint(self) -> str:
        return (f'`{self.command}` is not on PATH. Install it with pip install "lazyllm-colpali[layout]", or in a '
                'venv of its own with `bash scripts/setup-mineru.sh` (then LAZYLLM_COLPALI_MINERU_KIT='
                '.mineru-venv/bin/mineru-kit), or use the "layout" extractor (offline, no MinerU)')

    def _parse(self, path: Path) -> dict:
        import json
        import subprocess
        import tempfile
        import zipfile

        if not self.available():
            raise ExtractorUnavailableError(f'layout parsing with MinerU needs MinerU: {self.install_hint()}')
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
        n_pages = count_pages(path)
        parsed = self._parse(path)
        texts = {int(p.get('page_idx', 0)) + 1: self.page_text(p) for p in parsed.get('pages', [])}
        wanted = [n for n in range(1, n_pages + 1) if todo is None or n in todo]
        scans = {n for n in wanted if len(texts.get(n, '')) < self.min_chars} if self.ocr_fallback else set()
        ocr = dict(OcrExtractor().pages(path, scans)) if scans else {}
        for number in wanted:
            yield number, ocr.get(number, texts.get(number, ''))


def _layout():
    from .layout import LayoutExtractor
    return LayoutExtractor()


EXTRACTORS = {'auto': AutoExtractor, 'text-layer': TextLayerExtractor, 'ocr': OcrExtractor, 'layout': _layout,
              'mineru': MinerUExtractor}


def get_extractor(name: str | TextExtractor = 'auto') -> TextExtractor:
    if isinstance(name, TextExtractor):
        return name
    if name not in EXTRACTORS:
        raise ValueError(f'unknown text extractor {name!r}; choose one of {", ".join(EXTRACTORS)}')
    return EXTRACTORS[name]()
