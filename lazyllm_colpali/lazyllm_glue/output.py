"""LazyLLM's retriever output vocabulary for every arm: ``None`` (nodes), ``'content'``, ``'dict'``.

It behaves as ``lazyllm.Retriever``'s own: ``'content'`` is ``node.get_content()`` (a PIL image for an
``ImageDocNode``, the text for a text node), joinable with ``join=`` when every item is text; ``'dict'`` is
``node.to_dict()`` (``content``, ``embedding``, ``metadata`` - file, page, score, page_id, image_path).

>>> from lazyllm.tools.rag.doc_node import DocNode
>>> format_nodes([DocNode(text='a'), DocNode(text='b')], 'content', join='|')
'a|b'
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

OUTPUT_FORMATS = (None, 'content', 'dict')


def check_output_format(output_format: Optional[str], join: Union[bool, str] = False) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be None (nodes), 'content' or 'dict' (as lazyllm.Retriever), "
                         f'got {output_format!r}; use .search() for SearchHits')
    if join is not False and output_format != 'content':
        raise ValueError("join= needs output_format='content'")


def format_nodes(nodes: Sequence[Any], output_format: Optional[str], join: Union[bool, str] = False):
    if output_format == 'content':
        items: List[Any] = [n.get_content() for n in nodes]
        if join is not False:
            if not all(isinstance(i, str) for i in items):
                raise ValueError('join= needs text content; image pages give PIL images (use output_format=None)')
            return ('' if join is True else join).join(items)
        return items
    if output_format == 'dict':
        return [n.to_dict() for n in nodes]
    return list(nodes)
