"""``maxsim`` registered as a LazyLLM similarity, for stock ``Document`` + ``Retriever`` on the map store."""
from __future__ import annotations

from typing import List

import torch
from lazyllm.tools.rag import register_similarity

from ..retrieve.maxsim import maxsim_packed
from ..store.vector_file import PackedMultiVectors


@register_similarity(mode='embedding', batch=True)
def maxsim(query: List[List[float]], nodes: List[List[List[float]]], **kwargs) -> List[float]:
    if not nodes:
        return []
    pages = [torch.tensor(n, dtype=torch.float32) for n in nodes]
    packed = PackedMultiVectors.from_list([str(i) for i in range(len(pages))], pages)
    return maxsim_packed([torch.tensor(query, dtype=torch.float32)], packed)[0].tolist()
