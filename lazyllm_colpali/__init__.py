"""lazyllm_colpali: ColPali-style visual document retrieval for LazyLLM.

Importing the package registers its LazyLLM extensions (the ``maxsim`` similarity) and applies the
environment fixes in :mod:`lazyllm_colpali._compat` before transformers / colpali-engine load.
"""
from ._compat import prepare_environment

prepare_environment()

from .errors import (ColPaliError, DimensionMismatchError, DocumentError, EmptyQueryError,  # noqa: E402
                     ModelNotFoundError, QueryTooLongError, StoreError, UnsupportedModelError)
from .indexer import ColPaliIndex  # noqa: E402
from .ingest.records import IngestReport, PageRecord  # noqa: E402
from .generation import AnswerSettings, PageAnswerer, VLMUnavailableError  # noqa: E402
from .lazyllm_glue.arms import HybridRetriever, PageTextRetriever  # noqa: E402
from .lazyllm_glue.components import ColPaliDocument, ColPaliRetriever, hit_to_node  # noqa: E402
from .lazyllm_glue.embed import ColPaliEmbed  # noqa: E402
from .lazyllm_glue.reader import PdfPageImageReader  # noqa: E402
from .lazyllm_glue.similarity import maxsim  # noqa: E402
from .models.encoder import ColPaliEncoder  # noqa: E402
from .retrieve.maxsim import maxsim_packed, maxsim_reference  # noqa: E402
from .retrieve.fusion import reciprocal_rank_fusion  # noqa: E402
from .retrieve.retriever import MaxSimRetriever, SearchHit  # noqa: E402
from .store.base import MultiVectorStore  # noqa: E402
from .store.milvus_store import MilvusMultiVectorStore  # noqa: E402
from .store.vector_file import LocalVectorFile, PackedMultiVectors  # noqa: E402
from .text import CaptionQAAugmenter, PageTextIndex  # noqa: E402

__version__ = '0.1.0'
__all__ = [
    'AnswerSettings', 'CaptionQAAugmenter', 'HybridRetriever', 'PageAnswerer', 'PageTextIndex', 'PageTextRetriever',
    'VLMUnavailableError', 'reciprocal_rank_fusion',
    'ColPaliDocument', 'ColPaliEmbed', 'ColPaliEncoder', 'ColPaliError', 'ColPaliIndex', 'ColPaliRetriever',
    'DimensionMismatchError', 'DocumentError', 'EmptyQueryError', 'IngestReport', 'LocalVectorFile',
    'MaxSimRetriever', 'MilvusMultiVectorStore', 'ModelNotFoundError', 'MultiVectorStore', 'PackedMultiVectors',
    'PageRecord', 'PdfPageImageReader', 'QueryTooLongError', 'SearchHit', 'StoreError', 'UnsupportedModelError',
    'hit_to_node',
    'maxsim', 'maxsim_packed', 'maxsim_reference',
]
