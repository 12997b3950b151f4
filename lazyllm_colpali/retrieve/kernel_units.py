"""MaxSim on the CPU's matrix units: bf16 and int8 GEMMs through torch (oneDNN), tile by tile.

Shape of the problem: ~20 query tokens x 128 dims against millions of page tokens is a skinny GEMM whose
output (query tokens x page tokens) is as large as the input. So pages are scored in tiles of whole pages
(``tile_tokens`` rows, sized to stay in L2/L3): one GEMM ``(query tokens, dim) @ (dim, tile tokens)`` per
tile, with the query tokens of every query in the call stacked as rows (a batch of queries shares one read
of each tile), then each page's max per query token over its columns; only the tile's block of
similarities ever exists, never a page-sized or collection-sized matrix.

- ``bfloat16`` tokens: ``torch.mm`` in bf16 (AVX-512 BF16 / AMX), fp32 accumulation inside the GEMM; the
  query is rounded to bf16 and each similarity is rounded to bf16 on output (torch's CPU mm returns bf16),
  so a score is within ``sum_i |max_i| * 2**-8`` of the fp32 score on the same bf16 tokens (tested).
- :class:`~.compression.Int8Tokens`: ``torch._int_mm`` on int8 codes (VNNI / AMX-INT8) with exact int32
  accumulation; each query token is quantised symmetrically to int8 with its own scale, page-token scales
  multiply each column before the max, query scales the row maxima after it (a positive per-row factor
  commutes with the max). Equal, up to float32 rounding, to the fp32 score of the decoded query and pages.

Parallelism: the tiles are split into one contiguous run per thread, each run scored by a worker thread whose
torch ops are single-threaded (its OpenMP thread count set to 1), so the threads meet once per call, not at
every op's fork-join (measured: with torch's own intra-op threads a busy machine's barrier waits cost as much
as the GEMMs); where the OpenMP runtime cannot be reached, or with ``LAZYLLM_COLPALI_TILE_WORKERS=0``, the
calling thread runs every tile with torch's threads. Measured against the numba kernel and the memory-read time of the same bytes in
benchmarks/bench_maxsim.py.
Rejected there: oneDNN's fused ``qlinear_pointwise`` (per-column scales inside the GEMM, ~30% faster per
tile) needs every tile prepacked into an opaque copy (as large as the codes, ~29 ms per 16k-token tile to
build) and crashes on an unpacked one.

:func:`available` says whether a token layout has its units here; :func:`self_check` runs each GEMM once
on a small known product, so a library or CPU quirk falls back to the numba kernel instead of wrong scores.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..logging import LOG
from .cpu_features import matrix_units

TILE_TOKENS = 1 << 14   # 16k page tokens: a 20-row fp32 block of 1.3 MB and a 4 MB bf16 tile (L2 + L3)
MIN_DIM = 8             # below this the GEMM libraries' small-K paths are not worth it (and int8 K=1 is wrong)


def _mode() -> str:
    return os.environ.get('LAZYLLM_COLPALI_KERNEL', 'auto')


def _is_int8(tokens) -> bool:
    return hasattr(tokens, 'codes') and hasattr(tokens, 'scales')


def available(tokens) -> bool:
    """Whether ``tokens`` (a bf16 tensor or ``Int8Tokens``) can be scored on this CPU's matrix units.
    ``LAZYLLM_COLPALI_KERNEL=numba`` (or ``torch``) keeps these paths off."""
    if _is_int8(tokens):
        return tokens.codes.device.type == 'cpu' and tokens.codes.shape[1] >= MIN_DIM and has_units('int8')
    if isinstance(tokens, torch.Tensor) and tokens.dtype == torch.bfloat16:
        return tokens.device.type == 'cpu' and tokens.shape[1] >= MIN_DIM and has_units('bfloat16')
    return False


def has_units(dtype: str) -> bool:
    """Whether ``'bfloat16'`` or ``'int8'`` tokens would be scored on matrix units here."""
    units = matrix_units()
    present = units.int8 if dtype == 'int8' else units.bf16 if dtype == 'bfloat16' else False
    return present and _mode() in ('auto', 'units') and self_check()['int8' if dtype == 'int8' else 'bf16']


@functools.lru_cache(maxsize=1)
def self_check() -> dict:
    """Each GEMM once on a small product with a known answer (int8: exact; bf16: within rounding)."""
    g = torch.Generator().manual_seed(0)
    ok = {}
    a = torch.randint(-127, 128, (20, 128), dtype=torch.int8, generator=g)
    b = torch.randint(-127, 128, (300, 128), dtype=torch.int8, generator=g)
    try:
        ok['int8'] = bool(torch.equal(torch._int_mm(a, b.T), a.int() @ b.int().T))
    except (RuntimeError, AttributeError) as e:
        LOG.debug(f'int8 GEMM unavailable: {e}')
        ok['int8'] = False
    x = torch.randn(20, 128, generator=g).bfloat16()
    y = torch.randn(300, 128, generator=g).bfloat16()
    try:
        exact = x.float() @ y.float().T
        ok['bf16'] = bool(((torch.mm(x, y.T).float() - exact).abs() <= exact.abs() * 2 ** -8 + 1e-3).all())
    except RuntimeError as e:
        LOG.debug(f'bf16 GEMM unavailable: {e}')
        ok['bf16'] = False
    for name, good in ok.items():
        if not good:
            LOG.warning(f'the {name} GEMM failed its self-check on this machine; MaxSim uses the numba kernel')
    return ok


def _tiles(lengths: np.ndarray, tile_tokens: int) -> List[Tuple[int, int]]:
    """Ranges [a, b) of consecutive entries of ``lengths`` holding at most ``tile_tokens`` tokens (>= 1 each)."""
    ends = np.cumsum(lengths)
    bounds, a, n = [], 0, len(lengths)
    while a < n:
        before = ends[a - 1] if a else 0
        b = int(np.searchsorted(ends, before + tile_tokens, side='right'))
        b = min(max(b, a + 1), n)
        bounds.append((a, b))
        a = b
    return bounds


def _rows(starts: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    """Token row indices of pages given by their first rows and lengths, concatenated."""
    total = int(lengths.sum())
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return torch.from_numpy(np.arange(total, dtype=np.int64) + shift)


def _segment_max(sims: torch.Tensor, lengths: np.ndarray, out: torch.Tensor) -> None:
    """``out[:, p]`` = max of ``sims`` over page p's columns (pages side by side, ``lengths`` columns each);
    -inf for an empty page."""
    n = len(lengths)
    if n and lengths[0] > 0 and (lengths == lengths[0]).all():   # equal lengths (ColPali): a reshape
        out.copy_(sims.view(sims.shape[0], n, int(lengths[0])).amax(dim=2))
        return
    keep = lengths > 0
    starts = (np.cumsum(lengths) - lengths)[keep]
    values = sims.float().numpy()
    out.fill_(-torch.inf)
    if len(starts):
        out[:, torch.from_numpy(np.flatnonzero(keep))] = torch.from_numpy(
            np.maximum.reduceat(values, starts, axis=1))


_pool: Optional[ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _single_threaded_worker() -> bool:
    """In a worker thread: torch ops run on this thread alone (its own OpenMP setting; others keep theirs)."""
    torch.get_num_threads()   # torch's lazy per-thread set-up first, or it would reset what follows
    try:
        ctypes.CDLL('libgomp.so.1').omp_set_num_threads(1)
    except (OSError, AttributeError):
        return False
    return torch.get_num_threads() == 1   # the runtime torch uses, not another copy of libgomp


def _workers() -> Optional[ThreadPoolExecutor]:
    """One worker per torch thread, created once; None where a worker cannot be made single-threaded."""
    global _pool
    n = torch.get_num_threads()
    if n <= 1 or os.environ.get('LAZYLLM_COLPALI_TILE_WORKERS', '1') == '0':   # 0: torch's intra-op threads
        return None
    with _pool_lock:
        if _pool is None or _pool._max_workers != n:
            pool = ThreadPoolExecutor(n, thread_name_prefix='maxsim-tiles', initializer=_single_threaded_worker)
            usable = all(pool.submit(lambda: torch.get_num_threads() == 1).result() for _ in range(n))
            if not usable:
                pool.shutdown()
                LOG.debug('MaxSim tiles: cannot make worker threads single-threaded; using intra-op threads')
                return None
            if _pool is not None:   # torch's thread count changed: the old workers finish and exit
                _pool.shutdown(wait=False)
            _pool = pool
        return _pool


def _split(tiles: List[Tuple[int, int]], lengths: np.ndarray, parts: int) -> List[List[Tuple[int, int]]]:
    """Contiguous runs of tiles with about the same number of tokens each."""
    ends = np.cumsum([int(lengths[a:b].sum()) for a, b in tiles])
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, parts) / parts, side='right')
    return [[tiles[i] for i in run] for run in np.split(np.arange(len(tiles)), cuts) if len(run)]


def quantize_queries(q: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-token int8 of query tokens ``(n, dim)``: ``q ~ codes * scales``."""
    scales = (q.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
    return torch.round(q / scales).to(torch.int8), scales.squeeze(1)


def _run(score: Callable[[List[Tuple[int, int]]], None], tiles: List[Tuple[int, int]], lengths: np.ndarray) -> None:
    pool = _workers() if len(tiles) > 1 else None
    if pool is None:
        score(tiles)
        return
    for future in [pool.submit(score, run) for run in _split(tiles, lengths, pool._max_workers)]:
        future.result()


def maxsim_tiles(queries: Sequence[torch.Tensor], tokens, offsets: torch.Tensor,
                 pages: Optional[Sequence[int]] = None, tile_tokens: int = TILE_TOKENS) -> torch.Tensor:
    """MaxSim ``(n_queries, len(pages))`` in float32 over bf16 ``tokens`` or ``Int8Tokens`` laid out by
    ``offsets``; ``pages`` picks page indices in that order (default: all). An empty page scores -inf."""
    int8 = _is_int8(tokens)
    matrix = tokens.codes if int8 else tokens
    offsets_np = offsets.numpy().astype(np.int64, copy=False)
    all_lengths = np.diff(offsets_np)
    page_array = None if pages is None else np.asarray(pages, dtype=np.int64)
    n_out = len(all_lengths) if page_array is None else len(page_array)
    if not queries or n_out == 0:
        return torch.zeros(len(queries), n_out)
    q_all = torch.cat([q.float() for q in queries])
    if q_all.shape[1] != matrix.shape[1]:
        raise ValueError(f'query dim {q_all.shape[1]} does not match the stored dim {matrix.shape[1]}')
    if int8:
        q_op, q_scales = quantize_queries(q_all)
        scales = tokens.scales.reshape(-1)
    else:
        q_op = q_all.to(torch.bfloat16)
    best = torch.empty(len(q_all), n_out, dtype=torch.float32)
    lengths = all_lengths if page_array is None else all_lengths[page_array]

    def score(tiles: List[Tuple[int, int]]) -> None:
        scaled = torch.empty(len(q_all), tile_tokens, dtype=torch.float32) if int8 else None
        for a, b in tiles:
            tile_lengths = lengths[a:b]
            if page_array is None or (np.diff(page_array[a:b]) == 1).all():   # consecutive pages: a view
                first = a if page_array is None else int(page_array[a])
                rows = slice(int(offsets_np[first]), int(offsets_np[first]) + int(tile_lengths.sum()))
            else:                                                             # candidates: gather their rows
                rows = _rows(offsets_np[page_array[a:b]], tile_lengths)
            block = matrix[rows]
            if int8:
                products = torch._int_mm(q_op, block.T)                       # exact int32 dot products
                if products.shape[1] > scaled.shape[1]:                      # one page longer than a tile
                    scaled = torch.empty(len(q_all), products.shape[1], dtype=torch.float32)
                sims = torch.mul(products, scales[rows].float(), out=scaled[:, :products.shape[1]])
            else:
                sims = torch.mm(q_op, block.T)
            _segment_max(sims, tile_lengths, best[:, a:b])

    _run(score, _tiles(lengths, tile_tokens), lengths)
    if int8:
        best *= q_scales.unsqueeze(1)
    return torch.stack([rows_.sum(dim=0) for rows_ in best.split([len(q) for q in queries])])
