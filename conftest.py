"""Root conftest: an offline, sandboxed environment for every test and doctest (the environment is set
before anything imports transformers or LazyLLM)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
_HOME = Path(tempfile.mkdtemp(prefix='lazyllm_colpali_tests_'))
# No model hub here: fail fast instead of retrying for a minute; keep LazyLLM and caches out of $HOME.
os.environ.update({'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
                   'LAZYLLM_HOME': str(_HOME / 'lazyllm'), 'LAZYLLM_COLPALI_HOME': str(_HOME / 'colpali'),
                   'HF_HOME': str(_HOME / 'hf'), 'LAZYLLM_TRACE_ENABLED': 'False'})
sys.path.insert(0, str(ROOT))  # pipelines/ and examples/ import from the repo root

import pytest  # noqa: E402

import lazyllm_colpali  # noqa: E402,F401  (applies the torchvision / tiktoken fixes first)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace, tmp_path):
    # Docstring examples run as tests: give them a scratch folder; 'tiny:colpali' builds offline.
    doctest_namespace['tmp'] = tmp_path


def pytest_sessionfinish(session, exitstatus):
    # Stop Milvus Lite's embedded servers while pytest's log streams are still open (its atexit hook logs).
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_all()
