"""Multi-hop retrieval around real arms on real generated PDFs: chains found that one search misses, the loop's
stopping rules, chain metrics against hand-computed values, VLM bridges through a real HTTP server, the
concept-chain generator, and the CLI / search API hooks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lazyllm_colpali.eval import from_parts, format_table, run_eval
from lazyllm_colpali.eval.report import write_chain_chart
from lazyllm_colpali.eval.concept_chains import build_concept_chains, load_chains
from lazyllm_colpali.lazyllm_glue.arms import PageTextRetriever
from lazyllm_colpali.multihop import MultiHopRetriever, VLMBridges
from lazyllm_colpali.multihop.terms import words
from lazyllm_colpali.text import PageTextIndex
from lazyllm_colpali.text.extract import TextLayerExtractor
from tests.conftest import chat_module
from tests.helpers.pdfs import make_text_pdf

# A chain of three definitions (Veltrix score -> Quorra framework -> Dunmore algorithm) and an unrelated page.
TINY = {'a.pdf': 'The Veltrix score is a rating standard. It is built on the Quorra framework.',
        'b.pdf': 'The Quorra framework is a weighting scheme. It relies on the Dunmore algorithm.',
        'c.pdf': 'The Dunmore algorithm is a pairwise sorting method.',
        'd.pdf': 'Pump maintenance manual: replace the filter every month.'}
QUESTION = 'What is the Veltrix score built on?'


@pytest.fixture(scope='module')
def tiny_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_chain')
    for name, text in TINY.items():
        make_text_pdf(root / 'corpus' / name, [text])
    (root / 'queries.jsonl').write_text(json.dumps({'query_id': 'q1', 'query': QUESTION}) + '\n'
                                        + json.dumps({'query_id': 'q2', 'query': 'pump filter'}) + '\n')
    (root / 'qrels.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in (
        {'query_id': 'q1', 'page': 'a.pdf#1', 'score': 1, 'hop': 1},
        {'query_id': 'q1', 'page': 'b.pdf#1', 'score': 1, 'hop': 2},
        {'query_id': 'q1', 'page': 'c.pdf#1', 'score': 1, 'hop': 3},
        {'query_id': 'q2', 'page': 'd.pdf#1', 'score': 1})))
    return root


def text_arm(corpus: Path, workdir: Path, topk: int = 10) -> PageTextRetriever:
    return PageTextRetriever(PageTextIndex(workdir, 'text-layer', progress=False), dataset_path=corpus, topk=topk)


def names(hits):
    return [h.file_name for h in hits]


def test_hops_follow_the_chain_and_stop_when_no_bridge_is_left(tiny_chain, tmp_path):
    arm = text_arm(tiny_chain / 'corpus', tmp_path / 'text')
    assert names(arm.search(QUESTION)) == ['a.pdf']                 # one search finds the first link only
    result = MultiHopRetriever(arm, hops=4).search_with_trace(QUESTION)
    assert names(result.hits) == ['a.pdf', 'b.pdf', 'c.pdf']
    assert [(h.metadata['hop'], h.metadata.get('bridge'), h.metadata.get('bridge_from', '')[-6:])
            for h in result.hits] == [(1, None, ''), (2, 'quorra framework', 'p00001'), (3, 'dunmore algorithm',
                                                                                          'p00001')]
    assert [h.bridges for h in result.hops] == [[], ['quorra framework'], ['dunmore algorithm']]
    assert result.searches == 3 and result.stopped == 'no bridge'  # c.pdf points nowhere new: no 4th search
    assert [h.score for h in result.hits] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert result.hits[1].metadata['arm_score'] > 0
    one = MultiHopRetriever(arm, hops=1).search_with_trace(QUESTION)
    assert names(one.hits) == ['a.pdf'] and one.searches == 1


def test_a_hop_that_finds_nothing_new_stops_the_loop(tiny_chain, tmp_path):
    arm = text_arm(tiny_chain / 'corpus', tmp_path / 'text')
    chain = MultiHopRetriever(arm, hops=3)
    # The bridge exists in the collection (b.pdf), but the filter keeps every search to a.pdf and d.pdf.
    result = chain.search_with_trace(QUESTION, {'file': ['a.pdf', 'd.pdf']})
    assert names(result.hits) == ['a.pdf']
    assert result.stopped == 'nothing new' and result.searches == 2
    assert [(h.number, h.bridges, h.new_pages) for h in result.hops] == [
        (1, [], [result.hits[0].page_id]), (2, ['quorra framework'], [])]


def test_multihop_composes_in_lazyllm_flows_and_build_rag(tiny_chain, tmp_path, standin_vlm):
    import lazyllm

    from lazyllm_colpali.pipelines import build_rag, build_search, multihop_arm

    chain = multihop_arm(text_arm(tiny_chain / 'corpus', tmp_path / 'text'), hops=3)
    with lazyllm.pipeline() as ppl:
        ppl.retrieve = chain
        ppl.cite = lambda nodes: [(n.metadata['file_name'], n.metadata['hop'], n.metadata.get('bridge')) for n in nodes]
    assert ppl(QUESTION) == [('a.pdf', 1, None), ('b.pdf', 2, 'quorra framework'), ('c.pdf', 3, 'dunmore algorithm')]
    assert build_search(chain)(QUESTION).splitlines()[2].startswith('3. c.pdf, p. 1')
    answer = build_rag(chain, chat_module(standin_vlm))(QUESTION)
    assert '[c.pdf, p. 1]' in standin_vlm.requests[-1]['prompt'] and '3. c.pdf, p. 1' in answer
    assert chain.arm_name == 'text-layer-multihop'


def test_vlm_bridges_through_a_real_http_server(tiny_chain, tmp_path, standin_vlm):
    arm = text_arm(tiny_chain / 'corpus', tmp_path / 'text')
    chain = MultiHopRetriever(arm, hops=3, bridges=VLMBridges(chat_module(standin_vlm), n=1))
    result = chain.search_with_trace(QUESTION)
    asked = [r for r in standin_vlm.requests if '[bridge-concepts]' in r['prompt']]
    assert len(asked) == 2 and all(r['n_images'] == 1 for r in asked)          # it saw the page images
    assert 'Question: What is the Veltrix score built on?' in asked[0]['prompt']
    assert names(result.hits) == ['a.pdf', 'b.pdf', 'c.pdf']
    assert [h.metadata.get('bridge') for h in result.hits] == [None, 'quorra', 'dunmore']
    standin_vlm.fail_first = 10 ** 6                     # a VLM that stops answering ends the loop, not the search
    failed = chain.search_with_trace(QUESTION)
    assert names(failed.hits) == ['a.pdf'] and failed.stopped.startswith('the VLM did not name bridges')


def test_chain_metrics_match_hand_computed_values(tiny_chain, tmp_path):
    dataset = from_parts(tiny_chain / 'corpus', tiny_chain / 'queries.jsonl', tiny_chain / 'qrels.jsonl')
    assert dataset.chain_hops == {'q1': {'a.pdf#1': 1, 'b.pdf#1': 2, 'c.pdf#1': 3}}
    report = run_eval(dataset, ['text-layer-multihop'], topk=10, workdir=tmp_path / 'work', multihop={'hops': 3})
    by_arm = {a.arm: a for a in report.arms}
    assert list(by_arm) == ['text-layer', 'text-layer-multihop']                # the base arm runs beside it
    # single-shot: q1 finds a.pdf only (1 of 3 links), q2 finds d.pdf; one search per query
    assert by_arm['text-layer'].chain == {'chain_queries': 1, 'all@10': 0.0, 'R@10 h1': 1.0, 'R@10 h2': 0.0,
                                          'R@10 h3': 0.0, 'searches': 1.0}
    assert by_arm['text-layer'].metrics['recall@10'] == pytest.approx((1 / 3 + 1) / 2)
    # multi-hop: q1 a -> b -> c in 3 searches; q2 has no bridge (1 search)
    assert by_arm['text-layer-multihop'].chain == {'chain_queries': 1, 'all@10': 1.0, 'R@10 h1': 1.0,
                                                   'R@10 h2': 1.0, 'R@10 h3': 1.0, 'searches': 2.0}
    assert by_arm['text-layer-multihop'].metrics['recall@10'] == 1.0
    table = format_table(report)
    assert '| all@10 | R@10 h1 | R@10 h2 | R@10 h3 | searches |' in table.replace('  ', ' ').replace('  ', ' ')
    assert write_chain_chart(report, tmp_path / 'chains.png').stat().st_size > 10_000
    with pytest.raises(ValueError, match='unknown arms'):
        run_eval(dataset, ['nope-multihop'], workdir=tmp_path / 'work')


def test_generated_chains_are_complete_unambiguous_and_seeded(tmp_path):
    dataset = build_concept_chains(tmp_path / 'chains', chain_lengths=(2, 3, 4), chains_per_length=2,
                                   distractors=6, image_links=1, mentions=1)
    chains = load_chains(tmp_path / 'chains')
    assert [len(c.terms) for c in chains] == [2, 2, 3, 3, 4, 4]
    texts = {}
    for pdf in sorted(dataset.corpus_dir.glob('*.pdf')):
        for number, text in TextLayerExtractor().pages(pdf):
            texts[f'{pdf.name}#{number}'] = set(words(text))
    for chain in chains:
        gold = dataset.qrels[chain.query_id]
        assert set(gold) == {chain.leaderboard, *chain.definitions} and all(p in texts for p in gold)
        assert sorted(dataset.chain_hops[chain.query_id].values()) == [1] + list(range(1, len(chain.terms) + 1))
        assert chain.terms[0].phrase in dataset.queries[chain.query_id]
        assert 'table' in chain.forms
        # every bridge term occurs in the text of exactly the pages it should, and nowhere else
        for name, pages in chain.expected_text_pages().items():
            assert {key for key, ws in texts.items() if name.lower() in ws} == pages, (chain.query_id, name)
    linked = [c for c in chains if c.image_link is not None]
    assert len(linked) == 3 and all(c.forms[c.image_link] == 'figure' for c in linked)
    # the image-only link is really in the figure: OCR the embedded image of one such page
    chain = linked[0]
    page_key = chain.definitions[chain.image_link]
    hidden = chain.terms[chain.image_link + 1].name
    assert hidden.lower() not in texts[page_key]
    assert hidden in _ocr_embedded_image(dataset.corpus_dir / page_key.split('#')[0], int(page_key.split('#')[1]))
    # same seed and sizes, same benchmark; another seed, another one
    small = dict(chain_lengths=(2,), chains_per_length=1, distractors=2)
    first = build_concept_chains(tmp_path / 's1', **small)
    second = build_concept_chains(tmp_path / 's2', **small)
    assert first.queries == second.queries
    assert (tmp_path / 's1' / 'qrels.jsonl').read_text() == (tmp_path / 's2' / 'qrels.jsonl').read_text()
    assert first.queries != build_concept_chains(tmp_path / 's3', seed=1, **small).queries
    with pytest.raises(ValueError, match='chain lengths'):
        build_concept_chains(tmp_path / 'bad', chain_lengths=(1,))
    # a folder of someone else's PDFs is never overwritten; an interrupted run of ours is simply redone
    make_text_pdf(tmp_path / 'mine' / 'corpus' / 'thesis.pdf', ['My thesis.'])
    with pytest.raises(ValueError, match='did not write'):
        build_concept_chains(tmp_path / 'mine', **small)
    assert (tmp_path / 'mine' / 'corpus' / 'thesis.pdf').exists()
    (tmp_path / 's1' / 'chains.json').unlink()                       # as if killed before the manifest
    assert build_concept_chains(tmp_path / 's1', **small).queries == first.queries


def _ocr_embedded_image(pdf: Path, page_number: int) -> str:
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    from lazyllm_colpali.text.extract import OcrExtractor

    doc = pdfium.PdfDocument(str(pdf))
    try:
        images = [obj for obj in doc[page_number - 1].get_objects() if obj.type == raw.FPDF_PAGEOBJ_IMAGE]
        return OcrExtractor().ocr_image(images[0].get_bitmap().to_pil())
    finally:
        doc.close()


def test_multihop_finds_three_link_chains_that_single_shot_misses(tmp_path):
    dataset = build_concept_chains(tmp_path / 'chains', chain_lengths=(3,), chains_per_length=2, distractors=8,
                                   image_links=0)
    arm = text_arm(dataset.corpus_dir, tmp_path / 'text', topk=10)
    chain = MultiHopRetriever(arm, hops=3)
    for qid, question in dataset.queries.items():
        gold = set(dataset.qrels[qid])
        single = {dataset.page_key(h.source, h.page) for h in arm.search(question)}
        result = chain.search_with_trace(question)
        multi = {dataset.page_key(h.source, h.page) for h in result.hits}
        assert not gold <= single, qid                              # one search misses part of the chain
        assert gold <= multi, (qid, sorted(gold - multi), [h.bridges for h in result.hops])
        assert result.searches <= 5


def test_cli_search_hops_and_the_api_field(tiny_chain, tiny_model_dir, tmp_path, colpali_encoder):
    from lazyllm_colpali import ColPaliIndex, MilvusMultiVectorStore
    from lazyllm_colpali.serving.api import create_app
    from tests.helpers.servers import serve_in_thread

    db = tmp_path / 'v.db'
    cli = [sys.executable, '-m', 'lazyllm_colpali.cli']
    model = str(tiny_model_dir('colpali'))
    subprocess.run([*cli, 'index', str(tiny_chain / 'corpus'), '--model', model, '--db', str(db), '--dpi', '40'],
                   check=True, capture_output=True, timeout=300)
    out = subprocess.run([*cli, 'search', QUESTION, '--db', str(db), '--hops', '3', '-k', '2', '--file', 'a.pdf'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'hop 1' in out.stdout and '2 searches in 2 hops (stopped: nothing new)' in out.stdout
    bad = subprocess.run([*cli, 'search', QUESTION, '--db', str(db), '--hops', '0'], capture_output=True, text=True)
    assert bad.returncode != 0 and '--hops must be between 1 and 8' in bad.stderr

    store = MilvusMultiVectorStore(str(db), dim=colpali_encoder.dim)
    try:
        with serve_in_thread(create_app(ColPaliIndex(colpali_encoder, store, progress=False))) as url:
            body = {'query': QUESTION, 'topk': 2, 'hops': 3, 'filters': {'file': ['a.pdf', 'd.pdf']}}
            answer = httpx.post(f'{url}/search', json=body, timeout=60).json()
            assert answer['searches'] == 2 and answer['stopped'] == 'nothing new'
            assert [h['bridges'] for h in answer['trace']] == [[], ['quorra framework']]
            assert {h['file_name'] for h in answer['hits']} == {'a.pdf', 'd.pdf'}
            assert all(h['metadata']['hop'] == 1 for h in answer['hits'])
            plain = httpx.post(f'{url}/search', json={'query': QUESTION}, timeout=60).json()
            assert 'searches' not in plain and len(plain['hits']) == 4
            for hops, message in ((0, 'hops: Input should be greater than or equal to 1'),
                                  ('3', 'hops: Input should be a valid integer')):
                refused = httpx.post(f'{url}/search', json={'query': 'x', 'hops': hops}, timeout=60)
                assert refused.status_code == 400 and refused.json()['detail'] == message
    finally:
        store.close()
