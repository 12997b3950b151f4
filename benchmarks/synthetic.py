"""Synthetic multi-vectors shaped like ColPali pages, with cluster structure so rankings mean something.

A global pool of ``n_topics`` unit "visual word" directions; each page mixes ``topics_per_page`` of them
(each token = its topic + Gaussian noise, normalised). A query is built from a target page: a few of its
topics plus heavier noise, so the target (and pages sharing its topics) rank high and ties are rare.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from lazyllm_colpali.store.vector_file import PackedMultiVectors


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


@dataclass
class SyntheticCorpus:
    pages: PackedMultiVectors
    topics: torch.Tensor         # (n_topics, dim) unit directions
    page_topics: torch.Tensor    # (n_pages, topics_per_page) topic ids of each page


def make_pages(n_pages: int, tokens: int = 1030, dim: int = 128, *, variable: bool = False, n_topics: int = 4096,
               topics_per_page: int = 16, noise: float = 0.5, seed: int = 0,
               dtype: torch.dtype = torch.float16, out: Optional[torch.Tensor] = None) -> SyntheticCorpus:
    """``out``: a preallocated ``(total_tokens, dim)`` tensor to fill, e.g. over a disk memmap when the
    collection is larger than memory (100k pages x 1030 x 128 fp16 is 26 GB)."""
    g = torch.Generator().manual_seed(seed)
    topics = _unit(torch.randn(n_topics, dim, generator=g))
    page_topics = torch.stack([torch.randperm(n_topics, generator=g)[:topics_per_page] for _ in range(n_pages)])
    if variable:  # ColQwen2-like: length follows the page's aspect ratio, ~500-1030 tokens
        lengths = torch.randint(tokens // 2, tokens + 1, (n_pages,), generator=g)
    else:
        lengths = torch.full((n_pages,), tokens)
    offsets = torch.zeros(n_pages + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    if out is None:
        out = torch.empty(int(offsets[-1]), dim, dtype=dtype)
    for start in range(0, n_pages, 256):   # chunked: 100k pages never exist in float32 at once
        end = min(start + 256, n_pages)
        n = int(offsets[end] - offsets[start])
        which = torch.randint(topics_per_page, (n,), generator=g)
        owner = torch.repeat_interleave(torch.arange(start, end), lengths[start:end])
        centers = topics[page_topics[owner, which]]
        # noise is the norm of the perturbation relative to the unit topic direction
        out[offsets[start]:offsets[end]] = _unit(centers + noise * torch.randn(n, dim, generator=g) / dim ** 0.5
                                                 ).to(dtype)
    return SyntheticCorpus(PackedMultiVectors([f'p{i}' for i in range(n_pages)], out, offsets), topics, page_topics)


def make_queries(corpus: SyntheticCorpus, n_queries: int, *, query_tokens: int = 20, noise: float = 0.5,
                 seed: int = 1) -> List[torch.Tensor]:
    topics, page_topics, dim = corpus.topics, corpus.page_topics, corpus.topics.shape[1]
    g = torch.Generator().manual_seed(seed)
    queries = []
    for _ in range(n_queries):
        target = int(torch.randint(len(page_topics), (1,), generator=g))
        which = page_topics[target][torch.randint(page_topics.shape[1], (query_tokens,), generator=g)]
        queries.append(_unit(topics[which] + noise * torch.randn(query_tokens, dim, generator=g) / dim ** 0.5))
    return queries
