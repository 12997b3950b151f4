"""The ready flows in pipelines/ and the example script, run for real on a tiny model."""
import subprocess
import sys
from pathlib import Path

import pytest
from lazyllm.components.formatter import decode_query_with_filepaths

from lazyllm_colpali import ColPaliDocument, ColPaliEmbed
from pipelines.visual_rag import build_visual_rag, build_visual_search

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def doc(tiny_model_dir, pdf_dir, tmp_path_factory):
    d = ColPaliDocument(str(pdf_dir), embed=ColPaliEmbed(str(tiny_model_dir('colpali'))),
                        db=str(tmp_path_factory.mktemp('ppl') / 'c.db'), dpi=40, progress=False)
    yield d
    d.close()


def test_visual_search_flow_cites_pages(doc):
    text = build_visual_search(doc, topk=3)('monthly filter replacement')
    lines = text.splitlines()
    assert len(lines) == 3 and lines[0].startswith('1. ') and ', p. ' in lines[0]


def test_visual_rag_flow_hands_page_images_to_the_model(doc):
    seen = {}

    def vlm(query):  # stands in for a remote VLM; the HTTP-level test lives with the serving issue
        seen.update(decode_query_with_filepaths(query))
        return f'I saw {len(seen["files"])} pages.'

    answer = build_visual_rag(doc, llm=vlm, topk=2)('What does the warranty cover?')
    assert answer.startswith('I saw 2 pages.') and '**Sources**' in answer
    assert len(seen['files']) == 2 and all(Path(f).is_file() for f in seen['files'])
    assert 'What does the warranty cover?' in seen['query'] and '[file, p. N]' in seen['query']


def test_example_script_runs(tiny_model_dir, pdf_dir, tmp_path):
    out = subprocess.run([sys.executable, 'examples/search_pdfs.py', str(pdf_dir / 'nested'), 'hiring',
                          '--model', str(tiny_model_dir('colpali')), '--db', str(tmp_path / 'e.db')],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '1. memo.pdf, p. 1' in out.stdout
