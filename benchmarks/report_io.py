"""Writing a benchmark's results: one helper for every script here (standard library only, so bench_gpu.py can
use it on a GPU machine that has just torch and transformers)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict


def write_json(path: str | Path, result: Dict[str, Any], announce: bool = True) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
    if announce:
        print(f'JSON written to {path}')
