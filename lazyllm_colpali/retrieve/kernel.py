"""Fused exact MaxSim on CPU (numba): one pass over the stored tokens, no similarity matrix.

Each page is read once, four tokens at a time: the tokens are widened to float32 in a small buffer (fp16
through the F16C conversion, bf16 by a shift, int8 codes through an integer convert), dotted with every
query token, and the per-query-token running maxima stay in cache. Pages run in parallel (``prange``). Measured on the
2-core AVX2 dev machine: ~65 GFLOP per CPU-second from fp16 tokens, about 10x the chunked-matmul path
(see benchmarks/bench_maxsim.py and docs/performance.md).

CPUs with bf16 / int8 matrix units score bf16 tokens and int8 codes through :mod:`.kernel_units` instead;
this kernel stays the path for fp16 / fp32 and for CPUs without those units.

The kernels are compiled on first use (~2-4 s) and cached on disk (``cache=True``: next to this file when
that is writable, else numba's user-wide cache, or ``NUMBA_CACHE_DIR``); without numba, or with
``LAZYLLM_COLPALI_KERNEL=torch``, :func:`available` is False and callers use the matmul path.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import numpy as np
import torch

from ..logging import LOG

try:  # numba comes with ranx (a dependency); the matmul path covers its absence
    import numba
    from llvmlite import ir
    from numba import prange, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None

_compile_seconds: Optional[float] = None

if numba is not None:
    @intrinsic
    def _half_to_float(typingctx, bits):
        """fp16 bits (uint16) -> float32: numba has no float16 arrays, LLVM lowers this to vcvtph2ps."""
        def codegen(context, builder, signature, args):
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
        return types.float32(types.uint16), codegen

    @intrinsic
    def _bf16_to_float(typingctx, bits):
        """bf16 bits (int16) -> float32: the bits are the top half of the float32."""
        def codegen(context, builder, signature, args):
            wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
            return builder.bitcast(wide, ir.FloatType())
        return types.float32(types.int16), codegen

    def _widen(x):  # pure-Python stand-in; the overload below is what compiled code calls
        return np.float32(x)

    @numba.extending.overload(_widen, jit_options={'fastmath': True})
    def _widen_impl(x):
        if x == types.uint16:   # fp16 bits
            return lambda x: _half_to_float(x)
        if x == types.int16:    # bf16 bits
            return lambda x: _bf16_to_float(x)
        return lambda x: np.float32(x)

    def _jit(fn):
        """Compile with an on-disk cache when numba finds a writable place for it, else per process."""
        try:
            return numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)(fn)
        except RuntimeError as exc:   # "cannot cache function ...: no locator available"
            LOG.warning(f'numba cannot cache the MaxSim kernel ({exc}); it will compile in every process. '
                        f'Set NUMBA_CACHE_DIR to a writable folder to keep it.')
            return numba.njit(parallel=True, fastmath=True, nogil=True)(fn)

    @_jit
    def _maxsim_kernel(q, tokens, scales, offsets, pages, q_starts, out):
        """out[s, n] = sum over query s's tokens of the max dot with page pages[n]'s tokens (times its scale)."""
        n_pages = pages.shape[0]
        n_q, dim = q.shape
        scaled = scales.shape[0] > 0
        for n in prange(n_pages):
            p = pages[n]
            start, end = offsets[p], offsets[p + 1]
            best = np.full(n_q, -np.inf, dtype=np.float32)
            buf = np.empty((4, dim), dtype=np.float32)
            j = start
            while j < end:
                m = min(4, end - j)
                for r in range(m):
                    for k in range(dim):
                        buf[r, k] = _widen(tokens[j + r, k])
                for r in range(m, 4):   # pad a short last block with a copy of its first token
                    for k in range(dim):
                        buf[r, k] = buf[0, k]
                for i in range(n_q):
                    s0 = np.float32(0.0)
                    s1 = np.float32(0.0)
                    s2 = np.float32(0.0)
                    s3 = np.float32(0.0)
                    for k in range(dim):
                        qk = q[i, k]
                        s0 += qk * buf[0, k]
                        s1 += qk * buf[1, k]
                        s2 += qk * buf[2, k]
                        s3 += qk * buf[3, k]
                    if scaled:
                        s0 *= scales[j]
                        s1 *= scales[j + 1 if m > 1 else j]
                        s2 *= scales[j + 2 if m > 2 else j]
                        s3 *= scales[j + 3 if m > 3 else j]
                    s = max(max(s0, s1), max(s2, s3))
                    if s > best[i]:
                        best[i] = s
                j += 4
            for s_ in range(q_starts.shape[0] - 1):
                total = np.float32(0.0)
                for i in range(q_starts[s_], q_starts[s_ + 1]):
                    total += best[i]
                out[s_, n] = total

def available() -> bool:
    """Whether the fused kernel can run here (numba importable and not switched off)."""
    return numba is not None and os.environ.get('LAZYLLM_COLPALI_KERNEL', 'numba') != 'torch'

def compile_seconds() -> Optional[float]:
    """Seconds the first call in this process spent compiling or loading the kernel from cache."""
    return _compile_seconds

def as_kernel_arrays(tokens, scales: Optional[torch.Tensor] = None) -> tuple:
    """``(tokens, scales)`` as the numpy views the kernel reads, without copying the token matrix:
    fp16 -> uint16 bits, bf16 -> int16 bits, float32 as is, int8 codes with float32 per-token scales (empty
    when none)."""
    if hasattr(tokens, 'codes'):   # compression.Int8Tokens
        return tokens.codes.numpy(), tokens.scales.reshape(-1).float().numpy()
    if tokens.dtype == torch.float16:
        array = tokens.numpy().view(np.uint16)
    elif tokens.dtype == torch.bfloat16:   # numpy has no bf16: its bits as int16 pick the bf16 widening
        array = tokens.view(torch.int16).numpy()
    elif tokens.dtype == torch.float32:
        array = tokens.numpy()
    else:
        raise TypeError(f'the fused MaxSim kernel reads float16, bfloat16, float32 or int8 tokens, got {tokens.dtype}')
    empty = np.empty(0, dtype=np.float32)
    return array, (scales.reshape(-1).float().numpy() if scales is not None else empty)

def maxsim_fused(queries: Sequence[torch.Tensor], tokens, offsets: torch.Tensor,
                 pages: Optional[Sequence[int]] = None, scales: Optional[np.ndarray] = None) -> torch.Tensor:
    """Exact MaxSim ``(n_queries, len(pages))`` in float32 over ``tokens`` (a ``(T, dim)`` float16/bfloat16/
    float32 tensor or an ``Int8Tokens``) laid out by ``offsets``; ``pages`` picks page indices (default: all).
    An empty page scores -inf (it matches nothing), as in the matmul path."""
    global _compile_seconds
    token_array, token_scales = as_kernel_arrays(tokens)
    if scales is not None:
        token_scales = scales
    offsets_np = offsets.numpy().astype(np.int64, copy=False)
    n_all = len(offsets_np) - 1
    page_array = np.arange(n_all, dtype=np.int64) if pages is None else np.asarray(pages, dtype=np.int64)
    if len(queries) == 0 or len(page_array) == 0:
        return torch.zeros(len(queries), len(page_array))
    q_all = torch.cat([q.float() for q in queries]).contiguous().numpy()
    if q_all.shape[1] != token_array.shape[1]:
        raise ValueError(f'query dim {q_all.shape[1]} does not match the stored dim {token_array.shape[1]}')
    q_starts = np.zeros(len(queries) + 1, dtype=np.int64)
    q_starts[1:] = np.cumsum([len(q) for q in queries])
    out = np.empty((len(queries), len(page_array)), dtype=np.float32)
    first = _compile_seconds is None
    started = time.perf_counter()
    _maxsim_kernel(q_all, np.ascontiguousarray(token_array), token_scales, offsets_np, page_array, q_starts, out)
    if first:
        _compile_seconds = time.perf_counter() - started
        LOG.debug('fused MaxSim kernel ready in %.2f s (compile or cache load + first call)', _compile_seconds)
    return torch.from_numpy(out)
