"""Resolving a model name to something loadable without hanging on an unreachable hub."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

from ..errors import ModelNotFoundError
from ..settings import data_home

TINY_PREFIX = 'tiny:'
HUB_ENDPOINT = 'https://huggingface.co'


def how_to_fix(name: str) -> str:
    return (f'Download it on a machine with access (`huggingface-cli download {name} --local-dir ./models/NAME`, '
            f'plus the base model named in its adapter_config.json if it has one), copy the folder here and pass '
            f'--model ./models/NAME (or set LAZYLLM_COLPALI_MODEL). To try the pipeline with no weights at all, use '
            f'--model tiny:colqwen2 (a tiny randomly initialised model: it runs, but its rankings are meaningless).')


def _offline_mode() -> bool:
    return any(os.environ.get(k, '').lower() in ('1', 'true', 'yes', 'on')
               for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'))


def hub_reachable(timeout: float = 3.0) -> bool:
    """One short request: a closed network must give a fast, clear error, not a 46 s retry loop or a hang."""
    import requests

    endpoint = os.environ.get('HF_ENDPOINT', HUB_ENDPOINT)
    try:
        requests.head(endpoint, timeout=timeout, allow_redirects=False)
        return True
    except requests.RequestException:
        return False


def _in_hf_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ('config.json', 'adapter_config.json'):
        found = try_to_load_from_cache(name, filename)
        if isinstance(found, str):
            return True
    return False


def resolve_model(name_or_path: str) -> Tuple[str, bool]:
    """Return ``(source, local_files_only)`` for ``from_pretrained``, or raise ModelNotFoundError at once."""
    if not name_or_path:
        raise ModelNotFoundError('no model given: pass --model NAME_OR_FOLDER (or set LAZYLLM_COLPALI_MODEL)')
    if name_or_path.startswith(TINY_PREFIX):
        return str(tiny_model_folder(name_or_path[len(TINY_PREFIX):])), True
    folder = Path(name_or_path).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise ModelNotFoundError(f'model {name_or_path!r} is a file; pass the folder that holds config.json')
        return str(folder), True
    if name_or_path.startswith(('.', '/', '~')) or name_or_path.count('/') > 1:
        raise ModelNotFoundError(f'model folder {name_or_path!r} does not exist. ' + how_to_fix('vidore/colqwen2-v1.0'))
    if _in_hf_cache(name_or_path):
        return name_or_path, True
    if _offline_mode() or not hub_reachable():
        reason = 'offline mode is set (HF_HUB_OFFLINE)' if _offline_mode() else \
            f'the Hugging Face hub ({os.environ.get("HF_ENDPOINT", HUB_ENDPOINT)}) cannot be reached from this machine'
        raise ModelNotFoundError(f'model {name_or_path!r} is not a local folder and not in the Hugging Face cache, '
                                 f'and {reason}. ' + how_to_fix(name_or_path))
    return name_or_path, False


def tiny_model_folder(family: str) -> Path:
    """A tiny random model of ``family``, built offline once and cached under the data home."""
    from .tiny import build_tiny_model

    folder = data_home() / 'tiny-models' / family
    if not (folder / 'config.json').exists():
        build_tiny_model(family, folder)
    return folder
