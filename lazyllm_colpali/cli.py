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


def _add_source_prefix_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument('--source-prefix', default=None, metavar='NAME',
                   help='names the file system the indexed paths belong to: a changed file replaces only its own '
                        'older version from the same prefix and path (default: $LAZYLLM_COLPALI_SOURCE_PREFIX or '
                        'this machine\'s host name; give machines that see the same files one name)')


def _add_model_args(p: argparse.ArgumentParser, repeatable: bool = False) -> None:
    p.add_argument('--model', default=None, action='append' if repeatable else 'store',
                   help='model name or local folder, or a fine-tuned adapter folder (default: the one the collection '
                        'was built with, else $LAZYLLM_COLPALI_MODEL or vidore/colqwen2-v1.0); "tiny:colpali" etc. '
                        'for an offline test model' + ('; repeat it to compare models: each further --model M adds '
                                                       'a colpali@M arm' if repeatable else ''))
    p.add_argument('--family', default=None, help='model family when it cannot be detected '
                                                  '(colpali, colqwen2, colqwen2_5, colidefics3, ...)')
    p.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:1, mps (default: auto)')
    p.add_argument('--dtype', default='auto', help='auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16')
    p.add_argument('--batch-size', type=int, default=4, help='pages per encoder batch (default: 4)')
    p.add_argument('--allow-model-change', action='store_true',
                   help='use --model even if the collection was built with another model')


def _add_dense_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--dense-model', default=None,
                   help='single-vector visual model for the dense arm (colpali-engine Bi* or a DSE/gme Qwen2-VL '
                        'folder; "tiny:biqwen2" offline); it lives in collection <collection>_dense of the same '
                        'Milvus (default: the model that collection was built with)')
    p.add_argument('--dense-family', default=None, help='dense model family when it cannot be detected '
                                                        '(biqwen2, biqwen2_5, bipali, biidefics3, bimodernvbert, '
                                                        'dse_qwen2, gme_qwen2)')


def _add_vlm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--vlm-url', default=None, help='OpenAI-compatible endpoint of a VLM, e.g. '
                                                   'http://127.0.0.1:8000/v1/ ("standin": the local stand-in)')
    p.add_argument('--vlm-model', default=None, help='model name at that endpoint')
    p.add_argument('--vlm-source', default='openai', help='LazyLLM online source (default: openai-compatible)')
    p.add_argument('--vlm-key-env', default=None, help='environment variable holding the API key, if one is needed')


