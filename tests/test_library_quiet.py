"""Library use as a new user meets it (issue 20): the README's RAG flow run in a fresh process from a folder
outside the repository, as after ``pip install``. Its answer is plain text (no HTML entities: escaping belongs
to the chat that renders it) and its output carries no third-party noise (the OpenTelemetry import warning,
faiss's ``swigfaiss_*`` ModuleNotFoundError lines, transformers' "Writing model shards" / "Loading weights"
bars, PaliGemma's ``token_type_ids`` warning)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.pdfs import make_text_pdf

ROOT = Path(__file__).resolve().parents[1]
NOISE = ('opentelemetry', 'OpenTelemetry', 'swigfaiss', 'ModuleNotFoundError', 'Writing model shards',
         'Loading weights', 'token_type_ids', 'Traceback', 'Warning', 'warn(')

FLOW = '''
from lazyllm import OnlineChatModule
from lazyllm_colpali.devtools import StandinVLMServer
from lazyllm_colpali.pipelines import build_rag, build_search, hybrid_arm, text_arm, visual_arm

with StandinVLMServer() as server:
    visual = visual_arm('./pdfs', model='tiny:colpali')    # built offline on first use, like the quickstart's
    text = text_arm('./pdfs')
    print(build_search(text)('What was the revenue in 2023?'))
    vlm = OnlineChatModule(source='openai', base_url=server.base_url, model='standin-vlm', type='VLM',
                           skip_auth=True, stream=False)
    rag = build_rag(hybrid_arm(visual, text, weights={'visual': 1.0, 'text': 0.5}), vlm)
    print(rag('What was the revenue in 2023? ("exact" figure)'))
'''


def test_the_readme_rag_flow_answers_in_plain_text_without_third_party_noise(tmp_path):
    make_text_pdf(tmp_path / 'pdfs' / 'annual report.pdf', ['Revenue grew 12% in 2023.', 'Costs by region.'])
    make_text_pdf(tmp_path / 'pdfs' / 'manual.pdf', ['Install the pump.', 'Replace the filter every month.'])
    site = tmp_path / 'site'            # what pip install puts on sys.path: the package alone
    site.mkdir()
    (site / 'lazyllm_colpali').symlink_to(ROOT / 'lazyllm_colpali')
    # a user's environment: none of the settings the CLI or the test runner make
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('LAZYLLM_', 'TRANSFORMERS_', 'HF_HUB_DISABLE', 'DISABLE_TQDM')) and k != 'PYTHONPATH'}
    env.update(PYTHONPATH=str(site), LAZYLLM_COLPALI_HOME=str(tmp_path / '.cache' / 'lazyllm_colpali'),
               HF_HUB_OFFLINE='1')
    out = subprocess.run([sys.executable, '-c', FLOW], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.startswith('1. annual report.pdf, p. 1 (score '), out.stdout[:300]
    # the stand-in VLM echoes the prompt, which lists the pages as [file, p. N]; the question's quotes come back
    assert '[annual report.pdf, p. 1]' in out.stdout and '("exact" figure)' in out.stdout, out.stdout[-2000:]
    assert '&#' not in out.stdout and '&amp;' not in out.stdout and '\nSources\n1. ' in out.stdout
    noisy = [line for line in (out.stdout + out.stderr).splitlines() if any(n in line for n in NOISE)]
    assert not noisy, '\n'.join(noisy[:20])
