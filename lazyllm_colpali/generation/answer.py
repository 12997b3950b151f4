"""The answering step of visual RAG: a VLM gets the question and the top pages, answers with citations.

Works on the hits of any arm (visual, text, hybrid) and with any LazyLLM chat module; the images sent are
the retrieved pages at ``max_image_side`` px, and the text of text-arm hits goes into the prompt too.

    answerer = PageAnswerer(vlm, AnswerSettings(pages=3, max_image_side=1024))
    answer = answerer(hits, query='What was revenue in 2023?')
    answer.text, answer.citations          # '... [report.pdf, p. 2]', [('report.pdf', 2), ...]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from lazyllm.module import ModuleBase

from ..errors import ColPaliError
from ..retrieve.retriever import SearchHit
from ..serving.escape import markdown_text
from ..text.augment import answer_text
from .page_images import page_image

PROMPT = ('Answer the question using only the attached document pages{text_note}. After each fact, cite its '
          'page as [file, p. N]. If the pages do not contain the answer, say so.\n'
          'Pages attached, in order: {pages}.{texts}\n\nQuestion: {query}')


class VLMUnavailableError(ColPaliError):
    """The chat model did not answer (unreachable, refused, or an error status)."""


@dataclass
class AnswerSettings:
    pages: int = 3                 # top pages handed to the VLM
    max_image_side: int = 1024     # px; larger pages are downscaled before sending
    include_text: bool = True      # add page text from text-arm hits to the prompt
    max_text_chars: int = 1500     # per page


@dataclass
class Answer:
    query: str
    text: str
    hits: List[SearchHit]
    images: List[str] = field(default_factory=list)

    @property
    def citations(self) -> List[Tuple[str, int]]:
        return [(h.file_name, h.page) for h in self.hits]


def hits_from(items: Sequence[Any]) -> List[SearchHit]:
    """SearchHits from hits, hit dicts, LazyLLM nodes or their ``to_dict()`` (``output_format='dict'``)."""
    hits = []
    for item in items or []:
        if isinstance(item, SearchHit):
            hits.append(item)
        elif isinstance(item, dict) and 'page_id' in item:
            hits.append(SearchHit(**{k: item[k] for k in SearchHit.__dataclass_fields__ if k in item}))
        else:
            hits.append(_hit_from_node(item))
    return hits


_NODE_FIELDS = ('file_name', 'source', 'page', 'doc_id', 'score', 'page_id', 'image_path')


def _hit_from_node(item: Any) -> SearchHit:
    # Our nodes keep file/page in metadata; a stock LazyLLM node has the file in its global metadata only.
    node_dict = isinstance(item, dict)
    meta = dict((item.get('metadata') if node_dict else getattr(item, 'metadata', None)) or {})
    glob = {} if node_dict else dict(getattr(item, 'global_metadata', None) or {})
    uid = '' if node_dict else str(getattr(item, '_uid', '') or '')
    score = None if node_dict else getattr(item, 'similarity_score', None)
    image = '' if node_dict else getattr(item, 'image_path', '') or ''
    return SearchHit(str(meta.get('page_id') or uid), meta.get('doc_id') or glob.get('docid', ''),
                     meta.get('source') or glob.get('lazyllm_doc_path', ''),
                     meta.get('file_name') or glob.get('file_name', ''), int(meta.get('page') or 0),
                     float(score or meta.get('score', 0.0)), image or meta.get('image_path', '') or '',
                     {k: v for k, v in meta.items() if k not in _NODE_FIELDS})


def sanitize_markdown(text: str) -> str:
    """Model output made inert for a Markdown/HTML view (see :func:`lazyllm_colpali.serving.escape.markdown_text`):
    the chat UI inlines any local file an answer points at, so only images this package adds may appear."""
    return markdown_text(text or '')


class PageAnswerer(ModuleBase):
    """``(hits or nodes, query) -> Answer`` with any LazyLLM chat module of type VLM."""

    def __init__(self, llm: Callable, settings: Optional[AnswerSettings] = None, *, image_cache: Optional[Path] = None,
                 return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        self.llm = llm
        self.settings = settings or AnswerSettings()
        self.image_cache = image_cache

    def prompt(self, query: str, hits: List[SearchHit]) -> str:
        pages = ', '.join(f'[{h.file_name}, p. {h.page}]' for h in hits)
        texts = ''
        if self.settings.include_text:
            blocks = [f'\n[{h.file_name}, p. {h.page}] text:\n{h.metadata["text"][:self.settings.max_text_chars]}'
                      for h in hits if h.metadata.get('text')]
            texts = ''.join(blocks)
        note = ' and their text' if texts else ''
        return PROMPT.format(pages=pages, texts=texts, query=query, text_note=note)

    def forward(self, items: Sequence[Any], query: str = '', **kw) -> Answer:
        return self.answer(items, query)

    def answer(self, items: Sequence[Any], query: str) -> Answer:
        """Like calling the module, but errors keep their type (LazyLLM re-types errors raised in ``forward``
        as ModuleExecutionError, keeping only the message)."""
        from lazyllm.components.formatter import encode_query_with_filepaths

        hits = hits_from(items)[:self.settings.pages]
        if not hits:
            return Answer(query, 'No indexed page matches this question.', [])
        images = [str(p) for p in (page_image(h, self.settings.max_image_side, self.image_cache) for h in hits) if p]
        try:
            raw = self.llm(encode_query_with_filepaths(self.prompt(query, hits), images))
        except Exception as e:   # LazyLLM wraps HTTP/connection failures in several types: all mean "no answer"
            url = getattr(self.llm, '_base_url', None) or getattr(self.llm, 'base_url', None) or 'the configured VLM'
            raise VLMUnavailableError(f'the VLM at {url} did not answer ({type(e).__name__}: {str(e)[:200]}). '
                                      'Is it running and reachable? Retrieval still works: try search.') from e
        text = str(answer_text(raw) or '').strip()
        if not text:
            raise VLMUnavailableError('the VLM returned an empty answer')
        return Answer(query, text, hits, images)


def source_line(hit: SearchHit) -> str:
    """``file, p. N (score s)`` as plain text."""
    return f'{hit.file_name}, p. {int(hit.page)} (score {hit.score:.2f})' if hit.page else \
        f'{hit.file_name} (score {hit.score:.2f})'


def answer_text_with_sources(answer: Answer) -> str:
    """The answer as plain text (what Python, the CLI and JSON get): the model's text as it wrote it, then the
    numbered sources. Nothing is escaped: escape where it is shown as Markdown/HTML (:func:`answer_markdown`).

    >>> hit = SearchHit('p', 'd', '/x/a.pdf', 'a.pdf', 3, 1.5, '')
    >>> print(answer_text_with_sources(Answer('q', 'Revenue rose [a.pdf, p. 3] ("strongly").', [hit])))
    Revenue rose [a.pdf, p. 3] ("strongly").
    <BLANKLINE>
    Sources
    1. a.pdf, p. 3 (score 1.50)
    """
    lines = [answer.text, '', 'Sources'] if answer.hits else [answer.text]
    lines += [f'{i}. {source_line(h)}' for i, h in enumerate(answer.hits, 1)]
    return '\n'.join(lines)


def answer_markdown(answer: Answer, thumbnails: Optional[List[Optional[str]]] = None) -> str:
    """The answer as Markdown: model text and file names made inert, then numbered sources, each followed by
    its thumbnail line if given (trusted Markdown; the chat renders its own sources, see
    :mod:`lazyllm_colpali.serving.chat_view`)."""
    lines = [sanitize_markdown(answer.text), '', '**Sources**']
    for i, hit in enumerate(answer.hits, 1):
        lines.append(f'{i}. {markdown_text(hit.file_name, inline=True)}, p. {int(hit.page)} (score {hit.score:.2f})')
        thumb = thumbnails[i - 1] if thumbnails and i - 1 < len(thumbnails) else None
        if thumb:
            lines.append(thumb)
    return '\n'.join(lines)