def _add_answer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('answer-level evaluation (datasets with gold answers; needs a VLM) and SFT export')
    g.add_argument('--answers', default=None, help='gold answers .jsonl ({"query_id", "answers": [...]}) for --corpus')
    g.add_argument('--skip-answers', action='store_true', help='judge pages only, even with gold answers and a VLM')
    g.add_argument('--answer-pages', type=int, default=3,
                   help='top pages of each arm the VLM answers from (default: 3)')
    g.add_argument('--image-side', type=int, default=1024, help='max px of page images sent to the VLM')
    g.add_argument('--vlm-concurrency', type=int, default=4, help='answer/judge calls in flight (default: 4)')
    g.add_argument('--embed-url', default=None, help='OpenAI-compatible embeddings endpoint for semantic similarity '
                                                     '("standin": bag-of-words vectors)')
    g.add_argument('--embed-model', default=None, help='embedding model name at that endpoint')
    g.add_argument('--judge-url', default=None, help='chat endpoint of an LLM judge ("standin": the stand-in)')
    g.add_argument('--judge-model', default=None, help='judge model name at that endpoint')
    g.add_argument('--export-sft', default=None, metavar='OUT.json',
                   help='write (question, retrieved page images, gold answer) for finetune.llamafactory')
    g.add_argument('--sft-arm', default=None, help='the arm whose pages the export uses (default: colpali, if run)')


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
    _add_dense_args(p)
    p.add_argument('--dense-only', action='store_true', help='build only the dense arm (needs --dense-model)')
    p.add_argument('--context', action='store_true',
                   help='also store each page\'s context text (title, heading, captions, text layer) as token '
                        'vectors of the same model, scored with the image by one MaxSim (a new collection)')
    p.add_argument('--context-source', default='text-layer', choices=['text-layer', 'auto'],
                   help='page text for --context: the PDF text layer, or auto (OCR for scans; slow)')
    _add_source_prefix_arg(p)

    p = sub.add_parser('search', help='top-k pages for a query', epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('query', help='the question or keywords')
    p.add_argument('-k', '--topk', type=int, default=5, help='number of pages (default: 5)')
    p.add_argument('--file', action='append', help='only pages of this file name (repeatable)')
    p.add_argument('--pages', default=None, help='only this page range, e.g. 3-7')
    p.add_argument('--mode', default='auto', choices=['auto', 'exact', 'candidates', 'centroids', 'dense'],
                   help='exact: MaxSim over every page; candidates: Milvus pooled-vector candidates; centroids: '
                        'centroid index candidates; dense: the dense arm\'s top pages; all rerank exactly. '
                        'auto: exact up to 20k pages (default)')
    p.add_argument('--arm', default='visual', choices=['visual', 'dense'],
                   help='visual: multi-vector MaxSim (default); dense: one vector per page, Milvus search')
    p.add_argument('--image-only', action='store_true',
                   help='score a collection indexed with --context on its image vectors alone')
    p.add_argument('--json', action='store_true', help='print JSON lines instead of a table')
    p.add_argument('--explain', default=None, metavar='OUTDIR',
                   help='write one PNG per hit into OUTDIR: the page with a heat map of where the query matched')
    p.add_argument('--explain-tokens', action='store_true',
                   help='with --explain: also one PNG per query token (the query\'s own tokens)')
    p.add_argument('--hops', type=int, default=1, help='follow a chain of concepts: up to N searches in a row, each '
                                                       'for bridge concepts the last one\'s pages point at (default: '
                                                       '1, a single search)')
    _add_model_args(p)
    _add_dense_args(p)
    _add_store_args(p)

    p = sub.add_parser('docs', help='list indexed documents with page counts')
    _add_store_args(p)
    p = sub.add_parser('delete', help='delete documents by doc id (see `docs`)')
    p.add_argument('doc_ids', nargs='+', metavar='DOC_ID')
    _add_store_args(p)
    p = sub.add_parser('drop', help='remove a whole collection (any half-created state too), after confirmation')
    p.add_argument('--yes', action='store_true', help='do not ask (scripts); without it, type the collection name')
    _add_store_args(p)

    p = sub.add_parser('serve-api', help='JSON search API (POST /search, POST /index) for programs')
    _add_model_args(p)
    _add_store_args(p)
    _add_dense_args(p)
    p.add_argument('--arm', default='visual', choices=['visual', 'dense'], help='which arm answers (default: visual)')
    p.add_argument('--host', default='127.0.0.1', help='bind address (default: 127.0.0.1, this machine only)')
    p.add_argument('--port', type=int, default=8765)
    p.add_argument('--allow-root', action='append', default=[], metavar='FOLDER',
                   help='POST /index may read files under this folder (repeatable; none: /index is off)')
    p.add_argument('--token-env', default=None, metavar='VAR',
                   help='environment variable holding a bearer token every request must carry '
                        '(required when --host is not loopback)')
    _add_source_prefix_arg(p)

    p = sub.add_parser('serve', help='browser chat (lazyllm.WebModule) over the collection, with page thumbnails',
                       epilog='example: lazyllm-colpali serve --model tiny:colpali --vlm-url standin',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(p)
    _add_store_args(p)
    _add_vlm_args(p)
    _add_dense_args(p)
    p.add_argument('--arm', default='visual', choices=['visual', 'dense'], help='which arm answers (default: visual)')
    p.add_argument('--host', default='127.0.0.1', help='bind address (default: 127.0.0.1, this machine only)')
    p.add_argument('--port', type=int, default=None, help='port (default: first free in 20500-20799)')
    p.add_argument('-k', '--topk', type=int, default=5, help='pages retrieved per question (default: 5)')
    p.add_argument('--pages', type=int, default=3, help='pages shown to the VLM and cited (default: 3)')
    p.add_argument('--image-side', type=int, default=1024, help='max px of page images sent to the VLM')
    p.add_argument('--lang', default=None, choices=['en', 'zh'],
                   help='language of the chat page (default: Chinese for a Chinese locale, else English)')

    p = sub.add_parser('check', help='cross-check Milvus rows, Milvus and local vectors, and page images')
    p.add_argument('--repair', action='store_true', help='refetch vectors from Milvus, re-encode or re-render what is '
                                                         'lost from the source files, drop unreferenced vectors and '
                                                         'images, compact the vector file, finish a half-created '
                                                         'collection')
    _add_store_args(p)
    _add_model_args(p)
    _add_dense_args(p)

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
                   help=f'comma-separated, from {",".join(ALL_ARMS)}, and colpali@MODEL (the visual arm with another '
                        f'model or adapter folder, e.g. colpali,colpali@./adapter) (default: {",".join(DEFAULT_ARMS)})')
    p.add_argument('-k', '--topk', type=int, default=10, help='pages retrieved per query by every arm (default: 10)')
    p.add_argument('--out', default='./eval_results', help='where the table, JSON and PNG chart go')
    p.add_argument('--workdir', default=None, help='keep the arms\' indexes here and reuse them (default: a '
                                                   'temporary folder, removed afterwards)')
    p.add_argument('--hybrid-weights', default=None, help='RRF weights, e.g. colpali=1,text=0.5')
    p.add_argument('--hybrid-arms', default=None, help='the arms hybrid fuses, e.g. colpali,text (default: every '
                                                       'other arm in --arms)')
    p.add_argument('--hops', type=int, default=3, help='most hops of the ARM-multihop arms (default: 3)')
    _add_vlm_args(p)
    _add_answer_args(p)
    _add_model_args(p, repeatable=True)
    _add_dense_args(p)

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
    p.add_argument('--answers', default=None, metavar='FILE.json',
                   help='answer known questions from this lookup ([{"question", "answer", "pages": ["f.pdf#2"]}])')

    p = sub.add_parser('make-tiny-model', help='build a tiny random model folder offline (for tests and demos)')
    p.add_argument('out_dir')
    p.add_argument('--family', default='colqwen2', help='colpali, colqwen2, colqwen2_5, colidefics3; single-vector: '
                                                        'bipali, biqwen2, biqwen2_5, biidefics3, bimodernvbert, '
                                                        'dse_qwen2, gme_qwen2')
    p.add_argument('--format', default='colpali-engine', choices=['colpali-engine', 'transformers'],
                   help='transformers: the same weights in transformers\' own layout (ColPaliForRetrieval, '
                        'ColQwen2ForRetrieval; colpali and colqwen2 only)')
    p.add_argument('--seed', type=int, default=0)

    from .training.cli import add_parsers as add_training_parsers
    add_training_parsers(sub, _add_store_args, _add_vlm_args)   # finetune, feedback export

    # -v before or after the command; quiet is the default
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='show third-party logs, warnings and progress bars (quiet by default)')
    for p in sub.choices.values():
        p.add_argument('-v', '--verbose', action='store_true', default=argparse.SUPPRESS,
                       help='show third-party logs, warnings and progress bars')
    return parser


