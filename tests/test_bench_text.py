"""Smoke runs of the text-arm benchmarks at a tiny size: they run end to end on the real corpus and write
sane JSON (speed goals live in the scripts' output, never in assertions here)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / 'benchmarks'
sys.path.insert(0, str(BENCH))


def test_bench_bm25_smoke(tmp_path, corpus_dir):
    import bench_bm25

    out = tmp_path / 'bm25.json'
    bench_bm25.main(['--pages', '60', '--queries', '5', '--corpus', str(corpus_dir), '--out', str(out)])
    data = json.loads(out.read_text())
    assert [r['path'] for r in data['rows']] == ['lazyllm Retriever topk=1000', 'lazyllm Retriever topk=10',
                                                 'PageBM25 (bm25s)', 'PageTextIndex.search (bm25s)']
    assert all(r['p50_ms'] > 0 for r in data['rows'])
    assert data['same_top1_score_as_lazyllm_of_10'] == 5     # same scores as LazyLLM's own BM25 on every query
    assert any(k.startswith('get_nodes') for k in data['lazyllm_breakdown_ms_per_query'])


def test_bench_ocr_smoke(tmp_path, corpus_dir):
    import bench_ocr

    out = tmp_path / 'ocr.json'
    bench_ocr.main(['--settings', 'no angle classifier', '--pages', '1', '--corpus', str(corpus_dir),
                    '--out', str(out)])
    data = json.loads(out.read_text())
    row = data['rows'][0]
    assert row['pages'] == 1 and row['pages_per_s'] > 0
    assert 0.6 <= row['words_recovered'] <= 1.0 and 0.6 <= row['chars_recovered'] <= 1.0
    assert data['corpus_pages']['en_image_only.pdf'] == {**data['corpus_pages']['en_image_only.pdf'], 'needs_ocr': 2}


def test_bench_layout_words_smoke(tmp_path, corpus_dir):
    import bench_layout_words

    out = tmp_path / 'layout_words.json'
    bench_layout_words.main(['--corpus', str(corpus_dir), '--pages', '2', '--per-doc', '1', '--baseline-ref', '',
                             '--out', str(out)])
    data = json.loads(out.read_text())
    after = data['sides']['after']
    assert after['pages'] == 2 and len(data['pages']) == 2 and set(data['sides']) == {'after'}
    assert after['foreign_words'] == 0                                          # words of the text layer only
    assert sum(page['layer_words'] for page in after['per_page'].values()) > 100
    assert set(data['region_ocr']['steps']) == {'render', 'layout model', 'text-layer words', 'region OCR'}
