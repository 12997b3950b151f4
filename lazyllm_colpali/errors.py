"""Errors a user can act on. Each message names the file, model or setting at fault."""
from __future__ import annotations


class ColPaliError(Exception):
    """Base class for every error this package raises on purpose."""


class ModelNotFoundError(ColPaliError):
    """The model name or folder cannot be loaded (no local folder, not in the cache, hub unreachable)."""


class UnsupportedModelError(ColPaliError):
    """The folder holds a model that is not a colpali-engine family we know how to load."""


class DocumentError(ColPaliError):
    """A source file cannot be turned into page images (corrupt, encrypted, empty, not a PDF/image)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f'{path}: {reason}')
        self.path = str(path)
        self.reason = reason


class StoreError(ColPaliError):
    """The vector store cannot be reached or used (Milvus down, locked file, bad URI)."""


class StoreUnavailableError(StoreError):
    """Milvus cannot be reached right now (down, restarting, network): retry later; nothing stored is lost."""


class DimensionMismatchError(StoreError):
    """The encoder's embedding dimension differs from the collection's."""


class EmptyQueryError(ColPaliError):
    """A search was asked with an empty query."""


class QueryTooLongError(ColPaliError):
    """A query longer than the encoder should be asked to embed (late interaction scores per token)."""
