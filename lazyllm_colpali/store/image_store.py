"""Page images stored by key, so results and chat answers can show the page on any machine.

A key is ``<doc_id>/<page_id>.<ext>``, relative to the store: Milvus rows hold keys, never machine paths, so a
collection can move and every machine resolves the same key against its own mount of the shared store.
:class:`ImageStore` is the interface (a folder today; object storage implements the same five methods and
keeps a local cache for :meth:`ImageStore.local_path`).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, List, Optional

from PIL import Image

_SAFE_PART = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$')


def fit_jpeg(source: Path, target: Path, max_side: int, quality: int = 88) -> Path:
    """Write (once, atomically) a JPEG copy of ``source`` no larger than ``max_side`` px."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            image.thumbnail((max_side, max_side))
            # one temporary name per process and thread: two threads fitting one page must not share it
            tmp = target.with_suffix(f'.{os.getpid()}.{threading.get_ident()}.tmp')
            image.convert('RGB').save(tmp, format='JPEG', quality=quality)
            os.replace(tmp, target)
    return target


def check_key_part(value: str, what: str = 'id') -> str:
    """Ids become path parts: refuse anything that could name another folder ('', '.', '..', '/', '\\0')."""
    if not isinstance(value, str) or not _SAFE_PART.match(value) or value in ('.', '..'):
        raise ValueError(f'invalid {what} {value!r}: expected letters, digits, "_", "-" or "."')
    return value


def check_image_key(key: str, doc_id: Optional[str] = None, page_id: Optional[str] = None) -> str:
    """A stored page's image key is ``<doc_id>/<page_id>.<ext>``: refuse anything else (a path, another
    document's folder, ``..``), so a row can never make a reader touch a file outside its own page.

    >>> check_image_key('0123456789abcdef/0123456789abcdef-p00001.jpg', '0123456789abcdef')
    '0123456789abcdef/0123456789abcdef-p00001.jpg'
    >>> check_image_key('../../etc/passwd')
    Traceback (most recent call last):
    ...
    ValueError: invalid image key '../../etc/passwd': expected <doc_id>/<page_id>.<ext>
    """
    doc, sep, name = key.partition('/') if isinstance(key, str) else ('', '', '')
    stem, dot, ext = name.rpartition('.')
    try:
        ok = bool(sep and dot and ext) and check_key_part(doc) == doc and check_key_part(name) == name
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f'invalid image key {key!r}: expected <doc_id>/<page_id>.<ext>')
    if (doc_id is not None and doc != doc_id) or (page_id is not None and stem != page_id):
        raise ValueError(f'image key {key!r} does not belong to page {page_id or "?"} of document {doc_id}')
    return key


def own_image_key(key: str, doc_id: str, page_id: str) -> bool:
    """Whether ``key`` is a valid image key of that very page."""
    try:
        check_image_key(key, doc_id, page_id)
        return True
    except ValueError:
        return False


class ImageStore(ABC):
    """Page images by key. Implementations must never read or write outside their own root."""

    suffix: str

    def key_for(self, doc_id: str, page_id: str) -> str:
        return f'{check_key_part(doc_id, "doc id")}/{check_key_part(page_id, "page id")}{self.suffix}'

    @abstractmethod
    def save(self, key: str, image: Image.Image) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def local_path(self, key: str) -> Optional[Path]:
        """A readable local file for ``key`` (None if the image is missing)."""

    @abstractmethod
    def delete_doc(self, doc_id: str) -> None: ...

    def delete_docs(self, doc_ids: Iterable[str]) -> None:
        for doc_id in doc_ids:
            self.delete_doc(doc_id)

    def delete_page(self, key: str) -> None:
        """Remove one page's image (and anything derived from it)."""
        raise NotImplementedError

    @abstractmethod
    def doc_ids(self) -> List[str]: ...


class PageImageStore(ImageStore):
    """A folder: ``root/<doc_id>/<page_id>.<ext>``. Shared by machines when ``root`` is a shared mount."""

    def __init__(self, root: str | Path, image_format: str = 'jpeg', quality: int = 90):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.image_format = image_format.lower()
        self.quality = quality
        self.suffix = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png', 'webp': '.webp'}[self.image_format]

    def _path(self, key: str) -> Path:
        doc_id, _, name = key.partition('/')
        check_key_part(doc_id, 'doc id')
        check_key_part(name, 'image name')
        return self.root / doc_id / name

    def path_for(self, doc_id: str, page_id: str) -> Path:
        return self._path(self.key_for(doc_id, page_id))

    def save(self, key: str, image: Image.Image) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f'{path.suffix}.{os.getpid()}.tmp')   # two machines may write the same key
        fmt = 'JPEG' if self.suffix == '.jpg' else self.image_format.upper()
        image.convert('RGB').save(tmp, format=fmt, quality=self.quality)
        os.replace(tmp, path)  # readers never see a half-written image

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Optional[Path]:
        try:
            path = self._path(key)
        except ValueError:
            return None
        return path if path.is_file() else None

    def resolve(self, path: str | Path) -> Optional[Path]:
        """Return the real path if it lies inside this store and exists, else None (for serving safely)."""
        candidate = Path(path)
        candidate = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if self.root not in candidate.parents or not candidate.is_file():
            return None
        return candidate

    def thumbnail(self, doc_id: str, page_id: str, max_side: int) -> Optional[Path]:
        """A copy of the page no larger than ``max_side`` px (cached beside the page, deleted with its doc)."""
        source = self.local_path(self.key_for(doc_id, page_id))
        if source is None:
            return None
        return fit_jpeg(source, source.parent / 'thumbs' / f'{page_id}_{int(max_side)}.jpg', max_side, quality=85)

    def delete_doc(self, doc_id: str) -> None:
        target = self.root / check_key_part(doc_id, 'doc id')
        if target.resolve().parent == self.root:   # never follow a symlink out of the store
            shutil.rmtree(target, ignore_errors=True)

    def delete_page(self, key: str) -> None:
        path = self._path(check_image_key(key))
        path.unlink(missing_ok=True)
        for thumb in (path.parent / 'thumbs').glob(f'{glob.escape(path.stem)}_*.jpg'):
            thumb.unlink(missing_ok=True)

    def doc_ids(self) -> List[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and _SAFE_PART.match(d.name))

    def bytes_used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob('*') if p.is_file())
