"""Smoke runs of every benchmark script at a tiny size: they must run end to end and write sane JSON.
(Speed goals live in the scripts' own output, never in assertions here.)"""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / 'benchmarks'
sys.path.insert(0, str(BENCH))


def test_bench_index_smoke(tmp_path):
    import bench_index

    out = tmp_path / 'index.json'
    result = bench_index.main(['--pages', '4', '--queries', '3', '--dpi', '50', '--out', str(out)])
    data = json.loads(out.read_text())
    assert data['pages'] == 4 == result['pages'] and data['pages_per_s'] > 0
    assert set(data['query_latency_ms']) == {'exact', 'candidates'}
    assert data['bytes_per_page']['vectors'] > 0


def test_bench_scale_smoke(tmp_path):
    import bench_scale

    out = tmp_path / 'scale.json'
    result = bench_scale.main(['--pages', '300', '--tokens', '24', '--queries', '3', '--centroids', '32',
                               '--nprobes', '2,4', '--budgets', '30,300', '--workdir', str(tmp_path / 'w'),
                               '--out', str(out)])
    rows = {r['path']: r for r in json.loads(out.read_text())['rows']}
    assert len(result['rows']) == 5
    assert rows['centroids k=32 nprobe=4 + rerank@300']['recall@10'] == 1.0   # budget covers every page: exact
    assert rows['exhaustive exact (fused kernel)']['cpu_s_per_query'] > 0 and result['k'] == 32


def test_bench_gpu_smoke_on_cpu(tmp_path):
    # The GPU script at tiny size on the CPU: both parts run and write rows (the H200 numbers live in
    # benchmarks/results/gpu_h200*.json).
    import bench_gpu

    out = tmp_path / 'gpu.json'
    result = bench_gpu.main(['--tiny', '--device', 'cpu', '--pages', '40', '--tokens', '30', '--chunks', '512',
                             '--batch-queries', '2', '--page-batches', '1', '--query-batches', '2', '--repeats', '1',
                             '--out', str(out)])
    rows = json.loads(out.read_text())['rows']
    assert 'errors' not in result
    maxsim = [r for r in rows if r['kind'] == 'maxsim']
    assert len(maxsim) == 2 and all(r['max_abs_diff_vs_first'] == 0.0 and r['bound_s'] > 0 for r in maxsim)
    pages = {r['model']: r for r in rows if r['kind'] == 'encode_pages'}
    assert set(pages) == {'colsmol-256m', 'colqwen2-2b'} and all(r['finite'] for r in pages.values())
    assert pages['colsmol-256m']['tokens_per_page'] == 17 * 64 + 20


def test_bench_encode_smoke(tmp_path):
    import bench_encode

    out = tmp_path / 'encode.json'
    result = bench_encode.main(['--tiny', '--models', 'colqwen2-2b', '--variants', 'fp32,int8', '--queries', '2',
                                '--pages', '0', '--workdir', str(tmp_path / 'models'), '--out', str(out)])
    fp32, int8 = json.loads(out.read_text())['models']['colqwen2-2b']
    assert fp32['query_cpu_s'] > 0 and fp32['query_tokens'] > 0 and 'query_emb_cos_vs_ref' not in fp32
    assert 0.9 < int8['query_emb_cos_vs_ref'] <= 1.0 and 0.0 <= int8['top10_overlap_vs_ref'] <= 1.0
    assert result['models']['colqwen2-2b'][0]['cached_query_s'] < fp32['query_wall_s']


def test_bench_store_smoke(tmp_path):
    # The store benchmark at toy size on milvus-lite's server (the full run, with Milvus 2.3.5, wrote
    # benchmarks/results/store.json): every part runs and B's rebuilt cache ranks like A's.
    import subprocess
    import sys

    out = tmp_path / 'store.json'
    run = subprocess.run([sys.executable, 'benchmarks/bench_store.py', '--pages', '12', '--layout-pages', '2',
                          '--ingest-pages', '4', '--no-milvus23', '--out', str(out)], capture_output=True, text=True,
                         timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r['layout'].split()[0] for r in result['layouts']] == ['patch', 'blob']
    assert [r['server_name'] for r in result['ingest']] == ['Lite file', 'milvus-lite server']
    assert result['rebuild'][0]['identical_top10'] and result['rebuild'][0]['pages'] == 12
