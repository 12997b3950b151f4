"""Building the chat module (a VLM) that captions pages and answers questions.

Any LazyLLM chat module works where a VLM is asked for; this helper covers the command line: an
OpenAI-compatible server by URL (vLLM, LMDeploy, Ollama, a hosted API), a LazyLLM online source by name,
or the local stand-in server (``standin``) that lets the pipeline run offline without a real model.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple

from .errors import ColPaliError


class VLMNotConfiguredError(ColPaliError):
    """No chat model was named for a step that needs one."""


def make_vlm(url: Optional[str] = None, model: Optional[str] = None, *, source: str = 'openai',
             api_key_env: Optional[str] = None, stream: bool = False,
             standin_answers: Optional[Any] = None) -> Tuple[Any, Optional[Any]]:
    """Returns ``(chat_module, standin_server_or_None)``. ``url='standin'`` starts the local stand-in server
    (stop it with ``server.stop()``), answering known questions from ``standin_answers`` if given (see
    :class:`~lazyllm_colpali.devtools.standin_vlm.AnswerLookup`)."""
    from lazyllm import OnlineChatModule

    server = None
    if url == 'standin':
        from .devtools.standin_vlm import MODEL_NAME, StandinVLMServer
        server = StandinVLMServer(answers=standin_answers).start()
        url, model = server.base_url, model or MODEL_NAME
    if not url and not model:
        raise VLMNotConfiguredError('no VLM configured: pass --vlm-url http://HOST:PORT/v1/ --vlm-model NAME (any '
                                    'OpenAI-compatible server), --vlm-source qwen|glm|... with its API key in the '
                                    'environment, or --vlm-url standin for the offline stand-in')
    kwargs = dict(source=source, model=model, type='VLM', stream=stream)
    if url:
        kwargs.update(base_url=url if url.endswith('/') else url + '/')
        key = os.environ.get(api_key_env) if api_key_env else None
        kwargs.update(api_key=key) if key else kwargs.update(skip_auth=True)
    return OnlineChatModule(**kwargs), server


def make_embed(url: str, model: Optional[str] = None, *, source: str = 'openai',
               api_key_env: Optional[str] = None) -> Tuple[Any, Optional[Any]]:
    """Returns ``(embedding_module, standin_server_or_None)``: a LazyLLM ``OnlineEmbeddingModule`` at an
    OpenAI-compatible ``/v1/embeddings`` endpoint (``url='standin'``: the stand-in's bag-of-words vectors)."""
    from lazyllm import OnlineEmbeddingModule

    server = None
    if url == 'standin':
        from .devtools.standin_vlm import MODEL_NAME, StandinVLMServer
        server = StandinVLMServer().start()
        url, model = server.base_url, model or MODEL_NAME
    kwargs = dict(source=source, url=url if url.endswith('/') else url + '/', model=model, type='embed')
    key = os.environ.get(api_key_env) if api_key_env else None
    kwargs.update(api_key=key) if key else kwargs.update(skip_auth=True)
    return OnlineEmbeddingModule(**kwargs), server
