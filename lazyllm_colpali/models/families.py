"""The colpali-engine model families we load, and how a name or folder is mapped to one."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str        # attribute of colpali_engine.models
    processor_class: str
    architectures: Tuple[str, ...]   # config.json "architectures" values of checkpoints of this family
    name_pattern: str       # regex matched against hub names / folder names when no config says more


# Order matters for name matching: the more specific pattern first (colqwen2.5 before colqwen2).
FAMILIES: Tuple[Family, ...] = (
    Family('colqwen2_5', 'ColQwen2_5', 'ColQwen2_5_Processor', ('ColQwen2_5',), r'colqwen2[._]?5'),
    Family('colqwen2', 'ColQwen2', 'ColQwen2Processor', ('ColQwen2',), r'colqwen2'),
    Family('colqwen3', 'ColQwen3', 'ColQwen3Processor', ('ColQwen3',), r'colqwen3'),
    Family('colidefics3', 'ColIdefics3', 'ColIdefics3Processor', ('ColIdefics3',), r'colsmol|colidefics3'),
    Family('colgemma3', 'ColGemma3', 'ColGemmaProcessor3', ('ColGemma3',), r'colgemma'),
    Family('colmodernvbert', 'ColModernVBert', 'ColModernVBertProcessor', ('ColModernVBert',), r'modernvbert'),
    Family('colpali', 'ColPali', 'ColPaliProcessor', ('ColPali',), r'colpali'),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)


def family_by_name(name: str, families: Sequence[Any] = FAMILIES, what: str = 'model family') -> Any:
    key = name.lower().replace('.', '_').replace('-', '_')
    for family in families:
        if family.name == key:
            return family
    raise UnsupportedModelError(f'unknown {what} {name!r}; known: {", ".join(f.name for f in families)}')


def get_family(name: str) -> Family:
    return family_by_name(name)


def family_from_architectures(architectures, families: Sequence[Any] = FAMILIES) -> Optional[Any]:
    for family in families:
        if any(a in family.architectures for a in architectures or ()):
            return family
    return None


def family_from_name(name: str, families: Sequence[Any] = FAMILIES) -> Optional[Any]:
    lowered = name.lower()
    for family in families:
        if re.search(family.name_pattern, lowered):
            return family
    return None


def detect_family(name_or_path: str) -> Family:
    """Find the family of a local folder (config.json / adapter_config.json) or a hub name."""
    folder = Path(name_or_path).expanduser()
    hints = [name_or_path]
    if folder.is_dir():
        config = folder / 'config.json'
        if config.exists():
            family = family_from_architectures(json.loads(config.read_text()).get('architectures'))
            if family:
                return family
        adapter = folder / 'adapter_config.json'
        if adapter.exists():  # LoRA checkpoints (e.g. vidore/colqwen2-v1.0) name their base model
            base = json.loads(adapter.read_text()).get('base_model_name_or_path') or ''
            if base and (Path(base).expanduser() / 'config.json').is_file():   # a local base says it exactly
                return detect_family(base)
            hints.insert(0, base)
    for hint in hints:
        family = family_from_name(hint)
        if family:
            return family
    raise UnsupportedModelError(
        f'cannot tell which colpali-engine family {name_or_path!r} is (no known "architectures" in its '
        f'config.json and no family in its name); pass family= / --family one of {", ".join(FAMILY_NAMES)}')
