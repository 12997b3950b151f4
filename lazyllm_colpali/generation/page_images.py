"""The image of a retrieved page at a size a VLM accepts.

Visual hits carry the stored page image; text-arm hits may not, so their page is rendered from the source
file once and cached. Images are downscaled to ``max_side`` (VLMs resize large inputs anyway, and every
pixel costs tokens: Qwen2-VL spends one token per 28x28 patch).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from ..retrieve.retriever import SearchHit
from ..settings import data_home
from ..store.image_store import fit_jpeg

# PDFium is not thread-safe (concurrent renders crash the process): answerers running in threads (the
# answer-level evaluation, a chat serving several users) render one page at a time.
_RENDER_LOCK = threading.Lock()


def page_image(hit: SearchHit, max_side: int = 1024, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """A JPEG of the hit's page no larger than ``max_side`` px, or None when neither the stored image nor the
    source file can be read."""
    cache = Path(cache_dir) if cache_dir else data_home() / 'page_images'
    target = cache / hit.doc_id / f'{hit.page_id}_{max_side}.jpg'
    if hit.image_path and Path(hit.image_path).is_file():
        return fit_jpeg(Path(hit.image_path), target, max_side)
    if target.exists():
        return target
    source = Path(hit.source)
    if not source.is_file():
        return None
    from ..errors import DocumentError
    from ..ingest.render import render_pages

    with _RENDER_LOCK:
        if target.exists():   # another thread rendered it while this one waited
            return target
        try:
            for _, image in render_pages(source, dpi=110, max_side=max_side, pages={hit.page}):
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f'{target.name}.tmp')
                image.save(tmp, format='JPEG', quality=88)
                tmp.replace(target)   # never a half-written JPEG for a concurrent reader
                return target
        except DocumentError:
            return None
    return None
