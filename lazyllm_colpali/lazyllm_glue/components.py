"""``ColPaliDocument`` + ``ColPaliRetriever``: the visual counterpart of LazyLLM's ``Document`` + ``Retriever``.

    doc = ColPaliDocument('/data/pdfs', embed=ColPaliEmbed('vidore/colqwen2-v1.0'), db='./colpali.db')
    retriever = ColPaliRetriever(doc, topk=3)      # where a text RAG has Retriever(doc, 'CoarseChunk', 'bm25')
    nodes = retriever('What was revenue in 2023?')  # List[ImageDocNode] with file, page, score, image path
    hits = retriever.search('revenue', {'file': 'report.pdf'}, topk=3)   # List[SearchHit]

Both are ``ModuleBase`` components, so they compose in ``lazyllm.pipeline`` / ``parallel`` and deploy with
``.start()``. Indexing of ``dataset_path`` happens on first use (or ``doc.start()``) and is incremental.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

from lazyllm.module import ModuleBase
from lazyllm.tools.rag.doc_node import DocNode, ImageDocNode
from lazyllm.tools.rag.global_metadata import RAG_DOC_FILE_NAME, RAG_DOC_ID

from ..indexer import ColPaliIndex
from ..ingest.records import IngestReport
from ..logging import drop_alloc_timestamp_noise
from ..retrieve.retriever import SCORING_DTYPES, MaxSimRetriever, SearchHit
from ..settings import DEFAULT_COLLECTION, default_db
from ..store.milvus_store import MilvusMultiVectorStore
from .embed import ColPaliEmbed
from .output import check_output_format, format_nodes


class ColPaliDocument(ModuleBase):
    """A folder (or list) of PDFs/images indexed page by page into a Milvus multi-vector store."""

    def __init__(self, dataset_path: Union[str, Path, List[Union[str, Path]], None] = None,
                 embed: Union[ColPaliEmbed, str, None] = None, *, db: Optional[str] = None,
                 collection: str = DEFAULT_COLLECTION, data_dir: Optional[str] = None,
                 shared_dir: Optional[str] = None, dpi: int = 144,
                 vector_dtype: str = 'float16', mode: str = 'auto', candidate_budget: Optional[int] = None,
                 scoring_dtype: str = 'float16', progress: bool = True, return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        if scoring_dtype not in SCORING_DTYPES:   # before any model loads or page is indexed
            raise ValueError(f'scoring_dtype must be one of {", ".join(SCORING_DTYPES)}, got {scoring_dtype!r}')
        self.dataset_path = dataset_path
        self.embed = embed if isinstance(embed, ColPaliEmbed) else ColPaliEmbed(embed)
        self.db = db or default_db()
        self.collection = collection
        self._store_kwargs = dict(data_dir=data_dir, shared_dir=shared_dir, vector_dtype=vector_dtype)
        self._retriever_kwargs = dict(mode=mode, candidate_budget=candidate_budget, scoring_dtype=scoring_dtype)
        self._dpi = dpi
        self._progress = progress
        self._index: Optional[ColPaliIndex] = None
        self._lock = threading.Lock()
        self.last_report: Optional[IngestReport] = None

    @property
    def index(self) -> ColPaliIndex:
        with self._lock:
            if self._index is None:
                drop_alloc_timestamp_noise()
                encoder = self.embed.encoder
                store = MilvusMultiVectorStore(self.db, self.collection, dim=encoder.dim, **self._store_kwargs)
                self._index = ColPaliIndex(encoder, store, dpi=self._dpi, progress=self._progress,
                                           retriever=MaxSimRetriever(store, **self._retriever_kwargs))
                if self.dataset_path:
                    paths = self.dataset_path if isinstance(self.dataset_path, list) else [self.dataset_path]
                    self.last_report = self._index.add(paths)
            return self._index

    def _get_deploy_tasks(self):
        from lazyllm import pipeline

        # ``.start()`` on a flow that holds this document builds the index then, not at the first query.
        return pipeline(lambda *args: self.index)

    def add_files(self, paths: Iterable[Union[str, Path]], metadata: Optional[Dict[str, Any]] = None,
                  on_progress=None) -> IngestReport:
        self.last_report = self.index.add(paths, metadata, on_progress=on_progress)
        return self.last_report

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        return self.index.remove(list(doc_ids))

    def forward(self, query: str, filters: Optional[Dict[str, Any]] = None, *, topk: int = 5,
                **kw) -> List[SearchHit]:
        return self.index.search(query, topk, filters)

    def close(self) -> None:
        if self._index is not None:
            self._index.store.close()
            self._index = None


def hit_to_node(hit: SearchHit) -> DocNode:
    """A page hit as a LazyLLM node: an ``ImageDocNode`` when the page image is known (visual arm), else a
    ``DocNode`` holding the page text (text arms), so nodes from either arm carry real content."""
    metadata = {'file_name': hit.file_name, 'source': hit.source, 'page': hit.page, 'doc_id': hit.doc_id,
                'page_id': hit.page_id, 'score': hit.score, 'image_path': hit.image_path, **hit.metadata}
    global_metadata = {RAG_DOC_FILE_NAME: hit.file_name, RAG_DOC_ID: hit.doc_id}
    if hit.image_path:
        node = ImageDocNode(image_path=hit.image_path, uid=hit.page_id, metadata=metadata,
                            global_metadata=global_metadata)
    else:
        node = DocNode(uid=hit.page_id, text=str(hit.metadata.get('text', '')), metadata=metadata,
                       global_metadata=global_metadata)
    return node.with_sim_score(hit.score)


class ColPaliRetriever(ModuleBase):
    """Top-k pages for a query. Output as LazyLLM's ``Retriever``: nodes (``ImageDocNode``s, default),
    ``'content'`` or ``'dict'``; :meth:`search` gives the :class:`SearchHit`s themselves."""

    def __init__(self, doc: ColPaliDocument, topk: int = 5, output_format: Optional[str] = None,
                 filters: Optional[Dict[str, Any]] = None, join: Union[bool, str] = False,
                 return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        check_output_format(output_format, join)
        self.doc = doc
        self.topk = topk
        self.output_format = output_format
        self.join = join
        self.filters = filters
        self.arm_name = 'visual'

    def search(self, query: str, filters: Optional[Dict[str, Any]] = None, *,
               topk: Optional[int] = None) -> List[SearchHit]:
        return self.doc.index.search(query, topk or self.topk, filters if filters is not None else self.filters)

    def forward(self, query: str, filters: Optional[Dict[str, Any]] = None, *, topk: Optional[int] = None, **kw):
        return format_nodes([hit_to_node(h) for h in self.search(query, filters, topk=topk)],
                            self.output_format, self.join)
