"""Single-machine defects of the store found by hostile testing, each kept as a regression test (issue #12)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lazyllm_colpali import ColPaliIndex, LocalVectorFile, MilvusMultiVectorStore, StoreError
from tests.helpers.pdfs import make_text_pdf
from tests.helpers.store_worker import vectors_for

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def indexed(tiny_model_dir, tmp_path):
    """A Lite collection with three documents, indexed by the CLI as a user would."""
    folder = tmp_path / 'pdfs'
    make_text_pdf(folder / 'report.pdf', ['Revenue grew 12% in 2023.', 'Costs by region.'])
    make_text_pdf(folder / 'manual.pdf', ['Install the pump.', 'Replace the filter.', 'Warranty.'])
    make_text_pdf(folder / 'memo.pdf', ['Hiring memo.'])
    db = tmp_path / 'lib' / 'c.db'
    out = cli('index', folder, '--model', tiny_model_dir('colpali'), '--db', db, '--dpi', 40, '--no-progress')
    assert out.returncode == 0 and '6 pages added' in out.stdout, out.stderr[-2000:]
    return {'db': db, 'folder': folder, 'assets': tmp_path / 'lib' / 'c.db.assets' / 'colpali_pages'}


def test_delete_refuses_anything_but_an_existing_doc_id_and_touches_no_path(indexed, tmp_path):
    victim = tmp_path / 'precious'
    victim.mkdir()
    (victim / 'keep.txt').write_text('mine')
    pages_dir = indexed['assets'] / 'pages'
    before = sorted(p.name for p in pages_dir.iterdir())
    for arg in (str(victim), '..', '', '../../precious', 'ffffffffffffffff'):
        out = cli('delete', arg, '--db', indexed['db'])
        assert out.returncode == 2 and 'error:' in out.stderr and 'Traceback' not in out.stderr, (arg, out.stderr)
    assert (victim / 'keep.txt').read_text() == 'mine'
    assert sorted(p.name for p in pages_dir.iterdir()) == before
    assert '3 documents, 6 pages' in cli('docs', '--db', indexed['db']).stdout
    with pytest.raises(ValueError, match='invalid doc id'):   # the library refuses path-like ids too
        MilvusMultiVectorStore(str(indexed['db'])).images.delete_doc('..')


def test_same_bytes_under_two_names_are_two_documents(colpali_encoder, tmp_path):
    make_text_pdf(tmp_path / 'a.pdf', ['Same content.', 'Page two.'])
    shutil.copy(tmp_path / 'a.pdf', tmp_path / 'b.pdf')
    store = MilvusMultiVectorStore(str(tmp_path / 'c.db'), dim=colpali_encoder.dim)
    index = ColPaliIndex(colpali_encoder, store, dpi=40, progress=False)
    assert index.add([tmp_path / 'a.pdf', tmp_path / 'b.pdf']).added_pages == 4
    make_text_pdf(tmp_path / 'b.pdf', ['Edited content.', 'Page two.', 'A new page.'])
    index.add([tmp_path / 'b.pdf'])
    docs = {d['file_name']: d['pages'] for d in store.documents()}
    assert docs == {'a.pdf': 2, 'b.pdf': 3}
    assert not any(v for v in store.check().values() if isinstance(v, list))
    store.close()


def test_a_truncated_vector_file_is_reported_searchable_and_repaired(indexed, tiny_model_dir):
    db, vectors = indexed['db'], indexed['assets'] / 'vectors'
    tokens = next(vectors.glob('tokens*.bin'))
    with open(tokens, 'r+b') as f:
        f.truncate(tokens.stat().st_size // 2)
    check = cli('check', '--db', db)
    assert check.returncode == 1 and 'damaged_vectors' in check.stdout and '--repair' in check.stdout, check.stdout
    search = cli('search', 'revenue', '-k', 10, '--json', '--db', db)          # no --model: the recorded one
    assert search.returncode == 0 and 'Traceback' not in search.stderr, search.stderr[-2000:]
    assert 0 < len(search.stdout.splitlines()) < 6            # the damaged pages are left out, not crashed on
    repair = cli('check', '--repair', '--db', db)
    assert repair.returncode == 0 and 're-encoded' in repair.stdout, repair.stdout + repair.stderr[-2000:]
    assert cli('check', '--db', db).returncode == 0
    make_text_pdf(indexed['folder'] / 'new.pdf', ['Another page.', 'And one more.'])
    assert '2 pages added' in cli('index', indexed['folder'], '--db', db, '--no-progress').stdout
    store = MilvusMultiVectorStore(str(db))
    packed, records = store.packed(), store.records(store.page_ids())
    assert len(packed) == 8 and [len(packed.page(i)) for i in range(8)] == \
        [records[p].n_vectors for p in packed.page_ids]
    spans = sorted(zip(packed.offsets[:-1].tolist(), packed.offsets[1:].tolist()))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))          # no two pages share rows
    store.close()


def test_lost_images_are_re_rendered_and_a_moved_collection_still_resolves(indexed, tmp_path):
    shutil.rmtree(indexed['assets'] / 'pages')
    check = cli('check', '--db', indexed['db'])
    assert check.returncode == 1 and 'missing_images: 6' in check.stdout
    repair = cli('check', '--repair', '--db', indexed['db'])
    assert repair.returncode == 0 and 'restored 6 images' in repair.stdout, repair.stdout + repair.stderr
    moved = tmp_path / 'elsewhere'
    shutil.move(str(indexed['db'].parent), str(moved))
    out = cli('search', 'pump', '--json', '--db', moved / 'c.db')
    hits = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(hits) == 5 and all(h['image_path'].startswith(str(moved)) and os.path.isfile(h['image_path'])
                                  for h in hits), out.stderr[-2000:]


def test_another_model_on_a_collection_is_a_clear_error(indexed, tiny_model_dir):
    out = cli('search', 'pump', '--model', tiny_model_dir('colqwen2'), '--db', indexed['db'])
    assert out.returncode == 2 and 'was built with model' in out.stderr and 'Traceback' not in out.stderr
    out = cli('search', 'pump', '--model', tiny_model_dir('colqwen2'), '--db', indexed['db'], '--allow-model-change')
    assert out.returncode == 0, out.stderr[-2000:]


def test_bad_file_names_are_reported_and_skipped(tiny_model_dir, tmp_path):
    folder = tmp_path / 'pdfs'
    make_text_pdf(folder / 'a\x01ctl.pdf', ['control character'])
    make_text_pdf(folder / 'good.pdf', ['a good page'])
    bad_bytes = os.fsencode(folder) + b'/caf\xe9.pdf'      # Latin-1 bytes: not UTF-8
    shutil.copy(folder / 'good.pdf', bad_bytes)
    make_text_pdf(folder / 'zzz.pdf', ['after the bad ones'])
    for _ in range(2):   # a rerun behaves the same
        out = cli('index', folder, '--model', tiny_model_dir('colpali'), '--db', tmp_path / 'c.db', '--dpi', 40,
                  '--no-progress')
        assert out.returncode == 0, out.stderr[-2000:]
        assert 'a\\x01ctl.pdf: file name contains control characters' in out.stdout
        assert 'caf\\xe9.pdf: file name is not valid UTF-8' in out.stdout
    assert '2 documents, 2 pages' in cli('docs', '--db', tmp_path / 'c.db').stdout


@pytest.mark.parametrize('crash_after', ['write', 'commit'])
def test_compaction_is_crash_atomic(tmp_path, crash_after):
    vf = LocalVectorFile(tmp_path / 'v', dim=16)
    ids = [f'p{i}' for i in range(20)]
    vf.put([(p, 'd', vectors_for(p)) for p in ids])
    vf.delete_pages(ids[::2])
    assert vf.compact(_crash_after=crash_after) == -1         # stopped where a kill would stop it
    vf.close()
    vf = LocalVectorFile(tmp_path / 'v', dim=16)              # the next process cleans up the other generation
    assert len(list((tmp_path / 'v').glob('tokens*.bin'))) == 1
    assert vf.validate()['damaged'] == [] and sorted(vf.page_docs()) == sorted(ids[1::2])
    got = vf.get(ids[1::2])
    assert all(torch.allclose(got[p].float(), vectors_for(p), atol=2e-3) for p in ids[1::2])
    vf.compact()
    assert vf.dead_rows() == 0
    vf.close()


def test_kill_9_during_compaction_loops_never_loses_a_page(tmp_path):
    vf = LocalVectorFile(tmp_path / 'v', dim=16)
    ids = [f'p{i:04d}' for i in range(400)]
    vf.put([(p, 'd', vectors_for(p)) for p in ids])
    vf.close()
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen([sys.executable, '-m', 'tests.helpers.store_worker', 'compact-forever',
                                 str(tmp_path / 'v'), '16'], cwd=ROOT)
        time.sleep(delay + 2.0)    # the worker needs ~2 s to import torch
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        vf = LocalVectorFile(tmp_path / 'v', dim=16)
        assert vf.validate()['damaged'] == [] and vf.count() == 400
        got = vf.get(ids)
        assert all(torch.allclose(got[p].float(), vectors_for(p), atol=2e-3) for p in ids)
        vf.close()


def test_a_second_writer_waits_then_fails_clearly(tmp_path):
    vf = LocalVectorFile(tmp_path / 'v', dim=4, lock_timeout=0.5)
    code = ('import sys, time\nfrom lazyllm_colpali.store.locks import FileLock\n'
            'with FileLock(sys.argv[1]).hold():\n    print("HELD", flush=True)\n    time.sleep(30)\n')
    holder = subprocess.Popen([sys.executable, '-c', code, str(tmp_path / 'v' / 'lock')], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == 'HELD'
        with pytest.raises(StoreError, match=f'pid {holder.pid}'):
            vf.put([('p', 'd', torch.ones(1, 4))])
    finally:
        holder.kill()
        holder.wait()
    vf.put([('p', 'd', torch.ones(1, 4))])     # a dead holder's lock is gone with it
    assert vf.count() == 1
    vf.close()
