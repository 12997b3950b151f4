"""Fine-tuning (issue 19): bad input stops before training, a short run learns a learnable task, kill -9 then
--resume keeps the data order and ends with a valid adapter, the adapter works wherever --model does and a
collection refuses the wrong model, --from-pdfs on the real corpus never trains on a validation page, hard
negatives skip near-duplicates, and the LazyLLM finetune method runs the same command through a launcher.

Real parts throughout: tiny real architectures, PDFs rendered by pypdfium2 through the ingest path, Milvus
Lite, colpali-engine's trainer and losses, peft."""
from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lazyllm_colpali.devtools.shapes_task import make_shapes_task
from lazyllm_colpali.training import FinetuneError, FinetuneSettings, PairsError, finetune

ROOT = Path(__file__).resolve().parents[1]
# A short run that learns (measured: colqwen2 tiny, Recall@1 0.17 -> 0.67 on 6 classes; see docs/finetune.md)
TASK = dict(n_classes=6, train_per_class=3)
SHORT = dict(steps=12, batch_size=6, dpi=72, progress=False)


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope='module')
def task(tmp_path_factory):
    return make_shapes_task(tmp_path_factory.mktemp('shapes'), **TASK)


@pytest.fixture(scope='module')
def tiny_colqwen2(tiny_model_dir):
    return str(tiny_model_dir('colqwen2'))


@pytest.fixture(scope='module')
def trained(task, tiny_colqwen2, tmp_path_factory):
    out = tmp_path_factory.mktemp('run') / 'adapter'
    report = finetune(FinetuneSettings(model=tiny_colqwen2, out=out, train=[task.folder / 'train.jsonl'],
                                       val=task.folder / 'val.jsonl', corpus=task.folder, **SHORT))
    return out, report


def test_a_short_run_lowers_the_loss_and_improves_held_out_recall(trained):
    out, report = trained
    assert report['status'] == 'finished' and report['steps'] == SHORT['steps']
    before, after = report['val_before'], report['val_after']
    print(f'\nloss {report["train_loss_first"]:.3f} -> {report["train_loss_last"]:.3f}; '
          f'val loss {before["loss"]:.3f} -> {after["loss"]:.3f}; '
          f'held-out Recall@1 {before["recall@1"]:.3f} -> {after["recall@1"]:.3f} '
          f'(chance {before["chance_recall_at_1"]:.3f}); {report["steps_per_second"]:.2f} steps/s')
    assert after['loss'] < before['loss']
    first, last = report['loss_curve'][:3], report['loss_curve'][-3:]
    assert sum(loss for _, loss in last) < sum(loss for _, loss in first)
    assert after['recall@1'] > before['recall@1']
    # held-out pages were never trained on
    assert report['pairs']['val_pages_also_in_train'] == 0
    # an ordinary adapter folder naming its base, the processor beside it, the report written last
    config = json.loads((out / 'adapter_config.json').read_text())
    assert Path(config['base_model_name_or_path']).is_dir() and config['modules_to_save'] == ['custom_text_proj']
    assert (out / 'adapter_model.safetensors').is_file() and (out / 'tokenizer.json').is_file()
    assert json.loads((out / 'finetune_report.json').read_text())['val_after'] == after
    assert not (out / 'checkpoints').exists()


