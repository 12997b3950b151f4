"""The MaxSim retriever: optional candidate generation, then exact MaxSim rerank."""
from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import EmptyQueryError
from ..logging import LOG
from ..store.base import Filters, MultiVectorStore
from ..store.vector_file import PackedMultiVectors
from . import kernel, kernel_units
from .candidates import CentroidIndex
from .compression import compress
from .maxsim import maxsim_packed, topk

MODES = ('auto', 'exact', 'candidates', 'centroids')
SCORING_DTYPES = ('float16', 'bfloat16', 'int8', 'float32')
RERANK_FACTOR = 4   # approximate layouts: the best 4x the wanted pages are re-scored exactly from the stored tokens


def _approximate(scoring: PackedMultiVectors, source: PackedMultiVectors) -> bool:
    """A scoring layout derived with rounding (int8 codes, a bf16 copy), whose best pages get re-scored."""
    tokens = scoring.tokens
    return scoring is not source and (hasattr(tokens, 'codes') or tokens.dtype == torch.bfloat16)


@dataclass
class SearchHit:
    page_id: str
    doc_id: str
    source: str
    file_name: str
    page: int
    score: float
    image_path: str                  # the page image on this machine ('' if it cannot be found or re-rendered)
    metadata: Dict[str, Any] = field(default_factory=dict)
    image_key: str = ''              # the page image's key in the collection's image store (same on every machine)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class MaxSimRetriever:
    """Ranks pages by exact MaxSim, over every page or over candidates.

    Modes: ``exact`` scores every (filtered) page: exact by construction. ``candidates`` asks the store
    (Milvus ANN over pooled page vectors) for ``candidate_budget`` pages (default: max(256, 2% of pages));
    ``centroids`` uses an in-memory centroid inverted index (PLAID-style, see :mod:`.candidates`); both then
    score their candidates exactly; when the budget covers the collection they score it all (exact, and no
    index to train). ``auto`` is exact up to ``exact_max_pages`` pages and ``centroids`` beyond: with the fused
    kernel exhaustive search costs ~0.08 CPU-ms per page (20k pages: ~0.8 s on 2 cores, exact, nothing to
    train), while the centroid path, though ~30x cheaper per query at 100k pages, costs an index build of
    minutes on such a machine and recall@10 ~0.985 (measured in benchmarks/bench_maxsim.py, bench_scale.py).

    Scoring layout on CPU (``scoring_dtype``): ``float16`` scores the store's tokens as stored with the fused
    kernel (:mod:`.kernel`), no copy, exact; ``int8`` derives per-token int8 codes in memory (half the bytes;
    int8 dot products on VNNI / AMX CPUs, :mod:`.kernel_units`) and ``bfloat16`` a bf16 copy (bf16 GEMMs on
    AVX-512 BF16 / AMX CPUs); both then re-score their best ``RERANK_FACTOR`` x the wanted pages exactly from
    the stored tokens, so returned scores are exact and the order among them too (recall@10 against
    exhaustive exact: docs/maxsim-cpu.md); ``float32`` keeps a float32 copy while it fits in ``cache_bytes``.
    Without numba the CPU path falls back to chunked matmuls over a float32 copy. On CUDA the fp16
    tokens are kept on the GPU and scored by the Triton kernel (:mod:`.kernel_gpu`) when triton is installed.
    """

    def __init__(self, store: MultiVectorStore, *, mode: str = 'auto', candidate_budget: Optional[int] = None,
                 exact_max_pages: int = 20000, device: str = 'cpu', cache_bytes: int = 8 << 30,
                 nprobe: int = 4, scoring_dtype: str = 'float16'):
        if mode not in MODES:
            raise ValueError(f'mode must be one of {", ".join(MODES)}, got {mode!r}')
        if scoring_dtype not in SCORING_DTYPES:
            raise ValueError(f'scoring_dtype must be one of {", ".join(SCORING_DTYPES)}, got {scoring_dtype!r}')
        self.scoring_dtype = scoring_dtype
        self.store = store
        self.mode = mode
        self.candidate_budget = candidate_budget
        self.exact_max_pages = exact_max_pages
        self.device = device
        self.cache_bytes = cache_bytes
        self.nprobe = nprobe
        self._lock = threading.Lock()
        self._source: Optional[PackedMultiVectors] = None
        self._scoring: Optional[PackedMultiVectors] = None
        self._position: Dict[str, int] = {}
        self._centroids: Optional[CentroidIndex] = None
        self._indexed: Optional[PackedMultiVectors] = None
        self._saved_pages = 0

    def _scoring_layout(self, packed: PackedMultiVectors) -> PackedMultiVectors:
        if self.device != 'cpu':
            # Keep the tokens on the GPU (one copy per collection change, not one PCIe transfer per query);
            # a collection larger than the GPU's memory is streamed per query instead.
            try:
                return PackedMultiVectors(packed.page_ids, packed.tokens.to(self.device), packed.offsets)
            except torch.OutOfMemoryError:
                return packed
        fused = kernel.available()
        if fused and self.scoring_dtype == 'float16':
            return packed                                  # the kernel reads the stored tokens directly
        if self.scoring_dtype in ('int8', 'bfloat16') and (fused or kernel_units.has_units(self.scoring_dtype)):
            return compress(packed, self.scoring_dtype)
        fits = packed.tokens.numel() * 4 <= self.cache_bytes
        return compress(packed, 'float32') if fits else packed

    def _collection(self) -> Tuple[PackedMultiVectors, PackedMultiVectors, Dict[str, int]]:
        """The store's pages, the same pages in the layout used for scoring, and their positions by page id
        (taken together, so a concurrent write cannot pair one version's tensor with another's map); the
        layout is rebuilt only when the store's packed view changes."""
        with self._lock:
            packed = self.store.packed()
            if packed is not self._source:
                self._source = packed
                self._scoring = self._scoring_layout(packed)
                self._position = {p: i for i, p in enumerate(packed.page_ids)}
            return self._source, self._scoring, self._position

    def _centroid_index(self, packed: PackedMultiVectors) -> CentroidIndex:
        # Trained once per collection (and shared: see centroid_file); later changes only assign the new pages.
        with self._lock:
            if self._centroids is None:
                self._centroids = self._load_centroids(packed)
                if self._centroids is None:
                    self._centroids = CentroidIndex(nprobe=self.nprobe).build(packed)
                    self._save_centroids()
                self._indexed = packed
            elif self._indexed is not packed:
                self._centroids.sync(packed)
                self._indexed = packed
                if len(packed) > 1.1 * self._saved_pages:   # keep the shared copy roughly current
                    self._save_centroids()
            return self._centroids

    @property
    def centroid_file(self) -> Optional[Path]:
        """Where the trained centroid index is kept for every process and machine on this collection: the
        store's shared folder (beside the page images), so a restart or a second machine does not retrain."""
        shared = getattr(self.store, 'shared_dir', None)
        collection = getattr(self.store, 'collection', None)
        return Path(shared) / 'index' / f'{collection}.centroids.pt' if shared and collection else None

    def _load_centroids(self, packed: PackedMultiVectors) -> Optional[CentroidIndex]:
        path = self.centroid_file
        if path is None or not path.is_file():
            return None
        try:
            state = torch.load(path, map_location='cpu', weights_only=True)
            index = CentroidIndex.from_state_dict(state)
            if index.centroids.shape[1] != packed.tokens.shape[1]:
                raise ValueError(f'centroids of dim {index.centroids.shape[1]}, pages of dim {packed.tokens.shape[1]}')
            index.nprobe = self.nprobe
            index.sync(packed)
        except Exception as e:   # a damaged or foreign file costs a retrain, never a failed search
            LOG.warning(f'ignoring the centroid index {path} ({type(e).__name__}: {e}); training a new one')
            return None
        self._saved_pages = len(state['page_ids'])
        return index

    def _save_centroids(self) -> None:
        path = self.centroid_file
        self._saved_pages = self._centroids.indexed_pages
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f'.{os.getpid()}.tmp')
            torch.save(self._centroids.state_dict(), tmp)
            os.replace(tmp, path)   # readers on other machines see the old file or the new one, never half
        except OSError as e:
            LOG.warning(f'could not save the centroid index to {path}: {e}')

    def _effective_mode(self, n_pages: int) -> str:
        if self.mode == 'auto':
            return 'exact' if n_pages <= self.exact_max_pages else 'centroids'
        if self.budget(n_pages) >= n_pages:
            return 'exact'   # the budget covers every page: same result, and no index to train or query
        return self.mode

    def budget(self, n_pages: int) -> int:
        # Measured (benchmarks/bench_scale.py): a fixed 256 kept recall@10 1.0 at 10k pages but 0.72 at 100k;
        # 1% of the collection gave 0.93 there; with the fused rerank, 2% gave 0.985 at 31x less CPU than the
        # exhaustive kernel (benchmarks/results/scale_100k_h200host.json). So the default grows with the collection.
        return self.candidate_budget or max(256, n_pages // 50)

    def _page_indices(self, query: torch.Tensor, packed: PackedMultiVectors, position: Dict[str, int],
                      filters: Filters) -> Optional[List[int]]:
        """Which pages to score exactly (None: all of them)."""
        mode = self._effective_mode(len(packed))
        budget = self.budget(len(packed))
        allowed: Optional[Sequence[str]] = self.store.page_ids(filters) if filters else None
        if mode == 'centroids':
            indices = self._centroid_index(packed).candidates(query, budget if not allowed else len(packed)).tolist()
            if allowed is None:
                return indices
            keep = {position[p] for p in allowed if p in position}
            return [i for i in indices if i in keep][:budget]
        chosen = allowed if mode == 'exact' else self.store.candidates(query, budget, filters)
        if chosen is None:
            return None
        return [position[p] for p in chosen if p in position]

    def search_vectors(self, query: torch.Tensor, topk_: int = 5, filters: Filters = None) -> List[SearchHit]:
        if query.ndim != 2 or query.shape[0] == 0:
            raise EmptyQueryError('the query produced no vectors; give a non-empty query')
        source, scoring, position = self._collection()
        indices = self._page_indices(query, source, position, filters)
        if len(source) == 0 or indices == []:
            return []
        # The rerank scores the chosen pages in place (no copy of their tokens).
        scores = maxsim_packed([query], scoring, pages=indices, device=self.device)[0]
        # A few spare pages: a page whose vectors are stored but whose row is not visible yet (a writer between
        # its commit steps) or already deleted (another machine) is skipped, and the next one takes its place.
        want = 2 * topk_ + 8
        if not _approximate(scoring, source):
            values, order = topk(scores, want)
            positions = order.tolist() if indices is None else [indices[int(i)] for i in order]
        else:   # approximate layout: its best candidates re-scored exactly from the stored tokens
            _, order = topk(scores, RERANK_FACTOR * want)
            candidates = order.tolist() if indices is None else [indices[int(i)] for i in order]
            exact = maxsim_packed([query], source, pages=candidates)[0]
            values, best = topk(exact, want)
            positions = [candidates[int(i)] for i in best]
        chosen = [source.page_ids[i] for i in positions]
        records = self.store.records(chosen)
        hits = [SearchHit(page_id=r.page_id, doc_id=r.doc_id, source=r.source, file_name=r.file_name,
                          page=r.page_number, score=float(v), image_path=r.image_path, metadata=r.metadata,
                          image_key=r.image_key)
                for v, r in ((v, records[p]) for v, p in zip(values.tolist(), chosen) if p in records)]
        return hits[:topk_]
