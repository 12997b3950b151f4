"""A LazyLLM reader that turns each PDF page (or image) into an ``ImageDocNode`` for the ``image`` group."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, List, Optional

from lazyllm.tools.rag.doc_node import ImageDocNode
from lazyllm.tools.rag.readers.readerBase import LazyLLMReaderBase

from ..ingest.records import make_doc_id, make_page_id
from ..ingest.render import render_pages
from ..ingest.sources import file_sha256
from ..settings import data_home
from ..store.image_store import PageImageStore


class PdfPageImageReader(LazyLLMReaderBase):
    """``doc.add_reader('*.pdf', PdfPageImageReader())``: pages rendered with pypdfium2, one node each,
    with stable uids (content hash + page) so re-reading a file upserts instead of duplicating. A LazyLLM
    reader (``lazyllm.reader.PdfPageImageReader``): files on another fsspec filesystem (``fs``) are fetched
    to a temporary file first."""

    def __init__(self, image_dir: Optional[str] = None, dpi: int = 144, max_side: int = 2048,
                 return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        self.image_dir = image_dir or str(data_home() / 'reader-pages')
        self.dpi = dpi
        self.max_side = max_side

    def _load_data(self, file: Path, fs: Any = None, **kwargs) -> List[ImageDocNode]:
        path = Path(file)
        if fs is None or _is_local(fs):
            return self._pages(path, path)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / path.name
            with fs.open(str(file), 'rb') as src, open(local, 'wb') as dst:
                shutil.copyfileobj(src, dst)
            return self._pages(local, path)

    def _pages(self, local: Path, source: Path) -> List[ImageDocNode]:
        store = PageImageStore(self.image_dir, image_format='png')
        sha = file_sha256(local)
        doc_id = make_doc_id(sha, str(source.resolve()) if source.exists() else str(source))   # same ids as the indexer
        nodes = []
        for number, image in render_pages(local, self.dpi, self.max_side):
            page_id = make_page_id(doc_id, number)
            key = store.key_for(doc_id, page_id)
            store.save(key, image)
            saved = store.local_path(key)
            nodes.append(ImageDocNode(image_path=str(saved), uid=page_id,
                                      metadata={'page': number, 'file_name': source.name, 'source': str(source),
                                                'doc_id': doc_id, 'width': image.width, 'height': image.height,
                                                'content_sha': sha}))
        return nodes


def _is_local(fs: Any) -> bool:
    protocol = getattr(fs, 'protocol', 'file')
    return bool({'file', 'local'} & set(protocol if isinstance(protocol, (tuple, list)) else [protocol]))
