"""LazyLLM components: embed module, document/retriever pair, arms, reader, and the registered extensions
(the ``colpali_milvus`` store in ``lazyllm.store``, the ``maxsim`` similarity and the ``ColPaliFinetune``
method in ``lazyllm.finetune``), registered on import."""
from . import similarity, store  # noqa: F401  (registration is LazyLLM's import-time mechanism)
from ..training import lazyllm_method  # noqa: F401,E402
