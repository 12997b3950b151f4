"""LazyLLM components: embed module, document/retriever pair, arms, reader, and the registered extensions
(the ``colpali_milvus`` store in ``lazyllm.store``, the ``maxsim`` similarity and the ``ColPaliFinetune``
method in ``lazyllm.finetune``), registered on import."""
from .._compat import import_lazyllm_rag, skip_unusable_tracing

import_lazyllm_rag()       # before anything imports lazyllm.tools.rag: keeps the host's logging as it was
skip_unusable_tracing()    # LazyLLM's default tracing without OpenTelemetry's SDK only warns

from . import similarity, store  # noqa: E402,F401  (registration is LazyLLM's import-time mechanism)
from ..training import lazyllm_method  # noqa: E402,F401