def test_bad_pairs_are_reported_by_line_before_any_model_loads(task, tmp_path):
    bad = tmp_path / 'pairs.jsonl'
    bad.write_text('\n'.join([
        json.dumps({'query': 'red circle on blue', 'page': 'train.pdf#1'}),
        '{"query": "broken json"',
        json.dumps({'query': 'no page here'}),
        json.dumps({'query': 'bad number', 'page': 'train.pdf#x'}),
        json.dumps({'query': 'missing file', 'page': 'nowhere.pdf#2'}),
        json.dumps({'query': 'past the end', 'page': 'train.pdf#999', 'negatives': ['train.pdf#1000']}),
        json.dumps({'query': '   ', 'page': 'train.pdf#1'}),
    ]) + '\n')
    out = tmp_path / 'out'
    start = time.perf_counter()
    with pytest.raises(PairsError) as err:
        finetune(FinetuneSettings(model='tiny:colqwen2', out=out, train=[bad], corpus=task.folder))
    text = str(err.value)
    for line, reason in ((2, 'not valid JSON'), (3, '"page" is missing'), (4, 'must be a number'), (7, 'non-empty')):
        assert f'{bad}:{line}: ' in text and reason in text, text
    # files and page ranges are checked once the lines parse, still before training
    bad.write_text('\n'.join(l for i, l in enumerate(bad.read_text().splitlines(), 1) if i in (1, 5, 6)) + '\n')
    with pytest.raises(PairsError) as err:
        finetune(FinetuneSettings(model='tiny:colqwen2', out=out, train=[bad], corpus=task.folder))
    text = str(err.value)
    assert f"{bad}:2: page 'nowhere.pdf#2': no such file" in text
    assert f"{bad}:3: page 'train.pdf#999': train.pdf has 18 page(s)" in text
    assert f"{bad}:3: negatives[0] 'train.pdf#1000'" in text
    assert time.perf_counter() - start < 20 and not out.exists()   # no model was loaded, nothing written

    code = ('import sys\nfrom lazyllm_colpali.cli import main\ntry:\n    main(["finetune", "--help"])\n'
            'except SystemExit:\n    pass\n'
            'print("HEAVY", [m for m in ("torch", "transformers", "peft") if m in sys.modules])')
    out_help = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert 'HEAVY []' in out_help.stdout and '--hard-negatives' in out_help.stdout, out_help.stderr[-2000:]

    empty = tmp_path / 'empty.jsonl'
    empty.write_text('\n\n')
    result = _cli('finetune', '--model', 'tiny:colqwen2', '--out', out, '--train', empty, '--corpus', task.folder)
    assert result.returncode == 2 and f'{empty}: no training pairs (the file is empty)' in result.stderr
    assert 'Traceback' not in result.stderr and not out.exists()


def test_family_mismatch_and_changed_settings_are_refused(trained, tiny_model_dir, task, tmp_path):
    out, _ = trained
    from lazyllm_colpali import ColPaliEncoder
    from lazyllm_colpali.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match='trained on a colqwen2 model'):
        ColPaliEncoder(str(out), family='colpali').load()
    # resuming a run with another model family, or other settings, is refused before training
    run = tmp_path / 'run'
    settings = dict(train=[task.folder / 'train.jsonl'], corpus=task.folder, dpi=72, progress=False)
    finetune(FinetuneSettings(model=str(tiny_model_dir('colqwen2')), out=run, steps=1, batch_size=6,
                              keep_checkpoints=True, **settings))
    (run / 'finetune_report.json').unlink()   # pretend it was interrupted
    with pytest.raises(FinetuneError, match='was trained from a colqwen2 model .* not colpali'):
        finetune(FinetuneSettings(model=str(tiny_model_dir('colpali')), out=run, steps=1, batch_size=6, resume=True,
                                  **settings))
    with pytest.raises(FinetuneError, match=r'--batch-size 6 \(now 3\)'):
        finetune(FinetuneSettings(model=str(tiny_model_dir('colqwen2')), out=run, steps=1, batch_size=3, resume=True,
                                  **settings))
    with pytest.raises(FinetuneError, match='holds an unfinished run: pass --resume'):
        finetune(FinetuneSettings(model=str(tiny_model_dir('colqwen2')), out=run, steps=1, batch_size=6, **settings))


def test_kill_9_mid_training_then_resume_finishes_with_the_same_data_order(task, tiny_colqwen2, tmp_path):
    common = ['finetune', '--model', tiny_colqwen2, '--corpus', task.folder, '--train', task.folder / 'train.jsonl',
              '--val', task.folder / 'val.jsonl', '--steps', 8, '--batch-size', 3, '--save-steps', 2, '--dpi', 72,
              '--no-progress']
    reference = finetune(FinetuneSettings(model=tiny_colqwen2, out=tmp_path / 'whole', corpus=task.folder,
                                          train=[task.folder / 'train.jsonl'], val=task.folder / 'val.jsonl', steps=8,
                                          batch_size=3, save_steps=2, dpi=72, progress=False))
    out = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, '-m', 'lazyllm_colpali.cli', *map(str, common), '--out', str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 300
    while not (out / 'checkpoints' / 'checkpoint-4' / 'trainer_state.json').exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.time() < deadline, 'no checkpoint-4 within 300 s'
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / 'finetune_report.json').exists()
    # a checkpoint torn by the kill: its adapter file cut short, with or without trainer_state.json (under
    # load the kill can come after checkpoint-6 was saved; then the same bytes stand for rot on disk)
    torn = out / 'checkpoints' / 'checkpoint-6'
    torn.mkdir(exist_ok=True)
    (torn / 'adapter_model.safetensors').write_bytes(b'partial')
    result = _cli(*common, '--out', out, '--resume')
    assert result.returncode == 0, result.stderr[-3000:]
    noise = [w for w in ('Traceback', 'INFO', 'Loading weights', 'Warning', 'warn') if w in result.stderr]
    assert not noise, result.stderr[-3000:]                       # third-party noise only with -v
    report = json.loads((out / 'finetune_report.json').read_text())
    # checkpoint-6 is torn (or, when the kill came after it was saved, rotten): never resumed from, named
    assert report['status'] == 'finished' and report['steps'] == 8 and report['resumed_from_step'] in (4, 8)
    assert any(d.startswith('checkpoint-6: ') for d in report['discarded_checkpoints'])
    assert 'resumed from step' in result.stdout and 'removed checkpoint-6' in result.stdout
    # the resumed run consumed exactly the batches an uninterrupted run did, in the same order
    assert (out / 'data_order.jsonl').read_text() == (tmp_path / 'whole' / 'data_order.jsonl').read_text()
    assert report['data_order_sha256'] == reference['data_order_sha256']
    from lazyllm_colpali import ColPaliEncoder
    vectors = ColPaliEncoder(str(out)).encode_queries(['red circle on blue'])[0]
    assert vectors.shape[1] == 128 and bool(vectors.isfinite().all())


