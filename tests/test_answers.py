"""Answer-level evaluation: metrics against hand-computed values, gold answers in datasets, the stand-in VLM's
answer lookup over real HTTP, RAG answers per arm through build_rag (cached, retried, limited in flight), the
SFT export in the format LazyLLM's finetune.llamafactory reads, and the `eval` command's new columns."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lazyllm_colpali.eval import DatasetError, from_parts, load_dataset, run_eval
from lazyllm_colpali.eval.answering import AnswerEvalSettings, AnswerEvaluator, standin_lookup
from lazyllm_colpali.eval.answers import (ABSTENTION_TEXT, anls, exact_match, is_abstention, score_answer,
                                          token_f1)
from lazyllm_colpali.eval.sft_export import SFTExporter
from tests.conftest import chat_module


def test_metrics_match_hand_computed_values():
    # ANLS (DocVQA): NL = lev / max len on lower-cased text; 1 - NL below tau=0.5, else 0
    assert anls('Gothenburg', ['Goteborg']) == pytest.approx(1 - 3 / 10)    # drop h, drop n, u -> o
    assert anls('Sweden', ['Swedan']) == pytest.approx(1 - 1 / 6)           # one substitution in six
    assert anls('abcd', ['abxy']) == 0.0                                       # NL = 2/4 = tau: not below it
    assert anls('abcde', ['abxye']) == pytest.approx(1 - 2 / 5)               # NL = 0.4 < 0.5
    assert anls('320 people', ['320', 'three hundred twenty']) == pytest.approx(0.0)   # 7/10 edits: 0
    # SQuAD F1: pred {18, percent, growth}, gold {18, percent}: P 2/3, R 1, F1 = 2 * 2/3 / (5/3) = 0.8
    assert token_f1('18 percent growth', ['18 percent']) == pytest.approx(0.8)
    assert token_f1('growth', ['18 percent', 'growth of 18%']) == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))
    assert exact_match('An answer: Finance!', ['finance']) == 0.0              # "answer" is not an article
    assert exact_match('The Finance department.', ['finance department']) == 1.0
    # not answerable: abstaining is right on every metric, answering is wrong on every metric
    assert score_answer('I cannot find this in the document.', ['Not answerable'])['em'] == 1.0
    assert score_answer('9.4 percent [report.pdf, p. 1]', ['Not answerable']) == \
        {'em': 0.0, 'f1': 0.0, 'anls': 0.0, 'abstained': 0.0}
    assert score_answer(ABSTENTION_TEXT, ['16 bar'])['abstained'] == 1.0
    for text in ('The document does not mention it.', 'This information is not provided.', 'Not answerable.',
                 'Unable to determine from the pages.', "I don't know."):
        assert is_abstention(text), text
    for text in ('Yes', 'It does not run dry', 'No, it was not replaced', '16 bar'):
        assert not is_abstention(text), text


def test_gold_answers_from_an_answers_file_or_the_queries_with_errors_naming_file_and_line(tmp_path, pdf_dir):
    queries = tmp_path / 'queries.jsonl'
    queries.write_text('{"query_id": "a", "query": "replace the filter", "answer": "every month"}\n'
                       '{"query_id": "b", "query": "hiring memo"}\n'
                       '{"query_id": "c", "query": "the CEO salary"}\n')
    (tmp_path / 'qrels.jsonl').write_text('{"query_id": "a", "page": "manual.pdf#2"}\n'
                                          '{"query_id": "b", "page": "nested/memo.pdf#1"}\n')
    answers = tmp_path / 'answers.jsonl'
    answers.write_text('{"query_id": "b", "answers": ["quarterly", "each quarter"]}\n\n'
                       '{"query_id": "c", "answer": "Not answerable"}\n')
    dataset = from_parts(pdf_dir, queries, tmp_path / 'qrels.jsonl', answers=answers)
    assert dataset.answers == {'a': ['every month'], 'b': ['quarterly', 'each quarter'], 'c': ['Not answerable']}
    assert from_parts(pdf_dir, queries, tmp_path / 'qrels.jsonl').answers == {'a': ['every month']}

    answers.write_text('{"query_id": "b", "answers": ["q"]}\n{"query_id": "zz", "answers": ["x"]}\n')
    with pytest.raises(DatasetError, match=r"answers.jsonl: line 2: query 'zz' is not in the queries"):
        from_parts(pdf_dir, queries, tmp_path / 'qrels.jsonl', answers=answers)
    answers.write_text('{"query_id": "b", "answers": []}\n')
    with pytest.raises(DatasetError, match=r'answers.jsonl: line 1: the gold answer is empty'):
        from_parts(pdf_dir, queries, tmp_path / 'qrels.jsonl', answers=answers)
    answers.write_text('{"query_id": "b", "answers": ["q"]}\n{"query_id": "b", "answers": ["r"\n')
    with pytest.raises(DatasetError, match=r'answers.jsonl: line 2: not JSON'):
        from_parts(pdf_dir, queries, tmp_path / 'qrels.jsonl', answers=answers)
    answers.write_bytes(b'\xff\xfe{"query_id": "b"}\n')                   # not UTF-8
    with pytest.raises(DatasetError, match=r'answers.jsonl: cannot be read'):
        from_parts(pdf_dir, queries, tmp_path / 'qrels.jsonl', answers=answers)
    with pytest.raises(DatasetError, match=r'missing.jsonl: no such gold answers file'):
        from_parts(pdf_dir, queries, tmp_path / 'qrels.jsonl', answers=tmp_path / 'missing.jsonl')

    folder = tmp_path / 'ds'          # a dataset folder picks answers.jsonl up by itself
    (folder / 'corpus').mkdir(parents=True)
    (folder / 'corpus' / 'manual.pdf').write_bytes((pdf_dir / 'manual.pdf').read_bytes())
    (folder / 'queries.jsonl').write_text('{"query_id": "a", "query": "replace the filter"}\n')
    (folder / 'qrels.jsonl').write_text('{"query_id": "a", "page": "manual.pdf#2"}\n')
    (folder / 'answers.jsonl').write_text('{"query_id": "a", "answers": ["every month"]}\n')
    assert load_dataset(folder).answers == {'a': ['every month']}


def test_standin_answers_known_questions_from_the_pages_attached_over_http(tmp_path, monkeypatch, sample_dataset):
    from lazyllm_colpali.devtools import StandinVLMServer
    from lazyllm_colpali.generation import PageAnswerer
    from lazyllm_colpali.retrieve.retriever import SearchHit

    lookup = tmp_path / 'lookup.json'
    lookup.write_text(json.dumps(standin_lookup(sample_dataset)))
    monkeypatch.setenv('LAZYLLM_COLPALI_STANDIN_ANSWERS', str(lookup))   # what `standin-vlm --answers` sets up

    def page(name: str, number: int) -> SearchHit:
        path = sample_dataset.corpus_dir / name
        return SearchHit(f'{Path(name).stem}-{number}', 'doc', str(path), Path(name).name, number, 1.0, '')

    with StandinVLMServer() as server:
        answerer = PageAnswerer(chat_module(server))
        pump = 'What is the maximum operating pressure of the pump?'
        right = answerer.answer([page('hydra_pump_manual.pdf', 1)], pump)
        assert right.text == '16 bar [hydra_pump_manual.pdf, p. 1]'
        assert server.requests[-1]['n_images'] == 1                       # the page image went over HTTP
        wrong = answerer.answer([page('hydra_pump_manual.pdf', 2)], pump)  # page 2 holds the filter interval
        assert wrong.text == 'every 6 months [hydra_pump_manual.pdf, p. 2]'
        nothing = answerer.answer([page('climate_brief.pdf', 2)], pump)    # a page with no known answer
        assert nothing.text == ABSTENTION_TEXT
        margin = 'What was the operating margin of Northwind in 2019?'     # marked not answerable
        assert answerer.answer([page('northwind_annual_report_2023.pdf', 1)], margin).text == ABSTENTION_TEXT
        scan = answerer.answer([page('scans/warehouse_visit_scan.pdf', 1)],   # a page key with a folder
                               'Was the forklift battery charger replaced?')
        assert scan.text == 'yes [warehouse_visit_scan.pdf, p. 1]'
        other = answerer.answer([page('hydra_pump_manual.pdf', 1)], 'Who wrote the manual?')
        assert other.text.startswith('[stand-in VLM, not a real model]')   # unknown: the usual stand-in reply


@pytest.fixture
def lookup_server(sample_dataset):
    from lazyllm_colpali.devtools import StandinVLMServer

    with StandinVLMServer(answers=standin_lookup(sample_dataset), delay=0.05) as server:
        yield server


def test_answers_per_arm_follow_retrieval_through_build_rag(tmp_path, sample_dataset, tiny_model_dir, lookup_server):
    """The stand-in answers right exactly when a relevant page is among those shown: every record checks it, for a
    good arm (BM25 on the text layer) and a random one (a tiny untrained ColPali), plus their fusion."""
    from lazyllm import OnlineEmbeddingModule

    embed = OnlineEmbeddingModule(source='openai', url=lookup_server.base_url, model='standin-vlm', skip_auth=True,
                                  type='embed')
    settings = AnswerEvalSettings(chat_module(lookup_server), pages=2, max_image_side=400, embed=embed,
                                  judge=chat_module(lookup_server), concurrency=3, progress=False)
    report = run_eval(sample_dataset, ['colpali', 'text-layer', 'hybrid'], topk=5,
                      model=str(tiny_model_dir('colpali')), workdir=tmp_path / 'work',
                      arm_hooks=[AnswerEvaluator(settings)])
    assert lookup_server.max_in_flight <= 3 + 1                       # three answerers and one judge call at most
    for arm in report.arms:
        records = arm.details['answers']
        assert len(records) == 12 and all(r['answer'] is not None for r in records)
        for r in records:
            relevant = set(sample_dataset.qrels.get(r['query_id'], {}))
            shown = r['pages']
            assert len(shown) <= 2
            if r['gold'] == ['Not answerable']:
                expected = 1.0
            else:
                expected = float(bool(relevant & set(shown)))
            assert (r['em'], r['anls'], r['f1'], r['judge']) == (expected,) * 4, (arm.arm, r)
            assert r['semantic'] == pytest.approx(1.0) if expected else r['semantic'] < 1.0
        group = arm.metric_groups['answers']
        assert group['em'] == pytest.approx(sum(r['em'] for r in records) / 12)
        assert group['n_questions'] == 12 and group['n_not_answerable'] == 1
    by_arm = {a.arm: a.metric_groups['answers']['em'] for a in report.arms}
    assert by_arm['text-layer'] >= 0.7                                # BM25 finds most evidence pages
    requests = [r for r in lookup_server.requests if '[answer-judge]' not in r['prompt']]
    # at most one call per question and arm that showed pages (an arm with no page for a question answers
    # without a call; arms sending the same prompt and images share the cached answer)
    shown = [(r['question'], tuple(r['pages'])) for arm in report.arms for r in arm.details['answers'] if r['pages']]
    assert len(set(shown)) <= len(requests) <= len(shown) and all(1 <= r['n_images'] <= 2 for r in requests)
    assert all(max(size) <= 400 for r in requests for size in r['sizes'])
    assert lookup_server.embedding_requests > 0

    from lazyllm_colpali.eval import format_table, write_chart, write_json
    table = format_table(report)
    assert all(column in table.splitlines()[2] for column in ('| EM ', '| ANLS ', '| F1 ', '| Sem ', '| Judge '))
    data = json.loads(write_json(report, tmp_path / 'r.json').read_text())
    assert data['arms'][1]['metric_groups']['answers']['em'] == by_arm['text-layer']
    assert 'hits' not in data['arms'][0] and 'details' not in data['arms'][0]
    from PIL import Image
    with Image.open(write_chart(report, tmp_path / 'r.png')) as chart:
        assert chart.size[1] >= 2 * 4 * 120 - 10                      # a second panel for the answer metrics


def test_answer_calls_are_cached_retried_and_failures_leave_the_run_standing(tmp_path, sample_dataset):
    from lazyllm_colpali.devtools import StandinVLMServer

    with StandinVLMServer(answers=standin_lookup(sample_dataset), fail_first=2) as server:
        settings = AnswerEvalSettings(chat_module(server), retries=3, backoff=0.01, concurrency=2, progress=False)
        evaluator = AnswerEvaluator(settings)
        first = run_eval(sample_dataset, ['text-layer'], topk=3, workdir=tmp_path / 'work', arm_hooks=[evaluator])
        assert first.arms[0].metric_groups['answers']['n_answered'] == 12   # two HTTP 500s were retried
        with_pages = sum(1 for r in first.arms[0].details['answers'] if r['pages'])   # q08: no page, no call
        assert [r['status'] for r in server.requests[:2]] == [500, 500]
        assert with_pages == 11 and len(server.requests) == with_pages + 2
        assert server.max_in_flight <= 2
        again = run_eval(sample_dataset, ['text-layer'], topk=3, workdir=tmp_path / 'work',
                         arm_hooks=[AnswerEvaluator(settings)])
        assert len(server.requests) == with_pages + 2                        # the rerun read the cache
        assert again.arms[0].metric_groups == first.arms[0].metric_groups

        server.fail_first = 10 ** 6                                          # a VLM that never answers
        down = run_eval(sample_dataset, ['text-layer'], topk=3, workdir=tmp_path / 'other',
                        arm_hooks=[AnswerEvaluator(AnswerEvalSettings(chat_module(server), retries=2, backoff=0.01,
                                                                      progress=False))])
        arm = down.arms[0]
        assert arm.metrics['mrr'] == first.arms[0].metrics['mrr']           # retrieval numbers are kept
        group = arm.metric_groups['answers']     # only q08, which had no page to show, got its (fixed) answer
        assert (group['n_questions'], group['n_answered'], group['em']) == (12, 1, 0.0)
        failed = [r for r in arm.details['answers'] if r['answer'] is None]
        assert len(failed) == 11 and all('did not answer' in r['error'] for r in failed)


def test_concurrent_answerers_render_and_fit_pages_safely(tmp_path, sample_dataset, monkeypatch):
    """PDFium is not thread-safe and fitted JPEGs share names: both crashed concurrent answer generation."""
    from lazyllm_colpali.generation.page_images import page_image
    from lazyllm_colpali.retrieve.retriever import SearchHit

    monkeypatch.setenv('LAZYLLM_COLPALI_HOME', str(tmp_path / 'home'))
    pdf = sample_dataset.corpus_dir / 'northwind_annual_report_2023.pdf'
    source = tmp_path / 'page.png'
    from PIL import Image
    Image.new('RGB', (1600, 1200), 'white').save(source)
    rendered = [SearchHit(f'p{n}', 'd', str(pdf), pdf.name, n, 1.0, '') for n in (1, 2, 3)] * 4
    stored = [SearchHit('s1', 'd', str(pdf), pdf.name, 1, 1.0, str(source))] * 8
    results, errors = [], []

    def fetch(hit):
        try:
            results.append(page_image(hit, 300))
        except Exception as e:   # noqa: BLE001 - any failure is the bug
            errors.append(e)
    threads = [threading.Thread(target=fetch, args=(h,)) for h in rendered + stored]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 20 and all(p is not None and p.is_file() for p in results)
    assert not list((tmp_path / 'home').rglob('*.tmp'))


def test_sft_export_is_what_lazyllm_finetune_llamafactory_reads(tmp_path, sample_dataset):
    import lazyllm
    from lazyllm import finetune

    out = tmp_path / 'sft' / 'train.json'
    exporter = SFTExporter(out, arm='text-layer', pages=2, max_image_side=320)
    report = run_eval(sample_dataset, ['text-layer'], topk=3, workdir=tmp_path / 'work', arm_hooks=[exporter])
    records = json.loads(out.read_text())
    hits = report.arms[0].hits
    assert isinstance(records, list) and exporter.written == len(records) == 9
    assert exporter.skipped == {'with no relevant page shown': 2, 'with no page retrieved': 1,
                                'with a page image missing': 0}
    assert 'export-sft: 9 examples' in exporter.notes[0]
    by_question = {}
    for record in records:
        user, assistant = record['messages']
        assert (user['role'], assistant['role']) == ('user', 'assistant') and set(record) == {'messages', 'images'}
        assert user['content'].count('<image>') == len(record['images']) >= 1     # LLaMA-Factory checks this
        assert all(Path(p).is_absolute() and Path(p).is_file() and Path(p).parent == out.parent / 'train_images'
                   for p in record['images'])
        question = user['content'].rsplit('Question: ', 1)[1]
        by_question[question] = (assistant['content'], record['images'])
    answer, images = by_question['What is the maximum operating pressure of the pump?']
    assert answer == '16 bar [hydra_pump_manual.pdf, p. 1]'
    from PIL import Image
    with Image.open(images[0]) as image:
        assert max(image.size) == 320                                   # the size the generator is shown
    q05 = [h for h in hits['q05']][:2]
    assert len(images) == len(q05)
    assert by_question['What was the operating margin of Northwind in 2019?'][0] == ABSTENTION_TEXT

    # LazyLLM's own reading of the file (the dataset_info.json it hands LLaMA-Factory), without training
    with lazyllm.config.temp('temp_dir', str(tmp_path / 'lazyllm_tmp')):
        trainer = finetune.llamafactory('Qwen2-VL-2B-Instruct', str(tmp_path / 'ft' / 'lazyllm_lora'))
        info_path, names = trainer._build_temp_dataset_info([str(out)])
    info = json.loads(Path(info_path).read_text())[names]
    assert info['formatting'] == 'sharegpt' and info['file_name'] == str(out)
    assert info['columns'] == {'images': 'images', 'messages': 'messages'}
    assert info['tags'] == {'role_tag': 'role', 'content_tag': 'content', 'user_tag': 'user',
                            'assistant_tag': 'assistant', 'system_tag': 'system'}


def test_eval_command_shows_answer_columns_and_exports(tmp_path):
    home = tmp_path / 'home'
    env_args = dict(capture_output=True, text=True, timeout=600,
                    env={**__import__('os').environ, 'LAZYLLM_COLPALI_HOME': str(home)})
    out = tmp_path / 'out'
    run = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'eval', '--sample', '--arms', 'text-layer',
                          '--vlm-url', 'standin', '--embed-url', 'standin', '--judge-url', 'standin',
                          '--export-sft', str(out / 'sft.json'), '--out', str(out)], **env_args)
    assert run.returncode == 0, run.stderr[-3000:]
    header = next(line for line in run.stdout.splitlines() if line.startswith('| arm'))
    assert all(f'| {c} ' in header for c in ('EM', 'ANLS', 'F1', 'Sem', 'Judge', 'Abstain'))
    row = next(line for line in run.stdout.splitlines() if line.startswith('| text-layer'))
    assert '0.750' in row                      # 9 of 12: the evidence of q04, q08, q09 is not in the top 3
    assert 'oracle reader' in run.stdout and 'export-sft: 9 examples' in run.stdout
    answers = [json.loads(line) for line in (out / 'sample_answers.jsonl').read_text().splitlines()]
    assert len(answers) == 12 and {a['arm'] for a in answers} == {'text-layer'}
    assert json.loads((out / 'sft.json').read_text())[0]['messages'][0]['content'].startswith('<image>')
    assert 'Traceback' not in run.stderr

    bad = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'eval', '--sample', '--arms', 'text-layer',
                          '--export-sft', str(out / 'sft.txt')], **env_args)
    assert bad.returncode != 0 and 'must end in .json' in bad.stderr and 'Traceback' not in bad.stderr
    bad = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'eval', '--sample', '--arms', 'text-layer',
                          '--export-sft', str(out / 'x.json'), '--sft-arm', 'colpali'], **env_args)
    assert bad.returncode != 0 and '--sft-arm colpali is not among --arms' in bad.stderr
    (tmp_path / 'lookup.json').write_text('[{"answer": "16 bar"}]')
    bad = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'standin-vlm', '--answers',
                          str(tmp_path / 'lookup.json')], **env_args)
    assert bad.returncode == 2 and 'lookup.json: record 1 has no "question"' in bad.stderr
