"""Page records: the unit that is embedded, stored and returned."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from PIL import Image

DOC_ID = re.compile(r'^[0-9a-f]{16}$')


def make_doc_id(content_sha256: str, source: Optional[str] = None) -> str:
    """64 bits of a hash: collisions are negligible at millions of documents, ids stay short.

    With ``source`` (the file's absolute path) the id covers content *and* location, so two files with the
    same bytes are two documents: editing or deleting one never removes the other. The same file at the
    same path gets the same id on every machine, so re-indexing it anywhere adds nothing.

    >>> make_doc_id('ab' * 32, '/data/a.pdf') != make_doc_id('ab' * 32, '/data/b.pdf')
    True
    """
    if source is None:
        return content_sha256[:16]
    key = f'{content_sha256}\0{source}'.encode('utf-8', 'surrogateescape')
    return hashlib.sha256(key).hexdigest()[:16]


def is_doc_id(value: str) -> bool:
    return isinstance(value, str) and bool(DOC_ID.match(value))


def make_page_id(doc_id: str, page_number: int) -> str:
    return f'{doc_id}-p{page_number:05d}'


@dataclass
class PageRecord:
    """One rendered page of one source file. ``page_number`` is 1-based."""

    page_id: str
    doc_id: str
    source: str
    file_name: str
    page_number: int
    width: int
    height: int
    image_path: str = ''          # a local file for image_key, resolved on this machine ('' if missing)
    n_vectors: int = 0
    metadata: Dict[str, Any] = field(default_factory=dict)
    image_key: str = ''           # where the page image lives in the collection's image store
    content_sha: str = ''         # sha256 of the source file, to re-render a lost image from the right file
    # pages stored with token pooling: the stored row each encoder token was pooled into (kept by the store
    # apart from the row, read only to explain a match); None for pages stored as encoded
    token_groups: Optional[Any] = field(default=None, repr=False)


@dataclass
class RenderedPage:
    record: PageRecord
    image: Image.Image


@dataclass
class IngestFailure:
    path: str
    reason: str


@dataclass
class IngestReport:
    """What an ingestion run did. ``failures`` name each file that was skipped and why."""

    added_pages: int = 0
    skipped_pages: int = 0
    documents: List[str] = field(default_factory=list)
    failures: List[IngestFailure] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=lambda: {'render': 0.0, 'encode': 0.0, 'store': 0.0})

    def summary(self) -> str:
        text = (f'{self.added_pages} pages added, {self.skipped_pages} already indexed, '
                f'{len(self.documents)} documents, {len(self.failures)} files skipped')
        return text + ''.join(f'\n  skipped {f.path}: {f.reason}' for f in self.failures)