def _open_store(args, dim: Optional[int] = None, create: bool = True, collection: Optional[str] = None):
    from .settings import DEFAULT_COLLECTION
    from .store.milvus_store import MilvusMultiVectorStore

    shared = getattr(args, 'shared_dir', None) or os.environ.get('LAZYLLM_COLPALI_SHARED_DIR') or None
    data_dir = args.data_dir
    if collection and collection != (args.collection or DEFAULT_COLLECTION):   # the dense arm's own folders
        from .dense import dense_dirs

        data_dir, shared = dense_dirs(collection, data_dir, shared)
    return MilvusMultiVectorStore(args.db, collection or args.collection or DEFAULT_COLLECTION, dim=dim,
                                  data_dir=data_dir, shared_dir=shared, create=create)


@contextmanager
def _store(args, dim: Optional[int] = None, create: bool = True, collection: Optional[str] = None):
    store = _open_store(args, dim, create, collection)
    try:
        yield store
    finally:
        store.close()


def _dense_name(args) -> str:
    from .dense import dense_collection
    from .settings import DEFAULT_COLLECTION

    return dense_collection(args.collection or DEFAULT_COLLECTION)


@contextmanager
def _existing_stores(args, half_made=None):
    """The collection and its dense arm (``<collection>_dense``), those of them that exist, each opened once.
    ``half_made(name, error)`` is given a collection whose creation stopped half-way and returns the store to
    use instead (without it, the ``HalfCreatedError`` is raised)."""
    from .errors import StoreError
    from .settings import DEFAULT_COLLECTION
    from .store.collections import HalfCreatedError

    stores = []
    try:
        for name in (args.collection or DEFAULT_COLLECTION, _dense_name(args)):
            try:
                stores.append(_open_store(args, create=False, collection=name))
            except HalfCreatedError as e:
                if half_made is None:
                    raise
                stores.append(half_made(name, e))
            except StoreError as e:
                if 'does not exist' not in str(e):
                    raise
        if not stores:
            raise StoreError(f'collection {args.collection or DEFAULT_COLLECTION!r} does not exist in '
                             f'{args.db or "the default --db"}; index some files first (or check --db / --collection)')
        yield stores
    finally:
        for store in stores:
            store.close()