def test_resume_skips_torn_and_rotten_checkpoints_for_the_last_complete_one(tmp_path):
    import torch
    from safetensors.torch import save_file

    from lazyllm_colpali.training.run_folder import RunFolder

    run = RunFolder(tmp_path / 'out')

    def checkpoint(step, adapter=True, state=True, optimizer=True):
        folder = run.checkpoints / f'checkpoint-{step}'
        folder.mkdir(parents=True)
        if adapter:
            save_file({'lora_A': torch.ones(2, 3)}, str(folder / 'adapter_model.safetensors'))
        if optimizer:
            torch.save({'state': {}}, folder / 'optimizer.pt')
        if state:
            (folder / 'trainer_state.json').write_text(json.dumps({'global_step': step}))
        return folder

    checkpoint(2)
    good = checkpoint(4)
    rotten = checkpoint(6)                      # saved completely, then its adapter rotted on disk
    data = bytearray((rotten / 'adapter_model.safetensors').read_bytes())
    data[:8] = (10 ** 9).to_bytes(8, 'little')  # the header length now points past the file's end
    (rotten / 'adapter_model.safetensors').write_bytes(bytes(data))
    checkpoint(8, optimizer=False)              # cut short between the adapter and the optimizer state
    checkpoint(10, state=False)                 # cut short before trainer_state.json
    (checkpoint(12, adapter=False) / 'adapter_model.safetensors').write_bytes(b'partial')
    assert run.last_checkpoint() == good
    assert sorted(d.split(':')[0] for d in run.discarded) == \
        ['checkpoint-10', 'checkpoint-12', 'checkpoint-6', 'checkpoint-8']
    assert any('checkpoint-6: adapter_model.safetensors does not read' in d for d in run.discarded)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ['checkpoint-2', 'checkpoint-4']


def test_adapter_round_trips_through_index_search_and_eval(trained, task, tiny_colqwen2, tmp_path):
    adapter, _ = trained
    db = tmp_path / 'tuned.db'
    result = _cli('index', task.folder / 'val.pdf', '--model', adapter, '--db', db, '--no-progress')
    assert result.returncode == 0, result.stderr[-2000:]
    result = _cli('search', 'red circle on blue', '--db', db, '--json', '-k', 3)   # the recorded model: the adapter
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 3
    # the base model is refused on the adapter's collection (its fingerprint differs)
    result = _cli('search', 'red circle on blue', '--db', db, '--model', tiny_colqwen2)
    assert result.returncode == 2 and 'was built with model' in result.stderr and 'fingerprint' in result.stderr
    # a merged copy is the same model: same fingerprint, accepted, same ranking
    merged = tmp_path / 'merged'
    from lazyllm_colpali.training import merge_adapter
    merge_adapter(adapter, merged)
    by_adapter = _cli('search', 'red circle on blue', '--db', db, '--json', '-k', 3)
    by_merged = _cli('search', 'red circle on blue', '--db', db, '--json', '-k', 3, '--model', merged)
    assert by_merged.returncode == 0, by_merged.stderr[-2000:]
    assert [json.loads(line)['page_id'] for line in by_merged.stdout.splitlines()] == \
        [json.loads(line)['page_id'] for line in by_adapter.stdout.splitlines()]

    # eval: base and adapter side by side on the same queries, one table
    dataset = tmp_path / 'ds'
    (dataset / 'corpus').mkdir(parents=True)
    shutil.copy(task.folder / 'val.pdf', dataset / 'corpus' / 'val.pdf')
    val = [json.loads(l) for l in (task.folder / 'val.jsonl').read_text().splitlines()]
    (dataset / 'queries.jsonl').write_text(''.join(json.dumps({'query_id': str(i), 'query': r['query']}) + '\n'
                                                   for i, r in enumerate(val)))
    (dataset / 'qrels.jsonl').write_text(''.join(json.dumps({'query_id': str(i), 'page': r['page'], 'score': 1})
                                                 + '\n' for i, r in enumerate(val)))
    result = _cli('eval', '--dataset', dataset, '--arms', f'colpali,colpali@{adapter}', '--model', tiny_colqwen2,
                  '--out', tmp_path / 'eval', '-k', 5)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / 'eval' / 'ds.json').read_text())['arms']
    by_arm = {r['arm']: r for r in rows}
    assert set(by_arm) == {'colpali', f'colpali@{adapter}'} and not any(r['error'] for r in rows)
    assert 'LoRA adapter on' in by_arm[f'colpali@{adapter}']['note']
    print('\n' + result.stdout)
    recall = {a: r['metrics'] for a, r in by_arm.items()}
    assert recall[f'colpali@{adapter}'] != recall['colpali']


