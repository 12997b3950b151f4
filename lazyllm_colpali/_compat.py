"""Environment fixes that must run before transformers / colpali_engine / lazyllm RAG are imported
(the tiktoken one by the package's ``__init__``, the torchvision one by :mod:`lazyllm_colpali.models`).

1. torchvision shim: the only torchvision wheels on PyPI are CUDA builds whose compiled ops cannot load
   beside a CPU torch; its ``_meta_registrations`` then fails on ``torchvision::nms`` and
   ``import colpali_engine`` breaks. Declaring the two op schemas (only when ``_C.so`` cannot load) lets
   everything import; colpali inference never calls those ops.
2. tiktoken offline: importing LazyLLM's RAG tools builds a ``SentenceSplitter`` that asks tiktoken for
   the GPT-2 encoding, which downloads a file. LazyLLM bundles the identical ``r50k_base`` ranks, so we
   alias ``gpt2`` to them when the file is not cached.
"""
from __future__ import annotations

import base64
import importlib.util
import os
from typing import Any, Optional

_TV_LIB: Optional[Any] = None


def install_torchvision_shim() -> None:
    global _TV_LIB
    if _TV_LIB is not None:
        return
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    if hasattr(torch.ops.torchvision, 'nms'):
        return
    try:  # a matching (CPU) torchvision loads fine: nothing to do
        torch.ops.load_library(os.path.join(spec.submodule_search_locations[0], '_C.so'))
        return
    except (OSError, ImportError, RuntimeError):
        pass
    lib = torch.library.Library('torchvision', 'DEF')  # must stay alive for the schemas to stay defined
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _TV_LIB = lib


def install_tiktoken_offline() -> None:
    """Serve tiktoken's ``gpt2`` encoding from LazyLLM's bundled ``r50k_base`` ranks (same ranks)."""
    try:
        import tiktoken.registry as registry
        import tiktoken_ext.openai_public as public
    except ImportError:
        return
    spec = importlib.util.find_spec('lazyllm')
    if spec is None or not spec.submodule_search_locations:
        return
    bundled = os.path.join(spec.submodule_search_locations[0], 'tokenizers', 'r50k_base.tiktoken')
    if not os.path.exists(bundled):
        return

    def offline_constructor(name: str):
        def build() -> dict:
            # Same pattern, ranks and special token as tiktoken's gpt2 / r50k_base specs.
            return {'name': name, 'explicit_n_vocab': 50257,
                    'pat_str': r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
                    'mergeable_ranks': _read_ranks(bundled),
                    'special_tokens': {public.ENDOFTEXT: 50256}}
        return build

    registry._find_constructors()
    if registry.ENCODING_CONSTRUCTORS is not None:
        for name in ('gpt2', 'r50k_base'):
            registry.ENCODING_CONSTRUCTORS[name] = offline_constructor(name)


def _read_ranks(path: str) -> dict:
    # tiktoken's own loader needs blobfile for local paths; the format is 'base64token rank' per line.
    with open(path, 'rb') as f:
        return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in f if line.strip())}


def import_lazyllm_rag() -> None:
    """Import ``lazyllm.tools.rag`` leaving the host's logging as it was. LazyLLM 1.4's graphrag service module
    (imported by ``lazyllm.tools.rag``) calls ``logging.basicConfig(level=INFO)``: from then on every library's
    INFO records reach stderr (faiss's loader and its ``swigfaiss_*`` ModuleNotFoundError lines, Milvus Lite's
    server port, colpali-engine's FastPlaid note). When that import is what configured the root logger, undo
    exactly that; an application that configured logging itself keeps its configuration."""
    import logging
    import sys

    if 'lazyllm.tools.rag' in sys.modules:
        return
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import lazyllm.tools.rag  # noqa: F401
    added = [h for h in root.handlers if h not in handlers]
    if not handlers and added and root.level != level:
        for handler in added:
            root.removeHandler(handler)
        root.setLevel(level)


def skip_unusable_tracing() -> None:
    """LazyLLM traces every module call by default, through OpenTelemetry's SDK; where that SDK is not installed
    nothing can be traced, and the first module call logs a warning saying so. When the application has not
    asked for tracing (``LAZYLLM_TRACE_ENABLED`` unset), turn off what cannot run; an application that sets it
    keeps its choice (and LazyLLM's warning, if its SDK is missing)."""
    if 'LAZYLLM_TRACE_ENABLED' in os.environ:
        return
    try:
        if importlib.util.find_spec('opentelemetry.sdk') is not None:
            return
    except (ImportError, ValueError):   # no opentelemetry package at all
        pass
    import lazyllm

    lazyllm.config['trace_enabled'] = False


def prepare_environment() -> None:
    """Both fixes; neither changes LazyLLM settings (tracing is turned off only where it cannot run, by
    :func:`skip_unusable_tracing`, when the LazyLLM-facing parts load)."""
    install_torchvision_shim()
    install_tiktoken_offline()