def _recorded_model(args, collection: Optional[str] = None) -> Optional[str]:
    """The model an existing collection was built with (None for a new collection)."""
    from .errors import StoreError

    try:
        with _store(args, create=False, collection=collection) as store:
            info = store.model_info()
    except StoreError:
        return None
    return info.get('name') if info else None


def _dense_encoder(args, model: Optional[str] = None):
    from .models.dense import DenseEncoder

    name = model or args.dense_model or _recorded_model(args, _dense_name(args))
    if not name:
        raise SystemExit(f'error: the dense arm needs a single-vector model: --dense-model NAME_OR_FOLDER (e.g. '
                         f'tiny:biqwen2 offline); collection {_dense_name(args)!r} records none')
    return DenseEncoder(name, family=args.dense_family, device=args.device, dtype=args.dtype,
                        batch_size=args.batch_size).load()


def _encoder(args, pool_factor: int = 1, model: Optional[str] = None):
    from .models.encoder import ColPaliEncoder
    from .settings import default_model

    name = model or args.model or _recorded_model(args) or default_model()
    return ColPaliEncoder(name, family=args.family, device=args.device, dtype=args.dtype,
                          batch_size=args.batch_size, pool_factor=pool_factor).load()


def _parse_pages(text: Optional[str]):
    if not text:
        return None
    from .store.milvus_query import MAX_PAGE

    first, _, last = text.partition('-')
    try:
        pages = (int(first), int(last or first))
    except ValueError:
        raise SystemExit(f'error: --pages wants a range like 3-7, got {text!r}')
    if pages[0] < 1 or pages[0] > pages[1]:
        raise SystemExit(f'error: --pages {text}: pages count from 1 and the first may not be after the last')
    if pages[1] > MAX_PAGE:
        raise SystemExit(f'error: --pages {text}: page numbers go up to {MAX_PAGE:,}')
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
    if args.dense_only and not args.dense_model:
        raise SystemExit('error: --dense-only needs --dense-model NAME_OR_FOLDER')
    if args.dense_only and args.context:
        raise SystemExit('error: --context adds token vectors to the visual arm; it does not apply to --dense-only')
    code = 0 if args.dense_only else _index_arm(args, dense=False)
    if args.dense_model:
        code = max(code, _index_arm(args, dense=True))
    return code


