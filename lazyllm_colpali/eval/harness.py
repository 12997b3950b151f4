"""Run every retrieval arm over one dataset with the same top-k and compare them side by side.

Arms: ``colpali`` (visual MaxSim), ``text`` (text layer + OCR for scans, BM25), ``text-layer`` (the PDF text
layer alone, BM25: the plain text-RAG baseline), ``ocr`` (OCR on every page),
``layout`` (offline layout parsing to Markdown: rapid-layout regions + text layer or OCR, BM25), ``mineru``
(MinerU's model-free tier, when installed), ``caption`` (VLM caption + QA, BM25; needs a chat module),
``dense`` (one vector per page from a visual bi-encoder, ``dense_model``; Milvus's own search),
``colpali+context`` (the visual arm whose pages also hold their context text's token vectors) and ``hybrid``
(reciprocal rank fusion of every other arm that ran, at least two). Each arm reports ranx
metrics, query latency p50/p95, indexing seconds per page and bytes per page. An arm that cannot run here
(no model, no VLM, no MinerU) is reported with its reason instead of stopping the others.
Any arm name with ``-multihop`` (``text-multihop``, ``hybrid-multihop``) wraps that arm in multi-hop
retrieval (:mod:`lazyllm_colpali.multihop`; its base arm runs too, for comparison), and queries with two or
more gold pages get chain metrics (all@10, recall per hop position, searches per query: :mod:`.chains`).

Arm hooks (``arm_hooks``) run after each arm has answered every query, while its index and page images still
exist: they see the arm's top-k hits per query (``ArmResult.hits``) and add metric groups to its row
(``ArmResult.metric_groups``, e.g. answer-level metrics from :mod:`.answering`).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import ColPaliError
from ..logging import LOG
from .chains import base_arm, chain_metrics, is_multihop
from .dataset import EvalDataset
from .metrics import DEFAULT_METRICS, evaluate_run, percentile
from ..settings import ALL_ARMS, DEFAULT_ARMS  # noqa: F401  (re-exported)


@dataclass
class ArmResult:
    arm: str
    metrics: Dict[str, float] = field(default_factory=dict)
    latency_p50_ms: float = float('nan')
    latency_p95_ms: float = float('nan')
    index_seconds: float = float('nan')
    index_s_per_page: float = float('nan')
    bytes_per_page: float = float('nan')
    index_bytes_per_page: float = float('nan')   # bytes/page without page images: what the index itself costs
    pages: int = 0
    error: Optional[str] = None
    note: str = ''
    # more metrics per row, by group (``{'answers': {'em': 0.8, ...}}``): values in [0, 1] are tabled and
    # charted; keys starting with ``n_`` are counts (JSON only)
    metric_groups: Dict[str, Dict[str, float]] = field(default_factory=dict)
    chain: Dict[str, float] = field(default_factory=dict)   # all@10, R@10 per hop, searches (eval/chains.py)
    per_query: Dict[str, Dict[str, float]] = field(default_factory=dict, repr=False)   # ms and searches
    run: Dict[str, Dict[str, float]] = field(default_factory=dict, repr=False)
    hits: Dict[str, List[Any]] = field(default_factory=dict, repr=False)      # query id -> top-k SearchHits
    details: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict, repr=False)  # per-query records


@dataclass
class EvalReport:
    dataset: str
    topk: int
    n_queries: int
    n_pages: int
    model: str
    arms: List[ArmResult]
    metrics: Sequence[str] = DEFAULT_METRICS
    notes: List[str] = field(default_factory=list)   # lines printed under the table

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        for arm in data['arms']:
            for bulky in ('run', 'hits', 'details'):
                arm.pop(bulky, None)
        return data


class _Arm:
    """What the harness needs from an arm: index the corpus, then answer queries with SearchHits."""

    def __init__(self, name: str, index: Any, close: Callable[[], None], note: str = ''):
        self.name, self.index, self.close, self.note = name, index, close, note

    def search(self, query: str, topk: int):
        return self.index.search(query, topk)


VISUAL_PREFIX = 'colpali@'   # colpali@MODEL: the visual arm with another model or adapter folder


def _is_other_model_arm(name: str) -> bool:
    return name.startswith(VISUAL_PREFIX) and name != VISUAL_PREFIX


def known_arm(name: str) -> bool:
    """An arm ``eval`` can run: one of ALL_ARMS, ``colpali@MODEL``, and either with ``-multihop``."""
    return base_arm(name) in ALL_ARMS or _is_other_model_arm(base_arm(name))


def _visual_arm(workdir: Path, model: str, device: str, name: str = 'colpali', context: bool = False) -> _Arm:
    import hashlib

    from ..indexer import ColPaliIndex
    from ..models.encoder import ColPaliEncoder
    from ..retrieve.retriever import MaxSimRetriever
    from ..store.milvus_store import MilvusMultiVectorStore

    encoder = ColPaliEncoder(model, device=device)
    from ..ingest.context import PageContext

    # One Lite file per arm (its size is the arm's Milvus bytes), and per model: a collection refuses pages
    # from another model.
    db = {'colpali': 'colpali.db', 'colpali+context': 'colpali_context.db'}.get(
        name, f'colpali-{hashlib.sha1(model.encode()).hexdigest()[:10]}.db')
    store = MilvusMultiVectorStore(str(workdir / db), 'eval_pages', dim=encoder.dim)
    index = ColPaliIndex(encoder, store, retriever=MaxSimRetriever(store, mode='exact'),
                         context=PageContext() if context else None)
    return _Arm(name, index, store.close, _model_note(model))


def _model_note(model: str) -> str:
    from ..models.adapters import adapter_base, is_adapter_folder

    if model.startswith('tiny:'):
        return 'random tiny model: ranking meaningless'
    if is_adapter_folder(model):
        base = adapter_base(model)
        return f'LoRA adapter on {base}' + (' (random tiny base)' if base.startswith('tiny:') else '')
    return ''


def _dense_arm(workdir: Path, dense_model: Optional[str], device: str) -> _Arm:
    from ..dense import DenseIndex
    from ..models.dense import DenseEncoder
    from ..store.milvus_store import MilvusMultiVectorStore

    if not dense_model:
        raise ColPaliError('the dense arm needs a single-vector model: --dense-model NAME_OR_FOLDER '
                           '(e.g. tiny:biqwen2 offline)')
    encoder = DenseEncoder(dense_model, device=device)
    store = MilvusMultiVectorStore(str(workdir / 'dense.db'), 'eval_pages_dense', dim=encoder.dim)
    note = 'random tiny model: ranking meaningless' if dense_model.startswith('tiny:') else ''
    return _Arm('dense', DenseIndex(encoder, store), store.close, note)


def _text_arm(name: str, workdir: Path, extractor: Any, note: str = '') -> _Arm:
    from ..text.page_index import PageTextIndex

    index = PageTextIndex(workdir / name, extractor=extractor)
    return _Arm(name, index, index.close, note)


def _storage(arm: _Arm) -> Dict[str, int]:
    # visual and dense arms keep a store (Milvus + vectors + page images); text arms are their own store
    store = getattr(arm.index, 'store', None)
    return (store if hasattr(store, 'storage_bytes') else arm.index).storage_bytes()


def run_eval(dataset: EvalDataset, arms: Sequence[str] = DEFAULT_ARMS, *, topk: int = 10,
             model: str = 'tiny:colpali', device: str = 'cpu', vlm: Optional[Callable] = None,
             workdir: Optional[str | Path] = None, hybrid_weights: Optional[Dict[str, float]] = None,
             rrf_k: int = 60, metrics: Sequence[str] = DEFAULT_METRICS,
             multihop: Optional[Dict[str, Any]] = None, dense_model: Optional[str] = None,
             hybrid_arms: Optional[Sequence[str]] = None,
             arm_hooks: Sequence[Callable[[ArmResult, EvalDataset, Path], None]] = ()) -> EvalReport:
    """``multihop``: options of the ``-multihop`` arms (:class:`~lazyllm_colpali.multihop.MultiHopRetriever`
    keywords, e.g. ``{'hops': 3}``). ``dense_model``: the ``dense`` arm's single-vector model. ``hybrid_arms``:
    which arms ``hybrid`` fuses (default: every other arm that ran)."""
    from .multihop_arm import with_base_arms

    arms = with_base_arms(arms)
    unknown = [a for a in arms if not known_arm(a)] + [a for a in hybrid_arms or ()
                                                       if not known_arm(a) or a == 'hybrid']
    if unknown:
        raise ValueError(f'unknown arms {unknown}; choose from {", ".join(ALL_ARMS)}, or {VISUAL_PREFIX}MODEL')
    own_tmp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix='colpali_eval_')) if own_tmp else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stats_file = workdir / 'index_stats.json'
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    results: List[ArmResult] = []
    built: Dict[str, _Arm] = {}
    built_searchers: Dict[str, Any] = {}   # arm-contract objects by name, for the -multihop arms to wrap
    n_pages = 0
    try:
        for name in [a for a in arms if a != 'hybrid' and not is_multihop(a)]:
            result = ArmResult(name)
            results.append(result)
            try:
                arm = _make_arm(name, workdir, model, device, vlm, dense_model)
            except (ColPaliError, ImportError) as e:
                result.error = str(e).splitlines()[0]
                LOG.warning(f'eval: arm {name} skipped: {result.error}')
                continue
            built[name] = arm
            built_searchers[name] = _SearchModule(arm)
            result.note = arm.note
            _index_arm(arm, dataset, result, stats)
            n_pages = max(n_pages, result.pages)
            _query_arm(arm.search, dataset, topk, result, metrics)
            _run_hooks(arm_hooks, result, dataset, workdir)
        if 'hybrid' in arms:
            chosen = {k: v for k, v in built.items() if not hybrid_arms or k in hybrid_arms}
            members = [r for r in results if r.arm in chosen]
            results.append(_hybrid(chosen, dataset, topk, hybrid_weights, rrf_k, metrics, members, built_searchers))
            if not results[-1].error:
                _run_hooks(arm_hooks, results[-1], dataset, workdir)
        for name in [a for a in arms if is_multihop(a)]:
            from .multihop_arm import run_multihop_arm
            results.append(run_multihop_arm(name, built_searchers, results, dataset, topk, metrics, multihop))
            if not results[-1].error:
                _run_hooks(arm_hooks, results[-1], dataset, workdir)
        stats_file.write_text(json.dumps(stats, indent=1))
    finally:
        for arm in built.values():
            arm.close()
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    notes = [note for hook in arm_hooks for note in getattr(hook, 'notes', [])]
    return EvalReport(dataset.name, topk, len(dataset.queries), n_pages, model, results, tuple(metrics), notes)


def _run_hooks(hooks: Sequence[Callable], result: ArmResult, dataset: EvalDataset, workdir: Path) -> None:
    for hook in hooks:
        try:
            hook(result, dataset, workdir)
        except ColPaliError as e:   # a hook that cannot run (no VLM answers) leaves the arm's other numbers
            LOG.warning(f'eval: {result.arm}: {type(hook).__name__} failed: {e}')


def _make_arm(name: str, workdir: Path, model: str, device: str, vlm: Optional[Callable],
              dense_model: Optional[str] = None) -> _Arm:
    from ..text.extract import MinerUExtractor, get_extractor

    if name in ('colpali', 'colpali+context'):
        return _visual_arm(workdir, model, device, name, context=name == 'colpali+context')
    if name.startswith(VISUAL_PREFIX):
        return _visual_arm(workdir, name[len(VISUAL_PREFIX):], device, name)
    if name == 'dense':
        return _dense_arm(workdir, dense_model, device)
    if name in ('text', 'text-layer', 'ocr', 'layout'):
        return _text_arm(name, workdir, get_extractor({'text': 'auto'}.get(name, name)))
    if name == 'mineru':
        extractor = MinerUExtractor()
        if not extractor.available():
            from ..text.extract import ExtractorUnavailableError
            raise ExtractorUnavailableError(f'MinerU is not installed: {extractor.install_hint()}')
        return _text_arm(name, workdir, extractor)
    if name == 'caption':
        if vlm is None:
            raise ColPaliError('no VLM given (--vlm-url URL --vlm-model NAME, or --vlm standin)')
        from ..text.augment import CaptionQAAugmenter
        return _text_arm(name, workdir, CaptionQAAugmenter(vlm, cache_dir=workdir / 'caption_cache'))
    raise ValueError(name)


def _index_arm(arm: _Arm, dataset: EvalDataset, result: ArmResult, stats: Dict[str, Any]) -> None:
    start = time.perf_counter()
    report = arm.index.add([dataset.corpus_dir])
    elapsed = time.perf_counter() - start
    for failure in report.failures:
        LOG.warning(f'eval: {arm.name}: skipped {failure.path}: {failure.reason}')
    result.pages = report.added_pages + report.skipped_pages
    if report.added_pages:   # a reused workdir keeps the timing of the run that built the index
        stats[arm.name] = {'seconds': elapsed, 'pages': report.added_pages}
    timing = stats.get(arm.name)
    if timing is not None:
        result.index_seconds = timing['seconds']
        result.index_s_per_page = timing['seconds'] / max(1, timing['pages'])
    else:   # reused from a workdir without its stats file: the check is not the build, say so
        result.note = '; '.join(filter(None, [result.note, 'index reused, build time not recorded']))
    storage = _storage(arm)
    result.bytes_per_page = sum(storage.values()) / max(1, result.pages)
    result.index_bytes_per_page = sum(v for k, v in storage.items() if k != 'images') / max(1, result.pages)


def _query_arm(search: Callable, dataset: EvalDataset, topk: int, result: ArmResult,
               metrics: Sequence[str], progress: bool = True) -> None:
    from tqdm.auto import tqdm

    latencies: List[float] = []
    spent: List[int] = []     # searches per query: a multi-hop search says how many it made
    run: Dict[str, Dict[str, float]] = {}
    queries = tqdm(dataset.queries.items(), total=len(dataset.queries), desc=f'eval {result.arm}: queries',
                   unit='query', disable=not progress, leave=False)
    for qid, query in queries:
        start = time.perf_counter()
        hits = search(query, topk)
        latencies.append((time.perf_counter() - start) * 1000)
        result.hits[qid] = list(hits[:topk])
        spent.append(getattr(search, 'last_searches', 1))
        result.per_query[qid] = {'ms': latencies[-1], 'searches': spent[-1]}
        ranking: Dict[str, float] = {}
        for rank, hit in enumerate(hits[:topk]):
            # ranx sorts by score: use rank-derived scores so ties and arm-specific scales cannot reorder
            ranking.setdefault(dataset.page_key(hit.source, hit.page), float(topk - rank))
        run[qid] = ranking
    result.run = run
    result.metrics = evaluate_run(dataset.qrels, run, metrics)
    result.chain = chain_metrics(dataset.qrels, dataset.chain_hops, run, spent)
    result.latency_p50_ms = percentile(latencies, 50)
    result.latency_p95_ms = percentile(latencies, 95)


def _hybrid(built: Dict[str, _Arm], dataset: EvalDataset, topk: int, weights: Optional[Dict[str, float]],
            rrf_k: int, metrics: Sequence[str], member_results: List[ArmResult],
            searchers: Optional[Dict[str, Any]] = None) -> ArmResult:
    from ..lazyllm_glue.arms import HybridRetriever

    result = ArmResult('hybrid')
    members = {name: arm for name, arm in built.items() if name != 'hybrid'}
    if len(members) < 2:
        ran = ', '.join(members) or 'none'
        result.error = f'needs at least two other arms that ran (ran: {ran})'
        return result
    retriever = HybridRetriever({name: _SearchModule(arm) for name, arm in members.items()},
                                weights={k: v for k, v in (weights or {}).items() if k in members},
                                topk=topk, depth=max(50, topk), k=rrf_k)
    result.note = 'RRF of ' + '+'.join(members)
    if searchers is not None:
        searchers['hybrid'] = retriever
    # Serving a hybrid means building and storing every member arm.
    result.index_s_per_page = sum(arm.index_s_per_page for arm in member_results)
    result.bytes_per_page = sum(arm.bytes_per_page for arm in member_results)
    result.index_bytes_per_page = sum(arm.index_bytes_per_page for arm in member_results)
    _query_arm(lambda q, k: retriever.search(q, topk=k), dataset, topk, result, metrics)
    return result


class _SearchModule:
    """An arm's index with the arms' ``search(query, filters=None, *, topk)`` that HybridRetriever fans out to."""

    def __init__(self, arm: _Arm):
        self.arm = arm

    def search(self, query: str, filters=None, *, topk: int = 10):
        return self.arm.search(query, topk)
