"""Flows that take any arm's retriever (see :mod:`lazyllm_colpali.pipelines.arms`): same input (a question),
same output.

    from lazyllm_colpali.pipelines import visual_arm, text_arm, build_search, build_rag

    search = build_search(visual_arm('./pdfs'))          # question -> numbered list of cited pages
    rag = build_rag(text_arm('./pdfs'), vlm)             # question -> answer citing [file, p. N] + sources

Output is plain text, as the model and the file names wrote it. To show it as Markdown or HTML (a chat page,
``lazyllm.WebModule``), pass ``output='markdown'``: then every text the flow did not write is escaped (see
:mod:`lazyllm_colpali.serving.escape`; WebModule would otherwise inline any file an answer's
``![..](PATH)`` names).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

from lazyllm import bind, pipeline

from ..generation import AnswerSettings, PageAnswerer, answer_markdown, answer_text_with_sources, hits_from
from ..generation.answer import source_line
from ..serving.escape import markdown_text

__all__ = ['build_rag', 'build_search', 'cite']

OUTPUTS = ('text', 'markdown')
NO_MATCH = 'No indexed page matches this question.'


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ValueError(f'output must be one of {", ".join(OUTPUTS)}, got {output!r}')


def cite(items: List[Any], output: str = 'text') -> str:
    """Numbered list of the pages, best first: ``1. file.pdf, p. 3 (score 17.20)``."""
    _check_output(output)
    # best first: LazyLLM's map-store retrievers return their top k unordered (a set() after the sort)
    hits = sorted(hits_from(items), key=lambda h: -h.score)
    if not hits:
        return NO_MATCH
    line = source_line if output == 'text' else \
        (lambda h: source_line(h).replace(h.file_name, markdown_text(h.file_name, inline=True), 1))
    return '\n'.join(f'{i}. {line(h)}' for i, h in enumerate(hits, 1))


def build_search(retriever: Callable, output: str = 'text') -> pipeline:
    """question -> top pages as a numbered list with file, page and score (``output='markdown'`` for a
    Markdown view: names escaped)."""
    _check_output(output)
    with pipeline() as ppl:
        ppl.retriever = retriever
        ppl.format = bind(cite, output=output)
    return ppl


def build_rag(retriever: Callable, llm: Callable, settings: Optional[AnswerSettings] = None,
              output: str = 'text') -> pipeline:
    """question -> retriever -> the VLM sees the top ``settings.pages`` page images (plus text-arm text) ->
    answer with [file, p. N] citations, followed by the sources: plain text, or with ``output='markdown'``
    Markdown with the model's text and file names escaped (for a chat page)."""
    _check_output(output)
    with pipeline() as ppl:
        ppl.retriever = retriever
        ppl.answer = PageAnswerer(llm, settings) | bind(query=ppl.input)
        ppl.format = answer_markdown if output == 'markdown' else answer_text_with_sources
    return ppl
