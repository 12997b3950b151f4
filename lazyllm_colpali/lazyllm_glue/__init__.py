"""LazyLLM components: embed module, document/retriever pair, arms, reader, and the registered extensions
(the ``colpali_milvus`` store in ``lazyllm.store`` and the ``maxsim`` similarity), registered on import."""
from . import similarity, store  # noqa: F401  (registration is LazyLLM's import-time mechanism)