def test_from_pdfs_on_the_real_corpus_makes_pairs_from_every_file_and_holds_out_documents(corpus_dir):
    from lazyllm_colpali.training import pairs_from_pdfs
    from lazyllm_colpali.text.extract import get_extractor

    made = pairs_from_pdfs(corpus_dir, val_fraction=0.2, seed=0, progress=False)
    print('\n' + made.describe())
    files = {p.name for p in corpus_dir.glob('*.pdf')}
    assert {p.page.path for p in made.train + made.val} == files   # every file, the scans too (OCR)
    train_docs, val_docs = {p.page.path for p in made.train}, {p.page.path for p in made.val}
    assert val_docs and not train_docs & val_docs and set(made.held_out) == val_docs
    texts = {(f.name, n): t for f in corpus_dir.glob('*.pdf') for n, t in get_extractor('auto').extract(f)}
    for pair in made.train + made.val:
        page_text = texts[(pair.page.path, pair.page.page)]
        assert pair.query.strip() and len(pair.query) < len(page_text) / 2   # never the whole page
    assert made.kinds['headings'] and made.kinds['sentences']


def test_finetune_from_pdfs_trains_without_validation_pages(corpus_dir, tmp_path, tiny_model_dir):
    corpus = tmp_path / 'pdfs'
    corpus.mkdir()
    for name in ('arxiv_2407.01449v6_colpali_p1-5.pdf', 'zh_research_report.pdf'):
        shutil.copy(corpus_dir / name, corpus / name)
    out = tmp_path / 'adapter'
    result = _cli('finetune', '--model', tiny_model_dir('colqwen2'), '--from-pdfs', corpus, '--out', out,
                  '--steps', 2, '--batch-size', 2, '--val-fraction', 0.5, '--dpi', 40, '--no-progress')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'pairs from 2 files' in result.stdout and 'held-out' in result.stdout
    report = json.loads((out / 'finetune_report.json').read_text())
    held_out = report['pairs']['from_pdfs']['held_out_documents']
    train = [json.loads(l)['page'] for l in (out / 'pairs' / 'train.jsonl').read_text().splitlines()]
    val = [json.loads(l)['page'] for l in (out / 'pairs' / 'val.jsonl').read_text().splitlines()]
    assert len(held_out) == 1 and all(p.split('#')[0] == held_out[0] for p in val)
    assert train and not any(p.split('#')[0] == held_out[0] for p in train)
    assert report['val_after']['queries'] > 0


