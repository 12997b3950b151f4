"""Visual RAG flows: query -> ColPali retriever -> (formatter | VLM answer with page citations).

    from lazyllm_colpali import ColPaliDocument, ColPaliEmbed
    from pipelines.visual_rag import build_visual_search, build_visual_rag

    doc = ColPaliDocument('./pdfs', embed=ColPaliEmbed('./models/colqwen2-v1.0'))
    search = build_visual_search(doc, topk=5)           # str -> Markdown list of cited pages
    rag = build_visual_rag(doc, llm=OnlineChatModule(source='openai', type='VLM', ...), topk=3)

Both flows take a query string, like a text RAG pipeline built on ``Document`` + ``Retriever``.
"""
from __future__ import annotations

from typing import Any, Callable, List

from lazyllm import bind, pipeline
from lazyllm.components.formatter import encode_query_with_filepaths

from lazyllm_colpali import ColPaliDocument, ColPaliRetriever

ANSWER_PROMPT = ('Answer the question using only the attached document pages. Cite each page you use as '
                 '[file, p. N]. Pages attached, in order: {pages}.\n\nQuestion: {query}')


def cite(nodes: List[Any]) -> str:
    return '\n'.join(f'{i}. {n.metadata["file_name"]}, p. {n.metadata["page"]} (score {n.similarity_score:.2f})'
                     for i, n in enumerate(nodes, 1))


def build_visual_search(doc: ColPaliDocument, topk: int = 5) -> pipeline:
    """query -> Markdown list of the top pages with file, page and score."""
    with pipeline() as ppl:
        ppl.retriever = ColPaliRetriever(doc, topk=topk)
        ppl.format = cite
    return ppl


def vlm_query(nodes: List[Any], query: str) -> str:
    pages = ', '.join(f'[{n.metadata["file_name"]}, p. {n.metadata["page"]}]' for n in nodes)
    return encode_query_with_filepaths(ANSWER_PROMPT.format(pages=pages, query=query), [n.image_path for n in nodes])


def build_visual_rag(doc: ColPaliDocument, llm: Callable, topk: int = 3) -> pipeline:
    """query -> top pages -> ``llm`` (any LazyLLM chat module of type VLM) gets the page images -> answer
    followed by the cited pages."""
    with pipeline() as ppl:
        ppl.retriever = ColPaliRetriever(doc, topk=topk)
        ppl.prompt = vlm_query | bind(query=ppl.input)
        ppl.llm = llm
        ppl.answer = (lambda answer, nodes: f'{answer}\n\nSources:\n{cite(nodes)}') \
            | bind(nodes=ppl.output('retriever'))
    return ppl
