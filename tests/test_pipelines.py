"""The ready flows (lazyllm_colpali.pipelines, re-exported by the checkout's pipelines/) and the example
script, run for real on a tiny model."""
import subprocess
import sys
from pathlib import Path

import pytest
from lazyllm.components.formatter import decode_query_with_filepaths

from lazyllm_colpali import ColPaliDocument, ColPaliEmbed
from lazyllm_colpali.pipelines import build_search, build_visual_rag, build_visual_search, hybrid_arm, text_arm

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
    assert answer.startswith('I saw 2 pages.\n\nSources\n1. ') and '**' not in answer
    assert len(seen['files']) == 2 and all(Path(f).is_file() for f in seen['files'])
    assert 'What does the warranty cover?' in seen['query'] and '[file, p. N]' in seen['query']


def test_example_script_runs(tiny_model_dir, pdf_dir, tmp_path):
    out = subprocess.run([sys.executable, 'examples/search_pdfs.py', str(pdf_dir / 'nested'), 'hiring',
                          '--model', str(tiny_model_dir('colpali')), '--db', str(tmp_path / 'e.db')],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '1. memo.pdf, p. 1' in out.stdout


def test_checkout_pipelines_folder_re_exports_the_package_flows():
    import pipelines.arms
    import pipelines.flows
    import pipelines.visual_rag

    import lazyllm_colpali.pipelines as installed
    assert pipelines.arms.hybrid_arm is installed.hybrid_arm and pipelines.flows.build_rag is installed.build_rag
    assert pipelines.visual_rag.build_visual_search is installed.build_visual_search


def test_text_arm_works_under_a_hidden_folder(pdf_dir, tmp_path):
    # Regression: LazyLLM skips files under any ".name" folder when it scans a dataset path, and the default
    # workdir is under ~/.cache, so the text arm found nothing ("No indexed page matches this question.").
    arm = text_arm(str(pdf_dir), workdir=str(tmp_path / '.hidden' / 'text'))
    listing = build_search(arm)('replace the filter every month')
    assert listing.splitlines()[0].startswith('1. manual.pdf, p. 2'), listing
    node = arm('replace the filter every month', topk=1)[0]
    assert 'filter' in node.get_content().lower() and node.metadata['page'] == 2   # text nodes carry the text


def test_hybrid_of_visual_and_text_arms_names_them_and_leaves_them_untouched(doc, pdf_dir, tmp_path):
    from lazyllm_colpali import ColPaliRetriever

    visual = ColPaliRetriever(doc, topk=3)
    text = text_arm(str(pdf_dir), workdir=str(tmp_path / 'text'), topk=3)
    hybrid = hybrid_arm(visual, text, weights={'visual': 1.0, 'text': 0.5}, topk=3)
    assert sorted(hybrid.arms) == ['text', 'visual']
    pages = hybrid('replace the filter every month')
    assert pages[0].metadata['file_name'] == 'manual.pdf' and pages[0].metadata['page'] == 2
    assert pages[0].metadata['ranks']['text'] == 1
    assert visual.output_format is None and text.output_format is None   # not switched to another format
    assert isinstance(visual('filter', None, topk=1), list) and isinstance(text('filter', None, topk=1), list)
    # filters mean the same for every arm
    only_report = hybrid('replace the filter every month', {'file': 'annual report.pdf'})
    assert only_report and {n.metadata['file_name'] for n in only_report} == {'annual report.pdf'}
