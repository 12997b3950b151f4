"""What it costs to keep full multi-vectors in Milvus, measured on real servers started here.

1. Layouts (issue #12): one row per patch vector vs wide "blob" rows per page - insert pages/s and the time to
   read 50 pages back - on milvus-lite's gRPC server and Milvus 2.3.5 standalone.
2. Ingestion with the tiny real model: store seconds vs encode seconds, for a Lite file (vectors local only)
   and for server URIs (vectors also written to Milvus).
3. Cache rebuild: a new machine syncing N pages from Milvus (seconds per 1k pages).
4. Query p50 of exact MaxSim on machine A (the indexer) and machine B (a rebuilt cache), same collection.

    python benchmarks/bench_store.py [--pages 300] [--layout-pages 50] [--out benchmarks/results/store.json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402  (benchmarks/ is on sys.path when run or imported)

from lazyllm_colpali import ColPaliEncoder, ColPaliIndex, MaxSimRetriever, MilvusMultiVectorStore, PageRecord  # noqa
from lazyllm_colpali.devtools.milvus_servers import (MilvusStandalone, free_port, milvus_standalone_exe,  # noqa
                                                     start_lite_server)
from benchmarks.synthetic import make_pages  # noqa: E402


def _patch_rows(client, name: str, pages, dim: int) -> dict:
    """The alternative layout: one FLOAT_VECTOR row per patch (id = page_id:patch)."""
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field('id', DataType.VARCHAR, max_length=64, is_primary=True)
    schema.add_field('page_id', DataType.VARCHAR, max_length=64)
    schema.add_field('v', DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index(field_name='v', index_type='FLAT', metric_type='IP')
    client.create_collection(name, schema=schema, index_params=index, consistency_level='Strong')
    start = time.perf_counter()
    for i in range(len(pages)):
        page = pages.page(i).float().numpy()
        rows = [{'id': f'p{i}:{j}', 'page_id': f'p{i}', 'v': page[j]} for j in range(len(page))]
        for a in range(0, len(rows), 2000):
            client.insert(name, rows[a:a + 2000])
    insert = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(len(pages)):
        client.query(name, filter=f'page_id == "p{i}"', output_fields=['v'], limit=4096)
    read = time.perf_counter() - start
    client.drop_collection(name)
    return {'insert_pages_per_s': len(pages) / insert, 'read_s': read}


def bench_layouts(uri: str, n_pages: int) -> list:
    from pymilvus import MilvusClient

    pages = make_pages(n_pages, seed=1).pages
    client = MilvusClient(uri=uri, timeout=60)
    out = []
    row = {'server': uri, 'layout': 'patch rows (FLOAT_VECTOR 128)', 'pages': n_pages}
    row.update(_patch_rows(client, f'bench_patch_{uuid.uuid4().hex[:6]}', pages, pages.tokens.shape[1]))
    out.append(row)
    with tempfile.TemporaryDirectory() as tmp:
        store = MilvusMultiVectorStore(uri, f'bench_blob_{uuid.uuid4().hex[:6]}', dim=128, data_dir=tmp)
        items = [(PageRecord(page_id=f'{i:016x}-p00001', doc_id=f'{i:016x}', source='/x.pdf', file_name='x.pdf',
                             page_number=1, width=1, height=1), pages.page(i).float(), None) for i in range(n_pages)]
        start = time.perf_counter()
        for a in range(0, n_pages, 4):
            store.add(items[a:a + 4])
        insert = time.perf_counter() - start
        start = time.perf_counter()
        got = store.layout.read({r.page_id: len(v) for r, v, _ in items})
        read = time.perf_counter() - start
        assert len(got) == n_pages
        kind = 'FLOAT16_VECTOR' if store.layout.float16 else 'FLOAT_VECTOR'
        out.append({'server': uri, 'layout': f'blob rows ({kind} {store.layout.width}), via the store',
                    'pages': n_pages, 'insert_pages_per_s': n_pages / insert, 'read_s': read})
        store._client.drop_collection(store.collection)
        store._client.drop_collection(f'{store.collection}__vectors')
        store.close()
    client.close()
    return out


def bench_ingest(uri: str, pdfs: list, encoder, tmp: Path) -> dict:
    store = MilvusMultiVectorStore(uri, f'bench_ingest_{uuid.uuid4().hex[:6]}', dim=encoder.dim,
                                   data_dir=tmp / uuid.uuid4().hex[:6])
    index = ColPaliIndex(encoder, store, dpi=60, progress=False)
    report = index.add(pdfs)
    store.close()
    s = report.seconds
    return {'uri': 'Lite file' if '://' not in uri else uri, 'pages': report.added_pages,
            'render_s': s['render'], 'encode_s': s['encode'], 'store_s': s['store'],
            'store_over_encode': s['store'] / s['encode'], 'layout': store.layout_name}


def bench_rebuild_and_query(uri: str, n_pages: int, tmp: Path, queries: int = 20) -> dict:
    corpus = make_pages(n_pages, seed=2)
    collection = f'bench_sync_{uuid.uuid4().hex[:6]}'
    a = MilvusMultiVectorStore(uri, collection, dim=128, data_dir=tmp / 'A')
    items = [(PageRecord(page_id=f'{i:016x}-p00001', doc_id=f'{i:016x}', source='/x.pdf', file_name='x.pdf',
                         page_number=1, width=1, height=1), corpus.pages.page(i).float(), None)
             for i in range(n_pages)]
    for s in range(0, n_pages, 8):
        a.add(items[s:s + 8])
    b = MilvusMultiVectorStore(uri, collection, data_dir=tmp / 'B')
    start = time.perf_counter()
    b.sync(force=True)
    rebuild = time.perf_counter() - start
    assert b.vectors.count() == n_pages
    result = {'uri': uri, 'pages': n_pages, 'rebuild_s': rebuild, 'rebuild_s_per_1k_pages': rebuild / n_pages * 1000}
    g = torch.Generator().manual_seed(5)
    qs = [torch.nn.functional.normalize(torch.randn(20, 128, generator=g), dim=1) for _ in range(queries)]
    for name, store in (('A', a), ('B', b)):
        retriever = MaxSimRetriever(store, mode='exact')
        retriever.search_vectors(qs[0], 10)   # warm: cache, page positions
        times = []
        for q in qs:
            t = time.perf_counter()
            retriever.search_vectors(q, 10)
            times.append((time.perf_counter() - t) * 1000)
        result[f'query_p50_ms_{name}'] = statistics.median(times)
    ranks = [[h.page_id for h in MaxSimRetriever(s, mode='exact').search_vectors(qs[1], 10)] for s in (a, b)]
    result['identical_top10'] = ranks[0] == ranks[1]
    a.close()
    b.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pages', type=int, default=300, help='pages for the rebuild and query runs')
    parser.add_argument('--layout-pages', type=int, default=50, help='pages for the layout comparison')
    parser.add_argument('--ingest-pages', type=int, default=24, help='PDF pages for the ingestion run')
    parser.add_argument('--no-milvus23', action='store_true', help='skip Milvus 2.3.5 standalone')
    parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'store.json'))
    args = parser.parse_args()

    from tests.helpers.pdfs import make_text_pdf

    result = {'layouts': [], 'ingest': [], 'rebuild': []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        servers, uris = [], []
        port = free_port()
        servers.append(start_lite_server(tmp / 'lite-server', port))
        uris.append(f'http://127.0.0.1:{port}')
        names = {uris[0]: 'milvus-lite server'}
        exe = milvus_standalone_exe()
        if exe and not args.no_milvus23:
            (tmp / 'm23').mkdir()
            m23 = MilvusStandalone(exe, tmp / 'm23').start()
            uris.append(f'http://127.0.0.1:{m23.port}')
            names[uris[-1]] = 'Milvus 2.3.5'
        try:
            for uri in uris:
                result['layouts'] += bench_layouts(uri, args.layout_pages)
            pdfs = [make_text_pdf(tmp / 'pdfs' / f'doc{d}.pdf', [f'document {d} page {p}' for p in range(4)])
                    for d in range(max(1, args.ingest_pages // 4))]
            encoder = ColPaliEncoder('tiny:colpali', device='cpu', batch_size=4).load()
            for uri in [str(tmp / 'lite.db')] + uris:
                result['ingest'].append(bench_ingest(uri, pdfs, encoder, tmp))
            for uri in uris:
                result['rebuild'].append(bench_rebuild_and_query(uri, args.pages, tmp / uuid.uuid4().hex[:6]))
        finally:
            for proc in servers:
                proc.kill()
            if len(uris) > 1:
                m23.stop()
    for part in result.values():
        for r in part:
            r['server_name'] = names.get(r.get('server') or r.get('uri'), r.get('uri', ''))

    print(f'\n{"server":<28}{"layout":<50}{"insert pages/s":>15}{"read all s":>17}')
    for r in result['layouts']:
        print(f'{r["server_name"]:<28}{r["layout"]:<50}{r["insert_pages_per_s"]:>15.1f}{r["read_s"]:>17.2f}')
    print(f'\n{"store":<28}{"vectors":<9}{"pages":>6}{"encode s":>10}{"store s":>9}{"store/encode":>14}')
    for r in result['ingest']:
        print(f'{r["server_name"]:<28}{r["layout"]:<9}{r["pages"]:>6}{r["encode_s"]:>10.2f}{r["store_s"]:>9.2f}'
              f'{r["store_over_encode"]:>14.2f}')
    print(f'\n{"server":<28}{"pages":>6}{"rebuild s/1k pages":>20}{"p50 ms A":>10}{"p50 ms B":>10}{"same top10":>12}')
    for r in result['rebuild']:
        print(f'{r["server_name"]:<28}{r["pages"]:>6}{r["rebuild_s_per_1k_pages"]:>20.1f}{r["query_p50_ms_A"]:>10.1f}'
              f'{r["query_p50_ms_B"]:>10.1f}{str(r["identical_top10"]):>12}')
    write_json(args.out, result)


if __name__ == '__main__':
    main()
