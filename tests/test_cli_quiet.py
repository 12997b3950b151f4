"""A quiet, fast command: nothing heavy imported for --help, no tracebacks or third-party noise for handled
conditions, validation before the model loads, third-party bars off unless -v. (How fast is measured in
benchmarks/bench_startup.py; tests check what makes it fast, not the clock.)"""
import os
import subprocess
import sys

import pytest

NOISE = ('Traceback', 'AllocTimestamp', 'NotImplementedError', 'INFO', 'Loading weights', 'token_type_ids',
         'FastPlaid', 'faiss')


# what the CLI's quiet_environment() sets: a test that ran main() in this process must not decide for the child
_CLI_SETTINGS = ('LAZYLLM_LOG_LEVEL', 'LAZYLLM_COLPALI_VERBOSE', 'TRANSFORMERS_VERBOSITY', 'HF_HUB_DISABLE_PROGRESS_BARS',
                 'DISABLE_TQDM')


def run(*args, env=None, timeout=300):
    env = env or {k: v for k, v in os.environ.items() if k not in _CLI_SETTINGS}
    return subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_help_imports_nothing_heavy():
    code = ('import sys\nfrom lazyllm_colpali.cli import main\ntry:\n    main(["index", "--help"])\n'
            'except SystemExit:\n    pass\n'
            'print("HEAVY", sorted(m for m in ("torch", "lazyllm", "transformers", "pymilvus") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert 'HEAVY []' in out.stdout, out.stdout[-500:] + out.stderr[-2000:]
    assert '--verbose' in out.stdout


def test_validation_comes_before_the_model(tmp_path):
    # The model folder does not exist: a model load would fail with a different message.
    out = run('search', '   ', '--model', tmp_path / 'no-model', '--db', tmp_path / 'x.db')
    assert out.returncode != 0 and 'query is empty' in out.stderr and 'no-model' not in out.stderr
    out = run('search', 'revenue', '-k', 0, '--model', tmp_path / 'no-model', '--db', tmp_path / 'x.db')
    assert out.returncode != 0 and '--topk must be a positive number' in out.stderr
    out = run('search', 'revenue', '--pages', 'x-y', '--model', tmp_path / 'no-model', '--db', tmp_path / 'x.db')
    assert out.returncode != 0 and '--pages wants a range' in out.stderr


@pytest.fixture(scope='module')
def quiet_index(tiny_model_dir, pdf_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp('quiet') / 'colpali.db'
    model = tiny_model_dir('colpali')
    out = run('index', pdf_dir, '--model', model, '--db', db, '--dpi', 40, '--no-progress')
    return model, db, out


def test_creating_a_collection_prints_results_only(quiet_index):
    _, _, out = quiet_index
    assert out.returncode == 0, out.stderr[-3000:]
    assert not any(word in out.stderr for word in NOISE), out.stderr[-3000:]
    assert out.stdout.count('6 pages added') == 1


def test_search_is_quiet_and_verbose_shows_more(quiet_index):
    model, db, _ = quiet_index
    quiet = run('search', 'replace the filter', '-k', 2, '--model', model, '--db', db)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr.strip() == '', quiet.stderr[-3000:]
    assert len([line for line in quiet.stdout.splitlines() if line.strip()[:1].isdigit()]) == 2
    loud = run('search', 'replace the filter', '-k', 2, '--model', model, '--db', db, '--verbose')
    assert loud.returncode == 0 and 'INFO' in loud.stderr   # LazyLLM's own log lines are back


def test_a_locked_lite_file_is_one_clear_line(quiet_index):
    from lazyllm_colpali import MilvusMultiVectorStore

    _, db, _ = quiet_index
    holder = MilvusMultiVectorStore(str(db))   # this process holds the Lite lock
    try:
        out = run('docs', '--db', db)
    finally:
        holder.close()
    assert out.returncode == 2 and 'Traceback' not in out.stderr, out.stderr[-3000:]
    assert out.stderr.startswith('error: ') and 'another process' in out.stderr


def test_third_party_bars_off_ours_on():
    code = ('from lazyllm_colpali.logging import quiet_progress_bars\n'
            'quiet_progress_bars("bm25s.tokenization")\n'
            'import bm25s\n'
            'bm25s.tokenize(["alpha beta", "gamma"], show_progress=True)\n'
            'from tqdm.auto import tqdm\n'
            'list(tqdm(range(3), desc="ours"))\n')
    env = dict(os.environ, TQDM_MININTERVAL='0')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'Split strings' not in out.stderr and 'ours' in out.stderr
