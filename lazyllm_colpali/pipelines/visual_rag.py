"""Visual RAG flows on a ColPali document: the visual arm plugged into the generic flows of
:mod:`lazyllm_colpali.pipelines.flows`.

    from lazyllm_colpali import ColPaliDocument, ColPaliEmbed
    from lazyllm_colpali.pipelines import build_visual_search, build_visual_rag

    doc = ColPaliDocument('./pdfs', embed=ColPaliEmbed('./models/colqwen2-v1.0'))
    search = build_visual_search(doc, topk=5)           # str -> Markdown list of cited pages
    rag = build_visual_rag(doc, llm=OnlineChatModule(source='openai', type='VLM', ...), topk=3)

Both flows take a query string, like a text RAG pipeline built on ``Document`` + ``Retriever``.
"""
from __future__ import annotations

from typing import Callable, Optional

from lazyllm import pipeline

from ..generation import AnswerSettings
from ..lazyllm_glue.components import ColPaliDocument, ColPaliRetriever
from .flows import build_rag, build_search, cite  # noqa: F401  (cite re-exported for callers)

__all__ = ['build_visual_rag', 'build_visual_search', 'cite']


def build_visual_search(doc: ColPaliDocument, topk: int = 5) -> pipeline:
    """query -> Markdown list of the top pages with file, page and score."""
    return build_search(ColPaliRetriever(doc, topk=topk))


def build_visual_rag(doc: ColPaliDocument, llm: Callable, topk: int = 3,
                     settings: Optional[AnswerSettings] = None) -> pipeline:
    """query -> top pages -> ``llm`` (any LazyLLM chat module of type VLM) gets the page images -> answer
    followed by the cited pages."""
    return build_rag(ColPaliRetriever(doc, topk=topk), llm, settings or AnswerSettings(pages=topk))
