"""Serving under hostile input (issue 13): the JSON API's bodies, hosts, tokens and paths; the chat's Markdown;
the CLI's arguments. Each payload is one a hostile user actually tried; each must get a clear refusal."""
from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import httpx
import pytest

from lazyllm_colpali import ColPaliIndex, MilvusMultiVectorStore
from lazyllm_colpali.serving.api import create_app
from tests.helpers.pdfs import make_text_pdf
from tests.helpers.servers import serve_in_thread


@pytest.fixture(scope='module')
def api_index(colpali_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp('api')
    make_text_pdf(root / 'docs' / 'report.pdf', ['Revenue grew 12% in 2023.', 'Costs by region.'])
    store = MilvusMultiVectorStore(str(root / 'db' / 'c.db'), dim=colpali_encoder.dim)
    index = ColPaliIndex(colpali_encoder, store, dpi=40, progress=False)
    index.add([root / 'docs'])
    yield index, root
    store.close()


@pytest.fixture(scope='module')
def api(api_index):
    index, root = api_index
    (root / 'allowed').mkdir()
    with serve_in_thread(create_app(index, allow_roots=[root / 'allowed'])) as url:
        yield url, root


MALFORMED = [   # (raw JSON body, field the 400 must name)
    ('{"query": "x", "filters": {"pages": null}}', 'filters.pages'),
    ('{"query": "x", "filters": {"pages": 5}}', 'filters.pages'),
    ('{"query": "x", "filters": {"page": [1]}}', 'filters.page'),
    ('{"query": "x", "filters": {"file": [null]}}', 'filters.file'),
    ('{"query": "x", "filters": {"file": [["a.pdf"], ["b.pdf"]]}}', 'filters.file'),
    ('{"query": "x", "filters": {"pages": [1, Infinity]}}', 'filters.pages'),
    ('{"query": "x", "topk": -Infinity}', 'topk'),
    ('{"query": "\\ud800 lone surrogate"}', 'query'),
    ('{"query": "x", "filters": {"pages": [7, 3]}}', 'filters.pages'),
    ('{"query": "x", "filters": {"file": []}}', 'filters.file'),
    ('{"query": "x", "topk": 0}', 'topk'),
    ('{"query": "x", "topk": true}', 'topk'),
    ('{"query": "x", "topk": "5"}', 'topk'),
    ('{"query": 5}', 'query'),
    ('{"topk": 3}', 'query'),
    ('{"query": "x", "k": 3}', 'k'),
    ('[1, 2]', 'body'),
    ('{"query": "x"', 'body'),
    ('', 'body'),
]


def test_every_malformed_search_body_is_a_400_naming_the_field_on_a_live_connection(api):
    url, _ = api
    host, port = url.split('//')[1].split(':')
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request('GET', '/health')
    conn.getresponse().read()
    sock = conn.sock
    for body, field in MALFORMED:
        conn.request('POST', '/search', body=body.encode(), headers={'Content-Type': 'application/json'})
        r = conn.getresponse()
        detail = json.loads(r.read())['detail']
        assert r.status == 400, (body, r.status, detail)
        assert detail.startswith(field), (body, detail)
    conn.request('POST', '/search', body=b'{"query": "revenue", "topk": 1}', headers={'Content-Type': 'application/json'})
    r = conn.getresponse()
    assert r.status == 200 and len(json.loads(r.read())['hits']) == 1
    assert conn.sock is sock, 'the server closed the keep-alive connection after an error'


def test_filter_and_body_sizes_are_bounded(api):
    url, _ = api
    r = httpx.post(f'{url}/search', json={'query': 'x', 'filters': {'file': [f'{i}.pdf' for i in range(101)]}})
    assert r.status_code == 400 and r.json()['detail'].startswith('filters.file')
    r = httpx.post(f'{url}/search', json={'query': 'x', 'filters': {'file': [f'name {i}.pdf' for i in range(100_000)]}})
    assert r.status_code == 413
    r = httpx.post(f'{url}/search', content=b'{"query": "' + b'a' * (100 << 20) + b'"}')   # 100 MB, refused unread
    assert r.status_code == 413

    def chunks():   # no Content-Length: counted as it arrives
        yield b'{"query": "'
        for _ in range(100):
            yield b'a' * 4096
        yield b'"}'
    r = httpx.post(f'{url}/search', content=chunks())
    assert r.status_code == 413
    r = httpx.post(f'{url}/search', json={'query': 'revenue', 'filters': {'file': ['report.pdf'] * 100}})
    assert r.status_code == 200 and {h['file_name'] for h in r.json()['hits']} == {'report.pdf'}


def test_host_header_must_be_this_server(api):
    url, _ = api
    r = httpx.post(f'{url}/search', json={'query': 'revenue'}, headers={'Host': 'evil.example:8765'})
    assert r.status_code == 400 and 'Host header' in r.json()['detail']
    for host in ('localhost', '127.0.0.1:1234'):
        assert httpx.get(f'{url}/health', headers={'Host': host}).status_code == 200


def test_index_only_under_allowed_roots(api, tmp_path):
    url, root = api
    allowed = root / 'allowed'
    outside = make_text_pdf(tmp_path / 'private' / 'secret.pdf', ['Secret.'])
    (allowed / 'link.pdf').symlink_to(outside)
    (allowed / 'linkdir').symlink_to(outside.parent, target_is_directory=True)
    make_text_pdf(allowed / 'mixed' / 'ok.pdf', ['Fine.'])
    (allowed / 'mixed' / 'sneaky.pdf').symlink_to(outside)

    def index(paths):
        return httpx.post(f'{url}/index', json={'paths': paths}, timeout=30)

    for paths, status, says in (([''], 400, 'paths[0]'), (['~'], 400, 'absolute'), (['.'], 400, 'absolute'),
                                ([str(tmp_path)], 403, 'outside'), (['/'], 403, 'outside'),
                                ([str(allowed / '..' / 'docs')], 403, 'outside'),
                                ([str(allowed / 'link.pdf')], 403, 'outside'),
                                ([str(allowed / 'linkdir')], 403, 'outside'),
                                ([str(allowed / 'missing.pdf')], 400, 'no such file'),
                                ([], 400, 'paths'), ([str(allowed)] * 101, 400, 'paths'), ([None], 400, 'paths[0]')):
        r = index(paths)
        assert r.status_code == status and says in r.json()['detail'], (paths, r.status_code, r.text)
    job = index([str(allowed / 'mixed')]).json()['job']
    state = _wait_job(url, job)
    assert state['state'] == 'done' and state['report']['added_pages'] == 1, state
    assert [f['reason'] for f in state['report']['failures']] == ['links outside the allowed roots']
    r = httpx.post(f'{url}/search', json={'query': 'Secret', 'topk': 10})
    assert 'secret.pdf' not in {h['file_name'] for h in r.json()['hits']}


def _wait_job(url: str, job: str, timeout: float = 120) -> dict:
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = httpx.get(f'{url}/jobs/{job}', timeout=30).json()
        if state['state'] not in ('queued', 'running'):
            return state
        time.sleep(0.2)
    raise AssertionError(f'job {job} still {state} after {timeout} s')


def test_index_is_off_without_roots_and_a_token_guards_every_route(api_index):
    index, _ = api_index
    with serve_in_thread(create_app(index)) as url:
        r = httpx.post(f'{url}/index', json={'paths': ['/tmp']})
        assert r.status_code == 403 and '--allow-root' in r.json()['detail']
    with serve_in_thread(create_app(index, token='s3cret', allowed_hosts=None)) as url:
        assert httpx.get(f'{url}/health').status_code == 401
        assert httpx.get(f'{url}/health', headers={'Authorization': 'Bearer wrong'}).status_code == 401
        r = httpx.post(f'{url}/search', json={'query': 'revenue'}, headers={'Authorization': 'Bearer s3cret'})
        assert r.status_code == 200 and r.json()['hits']
        assert httpx.get(f'{url}/health', headers={'Authorization': 'Bearer s3cret', 'Host': 'any.name'}).json()
