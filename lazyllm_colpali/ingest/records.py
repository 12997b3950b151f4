"""Page records: the unit that is embedded, stored and returned."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from PIL import Image


def make_doc_id(content_sha256: str) -> str:
    # 64 bits of the content hash: collisions are negligible at millions of documents, ids stay short.
    return content_sha256[:16]


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
    image_path: str = ''
    n_vectors: int = 0
    metadata: Dict[str, Any] = field(default_factory=dict)


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
