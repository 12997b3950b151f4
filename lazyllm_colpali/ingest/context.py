"""Context enhancement: a page's multi-vector = its image patch vectors + the token vectors of its context.

What an image alone loses (the document's title, the section a page belongs to, a caption printed on
another line, words too small to survive the model's resolution) is written as text, encoded by the same
model's *text* path, and appended to the page's vectors, so one MaxSim scores image and context together.
The context of a page (each part capped, in this order, so a cap cuts the body's tail first):

- the document title (PDF metadata ``Title``, else the file name),
- the page's heading (its first short line that does not end a sentence),
- figure and table captions (lines starting ``Figure N``, ``Fig. N``, ``Table N``, ``Chart N``, ``图 N``, ``表 N``),
- the page's text (PDF text layer; ``source='auto'`` OCRs pages without a usable one).

The number of context vectors is stored with the page (``metadata['context_tokens']``), after the image
vectors, so a collection built with context is scored image-only too
(:class:`~lazyllm_colpali.retrieve.context.ImageOnlyMaxSimRetriever`) and ``check`` counts both.

>>> ctx = PageContext(max_tokens=64)
>>> ctx.compose('Annual Report 2023', 'Revenue\\nTable 2: Revenue by region\\nNorth 12, South 9.')
'Annual Report 2023\\nRevenue\\nTable 2: Revenue by region\\nRevenue Table 2: Revenue by region North 12, South 9.'
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch

from ..errors import ColPaliError, DocumentError
from ..logging import LOG
from .records import PageRecord

CONTEXT_KEY = 'context_tokens'   # per page, in PageRecord.metadata: how many trailing vectors are context
_CAPTION = re.compile(r'^\s*(fig(ure)?\.?|table|chart|graph|图|表)\s*\d+', re.IGNORECASE)
SOURCES = ('text-layer', 'auto')


@dataclass
class PageContext:
    """How context text is built and capped; recorded in the collection so every later write (and
    ``check --repair``'s re-encoding) builds it the same way."""

    source: str = 'text-layer'     # 'auto': OCR pages whose text layer is missing or junk (slow: seconds a page)
    title_chars: int = 160
    heading_chars: int = 160
    caption_chars: int = 480
    text_chars: int = 1500
    max_tokens: int = 256          # context vectors per page at most (the image has ~700-1100)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ColPaliError(f'context source {self.source!r} is not one of {", ".join(SOURCES)}')
        if self.max_tokens < 1:
            raise ColPaliError(f'context max_tokens must be >= 1, got {self.max_tokens}')

    def settings(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> 'PageContext':
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in settings.items() if k in known})

    # -- text -----------------------------------------------------------------------------------------
    def compose(self, title: str, page_text: str) -> str:
        lines = [' '.join(line.split()) for line in page_text.splitlines()]
        lines = [line for line in lines if line]
        heading = next((line for line in lines[:5] if len(line.split()) <= 12 and not line.endswith('.')), '')
        captions = ' '.join(line for line in lines if _CAPTION.match(line))
        parts = (title.strip()[:self.title_chars], heading[:self.heading_chars], captions[:self.caption_chars],
                 ' '.join(lines)[:self.text_chars])
        return '\n'.join(p for p in parts if p)

    def texts(self, records: Sequence[PageRecord]) -> List[str]:
        """The context text of each page (pages of one file are read together, each file opened once)."""
        from ..text.extract import get_extractor

        extractor = get_extractor(self.source)
        by_file: Dict[str, Dict[int, str]] = {}
        for source in dict.fromkeys(r.source for r in records):
            wanted = {r.page_number for r in records if r.source == source}
            try:
                by_file[source] = dict(extractor.pages(Path(source), wanted))
            except (DocumentError, OSError) as e:   # the page is still indexed, with title-only context
                LOG.warning(f'context text of {source}: {e}')
                by_file[source] = {}
        titles = {source: document_title(Path(source)) for source in by_file}
        return [self.compose(titles[r.source], by_file[r.source].get(r.page_number, '')) for r in records]

    # -- vectors --------------------------------------------------------------------------------------
    def extend(self, encoder, records: Sequence[PageRecord], vectors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Append each page's context token vectors (at most ``max_tokens``) to its image vectors and record
        their number in ``record.metadata['context_tokens']``."""
        texts = self.texts(records)
        encoded = encoder.encode_texts(texts)
        out = []
        for record, image_vectors, context in zip(records, vectors, encoded):
            context = context[:self.max_tokens]
            record.metadata[CONTEXT_KEY] = int(context.shape[0])
            out.append(torch.cat([image_vectors, context.to(image_vectors.dtype)]))
        return out


def document_title(path: Path) -> str:
    """The PDF's metadata title, else the file name without its suffix, as words."""
    if path.suffix.lower() == '.pdf':
        try:
            import pypdfium2 as pdfium

            pdf = pdfium.PdfDocument(str(path))
            try:
                title = (pdf.get_metadata_dict().get('Title') or '').strip()
            finally:
                pdf.close()
            if title:
                return title
        except Exception:   # an unreadable PDF is reported by the indexer; the name still works as a title
            pass
    return re.sub(r'[_\-]+', ' ', path.stem).strip()


def split_counts(records: Mapping[str, PageRecord]) -> Dict[str, Tuple[int, int]]:
    """``{page_id: (image vectors, context vectors)}`` of stored pages."""
    out = {}
    for page_id, record in records.items():
        context = int((record.metadata or {}).get(CONTEXT_KEY, 0))
        out[page_id] = (record.n_vectors - context, context)
    return out
