"""Feedback (issue 19): verdicts on pages posted through the API and clicked in the chat (a real browser) are
stored durably beside the collection - concurrent writers, restarts and a writer killed mid-line lose nothing -
and come back out of `lazyllm-colpali feedback export` as training pairs that `finetune` accepts."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path


from lazyllm_colpali.training.feedback import FeedbackStore, export_pairs, feedback_path

ROOT = Path(__file__).resolve().parents[1]


def _writer(path: str, who: int, n: int) -> None:
    store = FeedbackStore(path)
    for i in range(n):
        store.add(f'question {who}-{i} ' + 'x' * 300, f'page-{i}', i % 2 == 0, file='a.pdf', page=i + 1,
                  source='/docs/a.pdf')


def test_concurrent_writers_a_torn_line_and_a_restart_lose_nothing(tmp_path):
    path = tmp_path / 'shared' / 'feedback' / 'pages.jsonl'
    ctx = multiprocessing.get_context('spawn')
    procs = [ctx.Process(target=_writer, args=(str(path), who, 60)) for who in range(4)]
    for p in procs:
        p.start()
    _writer(str(path), 99, 60)           # and a thread of this process at the same time
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = FeedbackStore(path).records()
    assert len(records) == 5 * 60 and len({r['id'] for r in records}) == 300
    assert {r['query'].split()[1] for r in records} == {f'{w}-{i}' for w in (0, 1, 2, 3, 99) for i in range(60)}

    # a writer killed mid-line leaves a torn tail: readers skip it, the next writer closes it off
    with open(path, 'ab') as f:
        f.write(b'{"id": "torn", "query": "half a li')
    assert len(FeedbackStore(path).records()) == 300
    FeedbackStore(path).add('after the crash', 'page-1', True)     # a restarted process
    records = FeedbackStore(path).records()
    assert len(records) == 301 and records[-1]['query'] == 'after the crash'


def test_export_makes_useful_pages_positives_and_rejected_pages_hard_negatives(tmp_path):
    store = FeedbackStore(tmp_path / 'fb.jsonl')
    store.add('pump pressure', 'p3', True, file='manual.pdf', page=3, source=str(tmp_path / 'docs' / 'manual.pdf'))
    store.add('pump pressure', 'p9', True, file='manual.pdf', page=9, source=str(tmp_path / 'docs' / 'manual.pdf'))
    store.add('pump pressure', 'p9', False, file='manual.pdf', page=9, source=str(tmp_path / 'docs' / 'manual.pdf'))
    store.add('pump pressure', 'p1', False, file='report.pdf', page=1, source='/elsewhere/report.pdf')
    store.add('only rejected', 'p1', False, file='report.pdf', page=1, source='/elsewhere/report.pdf')
    pairs = [p.to_json() for p in export_pairs(store.records(), corpus=tmp_path / 'docs')]
    assert pairs == [{'query': 'pump pressure', 'page': 'manual.pdf#3',
                      'negatives': ['manual.pdf#9', '/elsewhere/report.pdf#1']}]   # the latest verdict on p9 wins


def test_feedback_posted_to_the_api_comes_back_out_of_export(tmp_path, colpali_encoder, pdf_dir):
    from lazyllm_colpali import ColPaliIndex, MilvusMultiVectorStore
    from lazyllm_colpali.serving.api import create_app
    from tests.helpers.servers import serve_in_thread

    db = tmp_path / 'db' / 'c.db'
    store = MilvusMultiVectorStore(str(db), 'pages', dim=colpali_encoder.dim)
    index = ColPaliIndex(colpali_encoder, store, dpi=40, progress=False)
    index.add([pdf_dir])
    try:
        with serve_in_thread(create_app(index)) as url:
            def post(body):
                request = urllib.request.Request(f'{url}/feedback', data=json.dumps(body).encode(),
                                                 headers={'content-type': 'application/json'})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        return response.status, json.loads(response.read())
                except urllib.error.HTTPError as e:
                    return e.code, json.loads(e.read())

            hits = json.loads(urllib.request.urlopen(urllib.request.Request(
                f'{url}/search', data=json.dumps({'query': 'pump filter', 'topk': 3}).encode(),
                headers={'content-type': 'application/json'}), timeout=60).read())['hits']
            status, body = post({'query': 'pump filter', 'page_id': hits[0]['page_id'], 'useful': True})
            assert status == 200 and body['feedback'] == 1
            assert post({'query': 'pump filter', 'page_id': hits[1]['page_id'], 'useful': False})[0] == 200
            # hostile and malformed bodies: a 4xx naming the field, nothing stored
            assert post({'query': 'x', 'page_id': 'no-such-page', 'useful': True}) == \
                (404, {'detail': "page_id: no page 'no-such-page' in this collection (use a page_id from /search)"})
            status, body = post({'query': '  ', 'page_id': hits[0]['page_id'], 'useful': True})
            assert status == 400 and body['detail'].startswith('query: ')
            status, body = post({'query': 'q', 'page_id': hits[0]['page_id'], 'useful': 'yes'})
            assert status == 400 and body['detail'].startswith('useful: ')
            status, body = post({'query': 'q', 'page_id': hits[0]['page_id'], 'useful': True, 'extra': 1})
            assert status == 400 and body['detail'] == 'extra: unknown field'
        stored = FeedbackStore.for_store(store)
        assert stored.path == feedback_path(store.shared_dir, 'pages') and len(stored.records()) == 2
    finally:
        store.close()
    pairs_file = tmp_path / 'pairs.jsonl'
    result = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'feedback', 'export', '--db', str(db),
                             '--collection', 'pages', '--out', str(pairs_file), '--corpus', str(pdf_dir)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert '1 pairs (1 hard negatives) from 2 verdicts on 1 queries' in result.stdout
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    first, second = hits[0], hits[1]
    assert pairs == [{'query': 'pump filter', 'page': f'{Path(first["source"]).relative_to(pdf_dir).as_posix()}#'
                      f'{first["page"]}', 'negatives': [f'{Path(second["source"]).relative_to(pdf_dir).as_posix()}#'
                                                        f'{second["page"]}']}]
    # finetune accepts the export as it is
    from lazyllm_colpali.training import read_pairs, validate_pages
    validate_pages(read_pairs(pairs_file), pdf_dir)


def test_thumbs_in_the_chat_come_back_out_of_export(tmp_path, pdf_dir):
    from tests.test_browser import _browser, _need_browser, _open_chat, _start_serve, _wait_for

    _need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    db = tmp_path / 'db' / 'c.db'
    env_home = tmp_path / 'home'
    indexed = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'index', str(pdf_dir), '--model',
                              'tiny:colpali', '--db', str(db), '--dpi', '40', '--no-progress'], capture_output=True,
                             text=True, timeout=300, cwd=ROOT,
                             env={**os.environ, 'LAZYLLM_COLPALI_HOME': str(env_home)})
    assert indexed.returncode == 0, indexed.stderr
    proc, log, url = _start_serve(tmp_path)
    driver = _browser()
    try:
        box = _open_chat(driver, url)
        box.send_keys('How often is the filter replaced?', Keys.ENTER)
        _wait_for(driver, 'Was a source useful?')
        ups = driver.find_elements(By.CSS_SELECTOR, 'a[href*="colpali-feedback/"][href$="/1"]')
        downs = driver.find_elements(By.CSS_SELECTOR, 'a[href*="colpali-feedback/"][href$="/0"]')
        assert len(ups) == len(downs) == 2
        ups[0].click()
        _wait_for(driver, '(marked useful)', timeout=30)
        downs[1].click()
        _wait_for(driver, '(marked not useful)', timeout=30)
        assert len(driver.window_handles) == 1          # the links opened nothing
        sources = [e.text for e in driver.find_elements(By.XPATH, "//li[contains(., ', p. ')]")]
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(30)
        log.close()
    pairs_file = tmp_path / 'pairs.jsonl'
    result = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'feedback', 'export', '--db', str(db),
                             '--out', str(pairs_file), '--corpus', str(pdf_dir)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    assert len(pairs) == 1 and pairs[0]['query'] == 'How often is the filter replaced?'
    assert len(pairs[0]['negatives']) == 1 and pairs[0]['page'] != pairs[0]['negatives'][0]
    print('\nsources shown:', sources, '\nexported:', pairs)
