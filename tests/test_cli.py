"""The ``lazyllm-colpali`` command, run as a user runs it (a subprocess), on a tiny local model folder."""
import json
import subprocess
import sys

import pytest


def run(*args, timeout=300):
    return subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_commands_and_settings():
    out = run('--help')
    assert out.returncode == 0
    for word in ('index', 'search', 'docs', 'delete', 'make-tiny-model', 'LAZYLLM_COLPALI_MODEL'):
        assert word in out.stdout
    search_help = run('search', '--help').stdout
    assert '--model' in search_help and '--db' in search_help and '--pages' in search_help


@pytest.fixture(scope='module')
def indexed(tiny_model_dir, pdf_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp('cli') / 'colpali.db'
    model = tiny_model_dir('colqwen2')
    out = run('index', pdf_dir, '--model', model, '--db', db, '--dpi', 40, '--no-progress')
    assert out.returncode == 0, out.stderr[-3000:]
    assert '6 pages added' in out.stdout and 'pages/s' in out.stdout
    return model, db


def test_search_prints_ranked_pages(indexed):
    model, db = indexed
    out = run('search', 'replace the filter', '-k', 3, '--model', model, '--db', db)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3 and '.pdf' in rows[0]


def test_search_json_with_filters(indexed):
    model, db = indexed
    out = run('search', 'pump', '--json', '--file', 'manual.pdf', '--pages', '1-2', '--model', model, '--db', db)
    hits = [json.loads(line) for line in out.stdout.splitlines()]
    assert [h['file_name'] for h in hits] == ['manual.pdf', 'manual.pdf']
    assert sorted(h['page'] for h in hits) == [1, 2] and all('score' in h and h['image_path'] for h in hits)


def test_reindex_is_a_no_op_and_docs_delete(indexed, pdf_dir):
    model, db = indexed
    out = run('index', pdf_dir, '--model', model, '--db', db, '--no-progress')
    assert '0 pages added, 6 already indexed' in out.stdout
    docs = run('docs', '--db', db).stdout
    assert '3 documents, 6 pages' in docs
    memo_id = next(line.split()[0] for line in docs.splitlines() if 'memo.pdf' in line)
    assert 'deleted 1 documents (1 pages); 5 pages left' in run('delete', memo_id, '--db', db).stdout
    assert '2 documents, 5 pages' in run('docs', '--db', db).stdout
    check = run('check', '--db', db)
    assert check.returncode == 0 and '5 pages' in check.stdout and 'unused vector rows' in check.stdout
    assert 'check --repair` reclaims' in check.stdout            # dead rows: consistent, with the next step
    assert 'repair reclaimed' in run('check', '--repair', '--db', db).stdout
    assert '0 unused vector rows' in run('check', '--db', db).stdout


def test_missing_model_is_one_clear_line_not_a_traceback(tmp_path):
    # (index, not search: search refuses a --db that does not exist before it looks at the model)
    out = run('index', tmp_path, '--model', 'vidore/colqwen2-v1.0', '--db', tmp_path / 'x.db')
    assert out.returncode == 2
    assert 'error: model \'vidore/colqwen2-v1.0\'' in out.stderr and '--model ./models/' in out.stderr
    assert 'Traceback' not in out.stderr


def test_bad_files_only_exit_nonzero_naming_them(tiny_model_dir, tmp_path, bad_files):
    out = run('index', bad_files['encrypted'], bad_files['empty'], '--model', tiny_model_dir('colqwen2'),
              '--db', tmp_path / 'x.db', '--no-progress')
    assert out.returncode == 1
    assert 'encrypted.pdf: encrypted PDF' in out.stdout and 'empty.pdf: empty file' in out.stdout


def test_serve_with_a_missing_model_says_so_before_starting(tmp_path):
    import subprocess
    import sys
    run = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'serve', '--model', 'vidore/not-here',
                          '--db', str(tmp_path / 'c.db')], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and 'Traceback' not in run.stderr
    assert "error: model 'vidore/not-here'" in run.stderr and '--model' in run.stderr
