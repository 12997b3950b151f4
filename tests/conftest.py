"""Shared fixtures: an offline environment, tiny real models built from configs, real generated PDFs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _real_corpus() -> Path:
    # $LAZYLLM_COLPALI_CORPUS, else shared/corpus/real beside the checkout or beside a folder above it (a
    # worktree at /work/wt/X finds /work/shared/corpus/real like /work/main does)
    if os.environ.get('LAZYLLM_COLPALI_CORPUS'):
        return Path(os.environ['LAZYLLM_COLPALI_CORPUS'])
    for folder in ROOT.parents:
        if (folder / 'shared' / 'corpus' / 'real').is_dir():
            return folder / 'shared' / 'corpus' / 'real'
    return ROOT.parent / 'shared' / 'corpus' / 'real'


CORPUS = _real_corpus()


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


# -- real Milvus servers (milvus-lite's gRPC server; Milvus 2.3.5 standalone from scripts/setup-milvus.sh) -------
@pytest.fixture(scope='module')
def lite_server(tmp_path_factory):
    from lazyllm_colpali.devtools.milvus_servers import free_port, start_lite_server

    port = free_port()
    proc = start_lite_server(tmp_path_factory.mktemp('lite-server'), port)
    yield f'http://127.0.0.1:{port}'
    proc.kill()
    proc.wait(timeout=30)


def standalone_exe():
    from lazyllm_colpali.devtools.milvus_servers import milvus_standalone_exe

    exe = milvus_standalone_exe()
    if exe is None:
        if os.environ.get('CI'):
            pytest.fail('Milvus 2.3.5 standalone is not installed: run scripts/setup-milvus.sh')
        pytest.skip('Milvus 2.3.5 standalone is not installed (scripts/setup-milvus.sh)')
    return exe


@pytest.fixture(scope='session')
def milvus23_server(tmp_path_factory):
    """One Milvus 2.3.5 per session: its embedded etcd always takes port 2380, so two cannot run at once."""
    from lazyllm_colpali.devtools.milvus_servers import MilvusStandalone

    exe = standalone_exe()
    data = tmp_path_factory.mktemp('milvus23') / 'data'
    data.mkdir()
    server = MilvusStandalone(exe, data).start()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def milvus23(milvus23_server):
    if milvus23_server.proc is None:   # a restart test that failed while it was down
        milvus23_server.start()
    return milvus23_server.uri


@pytest.fixture(params=['lite-server', 'milvus-2.3'])
def server_uri(request):
    return request.getfixturevalue('lite_server' if request.param == 'lite-server' else 'milvus23')


@pytest.fixture(scope='module', params=['lite-server', 'milvus-2.3'])
def restartable_server(request, tmp_path_factory):
    """A server tests may kill -9 and start again (same port, same data): milvus-lite's, of this module's
    own, or the session's Milvus 2.3.5 (the only one this machine can run)."""
    from lazyllm_colpali.devtools.milvus_servers import LiteServer

    if request.param == 'milvus-2.3':
        yield request.getfixturevalue('milvus23_server')
        return
    server = LiteServer(tmp_path_factory.mktemp('restartable-lite') / 'data').start()
    yield server
    server.stop()


@pytest.fixture
def restartable(restartable_server):
    if restartable_server.proc is None:   # a test that failed while its server was down
        restartable_server.start()
    # A restarted Milvus 2.3 loads every collection that was loaded before it answers: with the whole
    # session's collections that takes minutes here, so earlier tests' collections are released first.
    from pymilvus import MilvusClient

    client = MilvusClient(uri=restartable_server.uri, timeout=60)
    for name in client.list_collections():
        client.release_collection(name)
    client.close()
    return restartable_server