def _index_arm(args, dense: bool) -> int:
    from .indexer import ColPaliIndex

    if dense:
        from .dense import DenseIndex

        encoder, make_index, collection = _dense_encoder(args), DenseIndex, _dense_name(args)
        options = {'source_prefix': args.source_prefix}
    else:
        encoder, make_index, collection = _encoder(args, args.pool_factor), ColPaliIndex, None
        options = {'source_prefix': args.source_prefix}
        if args.context:
            from .ingest.context import PageContext

            options['context'] = PageContext(source=args.context_source)
    with _store(args, encoder.dim, collection=collection) as store:
        index = make_index(encoder, store, dpi=args.dpi, progress=not args.no_progress,
                           allow_model_change=args.allow_model_change, **options)
        start = time.perf_counter()
        report = index.add(args.paths)
        seconds = time.perf_counter() - start
        print(report.summary())
        rate = report.added_pages / seconds if seconds and report.added_pages else 0.0
        print(f'{seconds:.1f} s ({rate:.2f} pages/s; render {report.seconds["render"]:.1f} s, '
              f'encode {report.seconds["encode"]:.1f} s, store {report.seconds["store"]:.1f} s); '
              f'{store.count()} pages in {store.uri} [{store.collection}]')
        return 1 if report.failures and not report.documents else 0


def _open_dense_index(args, stack):
    from .dense import DenseIndex
    from .errors import StoreError

    try:
        store = stack.enter_context(_store(args, create=False, collection=_dense_name(args)))
    except StoreError as e:
        if 'does not exist' not in str(e):
            raise
        raise SystemExit(f'error: no dense arm in {args.db or "the default --db"}: collection {_dense_name(args)!r} '
                         f'does not exist; build it with `lazyllm-colpali index PATH --dense-model M` (same --db, '
                         f'--collection)') from None
    encoder = _dense_encoder(args, model=args.dense_model or (store.model_info() or {}).get('name'))
    store.check_dim(encoder.dim)
    return DenseIndex(encoder, store, progress=False, allow_model_change=args.allow_model_change)


def cmd_search(args) -> int:
    from contextlib import ExitStack

    from .indexer import ColPaliIndex
    from .retrieve.retriever import MaxSimRetriever

    _check_positive(topk=args.topk)
    if not args.query.strip():
        raise SystemExit('error: empty query: type what you are looking for')
    if args.arm == 'dense' and (args.mode not in ('auto', 'exact') or args.image_only):
        raise SystemExit('error: --mode and --image-only choose how the visual arm scores; --arm dense is '
                         'searched by Milvus alone')
    filters = {'file': args.file, 'pages': _parse_pages(args.pages)}
    _check_existing_db(args)
    with ExitStack() as stack:
        if args.arm == 'dense':
            index = _open_dense_index(args, stack)
            store = index.store
        else:   # opened once: the store also names the model it was built with
            store = stack.enter_context(_store(args, create=False))
            info = store.model_info() or {}
            encoder = _encoder(args, model=args.model or info.get('name'))
            store.check_dim(encoder.dim)
            if args.image_only:
                from .retrieve.context import ImageOnlyMaxSimRetriever as retriever_class
            else:
                retriever_class = MaxSimRetriever
            mode = 'exact' if args.mode == 'dense' else args.mode
            index = ColPaliIndex(encoder, store, retriever=retriever_class(store, mode=mode), progress=False,
                                 allow_model_change=args.allow_model_change)
            if args.mode == 'dense':
                from .dense import DenseThenMaxSim

                index = DenseThenMaxSim(index, _open_dense_index(args, stack))
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
        overlays = _write_explanations(index, args, hits) if args.explain else {}
        if args.json:
            for hit in hits:
                row = hit.to_dict()
                if hit.page_id in overlays:
                    row['explain'] = overlays[hit.page_id]
                print(json.dumps(row, ensure_ascii=False))
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
        if overlays:
            print(f'similarity maps: {len(overlays)} PNGs in {_shown(args.explain)}')
        return 0


def _write_explanations(index, args, hits) -> dict:
    """``--explain OUTDIR``: one overlay PNG per hit (and per query token with ``--explain-tokens``);
    returns ``{page_id: [paths]}``."""
    from .retrieve.explain import write_overlays

    written = {}
    for rank, hit in enumerate(hits, 1):
        explanation = index.explain(args.query, hit)
        written[hit.page_id] = [str(p) for p in write_overlays(explanation, args.explain, rank,
                                                               per_token=args.explain_tokens)]
    return written


