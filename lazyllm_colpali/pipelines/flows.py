"""Flows that take any arm's retriever (see :mod:`lazyllm_colpali.pipelines.arms`): same input (a question),
same output.

    from lazyllm_colpali.pipelines import visual_arm, text_arm, build_search, build_rag

    search = build_search(visual_arm('./pdfs'))          # question -> Markdown list of cited pages
    rag = build_rag(text_arm('./pdfs'), vlm)             # question -> answer citing [file, p. N] + sources
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

from lazyllm import bind, pipeline

from ..generation import AnswerSettings, PageAnswerer, answer_markdown, hits_from
from ..serving.escape import markdown_text

__all__ = ['build_rag', 'build_search', 'cite']


def cite(items: List[Any]) -> str:
    # best first: LazyLLM's map-store retrievers return their top k unordered (a set() after the sort)
    hits = sorted(hits_from(items), key=lambda h: -h.score)
    if not hits:
        return 'No indexed page matches this question.'
    return '\n'.join(f'{i}. {markdown_text(h.file_name, inline=True)}' + (f', p. {h.page}' if h.page else '')
                     + f' (score {h.score:.2f})'
                     for i, h in enumerate(hits, 1))


def build_search(retriever: Callable) -> pipeline:
    """question -> top pages as a numbered Markdown list with file, page and score."""
    with pipeline() as ppl:
        ppl.retriever = retriever
        ppl.format = cite
    return ppl


def build_rag(retriever: Callable, llm: Callable, settings: Optional[AnswerSettings] = None) -> pipeline:
    """question -> retriever -> the VLM sees the top ``settings.pages`` page images (plus text-arm text) ->
    answer with [file, p. N] citations, followed by the sources."""
    with pipeline() as ppl:
        ppl.retriever = retriever
        ppl.answer = PageAnswerer(llm, settings) | bind(query=ppl.input)
        ppl.format = answer_markdown
    return ppl
