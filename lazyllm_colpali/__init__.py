"""lazyllm_colpali: ColPali-style visual document retrieval for LazyLLM.

Names load on first use (PEP 562), so ``import lazyllm_colpali`` and ``lazyllm-colpali --help`` stay fast.
Using any LazyLLM-facing name (``ColPaliEmbed``, ``ColPaliMilvusStore``, ``maxsim``, the pipelines ...) or
calling :func:`register` registers the plugin's LazyLLM extensions: the ``colpali_milvus`` store type
(``lazyllm.store``), the ``maxsim`` similarity and the ``ColPaliFinetune`` method (``lazyllm.finetune``). Importing changes nothing else in the host process
(LazyLLM tracing, logging and readers are left as the application set them).
"""
from __future__ import annotations

import importlib
from typing import Any

from ._compat import install_tiktoken_offline

install_tiktoken_offline()   # LazyLLM's RAG import wants tiktoken's gpt2 file; serve the bundled copy offline

__version__ = '0.1.0'

_EXPORTS = {
    '.errors': ['ColPaliError', 'DimensionMismatchError', 'DocumentError', 'EmptyQueryError', 'ModelNotFoundError',
                'QueryTooLongError', 'StoreError', 'StoreUnavailableError', 'UnsupportedModelError'],
    '.indexer': ['ColPaliIndex'],
    '.dense': ['DenseIndex', 'DenseThenMaxSim', 'dense_collection'],
    '.ingest.context': ['PageContext'],
    '.ingest.records': ['IngestReport', 'PageRecord'],
    '.generation': ['AnswerSettings', 'PageAnswerer', 'VLMUnavailableError'],
    '.lazyllm_glue.arms': ['HybridRetriever', 'PageTextRetriever'],
    '.lazyllm_glue.components': ['ColPaliDocument', 'ColPaliRetriever', 'hit_to_node'],
    '.lazyllm_glue.embed': ['ColPaliEmbed'],
    '.lazyllm_glue.reader': ['PdfPageImageReader'],
    '.lazyllm_glue.similarity': ['maxsim'],
    '.lazyllm_glue.store': ['ColPaliMilvusStore'],
    '.models.encoder': ['ColPaliEncoder'],
    '.models.dense': ['DenseEncoder'],
    '.retrieve.maxsim': ['maxsim_packed', 'maxsim_reference'],
    '.retrieve.fusion': ['reciprocal_rank_fusion'],
    '.retrieve.retriever': ['MaxSimRetriever', 'SearchHit'],
    '.retrieve.context': ['ImageOnlyMaxSimRetriever'],
    '.store.base': ['MultiVectorStore'],
    '.store.milvus_store': ['MilvusMultiVectorStore'],
    '.store.vector_file': ['LocalVectorFile', 'PackedMultiVectors'],
    '.text': ['CaptionQAAugmenter', 'PageTextIndex'],
    '.training': ['FinetuneSettings', 'finetune'],
    '.training.lazyllm_method': ['ColPaliFinetune'],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ['register']


def register() -> None:
    """Register the LazyLLM extensions (``colpali_milvus`` store, ``maxsim`` similarity). Idempotent; any
    LazyLLM-facing name of this package does it too."""
    importlib.import_module('.lazyllm_glue', __name__)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
