"""Shared fixtures: an offline environment, tiny real models built from configs, real generated PDFs."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


from tests.helpers.pdfs import make_bad_files, make_text_pdf


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory):
    """Build tiny, randomly initialised but architecturally real models once per session."""
    from lazyllm_colpali.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp('tiny-models')
    built = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(family, root / family)
        return built[family]
    return get


@pytest.fixture(scope='session')
def colpali_encoder(tiny_model_dir):
    from lazyllm_colpali import ColPaliEncoder

    return ColPaliEncoder(str(tiny_model_dir('colpali')), device='cpu', batch_size=2).load()


@pytest.fixture(scope='session')
def colqwen2_encoder(tiny_model_dir):
    from lazyllm_colpali import ColPaliEncoder

    return ColPaliEncoder(str(tiny_model_dir('colqwen2')), device='cpu', batch_size=2).load()


@pytest.fixture(scope='session')
def pdf_dir(tmp_path_factory):
    """Three real born-digital PDFs (text layer) with 2, 3 and 1 pages."""
    root = tmp_path_factory.mktemp('pdfs')
    make_text_pdf(root / 'annual report.pdf', ['Revenue grew 12% in 2023.', 'Operating costs by region.'])
    make_text_pdf(root / 'manual.pdf', ['Install the pump.', 'Replace the filter every month.', 'Warranty terms.'])
    make_text_pdf(root / 'nested' / 'memo.pdf', ['Quarterly memo about hiring.'])
    return root


@pytest.fixture
def bad_files(tmp_path):
    return make_bad_files(tmp_path / 'bad')


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / 'milvus' / 'colpali.db')


@pytest.fixture(scope='session')
def corpus_dir():
    from lazyllm_colpali.devtools.corpus import real_corpus

    corpus = real_corpus()
    if corpus is None:
        pytest.skip('real corpus not found (../shared/corpus/real or LAZYLLM_COLPALI_REAL_CORPUS)')
    return corpus


@pytest.fixture(scope='session')
def sample_dataset(tmp_path_factory):
    """The built-in evaluation sample: generated report/manual/brief PDFs, charts, and a scanned memo."""
    from lazyllm_colpali.eval import build_sample

    return build_sample(tmp_path_factory.mktemp('sample'))


@pytest.fixture
def standin_vlm():
    """A real local HTTP server speaking the OpenAI chat API (what a remote VLM would be)."""
    from lazyllm_colpali.devtools import StandinVLMServer

    with StandinVLMServer() as server:
        yield server


def chat_module(server, stream: bool = False):
    """LazyLLM's own online chat module, pointed at a local server."""
    from lazyllm import OnlineChatModule

    return OnlineChatModule(source='openai', base_url=server.base_url, model='standin-vlm', skip_auth=True,
                            type='VLM', stream=stream)