def cmd_docs(args) -> int:
    _check_existing_db(args)
    with _existing_stores(args) as stores:   # the collection, or its dense arm when only that was built
        store = stores[0]
        docs = store.documents()
        prefixes = {}
        for claim in store.source_documents():
            prefixes.setdefault(claim.doc_id, []).append(_shown(claim.prefix))
        for doc in docs:
            held = f'  (from {", ".join(sorted(prefixes[doc["doc_id"]]))})' if doc['doc_id'] in prefixes else ''
            print(f'{doc["doc_id"]}  {doc["pages"]:>5} pages  {_shown(doc["source"])}{held}')
    print(f'{len(docs)} documents, {sum(d["pages"] for d in docs)} pages')
    return 0


def cmd_delete(args) -> int:
    from .ingest.records import is_doc_id

    bad = [d for d in args.doc_ids if not is_doc_id(d)]
    if bad:
        print(f'error: not a document id: {", ".join(repr(_shown(d)) for d in bad)}; ids are 16 hex digits, '
              f'as listed by `lazyllm-colpali docs`', file=sys.stderr)
        return 2
    with _existing_stores(args) as stores:   # a document goes from the collection and from its dense arm
        known = set().union(*(store.doc_ids(args.doc_ids) for store in stores))
        unknown = sorted(set(args.doc_ids) - known)
        if unknown:
            print(f'error: no such document in {stores[0].uri} [{stores[0].collection}]: {", ".join(unknown)}; '
                  f'nothing was deleted (see `lazyllm-colpali docs`)', file=sys.stderr)
            return 2
        for store in stores:
            pages = store.delete_docs(args.doc_ids)
            where = f' from [{store.collection}]' if len(stores) > 1 else ''
            print(f'deleted {len(args.doc_ids)} documents ({pages} pages){where}; {store.count()} pages left')
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

    if args.arm == 'dense':
        from .dense import DenseIndex

        encoder, make_index, collection = _dense_encoder(args), DenseIndex, _dense_name(args)
    else:
        encoder, make_index, collection = _encoder(args), ColPaliIndex, None
    encoder.warm_up()   # a server's first query then runs at repeat speed (docs/maxsim-cpu.md)
    with sock, _store(args, encoder.dim, collection=collection) as store:
        index = make_index(encoder, store, progress=False, source_prefix=args.source_prefix)
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
    dense = args.arm == 'dense'
    encoder = _dense_encoder(args) if dense else _encoder(args)   # a missing model fails here, before the UI starts
    encoder.warm_up()
    data_dir, shared_dir = args.data_dir, args.shared_dir or os.environ.get('LAZYLLM_COLPALI_SHARED_DIR')
    if dense:
        from .dense import dense_dirs

        data_dir, shared_dir = dense_dirs(_dense_name(args), data_dir, shared_dir)
    doc = ColPaliDocument(None, embed=ColPaliEmbed(encoder=encoder), db=args.db or default_db(),
                          collection=_dense_name(args) if dense else args.collection or DEFAULT_COLLECTION,
                          dense=dense, data_dir=data_dir, shared_dir=shared_dir, progress=False)
    pages = doc.index.store.count()
    vlm = server = None
    if args.vlm_url or args.vlm_model:
        vlm, server = make_vlm(args.vlm_url, args.vlm_model, source=args.vlm_source, api_key_env=args.vlm_key_env)
    chat = VisualChat(doc, vlm, topk=args.topk, lang=args.lang,
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
    class LeftHalfMade(Exception):
        pass

    def finish(name, e):
        print(_shown(e))
        if not args.repair:
            print('inconsistent: run `lazyllm-colpali check --repair` to finish creating it')
            raise LeftHalfMade
        store = _open_store(args, collection=name)   # creates what a stopped creation left out
        print(f'finished creating the collection: it now has {", ".join(e.missing)}')
        return store

    code = 0
    try:
        with _existing_stores(args, half_made=finish) as stores:   # the collection and its dense arm, alike
            for store in stores:
                report = store.check(repair=args.repair)
                if args.repair and report['needs_encoding']:
                    report = _reencode(args, store, report)
                code = max(code, _print_check(args, report, f'[{store.collection}] ' if len(stores) > 1 else ''))
    except LeftHalfMade:
        return 1
    return code


def _print_check(args, report, prefix: str) -> int:
    problems = {k: v for k, v in report.items() if isinstance(v, list) and v}
    for key, values in problems.items():
        print(f'{prefix}{key}: {len(values)}  ({", ".join(values[:5])}{", ..." if len(values) > 5 else ""})')
    summary = f'{prefix}{report["pages"]} pages; {report["dead_vector_rows"]} unused vector rows'
    if report.get('unverified_vectors'):
        summary += (f'; {report["unverified_vectors"]} cached pages have no checksum yet (`check --repair` verifies '
                    f'and records them)')
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


def cmd_drop(args) -> int:
    from .settings import DEFAULT_COLLECTION, default_db
    from .store.drop import carry_out, plan_drop

    collection = args.collection or DEFAULT_COLLECTION
    shared = args.shared_dir or os.environ.get('LAZYLLM_COLPALI_SHARED_DIR') or None
    plan = plan_drop(args.db or default_db(), collection, data_dir=args.data_dir, shared_dir=shared)
    if plan.empty:
        print(f'nothing to drop: no collection {collection!r} in {_shown(plan.uri)} and no cache here')
        return 0
    print(_shown(plan.describe()))
    if not args.yes:
        print(f'type the collection name ({collection}) to remove all of it: ', end='', flush=True)
        answer = sys.stdin.readline().strip()
        if answer != collection:
            print('not dropped: the name did not match', file=sys.stderr)
            return 1
    carry_out(plan)
    print(f'dropped {collection!r}: {len(plan.collections)} Milvus collections, {len(plan.doc_ids)} documents')
    return 0


def _reencode(args, store, report):
    from .dense import DenseIndex
    from .errors import ModelNotFoundError
    from .indexer import ColPaliIndex
    from .models.dense import is_dense_family

    info = store.model_info() or {}
    dense = is_dense_family(info.get('family'))
    try:
        encoder = _dense_encoder(args, model=info.get('name')) if dense else _encoder(args, model=info.get('name'))
    except ModelNotFoundError as e:
        print(f'cannot re-encode {len(report["needs_encoding"])} pages: {e}', file=sys.stderr)
        return report
    index = (DenseIndex if dense else ColPaliIndex)(encoder, store, progress=False)
    restored = index.reencode(report['needs_encoding'])
    print(f're-encoded {restored} pages from their source files')
    after = store.check(repair=True)
    after['reclaimed_vector_rows'] += report['reclaimed_vector_rows']
    after['repaired_images'] += report['repaired_images']
    return after


def cmd_make_tiny_model(args) -> int:
    from .models.tiny import build_tiny_model

    out = build_tiny_model(args.family, args.out_dir, seed=args.seed, format=args.format)
    print(f'tiny random {args.family} model written to {out} ({args.format} format; architecturally real, '
          f'random weights: rankings are meaningless)')
    return 0


def cmd_eval(args) -> int:
    from pathlib import Path

    from .eval import build_sample, format_table, from_parts, load_dataset, run_eval, write_chart, write_json
    from .eval.answering import check_cli_args, hooks_from_cli, standin_lookup, write_answers
    from .eval.harness import VISUAL_PREFIX, known_arm
    from .settings import ALL_ARMS, data_home, default_model
    from .vlm import make_vlm

    arms = [a.strip() for a in args.arms.split(',') if a.strip()]
    hybrid_arms = [a.strip() for a in args.hybrid_arms.split(',') if a.strip()] if args.hybrid_arms else None
    unknown = [a for a in arms if not known_arm(a)] + [a for a in hybrid_arms or []
                                                       if not known_arm(a) or a == 'hybrid']
    if unknown:
        raise SystemExit(f'error: unknown arm {unknown[0]!r} in --arms/--hybrid-arms; choose from '
                         f'{", ".join(ALL_ARMS)}, or {VISUAL_PREFIX}MODEL')
    if args.sample:
        dataset = build_sample(data_home() / 'sample_dataset')
    elif args.dataset:
        dataset = load_dataset(args.dataset)
    else:
        if not (args.queries and args.qrels):
            raise SystemExit('error: --corpus needs --queries and --qrels')
        dataset = from_parts(args.corpus, args.queries, args.qrels, answers=args.answers)
    models = args.model or [default_model()]
    arms += [f'colpali@{m}' for m in models[1:] if f'colpali@{m}' not in arms]   # --model A --model B: A vs B
    check_cli_args(args, dataset, arms)
    weights = dict((k, float(v)) for k, v in (kv.split('=') for kv in args.hybrid_weights.split(','))) \
        if args.hybrid_weights else None
    vlm = server = None
    servers = []
    if ('caption' in arms or (dataset.answers and not args.skip_answers)) and (args.vlm_url or args.vlm_model):
        vlm, server = make_vlm(args.vlm_url, args.vlm_model, source=args.vlm_source, api_key_env=args.vlm_key_env,
                               standin_answers=standin_lookup(dataset) if args.vlm_url == 'standin' else None)
    try:
        hooks, servers, notes = hooks_from_cli(args, dataset, arms, vlm)
        start = time.perf_counter()
        report = run_eval(dataset, arms, topk=args.topk, model=models[0],
                          device='cuda' if args.device.startswith('cuda') else 'cpu', vlm=vlm,
                          workdir=args.workdir, hybrid_weights=weights, multihop={'hops': args.hops},
                          dense_model=args.dense_model, hybrid_arms=hybrid_arms, arm_hooks=hooks)
        report.notes[:0] = notes
        seconds = time.perf_counter() - start
    finally:
        for running in [server, *servers]:
            if running is not None:
                running.stop()
    out = Path(args.out)
    table = format_table(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{report.dataset}_table.md').write_text(table + '\n')
    print(table)
    from .eval.report import write_chain_chart
    answers = write_answers(report, out / f'{report.dataset}_answers.jsonl')
    chains = write_chain_chart(report, out / f'{report.dataset}_chains.png')
    written = [write_json(report, out / f'{report.dataset}.json'), out / f'{report.dataset}_table.md',
               answers, write_chart(report, out / f'{report.dataset}.png'), chains]
    print(f'\n{seconds:.1f} s in all; wrote ' + ', '.join(str(w) for w in written if w))
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
    from .devtools.standin_vlm import StandinVLMServer, serve_forever

    try:
        server = StandinVLMServer(port=args.port, answers=args.answers)
    except ValueError as e:   # a bad --answers lookup
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'stand-in VLM (not a real model) at http://127.0.0.1:{args.port}/v1/ ; Ctrl-C stops it')
    serve_forever(server=server)
    return 0


def cmd_finetune(args) -> int:
    from .training.cli import cmd_finetune as run
    return run(args)


def cmd_feedback(args) -> int:
    from .training.cli import cmd_feedback as run
    return run(args)


COMMANDS = {'index': cmd_index, 'search': cmd_search, 'docs': cmd_docs, 'delete': cmd_delete,
            'check': cmd_check, 'drop': cmd_drop, 'serve-api': cmd_serve_api, 'make-tiny-model': cmd_make_tiny_model,
            'eval': cmd_eval, 'serve': cmd_serve, 'standin-vlm': cmd_standin_vlm, 'make-chains': cmd_make_chains,
            'finetune': cmd_finetune, 'feedback': cmd_feedback}


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
    if getattr(args, 'explain_tokens', False) and not args.explain:
        raise SystemExit('error: --explain-tokens needs --explain OUTDIR (where the PNGs go)')
    if getattr(args, 'explain', None) and os.path.exists(args.explain) and not os.path.isdir(args.explain):
        raise SystemExit(f'error: --explain {args.explain}: exists and is not a folder')
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
