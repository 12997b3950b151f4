"""Every Python snippet of README.md, run verbatim as a user would after ``pip install``: each in a fresh
process, from a temporary folder outside the repository, with only the installed package importable (not the
checkout's top-level ``pipelines/`` or ``tests/``), ``./pdfs`` of real PDFs and a tiny model at the path the
README names. Caches go under a hidden folder, like the default ``~/.cache``."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.pdfs import make_text_pdf

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = re.findall(r'```python\n(.*?)```', (ROOT / 'README.md').read_text(), flags=re.S)


@pytest.fixture(scope='module')
def user_folder(tmp_path_factory):
    from lazyllm_colpali.devtools import StandinVLMServer
    from lazyllm_colpali.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp('readme-user')
    make_text_pdf(root / 'pdfs' / 'annual report.pdf', ['Revenue grew 12% in 2023.', 'Operating costs by region.'])
    make_text_pdf(root / 'pdfs' / 'manual.pdf', ['Install the pump.', 'Replace the filter every month.'])
    build_tiny_model('colqwen2', root / 'models' / 'colqwen2-v1.0')
    site = root / 'site'   # what pip install puts on sys.path: the package alone
    site.mkdir()
    (site / 'lazyllm_colpali').symlink_to(ROOT / 'lazyllm_colpali')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'LAZYLLM_TRACE_ENABLED')}
    env.update(PYTHONPATH=str(site), LAZYLLM_COLPALI_HOME=str(root / '.cache' / 'lazyllm_colpali'))
    try:   # the README starts it with `lazyllm-colpali standin-vlm --port 8011`
        server = StandinVLMServer(port=8011).start()
    except OSError:
        pytest.skip('port 8011 (the README\'s stand-in VLM port) is in use')
    yield root, env
    server.stop()


def test_the_readme_has_the_lazyllm_snippets():
    assert len(SNIPPETS) >= 3 and any("'colpali_milvus'" in s for s in SNIPPETS)
    assert not any('from pipelines' in s for s in SNIPPETS)


@pytest.mark.parametrize('number', range(len(SNIPPETS)))
def test_readme_snippet_runs_verbatim(user_folder, number):
    root, env = user_folder
    out = subprocess.run([sys.executable, '-c', SNIPPETS[number]], cwd=root, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f'snippet {number}:\n{SNIPPETS[number]}\n{out.stderr[-4000:]}'
    assert 'No indexed page matches' not in out.stdout, out.stdout
    if 'build_search(text)' in SNIPPETS[number]:
        assert '1. annual report.pdf, p. 1' in out.stdout, out.stdout
    if 'build_rag' in SNIPPETS[number]:
        # an answer citing pages, then sources, as plain text (escaping belongs to the chat that renders it)
        assert '[annual report.pdf, p. 1]' in out.stdout and '&#' not in out.stdout, out.stdout
        assert '\nSources\n1. ' in out.stdout, out.stdout
    if '.explain(' in SNIPPETS[number]:
        from PIL import Image
        with Image.open(root / 'match.png') as image:
            assert image.size[0] > 100
