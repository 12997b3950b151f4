"""LoRA adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``): which base they name, how
they load on top of it, and the fingerprint that tells an adapted model from its base.

A folder written by ``lazyllm-colpali finetune`` (or any PEFT adapter of a colpali-engine family) is taken
wherever ``--model`` is: the base named in ``adapter_config.json`` is resolved the way ``--model`` is (a hub
name, a local folder or ``tiny:FAMILY``), the adapter is applied and merged for inference, and the model's
config gains ``ADAPTER_KEY`` (a hash of the adapter's weights), so a collection indexed with the base refuses
the adapter and the other way round. A merged folder (``finetune --merge``) keeps that key, so it matches
the adapter it came from.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from ..errors import UnsupportedModelError

ADAPTER_CONFIG = 'adapter_config.json'
ADAPTER_WEIGHTS = ('adapter_model.safetensors', 'adapter_model.bin')
ADAPTER_KEY = 'lazyllm_colpali_adapter'   # config attribute: sha256 of the adapter weights applied


def is_adapter_folder(path: str | Path) -> bool:
    """A folder holding a PEFT adapter and no full model of its own."""
    folder = Path(path).expanduser()
    return (folder / ADAPTER_CONFIG).is_file() and not (folder / 'config.json').is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder names (``base_model_name_or_path``), as ``--model`` would take it."""
    config_file = Path(path).expanduser() / ADAPTER_CONFIG
    try:
        base = json.loads(config_file.read_text(encoding='utf-8')).get('base_model_name_or_path')
    except (OSError, ValueError) as e:
        raise UnsupportedModelError(f'{config_file}: not a readable adapter config ({e})') from e
    if not base or not isinstance(base, str):
        raise UnsupportedModelError(f'{config_file}: names no base model (base_model_name_or_path)')
    if not base.startswith('tiny:') and not Path(base).expanduser().is_absolute() and \
            (config_file.parent / base).is_dir():   # a base given relative to the adapter folder
        base = str((config_file.parent / base).resolve())
    return base


def adapter_fingerprint(path: str | Path) -> str:
    """sha256 of the adapter's weights file (what the adapter changes) - its identity."""
    folder = Path(path).expanduser()
    for name in ADAPTER_WEIGHTS:
        weights = folder / name
        if weights.is_file():
            digest = hashlib.sha256()
            with open(weights, 'rb') as f:
                for chunk in iter(lambda: f.read(1 << 20), b''):
                    digest.update(chunk)
            return digest.hexdigest()
    raise UnsupportedModelError(f'adapter folder {folder} has no {" or ".join(ADAPTER_WEIGHTS)}; is the copy complete?')


def load_adapted_model(model_class: Any, base_source: str, adapter_dir: str | Path, *, merge: bool = True,
                       trainable: bool = False, **kwargs: Any) -> Any:
    """``model_class.from_pretrained(base_source)`` with the adapter of ``adapter_dir`` applied; merged into
    the weights (inference: no LoRA overhead) unless ``trainable`` (training goes on from the adapter)."""
    from peft import PeftModel

    model = model_class.from_pretrained(base_source, **kwargs)
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    if trainable:
        return model
    model = model.merge_and_unload() if merge else model
    mark_adapter(model, adapter_fingerprint(adapter_dir))
    return model


def mark_adapter(model: Any, fingerprint: str) -> None:
    """Record the adapter in the model's config (it enters the model's fingerprint, and a merged copy keeps it)."""
    config = getattr(model, 'config', None)
    if config is None:
        return
    earlier = getattr(config, ADAPTER_KEY, None)   # an adapter trained on a merged, already adapted model
    if earlier and earlier != fingerprint:
        fingerprint = hashlib.sha256(f'{earlier}+{fingerprint}'.encode()).hexdigest()
    setattr(config, ADAPTER_KEY, fingerprint)


def applied_adapter(model: Any) -> Optional[str]:
    config = getattr(model, 'config', None)
    return getattr(config, ADAPTER_KEY, None) if config is not None else None
