"""Package-wide settings read from the environment (one place, so defaults are easy to find)."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = 'vidore/colqwen2-v1.0'
DEFAULT_DB = './colpali.db'
DEFAULT_COLLECTION = 'colpali_pages'
# The evaluation harness's arms (here, not in eval/, so `lazyllm-colpali --help` imports nothing heavy).
ALL_ARMS = ('colpali', 'text', 'text-layer', 'ocr', 'layout', 'mineru', 'caption', 'dense', 'colpali+context',
            'hybrid')
DEFAULT_ARMS = ('colpali', 'text', 'layout', 'caption', 'hybrid')


def data_home() -> Path:
    """Where caches live (tiny models, vectors of server-backed collections): LAZYLLM_COLPALI_HOME."""
    return Path(os.environ.get('LAZYLLM_COLPALI_HOME', Path.home() / '.cache' / 'lazyllm_colpali')).expanduser()


def default_model() -> str:
    return os.environ.get('LAZYLLM_COLPALI_MODEL', DEFAULT_MODEL)


def default_db() -> str:
    return os.environ.get('LAZYLLM_COLPALI_DB', DEFAULT_DB)
