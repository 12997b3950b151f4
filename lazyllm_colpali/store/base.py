"""The multi-vector store interface. Backends: :class:`MilvusMultiVectorStore` (Lite file or server)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from PIL import Image

from ..ingest.records import PageRecord
from .vector_file import PackedMultiVectors

PageItem = Tuple[PageRecord, torch.Tensor, Optional[Image.Image]]
Filters = Optional[Mapping[str, Any]]


class MultiVectorStore(ABC):
    """Pages with their multi-vectors, metadata and images.

    A page is visible only when all of it (vectors, image, record) is stored; ``add`` is an upsert keyed
    by ``page_id``. ``filters`` keys: ``doc_id``, ``file`` (file name), ``source`` (path): a value or a
    list; ``pages``: an inclusive ``(first, last)`` page range; ``page``: one page number.
    """

    dim: int

    @abstractmethod
    def add(self, items: Sequence[PageItem]) -> None: ...

    @abstractmethod
    def missing(self, page_ids: Sequence[str]) -> Set[str]: ...

    @abstractmethod
    def delete_docs(self, doc_ids: Sequence[str]) -> int: ...

    @abstractmethod
    def records(self, page_ids: Sequence[str], images: bool = True) -> Dict[str, PageRecord]: ...

    @abstractmethod
    def page_ids(self, filters: Filters = None) -> List[str]: ...

    @abstractmethod
    def packed(self) -> PackedMultiVectors:
        """Every visible page's vectors (the same object until the store changes, so callers can cache)."""

    @abstractmethod
    def candidates(self, query: torch.Tensor, budget: int, filters: Filters = None) -> List[str]: ...

    @abstractmethod
    def documents(self) -> List[Dict[str, Any]]: ...

    def token_groups(self, page_id: str) -> Optional[torch.Tensor]:
        """A page stored with token pooling: the stored row of each token the encoder emitted (see
        :attr:`PageRecord.token_groups`); None for a page stored as encoded (the default: no pooling)."""
        return None

    @abstractmethod
    def count(self) -> int: ...

    def close(self) -> None:
        pass
