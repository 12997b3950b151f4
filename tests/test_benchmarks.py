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
