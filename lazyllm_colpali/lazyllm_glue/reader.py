"""A LazyLLM reader that turns each PDF page (or image) into an ``ImageDocNode`` for the ``image`` group."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from lazyllm.tools.rag.doc_node import ImageDocNode

from ..ingest.records import make_doc_id, make_page_id
from ..ingest.render import render_pages
from ..ingest.sources import file_sha256
from ..settings import data_home
from ..store.image_store import PageImageStore


class PdfPageImageReader:
    """``doc.add_reader('*.pdf', PdfPageImageReader())``: pages rendered with pypdfium2, one node each,
    with stable uids (content hash + page) so re-reading a file upserts instead of duplicating."""

    def __init__(self, image_dir: Optional[str] = None, dpi: int = 144, max_side: int = 2048):
        self.image_dir = image_dir or str(data_home() / 'reader-pages')
        self.dpi = dpi
        self.max_side = max_side

    def __call__(self, file: Path, fs=None, **kwargs) -> List[ImageDocNode]:
        path = Path(file)
        store = PageImageStore(self.image_dir, image_format='png')
        doc_id = make_doc_id(file_sha256(path))
        nodes = []
        for number, image in render_pages(path, self.dpi, self.max_side):
            page_id = make_page_id(doc_id, number)
            saved = store.save(doc_id, page_id, image)
            nodes.append(ImageDocNode(image_path=str(saved), uid=page_id,
                                      metadata={'page': number, 'file_name': path.name, 'source': str(path),
                                                'doc_id': doc_id}))
        return nodes
