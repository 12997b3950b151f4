"""Page images on disk, so results and chat answers can show the page."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from PIL import Image


def fit_jpeg(source: Path, target: Path, max_side: int, quality: int = 88) -> Path:
    """Write (once, atomically) a JPEG copy of ``source`` no larger than ``max_side`` px."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            image.thumbnail((max_side, max_side))
            tmp = target.with_suffix('.tmp')
            image.convert('RGB').save(tmp, format='JPEG', quality=quality)
            os.replace(tmp, target)
    return target


class PageImageStore:
    """Stores one image per page under ``root/<doc_id>/<page_id>.<ext>``; paths never leave ``root``."""

    def __init__(self, root: str | Path, image_format: str = 'jpeg', quality: int = 90):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.image_format = image_format.lower()
        self.quality = quality
        self.suffix = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png', 'webp': '.webp'}[self.image_format]

    def path_for(self, doc_id: str, page_id: str) -> Path:
        return self.root / doc_id / f'{page_id}{self.suffix}'

    def save(self, doc_id: str, page_id: str, image: Image.Image) -> Path:
        path = self.path_for(doc_id, page_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + '.tmp')
        image.save(tmp, format='JPEG' if self.suffix == '.jpg' else self.image_format.upper(), quality=self.quality)
        os.replace(tmp, path)  # readers never see a half-written image
        return path

    def resolve(self, path: str | Path) -> Optional[Path]:
        """Return the real path if it lies inside this store and exists, else None (for serving safely)."""
        candidate = Path(path)
        candidate = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if self.root not in candidate.parents or not candidate.is_file():
            return None
        return candidate

    def thumbnail(self, doc_id: str, page_id: str, max_side: int) -> Optional[Path]:
        """A copy of the page no larger than ``max_side`` px (cached beside the page, deleted with its doc)."""
        source = self.path_for(doc_id, page_id)
        if not source.is_file():
            return None
        return fit_jpeg(source, source.parent / 'thumbs' / f'{page_id}_{max_side}.jpg', max_side, quality=85)

    def delete_doc(self, doc_id: str) -> None:
        shutil.rmtree(self.root / doc_id, ignore_errors=True)

    def bytes_used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob('*') if p.is_file())
