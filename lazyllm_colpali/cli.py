"""``lazyllm-colpali``: index PDFs/images, search them, list and delete documents."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import List, Optional

EPILOG = '''examples:
  lazyllm-colpali index ./pdfs --model ./models/colqwen2-v1.0
  lazyllm-colpali search "What was the 2023 revenue?" -k 3
  lazyllm-colpali search "revenue" --file report.pdf --pages 2-5 --json
  lazyllm-colpali make-tiny-model ./models/tiny-colqwen2 --family colqwen2   # offline demo model

The model is a Hugging Face name (needs the hub or its cache) or a local folder; "tiny:FAMILY" builds a tiny
random model offline (rankings are meaningless, for trying the pipeline). The store is Milvus: a Milvus
Lite path (default ./colpali.db) or a server URI such as http://localhost:19530.
Environment: LAZYLLM_COLPALI_MODEL, LAZYLLM_COLPALI_DB, LAZYLLM_COLPALI_HOME (caches).'''


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--db', default=None,
                   help='Milvus Lite file or server URI (default: $LAZYLLM_COLPALI_DB or ./colpali.db)')
    p.add_argument('--collection', default=None, help='collection name (default: colpali_pages)')
    p.add_argument('--data-dir', default=None, help='this machine\'s vector cache (default: beside a Lite file; '
                                                    'a cache dir under $LAZYLLM_COLPALI_HOME for servers)')
    p.add_argument('--shared-dir', default=None, help='page images and the centroid index; point every machine at '
                                                      'the same folder (default: $LAZYLLM_COLPALI_SHARED_DIR or '
                                                      'the data dir)')


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--model', default=None, help='model name or local folder (default: the one the collection was '
                                                 'built with, else $LAZYLLM_COLPALI_MODEL or vidore/colqwen2-v1.0); '
                                                 '"tiny:colpali" etc. for an offline test model')
    p.add_argument('--family', default=None, help='model family when it cannot be detected '
                                                  '(colpali, colqwen2, colqwen2_5, colidefics3, ...)')
    p.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:1, mps (default: auto)')
    p.add_argument('--dtype', default='auto', help='auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16')
    p.add_argument('--batch-size', type=int, default=4, help='pages per encoder batch (default: 4)')
    p.add_argument('--allow-model-change', action='store_true',
                   help='use --model even if the collection was built with another model')


def _add_vlm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--vlm-url', default=None, help='OpenAI-compatible endpoint of a VLM, e.g. '
                                                   'http://127.0.0.1:8000/v1/ ("standin": the local stand-in)')
    p.add_argument('--vlm-model', default=None, help='model name at that endpoint')
    p.add_argument('--vlm-source', default='openai', help='LazyLLM online source (default: openai-compatible)')
    p.add_argument('--vlm-key-env', default=None, help='environment variable holding the API key, if one is needed')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='lazyllm-colpali', description='ColPali visual document retrieval '
                                     'for LazyLLM, stored in Milvus.', epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    p = sub.add_parser('index', help='index PDFs, images or folders of them', epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('paths', nargs='+', metavar='PATH', help='files or folders (searched recursively)')
    _add_model_args(p)
    _add_store_args(p)
    p.add_argument('--dpi', type=int, default=144, help='page rendering resolution (default: 144)')
    p.add_argument('--pool-factor', type=int, default=1, help='hierarchical token pooling factor (1 = off)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')

    p = sub.add_parser('search', help='top-k pages for a query', epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('query', help='the question or keywords')
    p.add_argument('-k', '--topk', type=int, default=5, help='number of pages (default: 5)')
    p.add_argument('--file', action='append', help='only pages of this file name (repeatable)')
    p.add_argument('--pages', default=None, help='only this page range, e.g. 3-7')
    p.add_argument('--mode', default='auto', choices=['auto', 'exact', 'candidates', 'centroids'],
                   help='exact: MaxSim over every page; candidates: Milvus pooled-vector candidates; centroids: '
                        'centroid index candidates; both rerank exactly. auto: exact up to 20k pages (default)')
    p.add_argument('--json', action='store_true', help='print JSON lines instead of a table')
    p.add_argument('--hops', type=int, default=1, help='follow a chain of concepts: up to N searches in a row, each '
                                                       'for bridge concepts the last one\'s pages point at (default: '
                                                       '1, a single search)')
    _add_model_args(p)
    _add_store_args(p)

    p = sub.add_parser('docs', help='list indexed documents with page counts')
    _add_store_args(p)
    p = sub.add_parser('delete', help='delete documents by doc id (see `docs`)')
    p.add_argument('doc_ids', nargs='+', metavar='DOC_ID')
    _add_store_args(p)

    p = sub.add_parser('serve-api', help='JSON search API (POST /search, POST /index) for programs')
    _add_model_args(p)
    _add_store_args(p)
    p.add_argument('--host', default='127.0.0.1', help='bind address (default: 127.0.0.1, this machine only)')
    p.add_argument('--port', type=int, default=8765)
    p.add_argument('--allow-root', action='append', default=[], metavar='FOLDER',
                   help='POST /index may read files under this folder (repeatable; none: /index is off)')
    p.add_argument('--token-env', default=None, metavar='VAR',
                   help='environment variable holding a bearer token every request must carry '
                        '(required when --host is not loopback)')

    p = sub.add_parser('serve', help='browser chat (lazyllm.WebModule) over the collection, with page thumbnails',
                       epilog='example: lazyllm-colpali serve --model tiny:colpali --vlm-url standin',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(p)
    _add_store_args(p)
    _add_vlm_args(p)
    p.add_argument('--host', default='127.0.0.1', help='bind address (default: 127.0.0.1, this machine only)')
    p.add_argument('--port', type=int, default=None, help='port (default: first free in 20500-20799)')
    p.add_argument('-k', '--topk', type=int, default=5, help='pages retrieved per question (default: 5)')
    p.add_argument('--pages', type=int, default=3, help='pages shown to the VLM and cited (default: 3)')
    p.add_argument('--image-side', type=int, default=1024, help='max px of page images sent to the VLM')

    p = sub.add_parser('check', help='cross-check Milvus rows, Milvus and local vectors, and page images')
    p.add_argument('--repair', action='store_true', help='refetch vectors from Milvus, re-encode or re-render what is '
                                                         'lost from the source files, drop unreferenced vectors and '
                                                         'images, compact the vector file')
    _add_store_args(p)
    _add_model_args(p)

    from .settings import ALL_ARMS, DEFAULT_ARMS

    p = sub.add_parser('eval', help='compare retrieval arms (ColPali, text/OCR, layout, caption+QA, hybrid) on '
                                     'one dataset')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--sample', action='store_true', help='the built-in sample (generated PDFs, charts, a scan)')
    src.add_argument('--dataset', help='a dataset folder (corpus/ + queries + qrels, or BEIR/ViDoRe layout)')
    src.add_argument('--corpus', help='a folder of PDFs/images (with --queries and --qrels)')
    p.add_argument('--queries', help='queries .jsonl/.parquet ({"query_id", "query"})')
    p.add_argument('--qrels', help='qrels .jsonl/.parquet/.tsv ({"query_id", "page": "file.pdf#3", "score"})')
    p.add_argument('--arms', default=','.join(DEFAULT_ARMS),
                   help=f'comma-separated, from {",".join(ALL_ARMS)} (default: {",".join(DEFAULT_ARMS)})')
    p.add_argument('-k', '--topk', type=int, default=10, help='pages retrieved per query by every arm (default: 10)')
    p.add_argument('--out', default='./eval_results', help='where the table, JSON and PNG chart go')
    p.add_argument('--workdir', default=None, help='keep the arms\' indexes here and reuse them (default: a '
                                                   'temporary folder, removed afterwards)')
    p.add_argument('--hybrid-weights', default=None, help='RRF weights, e.g. colpali=1,text=0.5')
    p.add_argument('--hops', type=int, default=3, help='most hops of the ARM-multihop arms (default: 3)')
    _add_vlm_args(p)
    _add_model_args(p)

    p = sub.add_parser('make-chains', help='write the concept-chain benchmark (offline, seeded) for eval --dataset')
    p.add_argument('out_dir')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--lengths', default='2,3,4', help='chain lengths, definitions per chain (2-5; default: 2,3,4)')
    p.add_argument('--per-length', type=int, default=4, help='chains of each length (default: 4)')
    p.add_argument('--distractors', type=int, default=24, help='distractor documents (default: 24)')
    p.add_argument('--image-links', type=int, default=1,
                   help='chains per length with one link shown only in a figure (default: 1)')

    p = sub.add_parser('standin-vlm', help='run the local OpenAI-compatible stand-in VLM (no real model)')
    p.add_argument('--port', type=int, default=8011)

    p = sub.add_parser('make-tiny-model', help='build a tiny random model folder offline (for tests and demos)')
    p.add_argument('out_dir')
    p.add_argument('--family', default='colqwen2', help='colpali, colqwen2, colqwen2_5 or colidefics3')

    # -v before or after the command; quiet is the default
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='show third-party logs, warnings and progress bars (quiet by default)')
    for p in sub.choices.values():
        p.add_argument('-v', '--verbose', action='store_true', default=argparse.SUPPRESS,
                       help='show third-party logs, warnings and progress bars')
    return parser


def _open_store(args, dim: Optional[int] = None, create: bool = True):
    from .settings import DEFAULT_COLLECTION
    from .store.milvus_store import MilvusMultiVectorStore

    shared = getattr(args, 'shared_dir', None) or os.environ.get('LAZYLLM_COLPALI_SHARED_DIR') or None
    return MilvusMultiVectorStore(args.db, args.collection or DEFAULT_COLLECTION, dim=dim, data_dir=args.data_dir,
                                  shared_dir=shared, create=create)


@contextmanager
def _store(args, dim: Optional[int] = None, create: bool = True):
    store = _open_store(args, dim, create)
    try:
        yield store
    finally:
        store.close()


def _recorded_model(args) -> Optional[str]:
    """The model an existing collection was built with (None for a new collection)."""
    from .errors import StoreError

    try:
        with _store(args, create=False) as store:
            info = store.model_info()
    except StoreError:
        return None
    return info.get('name') if info else None


def _encoder(args, pool_factor: int = 1, model: Optional[str] = None):
    from .models.encoder import ColPaliEncoder
    from .settings import default_model

    name = model or args.model or _recorded_model(args) or default_model()
    return ColPaliEncoder(name, family=args.family, device=args.device, dtype=args.dtype,
                          batch_size=args.batch_size, pool_factor=pool_factor).load()


def _parse_pages(text: Optional[str]):
    if not text:
        return None
    first, _, last = text.partition('-')
    try:
        pages = (int(first), int(last or first))
    except ValueError:
        raise SystemExit(f'error: --pages wants a range like 3-7, got {text!r}')
    if pages[0] < 1 or pages[0] > pages[1]:
        raise SystemExit(f'error: --pages {text}: pages count from 1 and the first may not be after the last')
    return pages


def _check_positive(**values: Optional[int]) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise SystemExit(f'error: --{name.replace("_", "-")} must be a positive number, got {value}')


def _check_existing_db(args) -> None:
    """Read commands must not create an empty Milvus Lite file because of a typo in --db."""
    from .settings import default_db
    from .store.milvus_store import is_remote_uri

    db = args.db or default_db()
    if not is_remote_uri(db) and not os.path.exists(os.path.expanduser(db)):
        raise SystemExit(f'error: no index at --db {db} (nothing to read); index some files first: '
                         f'lazyllm-colpali index FOLDER --db {db}')


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise SystemExit(f'error: --port {port} is not a TCP port (1-65535)')
    from .serving.chat import port_free
    if not port_free(host, port):
        raise SystemExit(f'error: port {port} on {host} is already in use; pass another --port')


def _shown(text: object) -> str:
    from .serving.escape import terminal_text
    return terminal_text(text)


def cmd_index(args) -> int:
    from .indexer import ColPaliIndex

    encoder = _encoder(args, args.pool_factor)
    with _store(args, encoder.dim) as store:
        index = ColPaliIndex(encoder, store, dpi=args.dpi, progress=not args.no_progress,
                             allow_model_change=args.allow_model_change)
        start = time.perf_counter()
        report = index.add(args.paths)
        seconds = time.perf_counter() - start
        print(report.summary())
        rate = report.added_pages / seconds if seconds and report.added_pages else 0.0
        print(f'{seconds:.1f} s ({rate:.2f} pages/s; render {report.seconds["render"]:.1f} s, '
              f'encode {report.seconds["encode"]:.1f} s, store {report.seconds["store"]:.1f} s); '
              f'{store.count()} pages in {store.uri} [{store.collection}]')
        return 1 if report.failures and not report.documents else 0


def cmd_search(args) -> int:
    from .indexer import ColPaliIndex
    from .retrieve.retriever import MaxSimRetriever

    _check_positive(topk=args.topk)
    if not args.query.strip():
        raise SystemExit('error: empty query: type what you are looking for')
    filters = {'file': args.file, 'pages': _parse_pages(args.pages)}
    _check_existing_db(args)
    with _store(args, create=False) as store:   # opened once: it also names the model it was built with
        info = store.model_info() or {}
        encoder = _encoder(args, model=args.model or info.get('name'))
        store.check_dim(encoder.dim)
        index = ColPaliIndex(encoder, store, retriever=MaxSimRetriever(store, mode=args.mode), progress=False,
                             allow_model_change=args.allow_model_change)
        start = time.perf_counter()
        filters = {k: v for k, v in filters.items() if v}
        trace = None
        if args.hops > 1:
            from .multihop import IndexArm, MultiHopRetriever
            trace = MultiHopRetriever(IndexArm(index), hops=args.hops, topk=args.topk).search_with_trace(
                args.query, filters or None)
            hits = trace.hits
        else:
            hits = index.search(args.query, args.topk, filters)
        ms = (time.perf_counter() - start) * 1000
        if args.json:
            for hit in hits:
                print(json.dumps(hit.to_dict(), ensure_ascii=False))
            return 0
        if not hits:
            print(f'no pages found ({store.count()} pages indexed in {_shown(store.uri)})')
            return 0
        print(f'{"rank":>4}  {"score":>8}  {"page":>4}  file')
        for rank, hit in enumerate(hits, 1):
            via = f'   hop {hit.metadata.get("hop", 1)}' + (f' via "{_shown(hit.metadata["bridge"])}"'
                                                           if hit.metadata.get('bridge') else '') if trace else ''
            print(f'{rank:>4}  {hit.score:8.3f}  {hit.page:>4}  {_shown(hit.file_name)}   [{_shown(hit.image_path)}]'
                  + via)
        hops = (f'; {trace.searches} searches in {len(trace.hops)} hops (stopped: {trace.stopped})'
                if trace else '')
        print(f'({ms:.0f} ms over {store.count()} pages{hops})')
        return 0


def cmd_docs(args) -> int:
    _check_existing_db(args)
    with _store(args) as store:
        docs = store.documents()
        for doc in docs:
            print(f'{doc["doc_id"]}  {doc["pages"]:>5} pages  {_shown(doc["source"])}')
    print(f'{len(docs)} documents, {sum(d["pages"] for d in docs)} pages')
    return 0


def cmd_delete(args) -> int:
    from .ingest.records import is_doc_id

    bad = [d for d in args.doc_ids if not is_doc_id(d)]
    if bad:
        print(f'error: not a document id: {", ".join(repr(_shown(d)) for d in bad)}; ids are 16 hex digits, '
              f'as listed by `lazyllm-colpali docs`', file=sys.stderr)
        return 2
    with _store(args, create=False) as store:
        unknown = sorted(set(args.doc_ids) - store.doc_ids(args.doc_ids))
        if unknown:
            print(f'error: no such document in {store.uri} [{store.collection}]: {", ".join(unknown)}; '
                  f'nothing was deleted (see `lazyllm-colpali docs`)', file=sys.stderr)
            return 2
        pages = store.delete_docs(args.doc_ids)
        print(f'deleted {len(args.doc_ids)} documents ({pages} pages); {store.count()} pages left')
    return 0


def cmd_serve_api(args) -> int:
    import signal
    import socket

    import uvicorn

    from .indexer import ColPaliIndex
    from .serving.api import allowed_hosts_for, create_app, is_loopback

    token = None
    if args.token_env:
        token = os.environ.get(args.token_env, '')
        if not token:
            raise SystemExit(f'error: --token-env {args.token_env}: that environment variable is empty or unset')
    elif not is_loopback(args.host):
        raise SystemExit(f'error: --host {args.host} is reachable from other machines: pass --token-env VAR with '
                         'a bearer token in $VAR (or bind to 127.0.0.1)')
    for root in args.allow_root:
        if not os.path.isdir(os.path.expanduser(root)):
            raise SystemExit(f'error: --allow-root {root}: not a folder')
    if not args.allow_root:   # a read-only server; with --allow-root it may start empty and fill through /index
        _check_existing_db(args)
    if not 0 < args.port < 65536:
        raise SystemExit(f'error: --port {args.port} is not a TCP port (1-65535)')
    # Bind before loading the model: a port in use is a one-line error, and nobody can take it meanwhile.
    sock = socket.socket(socket.AF_INET6 if ':' in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        raise SystemExit(f'error: port {args.port} on {args.host}: cannot listen there ({e.strerror}); '
                         'pass another --port')

    encoder = _encoder(args)
    encoder.warm_up()   # a server's first query then runs at repeat speed (docs/maxsim-cpu.md)
    with sock, _store(args, encoder.dim) as store:
        index = ColPaliIndex(encoder, store, progress=False)
        app = create_app(index, allow_roots=args.allow_root, allowed_hosts=allowed_hosts_for(args.host), token=token)
        server = uvicorn.Server(uvicorn.Config(app, log_level='warning', timeout_graceful_shutdown=3))
        # uvicorn re-raises the signal it stopped on once it has shut down: ours only notes it, so the store
        # below is closed properly (the default SIGTERM action would kill the process first).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        roots = ', '.join(_shown(r) for r in args.allow_root) or 'off (see --allow-root)'
        print(f'serving {store.count()} pages at http://{args.host}:{args.port} (POST /search; POST /index: {roots})',
              flush=True)
        server.run(sockets=[sock])
    print('stopped; every stored page is kept', flush=True)
    return 0


def cmd_serve(args) -> int:
    from .generation import AnswerSettings
    from .lazyllm_glue.components import ColPaliDocument
    from .lazyllm_glue.embed import ColPaliEmbed
    import signal

    from .serving.chat import ChatServer, VisualChat
    from .settings import DEFAULT_COLLECTION, default_db
    from .vlm import make_vlm

    _check_positive(topk=args.topk, pages=args.pages, image_side=args.image_side)
    if args.port is not None:
        _check_port(args.host, args.port)
    from .serving.api import is_loopback
    if not is_loopback(args.host):
        print(f'warning: --host {args.host}: the chat has no login; anyone who reaches it can read and add '
              'documents', file=sys.stderr)
    encoder = _encoder(args)   # a missing model fails here, before the UI starts
    encoder.warm_up()
    doc = ColPaliDocument(None, embed=ColPaliEmbed(encoder), db=args.db or default_db(),
                          collection=args.collection or DEFAULT_COLLECTION, data_dir=args.data_dir,
                          shared_dir=args.shared_dir or os.environ.get('LAZYLLM_COLPALI_SHARED_DIR'), progress=False)
    pages = doc.index.store.count()
    vlm = server = None
    if args.vlm_url or args.vlm_model:
        vlm, server = make_vlm(args.vlm_url, args.vlm_model, source=args.vlm_source, api_key_env=args.vlm_key_env)
    chat = VisualChat(doc, vlm, topk=args.topk,
                      settings=AnswerSettings(pages=args.pages, max_image_side=args.image_side))
    web = ChatServer(chat, host=args.host, port=args.port)
    for sig in (signal.SIGINT, signal.SIGTERM):   # stop within seconds; the running upload keeps its pages
        signal.signal(sig, web.request_stop)
    try:
        web.start()
        print(f'chat at {web.url}  ({pages} pages indexed in {_shown(doc.db)}; answers by '
              f'{"the stand-in VLM (not a real model)" if server else args.vlm_model or "no VLM: pages only"}); '
              'Ctrl-C stops', flush=True)
        web.wait()
    finally:
        web.stop()
        doc.close()
        if server is not None:
            server.stop()
    return 0


def cmd_check(args) -> int:
    with _store(args, create=False) as store:
        report = store.check(repair=args.repair)
        if args.repair and report['needs_encoding']:
            report = _reencode(args, store, report)
    problems = {k: v for k, v in report.items() if isinstance(v, list) and v}
    for key, values in problems.items():
        print(f'{key}: {len(values)}  ({", ".join(values[:5])}{", ..." if len(values) > 5 else ""})')
    summary = f'{report["pages"]} pages; {report["dead_vector_rows"]} unused vector rows'
    if args.repair:
        summary += (f'; repair reclaimed {report["reclaimed_vector_rows"]} vector rows and restored '
                    f'{report["repaired_images"]} images')
    print(summary)
    if problems:
        print('not repaired: pages whose source file is gone or changed must be re-indexed from a current copy '
              '(`lazyllm-colpali index FILE`) or deleted (`lazyllm-colpali delete DOC_ID`)' if args.repair else
              'inconsistent: run `lazyllm-colpali check --repair` (it never deletes an indexed page that can be '
              'restored; vectors are refetched from Milvus or re-encoded from the source files)')
        return 1
    if report['dead_vector_rows'] and not args.repair:
        print('consistent; `lazyllm-colpali check --repair` reclaims the unused vector rows')
    else:
        print('consistent')
    return 0


def _reencode(args, store, report):
    from .errors import ModelNotFoundError
    from .indexer import ColPaliIndex

    info = store.model_info() or {}
    try:
        encoder = _encoder(args, model=info.get('name'))
    except ModelNotFoundError as e:
        print(f'cannot re-encode {len(report["needs_encoding"])} pages: {e}', file=sys.stderr)
        return report
    restored = ColPaliIndex(encoder, store, progress=False).reencode(report['needs_encoding'])
    print(f're-encoded {restored} pages from their source files')
    after = store.check(repair=True)
    after['reclaimed_vector_rows'] += report['reclaimed_vector_rows']
    after['repaired_images'] += report['repaired_images']
    return after


def cmd_make_tiny_model(args) -> int:
    from .models.tiny import build_tiny_model

    print(f'tiny random {args.family} model written to {build_tiny_model(args.family, args.out_dir)} '
          f'(architecturally real, random weights: rankings are meaningless)')
    return 0


def cmd_eval(args) -> int:
    from pathlib import Path

    from .eval import build_sample, format_table, from_parts, load_dataset, run_eval, write_chart, write_json
    from .settings import data_home, default_model
    from .vlm import make_vlm

    if args.sample:
        dataset = build_sample(data_home() / 'sample_dataset')
    elif args.dataset:
        dataset = load_dataset(args.dataset)
    else:
        if not (args.queries and args.qrels):
            raise SystemExit('error: --corpus needs --queries and --qrels')
        dataset = from_parts(args.corpus, args.queries, args.qrels)
    arms = [a.strip() for a in args.arms.split(',') if a.strip()]
    weights = dict((k, float(v)) for k, v in (kv.split('=') for kv in args.hybrid_weights.split(','))) \
        if args.hybrid_weights else None
    vlm = server = None
    if 'caption' in arms and (args.vlm_url or args.vlm_model):
        vlm, server = make_vlm(args.vlm_url, args.vlm_model, source=args.vlm_source, api_key_env=args.vlm_key_env)
    try:
        start = time.perf_counter()
        report = run_eval(dataset, arms, topk=args.topk, model=args.model or default_model(),
                          device='cuda' if args.device.startswith('cuda') else 'cpu', vlm=vlm,
                          workdir=args.workdir, hybrid_weights=weights, multihop={'hops': args.hops})
        seconds = time.perf_counter() - start
    finally:
        if server is not None:
            server.stop()
    out = Path(args.out)
    table = format_table(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{report.dataset}_table.md').write_text(table + '\n')
    print(table)
    from .eval.report import write_chain_chart
    chains = write_chain_chart(report, out / f'{report.dataset}_chains.png')
    print(f'\n{seconds:.1f} s in all; wrote {write_json(report, out / f"{report.dataset}.json")}, '
          f'{out / f"{report.dataset}_table.md"} and {write_chart(report, out / f"{report.dataset}.png")}'
          + (f' and {chains}' if chains else ''))
    return 0 if any(not a.error for a in report.arms) else 1


def cmd_make_chains(args) -> int:
    from .eval.concept_chains import build_concept_chains

    try:
        lengths = [int(n) for n in args.lengths.split(',') if n.strip()]
        dataset = build_concept_chains(args.out_dir, seed=args.seed, chain_lengths=lengths,
                                       chains_per_length=args.per_length, distractors=args.distractors,
                                       image_links=args.image_links)
    except ValueError as e:
        raise SystemExit(f'error: {e}')
    files = len(list(dataset.corpus_dir.glob('*.pdf')))
    print(f'{len(dataset.queries)} chain questions over {files} PDFs in {dataset.corpus_dir}; evaluate with: '
          f'lazyllm-colpali eval --dataset {args.out_dir} --arms text,text-multihop,layout,layout-multihop')
    return 0


def cmd_standin_vlm(args) -> int:
    from .devtools.standin_vlm import serve_forever

    print(f'stand-in VLM (not a real model) at http://127.0.0.1:{args.port}/v1/ ; Ctrl-C stops it')
    serve_forever(port=args.port)
    return 0


COMMANDS = {'index': cmd_index, 'search': cmd_search, 'docs': cmd_docs, 'delete': cmd_delete,
            'check': cmd_check, 'serve-api': cmd_serve_api, 'make-tiny-model': cmd_make_tiny_model,
            'eval': cmd_eval, 'serve': cmd_serve, 'standin-vlm': cmd_standin_vlm, 'make-chains': cmd_make_chains}


def _validate(args) -> None:
    """Checks that need no model or store, so a bad call fails at once rather than after loading."""
    query = getattr(args, 'query', None)
    if query is not None and not query.strip():
        raise SystemExit('error: empty query: the query is empty; give a question or keywords')
    topk = getattr(args, 'topk', None)
    if topk is not None and topk < 1:
        raise SystemExit(f'error: -k/--topk must be a positive number (at least 1), got {topk}')
    if getattr(args, 'pages', None) and args.command == 'search':
        _parse_pages(args.pages)
    hops = getattr(args, 'hops', None)
    if hops is not None and not 1 <= hops <= 8:
        raise SystemExit(f'error: --hops must be between 1 and 8, got {hops}')


# bars printed by third-party code per query/batch (LazyLLM's BM25 calls bm25s for every search)
_THIRD_PARTY_BARS = ('bm25s', 'bm25s.tokenization', 'bm25s.scoring')


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _validate(args)
    from .logging import quiet_environment, quiet_loggers, quiet_progress_bars

    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    quiet_environment(args.verbose)   # before LazyLLM / transformers are imported
    quiet_loggers(args.verbose)
    if not args.verbose and args.command in ('eval', 'serve'):
        quiet_progress_bars(*_THIRD_PARTY_BARS)
    if not args.verbose and args.command not in ('make-tiny-model', 'standin-vlm', 'make-chains'):
        # pymilvus logs a traceback for every failed call (the store turns each into one StoreError line);
        # its logging config is applied on import, so import it first
        import logging

        import pymilvus  # noqa: F401
        logging.getLogger('pymilvus').setLevel(logging.CRITICAL)
    from .errors import ColPaliError

    try:
        return COMMANDS[args.command](args)
    except ColPaliError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted: pages stored so far are kept; rerun to resume', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
