"""What the eval harness reports around the metrics: index cost of a reused workdir, the table's header,
gold pages no arm can return, duplicate qrel lines, and a quiet OCR engine."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from lazyllm_colpali.eval import EvalDataset, format_table, from_parts, run_eval
from lazyllm_colpali.eval.dataset import DatasetError
from lazyllm_colpali.eval.harness import ArmResult, EvalReport


def _dataset(pdf_dir):
    return EvalDataset('tiny', pdf_dir, {'a': 'replace the filter'}, {'a': {'manual.pdf#2': 1}})


def test_a_reused_index_without_its_stats_file_reports_no_build_time(tmp_path, pdf_dir):
    work = tmp_path / 'work'
    first = run_eval(_dataset(pdf_dir), ['text-layer'], topk=3, workdir=work).arms[0]
    assert first.index_s_per_page > 0 and first.pages == 6
    again = run_eval(_dataset(pdf_dir), ['text-layer'], topk=3, workdir=work).arms[0]
    assert again.index_s_per_page == first.index_s_per_page        # the stats file keeps the build's timing
    (work / 'index_stats.json').unlink()
    reused = run_eval(_dataset(pdf_dir), ['text-layer'], topk=3, workdir=work).arms[0]
    # The check of a built index is not its build: no figure rather than (check time) / 1 page.
    assert math.isnan(reused.index_s_per_page) and math.isnan(reused.index_seconds)
    assert 'build time not recorded' in reused.note and reused.metrics == first.metrics
    row = next(line for line in format_table(EvalReport('tiny', 3, 1, 6, 'm', [reused])).splitlines()
               if line.startswith('| text-layer'))
    assert '| -' in row


def test_the_table_names_the_visual_model_only_when_a_visual_arm_ran():
    text_only = EvalReport('d', 10, 5, 9, 'vidore/colqwen2-v1.0', [ArmResult('text'), ArmResult('layout')])
    assert format_table(text_only).splitlines()[0] == 'd: 5 queries, 9 pages, top-10'
    visual = EvalReport('d', 10, 5, 9, 'vidore/colqwen2-v1.0', [ArmResult('colpali'), ArmResult('text')])
    assert format_table(visual).splitlines()[0].endswith(', model vidore/colqwen2-v1.0')


def test_unreachable_gold_pages_and_duplicate_qrels_are_reported_by_query_before_running(tmp_path, pdf_dir):
    (tmp_path / 'q.jsonl').write_text(''.join(f'{{"query_id": "{q}", "query": "filter"}}\n' for q in 'abcd'))
    (tmp_path / 'qrels.tsv').write_text('a\tmanual.pdf#2\t1\n'           # fine
                                        'b\tmanual.pdf#0\t1\n'           # pages are numbered from 1
                                        'c\tmanual.pdf#4\t1\n'           # manual.pdf has 3 pages
                                        'd\tmanual.pdf#3\t1\n'
                                        'd\tmanual.pdf#3\t2\n'           # the same pair again
                                        'a\tmanual.pdf#2\t1\n')
    dataset = from_parts(pdf_dir, tmp_path / 'q.jsonl', tmp_path / 'qrels.tsv')   # nothing has run yet
    assert [qid for qid, _, _ in dataset.unreachable_pages()] == ['b', 'c']
    duplicates, unreachable = dataset.notes
    assert duplicates.startswith(f'{tmp_path / "qrels.tsv"}: 2 duplicate qrel lines')
    assert duplicates.endswith('line 5 repeats line 4, line 6 repeats line 1')
    assert '2 gold pages no arm can return' in unreachable
    assert 'qrels.tsv:2: query b: manual.pdf#0 (the file has 3 pages)' in unreachable
    assert 'qrels.tsv:3: query c: manual.pdf#4 (the file has 3 pages)' in unreachable and 'query a' not in unreachable
    assert dataset.qrels['d'] == {'manual.pdf#3': 2}                 # the last grade is kept
    dataset.validate()
    assert len(dataset.notes) == 2                                    # said once, however often it is checked


def test_qrels_naming_a_missing_file_or_query_fail_with_the_line(tmp_path, pdf_dir):
    (tmp_path / 'q.jsonl').write_text('{"query_id": "a", "query": "filter"}\n')
    (tmp_path / 'qrels.jsonl').write_text('{"query_id": "a", "page": "manual.pdf#2"}\n\n'
                                          '{"query_id": "a", "page": "manaul.pdf#1"}\n')
    with pytest.raises(DatasetError, match=r'qrels\.jsonl:3: manaul\.pdf'):
        from_parts(pdf_dir, tmp_path / 'q.jsonl', tmp_path / 'qrels.jsonl')
    (tmp_path / 'qrels.jsonl').write_text('{"query_id": "a", "page": "manual.pdf#2"}\n'
                                          '{"query_id": "zz", "page": "manual.pdf#1"}\n')
    with pytest.raises(DatasetError, match=r'qrels\.jsonl:2: zz'):
        from_parts(pdf_dir, tmp_path / 'q.jsonl', tmp_path / 'qrels.jsonl')
    (tmp_path / 'qrels.jsonl').write_text('{"query_id": "a", "page": "manual.pdf#2"}\n{"query_id": "a", \n')
    with pytest.raises(DatasetError, match=r'qrels\.jsonl:2: not a JSON record'):
        from_parts(pdf_dir, tmp_path / 'q.jsonl', tmp_path / 'qrels.jsonl')
    (tmp_path / 'qrels.tsv').write_text('a\tmanual.pdf#2\t1\na\tmanual.pdf#3\tyes\n')
    with pytest.raises(DatasetError, match=r'qrels\.tsv:2: the score must be a number'):
        from_parts(pdf_dir, tmp_path / 'q.jsonl', tmp_path / 'qrels.tsv')


def test_the_eval_command_prints_unreachable_gold_pages(tmp_path, pdf_dir):
    (tmp_path / 'q.jsonl').write_text('{"query_id": "q7", "query": "replace the filter"}\n')
    (tmp_path / 'qrels.jsonl').write_text('{"query_id": "q7", "page": "manual.pdf#9", "score": 1}\n'
                                          '{"query_id": "q7", "page": "manual.pdf#2", "score": 1}\n')
    run = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'eval', '--corpus', str(pdf_dir),
                          '--queries', str(tmp_path / 'q.jsonl'), '--qrels', str(tmp_path / 'qrels.jsonl'),
                          '--arms', 'text-layer', '--out', str(tmp_path / 'out')], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'qrels.jsonl:1: query q7: manual.pdf#9 (the file has 3 pages)' in run.stderr
    assert 'model' not in run.stdout.splitlines()[0]                 # no visual arm ran


QUIET_OCR = '''
import sys
from PIL import Image
from lazyllm_colpali.logging import quiet_loggers
if sys.argv[1] == 'verbose':
    quiet_loggers(verbose=True)
from lazyllm_colpali.text.extract import OcrExtractor
print(repr(OcrExtractor().ocr_image(Image.new('RGB', (320, 200), 'white'))))
'''


def test_ocr_of_a_blank_image_is_quiet_unless_verbose():
    quiet = subprocess.run([sys.executable, '-c', QUIET_OCR, 'quiet'], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "''", quiet.stderr[-2000:]
    assert 'text detection result is empty' not in quiet.stderr and 'INFO' not in quiet.stderr
    loud = subprocess.run([sys.executable, '-c', QUIET_OCR, 'verbose'], capture_output=True, text=True, timeout=300)
    assert "text detection result is empty" in loud.stderr and "INFO" in loud.stderr   # -v: all of it again
