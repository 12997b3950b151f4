"""Page images for training, rendered exactly as indexing renders them (``ingest.render``, same DPI and size
limit), so the model learns from the pixels it will later embed."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

from PIL import Image

from .pairs import PageRef


class PageImages:
    """``pages[ref]`` -> RGB image of that page; recently used pages stay in memory, up to ``cache_bytes`` of
    pixels (a letter page at 144 DPI is 5.8 MB; rendering it again costs far less than a training step)."""

    def __init__(self, corpus: Optional[Path], *, dpi: int = 144, max_side: int = 2048, cache_bytes: int = 512 << 20):
        self.corpus = Path(corpus).expanduser() if corpus else None
        self.dpi = dpi
        self.max_side = max_side
        self.cache_bytes = cache_bytes
        self._cache: 'OrderedDict[PageRef, Image.Image]' = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    def __getitem__(self, ref: PageRef) -> Image.Image:
        with self._lock:
            image = self._cache.get(ref)
            if image is not None:
                self._cache.move_to_end(ref)
                return image
        image = self.render(ref)
        with self._lock:
            if ref not in self._cache:
                self._cache[ref] = image
                self._cached += _size(image)
            while self._cached > self.cache_bytes and len(self._cache) > 1:
                self._cached -= _size(self._cache.popitem(last=False)[1])
        return image

    def render(self, ref: PageRef) -> Image.Image:
        from ..errors import DocumentError
        from ..ingest.render import render_pages

        file = ref.file(self.corpus)
        for _, image in render_pages(file, self.dpi, self.max_side, pages={ref.page}):
            return image
        raise DocumentError(str(file), f'has no page {ref.page}')

    def content_hash(self, ref: PageRef) -> str:
        """sha256 of the rendered pixels: two pages with the same hash look the same to the model."""
        image = self[ref]
        return hashlib.sha256(f'{image.size}'.encode() + image.tobytes()).hexdigest()


def _size(image: Image.Image) -> int:
    return image.width * image.height * len(image.getbands())
