"""Where the real documents for tests and benchmarks are: ``../shared/corpus/real`` next to the checkout,
also from a worktree one folder deeper (``/work/wt/NAME``), or the folder ``LAZYLLM_COLPALI_REAL_CORPUS`` names."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]


def real_corpus() -> Optional[Path]:
    """The real-corpus folder, or None where this machine has none (tests skip, benchmarks say so)."""
    named = os.environ.get('LAZYLLM_COLPALI_REAL_CORPUS')
    candidates = [Path(named)] if named else []
    candidates += [parent / 'shared' / 'corpus' / 'real' for parent in ROOT.parents[:2]]
    return next((c for c in candidates if c.is_dir()), None)
