"""Fusion, the hybrid LazyLLM component, datasets in both layouts, ranx metrics and the `eval` command."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from lazyllm_colpali.eval import DatasetError, evaluate_run, from_parts, load_dataset, run_eval
from lazyllm_colpali.retrieve.fusion import reciprocal_rank_fusion
from lazyllm_colpali.retrieve.retriever import SearchHit


def hit(page_id: str, image: str = '') -> SearchHit:
    return SearchHit(page_id, 'doc', '/x.pdf', 'x.pdf', int(page_id[1:]), 1.0, image)


def test_rrf_weights_and_image_carry_over():
    visual = [hit('p1', '/img/p1.jpg'), hit('p2', '/img/p2.jpg')]
    text = [hit('p2'), hit('p3')]
    assert [h.page_id for h in reciprocal_rank_fusion({'visual': visual, 'text': text})] == ['p2', 'p1', 'p3']
    heavy_text = reciprocal_rank_fusion({'visual': visual, 'text': text}, weights={'text': 3.0})
    assert [h.page_id for h in heavy_text] == ['p2', 'p3', 'p1']
    fused = {h.page_id: h for h in heavy_text}
    assert fused['p2'].image_path == '/img/p2.jpg'                         # the visual hit's image is kept
    assert fused['p2'].score == pytest.approx(1 / 62 + 3 / 61)
    with pytest.raises(ValueError, match='not fused'):
        reciprocal_rank_fusion({'visual': visual}, weights={'txt': 1.0})


def test_hybrid_retriever_composes_visual_and_text_arms_in_lazyllm(tmp_path, colpali_encoder, sample_dataset):
    import lazyllm

    from lazyllm_colpali import ColPaliDocument, ColPaliEmbed, ColPaliRetriever
    from lazyllm_colpali.lazyllm_glue.arms import HybridRetriever, PageTextRetriever
    from lazyllm_colpali.text import PageTextIndex

    corpus = sample_dataset.corpus_dir / 'hydra_pump_manual.pdf'
    doc = ColPaliDocument(str(corpus), embed=ColPaliEmbed(colpali_encoder), db=str(tmp_path / 'v.db'),
                          progress=False)
    text = PageTextRetriever(PageTextIndex(tmp_path / 'text', 'text-layer', progress=False), dataset_path=corpus)
    hybrid = HybridRetriever({'visual': ColPaliRetriever(doc), 'text': text}, weights={'visual': 0.2}, topk=2)
    with lazyllm.pipeline() as ppl:
        ppl.retrieve = hybrid
        ppl.cite = lambda nodes: [(n.metadata['file_name'], n.metadata['page'], n.image_path) for n in nodes]
    cited = ppl('How often should the filter cartridge be replaced?')
    assert len(cited) == 2
    assert cited[0][:2] == ('hydra_pump_manual.pdf', 2)           # BM25 is sure; the random visual arm weighs less
    assert all(path.endswith('.jpg') for _, _, path in cited)     # fused pages carry the visual arm's page image
    doc.close()


def test_user_folder_with_tsv_qrels_and_a_beir_parquet_layout(tmp_path, pdf_dir):
    (tmp_path / 'q.jsonl').write_text('{"query_id": "a", "query": "replace the filter"}\n'
                                      '{"query_id": "b", "query": "hiring memo"}\n')
    (tmp_path / 'qrels.tsv').write_text('query-id\tcorpus-id\tscore\na\tmanual.pdf#2\t1\nb\tnested/memo.pdf#1\t1\n')
    dataset = from_parts(pdf_dir, tmp_path / 'q.jsonl', tmp_path / 'qrels.tsv')
    report = run_eval(dataset, ['text'], topk=3, workdir=tmp_path / 'work')
    assert report.arms[0].metrics['recall@1'] == 1.0 and report.n_pages == 6

    import pyarrow as pa
    import pyarrow.parquet as pq
    beir = tmp_path / 'beir'
    beir.mkdir()
    images = []
    for cid, color in (('c1', 'red'), ('c2', 'blue')):
        path = tmp_path / f'{cid}.png'
        Image.new('RGB', (64, 48), color).save(path)
        images.append({'corpus-id': cid, 'image': {'bytes': path.read_bytes(), 'path': None}})
    pq.write_table(pa.Table.from_pylist(images), beir / 'corpus.parquet')
    pq.write_table(pa.Table.from_pylist([{'query-id': 'q1', 'query': 'the blue page'}]), beir / 'queries.parquet')
    pq.write_table(pa.Table.from_pylist([{'query-id': 'q1', 'corpus-id': 'c2', 'score': 1}]), beir / 'qrels.parquet')
    dataset = load_dataset(beir)
    assert dataset.qrels == {'q1': {'c2.png#1': 1}}
    assert sorted(p.name for p in dataset.corpus_dir.iterdir()) == ['c1.png', 'c2.png']

    (tmp_path / 'bad.tsv').write_text('a\tmissing.pdf#1\t1\n')
    with pytest.raises(DatasetError, match='missing.pdf'):
        from_parts(pdf_dir, tmp_path / 'q.jsonl', tmp_path / 'bad.tsv')


def test_metrics_come_from_ranx_and_match_the_definitions():
    qrels = {'q1': {'a#1': 2, 'a#2': 1}, 'q2': {'b#1': 1}}
    run = {'q1': {'a#2': 3.0, 'x#1': 2.0, 'a#1': 1.0}, 'q2': {}}
    scores = evaluate_run(qrels, run)
    assert scores['mrr'] == pytest.approx((1 / 1 + 0) / 2)
    assert scores['recall@1'] == pytest.approx((1 / 2 + 0) / 2)
    assert scores['recall@5'] == pytest.approx((1 + 0) / 2)
    dcg = 1 / 1 + 2 / 2                                  # ranx's default: linear gains over log2(rank + 1)
    ideal = 2 / 1 + 1 / 1.584962500721156
    assert scores['ndcg@5'] == pytest.approx((dcg / ideal + 0) / 2)


def test_eval_command_on_the_builtin_sample(tmp_path):
    env_out = tmp_path / 'out'
    run = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'eval', '--sample', '--model', 'tiny:colpali',
                          '--vlm-url', 'standin', '--out', str(env_out)], capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    table = run.stdout
    for arm in ('colpali', 'text', 'layout', 'caption', 'hybrid'):
        assert f'| {arm} ' in table
    assert 'random tiny model' in table and 'nDCG@10' in table and 'bytes/page' in table
    data = json.loads((env_out / 'sample.json').read_text())
    arms = {a['arm']: a for a in data['arms']}
    assert all(0.0 <= v <= 1.0 for a in arms.values() for v in a['metrics'].values())
    assert arms['text']['metrics']['ndcg@5'] >= 0.8            # BM25 on text layer + OCR answers this sample
    assert arms['layout']['metrics']['ndcg@5'] >= 0.8          # layout Markdown (text layer / OCR lines) too
    assert 'layout' in arms['hybrid']['note']
    assert arms['colpali']['bytes_per_page'] > 100 * arms['text']['bytes_per_page']
    assert all(a['latency_p50_ms'] > 0 and a['index_s_per_page'] > 0 for a in arms.values())
    with Image.open(env_out / 'sample.png') as chart:
        assert chart.size[0] > 600


def test_eval_without_a_model_or_vlm_reports_the_arm_and_runs_the_rest(tmp_path, pdf_dir):
    (tmp_path / 'q.jsonl').write_text('{"query_id": "a", "query": "replace the filter"}\n')
    (tmp_path / 'qrels.jsonl').write_text('{"query_id": "a", "page": "manual.pdf#2", "score": 1}\n')
    run = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'eval', '--corpus', str(pdf_dir),
                          '--queries', str(tmp_path / 'q.jsonl'), '--qrels', str(tmp_path / 'qrels.jsonl'),
                          '--model', 'vidore/not-downloaded', '--arms', 'colpali,text,caption,hybrid',
                          '--out', str(tmp_path / 'out')], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'Traceback' not in run.stderr
    lines = {line.split('|')[1].strip(): line for line in run.stdout.splitlines() if line.startswith('| ')}
    assert 'not run' in lines['colpali'] and 'vidore/not-downloaded' in lines['colpali']
    assert 'not run: no VLM given' in lines['caption'] and 'not run' in lines['hybrid']
    assert '1.000' in lines['text']
