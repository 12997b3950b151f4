"""What the fault handling of issue 23 costs on the write path and the query path, on a Milvus Lite file,
milvus-lite's gRPC server and Milvus 2.3.5 standalone (pages of 1030 x 128, synthetic). Each cost is shown
next to the baseline it adds to, measured in the same run:

- write: CRC-32 of a page's vectors (cache + row) vs ``store.add`` per page; a file's source claim and
  older-version check vs adding a 4-page file;
- reader's periodic check: change token + row count (now) vs change token alone (before);
- full listing every ``full_sync_interval`` (page ids, lengths, checksums) vs the listing a sync did before
  (no ``meta``); the sampled checksum check (64 pages) and a full ``check`` pass over the cache;
- query: ``store.packed()`` with its maintenance checks vs the cache's own ``packed()``; ``records()`` of 10
  hits (checksum split + image key check) vs the raw Milvus ``get``; exact search p50.

    python benchmarks/bench_faults.py [--pages 300] [--out benchmarks/results/faults.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402  (benchmarks/ is on sys.path when run or imported)

from benchmarks.synthetic import make_pages  # noqa: E402
from lazyllm_colpali import MaxSimRetriever, MilvusMultiVectorStore, PageRecord  # noqa: E402
from lazyllm_colpali.devtools.milvus_servers import LiteServer, MilvusStandalone, milvus_standalone_exe  # noqa
from lazyllm_colpali.store.drop import carry_out, plan_drop  # noqa: E402
from lazyllm_colpali.store.integrity import fp16_checksum  # noqa: E402
from lazyllm_colpali.store.milvus_query import FAST_READ  # noqa: E402


def _p50_ms(fn, repeat: int) -> float:
    fn()   # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_checksum(pages) -> dict:
    page = pages.page(0).numpy().astype(np.float16)
    ms = _p50_ms(lambda: fp16_checksum(page), 200)
    return {'page_bytes': page.nbytes, 'crc_ms_per_page': ms, 'crc_mb_per_s': page.nbytes / ms / 1e3,
            'zlib': zlib.ZLIB_RUNTIME_VERSION}


def bench_store(name: str, uri: str, pages, tmp: Path, repeat: int) -> dict:
    n = len(pages)
    collection = f'bench_faults_{uuid.uuid4().hex[:6]}'
    store = MilvusMultiVectorStore(uri, collection, dim=128, data_dir=tmp / 'A', sync_interval=0,
                                   verify_interval=3600)
    items = [(PageRecord(page_id=f'{i:016x}-p00001', doc_id=f'{i:016x}', source=f'/x/{i}.pdf', file_name='x.pdf',
                         page_number=1, width=1, height=1), pages.page(i).float(), None) for i in range(n)]
    start = time.perf_counter()
    for s in range(0, n, 8):
        store.add(items[s:s + 8])
    add_ms_per_page = (time.perf_counter() - start) * 1000 / n
    out = {'store': name, 'pages': n, 'add_ms_per_page': add_ms_per_page}

    # a 4-page file's claim and older-version check (what the indexer adds per file), vs adding its pages
    file_items = [(PageRecord(page_id=f'{"f" * 15}{k}-p0000{p}', doc_id=f'{"f" * 15}{k}', source=f'/y/{k}.pdf',
                              file_name='y.pdf', page_number=p, width=1, height=1), pages.page(p).float(), None)
                  for k in range(5) for p in range(1, 5)]
    claim_ms, file_ms = [], []
    for k in range(5):
        start = time.perf_counter()
        store.add(file_items[4 * k:4 * k + 4])
        file_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        store.source_claims(f'/y/{k}.pdf')
        store.claim_source(f'{"f" * 15}{k}', 'bench-host', f'/y/{k}.pdf', 1.0)
        store.replace_older_versions(f'{"f" * 15}{k}', f'/y/{k}.pdf', 'bench-host')
        claim_ms.append((time.perf_counter() - start) * 1000)
    out['add_4_page_file_ms'] = statistics.median(file_ms)
    out['claim_and_replace_check_ms_per_file'] = statistics.median(claim_ms)

    # a reader's periodic check, before (token) and now (token + row count)
    out['token_get_ms'] = _p50_ms(lambda: store.get_meta('change', fast=True), repeat)
    out['token_and_count_ms'] = _p50_ms(lambda: (store.get_meta('change', fast=True), store._count(fast=True)),
                                        repeat)

    # listings: what a sync listed before, what the full listing lists now
    out['listing_before_ms'] = _p50_ms(lambda: store._query('', ['page_id', 'doc_id', 'n_vectors']), 5)
    out['listing_now_ms'] = _p50_ms(lambda: store._query('', ['page_id', 'doc_id', 'n_vectors', 'meta']), 5)
    out['verify_sample_64_ms'] = _p50_ms(lambda: store.vectors.verify_sample(64), 20)
    out['verify_all_ms_per_1k_pages'] = _p50_ms(lambda: store.vectors.verify(), 3) / len(store.vectors.page_docs()) \
        * 1000

    # the query path, at the default sync interval (sync_interval=0 above checks on every call: that cost is
    # the token + count column, paid once per interval)
    store.sync_interval = 5.0
    store.packed()
    out['packed_with_checks_us'] = _p50_ms(store.packed, 2000) * 1000
    out['packed_cache_only_us'] = _p50_ms(store.vectors.packed, 2000) * 1000
    ids = [r.page_id for r, _, _ in items[:10]]
    out['records_10_ms'] = _p50_ms(lambda: store.records(ids), repeat)
    out['raw_get_10_ms'] = _p50_ms(lambda: store._client.get(store.collection, ids=ids, **FAST_READ), repeat)
    retriever = MaxSimRetriever(store, mode='exact')
    g = torch.Generator().manual_seed(7)
    queries = [torch.nn.functional.normalize(torch.randn(20, 128, generator=g), dim=1) for _ in range(repeat)]
    it = iter(queries * 2)
    out['exact_search_p50_ms'] = _p50_ms(lambda: retriever.search_vectors(next(it), 10), repeat - 1)
    store.close()
    carry_out(plan_drop(uri, collection, data_dir=tmp / 'A'))   # `lazyllm-colpali drop`, without asking
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pages', type=int, default=300)
    parser.add_argument('--repeat', type=int, default=30)
    parser.add_argument('--no-milvus23', action='store_true', help='skip Milvus 2.3.5 standalone')
    parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'faults.json'))
    args = parser.parse_args()

    pages = make_pages(args.pages, seed=3).pages
    result = {'load_average_start': os.getloadavg(), 'checksum': bench_checksum(pages), 'stores': []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        servers = [LiteServer(tmp / 'lite').start()]
        targets = [('Lite file', str(tmp / 'lite.db')), ('milvus-lite server', servers[0].uri)]
        exe = milvus_standalone_exe()
        if exe and not args.no_milvus23:
            (tmp / 'm23').mkdir()
            servers.append(MilvusStandalone(exe, tmp / 'm23').start())
            targets.append(('Milvus 2.3.5', servers[-1].uri))
        try:
            for name, uri in targets:
                result['stores'].append(bench_store(name, uri, pages, tmp / uuid.uuid4().hex[:6], args.repeat))
        finally:
            for server in servers:
                server.stop()
    result['load_average_end'] = os.getloadavg()

    c = result['checksum']
    print(f'\nCRC-32 of one page ({c["page_bytes"]} bytes): {c["crc_ms_per_page"]:.3f} ms '
          f'({c["crc_mb_per_s"]:.0f} MB/s); load average {result["load_average_start"][0]:.2f} at the start')
    print(f'\n{"store":<20}{"add ms/page":>12}{"crc share":>10}{"4-page file ms":>15}{"claim ms":>9}'
          f'{"token ms":>9}{"+count ms":>10}{"list before":>12}{"list now":>9}')
    for r in result['stores']:
        print(f'{r["store"]:<20}{r["add_ms_per_page"]:>12.2f}{2 * c["crc_ms_per_page"] / r["add_ms_per_page"]:>10.1%}'
              f'{r["add_4_page_file_ms"]:>15.1f}{r["claim_and_replace_check_ms_per_file"]:>9.1f}'
              f'{r["token_get_ms"]:>9.2f}{r["token_and_count_ms"]:>10.2f}{r["listing_before_ms"]:>12.1f}'
              f'{r["listing_now_ms"]:>9.1f}')
    print(f'\n{"store":<20}{"verify 64 ms":>13}{"verify all ms/1k":>17}{"packed() us":>12}{"cache us":>9}'
          f'{"records(10) ms":>15}{"raw get ms":>11}{"search p50 ms":>14}')
    for r in result['stores']:
        print(f'{r["store"]:<20}{r["verify_sample_64_ms"]:>13.1f}{r["verify_all_ms_per_1k_pages"]:>17.1f}'
              f'{r["packed_with_checks_us"]:>12.1f}{r["packed_cache_only_us"]:>9.1f}{r["records_10_ms"]:>15.2f}'
              f'{r["raw_get_10_ms"]:>11.2f}{r["exact_search_p50_ms"]:>14.1f}')
    write_json(args.out, result)


if __name__ == '__main__':
    main()
