"""Scoring a context-enhanced collection on its image vectors alone.

A page indexed with context (``lazyllm-colpali index --context``) stores its image patch vectors first and
its context token vectors after them, with their number in the page record. :class:`ImageOnlyMaxSimRetriever`
scores only the image part, so one index answers both "image" and "image + context" (the default
:class:`~lazyllm_colpali.retrieve.retriever.MaxSimRetriever` scores every stored vector).
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..ingest.context import split_counts
from ..store.vector_file import PackedMultiVectors
from .retriever import MaxSimRetriever


def image_only(packed: PackedMultiVectors, context_tokens: Mapping[str, int]) -> PackedMultiVectors:
    """The same pages, in the same order, without their trailing ``context_tokens[page_id]`` vectors (a copy).

    >>> packed = PackedMultiVectors.from_list(['a', 'b'], [torch.ones(3, 2), torch.zeros(2, 2)])
    >>> view = image_only(packed, {'a': 1})
    >>> view.lengths.tolist(), view.page_ids
    ([2, 2], ['a', 'b'])
    """
    keep = packed.lengths.clone()
    for i, page_id in enumerate(packed.page_ids):
        context = int(context_tokens.get(page_id, 0))
        if context:
            keep[i] = max(1, int(keep[i]) - context)   # a page always keeps at least one vector
    offsets = torch.zeros(len(keep) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(keep, 0)
    rows = torch.cat([torch.arange(int(start), int(start) + int(n)) for start, n in zip(packed.offsets[:-1], keep)]) \
        if len(keep) else torch.zeros(0, dtype=torch.int64)
    return PackedMultiVectors(list(packed.page_ids), packed.tokens[rows], offsets)


class ImageOnlyMaxSimRetriever(MaxSimRetriever):
    """Exact MaxSim over each page's image vectors only (context vectors, where stored, are left out)."""

    def _scored_pages(self, packed: PackedMultiVectors) -> PackedMultiVectors:
        # The view is both what the scoring layout is made from and what approximate layouts (int8, bf16)
        # re-score exactly, so no context vector enters either.
        records = self.store.records(packed.page_ids, images=False)
        counts = {page_id: context for page_id, (_, context) in split_counts(records).items()}
        return image_only(packed, counts) if any(counts.values()) else packed