def test_hard_negatives_are_mined_with_the_index_and_skip_near_duplicates(task, tiny_colqwen2, tmp_path):
    from lazyllm_colpali.training import PageRef, TrainingPair, read_pairs
    from lazyllm_colpali.training.negatives import mine_hard_negatives
    from lazyllm_colpali.training.pages import PageImages

    corpus = tmp_path / 'corpus'
    shutil.copytree(task.folder, corpus)
    (corpus / 'copy').mkdir()
    shutil.copy(corpus / 'train.pdf', corpus / 'copy' / 'train.pdf')    # another version of the file
    shutil.copy(corpus / 'train.pdf', corpus / 'renamed.pdf')           # the same pages under another name
    pairs = read_pairs(corpus / 'train.jsonl')[:6]
    pairs += [TrainingPair('the copy', PageRef('copy/train.pdf', 7)),
              TrainingPair('the renamed one', PageRef('renamed.pdf', 8))]
    pages = PageImages(corpus, dpi=72)
    # k as large as the index: every hit is seen, so each near-duplicate of an answer must be skipped
    mined, stats = mine_hard_negatives(tiny_colqwen2, pairs, corpus, 3 * 18, pages, workdir=tmp_path / 'mining',
                                       progress=False)
    assert stats['pages_indexed'] == 3 * 18
    for pair in mined:
        answers = [p.page for p in pairs if p.query == pair.query]
        twins = {PageRef(name, a.page) for a in answers for name in ('train.pdf', 'copy/train.pdf', 'renamed.pdf')}
        assert not twins & set(pair.negatives), pair
        assert len(pair.negatives) == 3 * 18 - len(twins)      # every other page is a negative
    assert stats['skipped_other_version'] and stats['skipped_same_pixels']

    # through finetune: k mined per pair, negative-ce loss, the mined pairs kept for a resume
    out = tmp_path / 'adapter'
    report = finetune(FinetuneSettings(model=tiny_colqwen2, out=out, train=[corpus / 'train.jsonl'], corpus=corpus,
                                       hard_negatives=2, steps=1, batch_size=2, dpi=72, progress=False))
    assert report['loss'] == 'negative-ce' and report['negatives_per_pair'] == 2
    assert report['mining']['mined'] == 2 * 18 and report['mining']['pages_indexed'] == 18
    for pair in read_pairs(out / 'pairs' / 'train.jsonl'):
        assert len(pair.negatives) == 2 and pair.page not in pair.negatives


def test_collapse_is_detected_and_stops_training():
    from transformers import TrainerControl, TrainerState

    from lazyllm_colpali.training.callbacks import CollapseCallback, collapse_loss

    callback = CollapseCallback(collapse_loss('in-batch', 8), patience=3)
    state, control = TrainerState(), TrainerControl()
    for step, (loss, grad) in enumerate([(2.0, 1.0), (math.log(8), 0.0), (math.log(8), 0.0)], 1):
        state.global_step = step
        callback.on_log(None, state, control, logs={'loss': loss, 'grad_norm': grad})
    assert not control.should_training_stop
    state.global_step = 4
    callback.on_log(None, state, control, logs={'loss': math.log(8) + 1e-5, 'grad_norm': 1e-7})
    assert control.should_training_stop and callback.detected['step'] == 4
    assert collapse_loss('pairwise', 8) == pytest.approx(math.log(2))


def test_the_lazyllm_finetune_method_runs_the_command_through_a_launcher(task, tiny_colqwen2, tmp_path):
    import lazyllm

    import lazyllm_colpali
    from lazyllm_colpali import ColPaliEmbed
    from lazyllm_colpali.training.lazyllm_method import ColPaliFinetune

    lazyllm_colpali.register()
    assert lazyllm.finetune.colpali is ColPaliFinetune
    with pytest.raises(FinetuneError, match='unknown option'):
        ColPaliFinetune(tiny_colqwen2, tmp_path / 'x', epoch=3)
    tune = lazyllm.finetune.colpali(tiny_colqwen2, str(tmp_path / 'adapter'), corpus=str(task.folder), steps=2,
                                    batch_size=3, dpi=72, launcher=lazyllm.launchers.empty(sync=True))
    adapter = tune(str(task.folder / 'train.jsonl'), str(task.folder / 'val.jsonl'))
    assert adapter == str((tmp_path / 'adapter').resolve())
    assert json.loads((Path(adapter) / 'finetune_report.json').read_text())['steps'] == 2
    vectors = ColPaliEmbed(adapter)('red circle on blue')   # a LazyLLM component takes the adapter as its model
    assert len(vectors[0]) == 128


def test_finetune_benchmarks_run_end_to_end_at_tiny_size(tmp_path):
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    import bench_finetune
    import bench_finetune_gpu

    result = bench_finetune.main(['--families', 'colqwen2', '--classes', '4', '--train-per-class', '2', '--epochs',
                                  '2', '--eval-every', '1', '--workdir', str(tmp_path / 'a'),
                                  '--out', str(tmp_path / 'finetune.json')])
    row = result['rows'][0]
    assert row['steps'] == 2 and row['cpu_s'] > 0 and len(row['recall_curve']) == 2
    assert json.loads((tmp_path / 'finetune.json').read_text())['task']['chance_recall_at_1'] == 0.25
    result = bench_finetune_gpu.main(['--tiny', '--device', 'cpu', '--models', 'colqwen2-2b', '--batch-size', '2',
                                      '--steps', '2', '--workdir', str(tmp_path / 'b'),
                                      '--out', str(tmp_path / 'g.json')])
    row = result['rows'][0]
    assert 'error' not in row, row
    assert row['steps'] == 2 and row['gradient_checkpointing'] and row['pages_per_s'] > 0
