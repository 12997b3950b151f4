"""What a collection records about the model that encoded it, so later commands can reuse or refuse it."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from ..errors import ColPaliError


class ModelMismatchError(ColPaliError):
    """A collection was built with one model and is being searched or extended with another."""


def model_identity(encoder) -> Dict[str, Any]:
    """``{name, family, dim, fingerprint}`` of a loaded encoder. The fingerprint hashes the model's config
    (architecture, sizes, projection dim), so a different model of the same dimension is still told apart."""
    name = encoder.model_name
    folder = Path(name).expanduser()
    if not name.startswith('tiny:') and folder.is_dir():
        name = str(folder.resolve())
    config = encoder.model.config.to_json_string(use_diff=False)
    for volatile in ('"transformers_version"', '"_name_or_path"', '"torch_dtype"', '"dtype"'):
        config = '\n'.join(line for line in config.splitlines() if volatile not in line)
    return {'name': name, 'family': encoder.family.name, 'dim': int(encoder.dim),
            'fingerprint': hashlib.sha256(config.encode()).hexdigest()[:16]}


def check_same_model(recorded: Optional[Mapping[str, Any]], current: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ModelMismatchError` when ``current`` is not the model ``recorded`` for ``where``."""
    if not recorded or recorded.get('fingerprint') == current.get('fingerprint'):
        return
    raise ModelMismatchError(
        f'{where} was built with model {recorded.get("name")!r} ({recorded.get("family")}, {recorded.get("dim")}-dim, '
        f'fingerprint {recorded.get("fingerprint")}) but {current.get("name")!r} ({current.get("family")}, '
        f'fingerprint {current.get("fingerprint")}) was given: its scores would be meaningless. Omit --model to use '
        f'the recorded one, use another --collection, or pass --allow-model-change if you really mean it')
