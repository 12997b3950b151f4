"""The comparison arms added for issue 22 in `eval`: `dense` (one vector per page), `colpali+context`, and `hybrid`
over any two or more arms (no visual model needed)."""
from __future__ import annotations

import json
import subprocess
import sys

from lazyllm_colpali.eval import run_eval


def test_eval_rows_for_dense_and_context_arms_on_the_sample(tmp_path):
    out = tmp_path / 'out'
    run = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'eval', '--sample', '--model', 'tiny:colpali',
                          '--dense-model', 'tiny:biqwen2', '--arms', 'colpali,colpali+context,dense,text-layer,hybrid',
                          '--out', str(out)], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'index bytes/page' in run.stdout
    arms = {a['arm']: a for a in json.loads((out / 'sample.json').read_text())['arms']}
    assert set(arms) == {'colpali', 'colpali+context', 'dense', 'text-layer', 'hybrid'}
    assert not any(a['error'] for a in arms.values())
    for name in ('colpali', 'colpali+context', 'dense'):
        assert 'meaningless' in arms[name]['note']                      # random tiny weights say so
        assert arms[name]['latency_p50_ms'] > 0 and arms[name]['index_s_per_page'] > 0
    # the storage trade in one table: one vector per page against ~1000 (on 9 pages the Milvus Lite folder's
    # fixed size dominates the dense row), and context adds to the image's
    assert arms['dense']['index_bytes_per_page'] * 10 < arms['colpali']['index_bytes_per_page']
    assert arms['colpali+context']['index_bytes_per_page'] > arms['colpali']['index_bytes_per_page']
    assert arms['hybrid']['note'] == 'RRF of colpali+colpali+context+dense+text-layer'


def test_hybrid_fuses_any_two_arms_without_a_visual_model(sample_dataset, tmp_path):
    report = run_eval(sample_dataset, ['text-layer', 'dense', 'hybrid'], dense_model='tiny:biqwen2',
                      workdir=tmp_path)
    arms = {a.arm: a for a in report.arms}
    assert arms['hybrid'].error is None and arms['hybrid'].note == 'RRF of text-layer+dense'
    assert 0 < arms['hybrid'].metrics['ndcg@10'] <= 1
    # --hybrid-arms picks the members
    report = run_eval(sample_dataset, ['text-layer', 'dense', 'hybrid'], dense_model='tiny:biqwen2',
                      workdir=tmp_path, hybrid_arms=['dense'])
    assert 'at least two' in report.arms[-1].error
    # the dense arm without a model is one clear reason, and the hybrid then has too few arms
    report = run_eval(sample_dataset, ['text-layer', 'dense', 'hybrid'], workdir=tmp_path / 'b')
    arms = {a.arm: a for a in report.arms}
    assert '--dense-model' in arms['dense'].error and 'at least two' in arms['hybrid'].error
