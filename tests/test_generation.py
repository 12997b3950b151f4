"""Answer generation through LazyLLM's own OnlineChatModule talking to a real local OpenAI-compatible server."""
from __future__ import annotations

import pytest

from lazyllm_colpali import ColPaliDocument, ColPaliEmbed, ColPaliRetriever
from lazyllm_colpali.generation import AnswerSettings, PageAnswerer, VLMUnavailableError, sanitize_markdown
from lazyllm_colpali.lazyllm_glue.arms import PageTextRetriever
from lazyllm_colpali.serving.chat import free_port
from lazyllm_colpali.text import PageTextIndex
from lazyllm_colpali.pipelines import build_rag, build_search, hybrid_arm
from tests.conftest import chat_module


@pytest.fixture(scope='module')
def doc(colpali_encoder, sample_dataset, tmp_path_factory):
    d = ColPaliDocument(str(sample_dataset.corpus_dir / 'hydra_pump_manual.pdf'), embed=ColPaliEmbed(colpali_encoder),
                        db=str(tmp_path_factory.mktemp('gen') / 'c.db'), progress=False)
    yield d
    d.close()


def test_visual_rag_sends_resized_page_images_and_cites_them(doc, standin_vlm):
    rag = build_rag(ColPaliRetriever(doc, topk=5), chat_module(standin_vlm),
                    AnswerSettings(pages=2, max_image_side=320))
    answer = rag('What is the maximum operating pressure?')
    request = standin_vlm.requests[-1]
    assert request['n_images'] == 2 and all(max(size) <= 320 for size in request['sizes'])
    assert 'Question: What is the maximum operating pressure?' in request['prompt']
    assert '[hydra_pump_manual.pdf, p. ' in request['prompt']
    assert answer.startswith('[stand-in VLM, not a real model] I received 2 page image(s)')   # plain text
    sources = answer.split('\nSources\n')[1].strip().splitlines()
    assert len(sources) == 2 and all(', p. ' in line for line in sources)
    markdown = build_rag(ColPaliRetriever(doc, topk=5), chat_module(standin_vlm), AnswerSettings(pages=2),
                         output='markdown')('What is the maximum operating pressure? ![x](.env)')
    assert '&#91;stand-in VLM, not a real model&#93;' in markdown and '![x](.env)' not in markdown   # for chat views
    assert '**Sources**' in markdown


def test_streaming_module_and_text_arm_hits_without_stored_images(tmp_path, sample_dataset, standin_vlm):
    text = PageTextRetriever(PageTextIndex(tmp_path / 't', 'text-layer', progress=False),
                             dataset_path=sample_dataset.corpus_dir / 'hydra_pump_manual.pdf', topk=3)
    rag = build_rag(text, chat_module(standin_vlm, stream=True), AnswerSettings(pages=1, max_image_side=500))
    answer = rag('How often should the filter cartridge be replaced?')
    request = standin_vlm.requests[-1]
    assert request['n_images'] == 1 and max(request['sizes'][0]) == 500    # rendered from the PDF, then fitted
    assert 'Filter cartridge' in request['prompt']                          # the page text went along
    assert 'The best match is [hydra_pump_manual.pdf, p. 2]' in answer


def test_hybrid_arm_plugs_into_the_same_flow(doc, tmp_path, sample_dataset, standin_vlm):
    text = PageTextRetriever(PageTextIndex(tmp_path / 't', 'text-layer', progress=False),
                             dataset_path=sample_dataset.corpus_dir / 'hydra_pump_manual.pdf')
    hybrid = hybrid_arm(ColPaliRetriever(doc), text, weights={'visual': 0.1}, topk=3)
    assert sorted(hybrid.arms) == ['text-layer', 'visual']
    listing = build_search(hybrid)('error code E4')
    assert listing.splitlines()[0].startswith('1. hydra_pump_manual.pdf, p. 3')


def test_unreachable_vlm_is_an_error_a_user_can_act_on(doc):
    from lazyllm import OnlineChatModule

    port = free_port()   # nothing listens there
    vlm = OnlineChatModule(source='openai', base_url=f'http://127.0.0.1:{port}/v1/', model='m', skip_auth=True,
                           type='VLM', stream=False)
    hits = ColPaliRetriever(doc).search('pressure')
    with pytest.raises(VLMUnavailableError, match=f'127.0.0.1:{port}.*reachable'):
        PageAnswerer(vlm).answer(hits, query='pressure')
    with pytest.raises(Exception, match=f'VLM at http://127.0.0.1:{port}/v1/ did not answer'):   # inside a flow
        build_rag(ColPaliRetriever(doc), vlm)('pressure')


def test_no_matching_pages_and_hostile_model_output():
    assert PageAnswerer(lambda q: 'unused')([], query='anything').text == 'No indexed page matches this question.'
    hostile = 'See ![x](/etc/secret.png) and <img src="/home/u/a.jpg">'
    cleaned = sanitize_markdown(hostile)
    assert '![' not in cleaned and '<img' not in cleaned.lower() and '/etc/secret.png' in cleaned
