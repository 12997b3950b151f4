"""Fused exact MaxSim in hand-written SIMD C (``maxsim_simd.c``): one pass over the stored tokens.

Why it exists: the oneDNN GEMMs of :mod:`.kernel_units` pack their page-token operand before computing, so
each token is read, written and read again, and the numba kernel (:mod:`.kernel`) widens every token to
float32 and dots it with plain FMAs. This kernel reads each page's tokens once, in the stored format, and
dots them with the CPU's dot-product instructions while the query stays in L1 and the running maxima in
registers (``docs/maxsim-cpu.md`` has the measurements):

- int8 codes (:class:`~.compression.Int8Tokens`): AVX-512 VNNI ``vpdpbusd``, exact int32 dot products with
  the per-token int8 query (as in :mod:`.kernel_units`); equal to the float32 score of the decoded query
  and pages up to float32 rounding.
- bf16 tokens: AVX-512 BF16 ``vdpbf16ps`` with the query rounded to bf16, float32 accumulation; the products
  are exact, so a score differs from the float32 score on the same tokens only by the query's rounding and
  the summation order.
- fp16 / fp32 tokens: float32 FMAs on tokens widened to float32 (AVX-512, else AVX2 + FMA + F16C): the same
  arithmetic as the numba kernel, exact up to summation order, but no faster than it per thread on the Zen 4
  dev machine (AVX2 tile) or slower (AVX-512 tile, whose accumulators GCC spills), so :func:`variant_for`
  gives fp16 / fp32 tokens to numba and this variant only serves where numba is missing.

Build: the C file is compiled with the system C compiler (``$CC``, else ``cc``) at the first use in a
process that finds no build of it, into a per-user cache folder (``$LAZYLLM_COLPALI_CACHE_DIR``, else
``$XDG_CACHE_HOME/lazyllm_colpali`` or ``~/.cache/lazyllm_colpali``) under a name keyed by the source's hash
and the compiler's identity, and loaded through ctypes (no Python headers). No compiler, a failed build or a
CPU without AVX2 / AVX-512 leaves :func:`available` False and callers keep the numba / matrix-unit paths;
the CLI's ``-v`` (an INFO line) says why a build failed. ``LAZYLLM_COLPALI_KERNEL=simd`` asks for this kernel
only where it can run; any other value but ``auto`` (``numba``, ``units``, ``torch``) keeps it off.

Threads: one ctypes call per torch thread (ctypes releases the GIL), sharing an atomic page counter, so a
thread descheduled on a busy machine leaves its pages to the others instead of holding them at a barrier.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..logging import LOG
from .compression import Int8Tokens

SOURCE = Path(__file__).with_name('maxsim_simd.c')
FLAGS = ['-O3', '-shared', '-fPIC', '-std=gnu11', '-fno-strict-aliasing']
# The C side's variants (enum in maxsim_simd.c) and which token layouts each reads.
FP32_AVX2, FP32_AVX512, BF16, INT8 = 0, 1, 2, 3
VARIANT_NAMES = {FP32_AVX2: 'fp32 FMA (AVX2)', FP32_AVX512: 'fp32 FMA (AVX-512)',
                 BF16: 'bf16 dot products (AVX-512 BF16)', INT8: 'int8 dot products (AVX-512 VNNI)'}
DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
INT8_CODE = 3
GROUP = 8        # query tokens per register
MAX_QUERY_TOKENS = 64 * GROUP
MAX_DIM = 1024


def _mode() -> str:
    return os.environ.get('LAZYLLM_COLPALI_KERNEL', 'auto')


def cache_dir() -> Path:
    """Where the compiled kernel is kept (per user)."""
    explicit = os.environ.get('LAZYLLM_COLPALI_CACHE_DIR')
    if explicit:
        return Path(explicit)
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'lazyllm_colpali'


_reason = ''


def unavailable_reason() -> str:
    """Why the kernel could not be built or loaded in this process ('' when it was, or not yet tried)."""
    return _reason


def _compiler() -> list:
    return shlex.split(os.environ.get('CC') or 'cc')


def _build(library: Path) -> None:
    """Compile the C source to ``library`` atomically (a temporary file renamed into place, so concurrent
    processes never load a half-written file)."""
    library.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=library.parent)
    os.close(fd)
    try:
        done = subprocess.run(_compiler() + FLAGS + ['-o', tmp, str(SOURCE), '-lm'], capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise OSError(f'{shlex.join(_compiler())} exited with {done.returncode}: {done.stderr.strip()[-2000:]}')
        os.replace(tmp, library)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=None)
def _load(cc: str) -> Optional[ctypes.CDLL]:
    """The compiled kernel for compiler ``cc``, built on first use; None (logged at debug) where it cannot be."""
    global _reason
    try:
        source = SOURCE.read_bytes()
        version = subprocess.run(shlex.split(cc) + ['--version'], capture_output=True, text=True, timeout=30)
        if version.returncode != 0:
            raise OSError(f'{cc} --version exited with {version.returncode}')
        key = hashlib.sha256(source + version.stdout.encode() + ' '.join(FLAGS).encode()).hexdigest()[:16]
        library = cache_dir() / f'maxsim_simd-{key}.so'
        if not library.exists():
            _build(library)
        lib = ctypes.CDLL(str(library))
    except (OSError, subprocess.SubprocessError) as exc:
        _reason = str(exc)
        # INFO: shown with the CLI's -v (LazyLLM's default level), hidden without it (WARNING)
        LOG.info(f'SIMD MaxSim kernel unavailable (using the numba / matrix-unit paths): {exc}')
        return None
    lib.lcm_variants.restype = ctypes.c_int
    lib.lcm_maxsim.restype = ctypes.c_int
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.lcm_maxsim.argtypes = [i32, i32, p, p, p, p, i64, p, i32, p, p, p, i32, i32, p, p, i64]
    return lib


def library() -> Optional[ctypes.CDLL]:
    """The loaded kernel, or None where there is no compiler, the build failed or it is switched off."""
    if _mode() not in ('auto', 'simd'):
        return None
    return _load(os.environ.get('CC') or 'cc')


def variants() -> frozenset:
    """The variants this CPU runs (empty where the kernel is not built)."""
    lib = library()
    if lib is None:
        return frozenset()
    bits = lib.lcm_variants()
    return frozenset(v for v in VARIANT_NAMES if bits >> v & 1)


def _is_int8(tokens) -> bool:
    return hasattr(tokens, 'codes') and hasattr(tokens, 'scales')


def fp32_variant() -> Optional[int]:
    """The fp32 FMA variant to use here, or None: the AVX2 one wherever it runs (GCC 12 spills the AVX-512
    tile's 24 accumulators: measured 1.5-1.8x slower than the AVX2 tile, benchmarks/probe_simd.py)."""
    have = variants()
    return FP32_AVX2 if FP32_AVX2 in have else FP32_AVX512 if FP32_AVX512 in have else None


def variant_for(tokens) -> Optional[int]:
    """The variant that scores ``tokens`` by default here, or None for another path: int8 codes -> VNNI;
    bf16 -> BF16 dot products. fp16 / fp32 tokens (and bf16 without AVX-512 BF16) stay with the numba kernel,
    which this kernel's fp32 FMA variants do not beat (docs/maxsim-cpu.md); the fp32 variant takes them only
    where numba is missing (instead of the chunked-matmul path)."""
    have = variants()
    if _is_int8(tokens):
        return INT8 if INT8 in have and tokens.codes.device.type == 'cpu' else None
    if not isinstance(tokens, torch.Tensor) or tokens.device.type != 'cpu' or tokens.dtype not in DTYPE_CODES:
        return None
    if tokens.dtype == torch.bfloat16 and BF16 in have:
        return BF16
    from . import kernel

    return None if kernel.available() else fp32_variant()


def handles(dtype: str) -> bool:
    """Whether tokens of ``dtype`` (``'int8'``, ``'bfloat16'``, ``'float16'``, ``'float32'``) would be scored by
    this kernel here."""
    probe = {'int8': Int8Tokens(torch.zeros(1, 16, dtype=torch.int8), torch.ones(1, 1, dtype=torch.float16)),
             'bfloat16': torch.zeros(1, 16, dtype=torch.bfloat16), 'float16': torch.zeros(1, 16, dtype=torch.float16),
             'float32': torch.zeros(1, 16)}.get(dtype)
    return probe is not None and available(probe)


def available(tokens) -> bool:
    """Whether ``tokens`` (fp16 / bf16 / fp32 tensor or ``Int8Tokens``) are scored by this kernel here."""
    if _is_int8(tokens):
        dim = tokens.codes.shape[1]
    elif isinstance(tokens, torch.Tensor) and tokens.ndim == 2:
        dim = tokens.shape[1]
    else:
        return False
    return dim <= MAX_DIM and variant_for(tokens) is not None and self_check()


def _padded_dim(dim: int) -> int:
    return (dim + 15) // 16 * 16


def pack_queries(q_all: torch.Tensor, variant: int) -> tuple:
    """The query tokens ``(n, dim)`` as the kernel reads them: zero-padded to groups of 8 tokens and to a
    multiple of 16 coordinates, transposed so that one load gives 8 tokens' values of one coordinate (fp32),
    coordinate pair (bf16) or quad (int8 codes); each token's weight (its int8 scale, else 1); and for int8
    each token's -128 x (sum of its codes), which takes back the +128 the kernel adds to the page codes."""
    n, dim = q_all.shape
    rows = -(-n // GROUP) * GROUP
    padded = torch.zeros(rows, _padded_dim(dim))
    padded[:n, :dim] = q_all
    weights = torch.ones(n)
    offset = torch.zeros(rows, dtype=torch.int32)
    if variant == INT8:
        from .kernel_units import quantize_queries

        codes, weights = quantize_queries(padded[:n])
        signed = torch.zeros(padded.shape, dtype=torch.int8)
        signed[:n] = codes
        offset[:n] = -128 * codes.to(torch.int32).sum(dim=1)
        packed = signed.view(torch.int32)
    elif variant == BF16:
        packed = padded.to(torch.bfloat16).view(torch.int32)
    else:
        packed = padded
    return packed.T.contiguous(), weights.float().contiguous(), offset


_pool: Optional[ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _threads(n: int) -> Optional[ThreadPoolExecutor]:
    global _pool
    if n <= 1:
        return None
    with _pool_lock:
        if _pool is None or _pool._max_workers != n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(n, thread_name_prefix='maxsim-simd')
        return _pool


def maxsim_simd(queries: Sequence[torch.Tensor], tokens, offsets: torch.Tensor,
                pages: Optional[Sequence[int]] = None, variant: Optional[int] = None,
                threads: Optional[int] = None) -> torch.Tensor:
    """Exact MaxSim ``(n_queries, len(pages))`` in float32 over ``tokens`` (a ``(T, dim)`` fp16 / bf16 / fp32
    tensor or ``Int8Tokens``) laid out by ``offsets``; ``pages`` picks page indices (default: all);
    ``variant`` forces one of :func:`variants` (tests); an empty page scores -inf."""
    lib = library()
    variant = variant_for(tokens) if variant is None else variant
    if lib is None or variant is None:
        raise RuntimeError('the SIMD MaxSim kernel is not available here (see kernel_simd.available)')
    int8 = _is_int8(tokens)
    matrix = (tokens.codes if int8 else tokens).contiguous()
    scales = tokens.scales.to(torch.float16).contiguous() if int8 else None
    offsets_np = np.ascontiguousarray(offsets.numpy(), dtype=np.int64)
    n_all = len(offsets_np) - 1
    page_array = (np.arange(n_all, dtype=np.int64) if pages is None
                  else np.ascontiguousarray(np.asarray(pages, dtype=np.int64).reshape(-1)))
    if len(queries) == 0 or len(page_array) == 0:
        return torch.zeros(len(queries), len(page_array))
    if page_array.min() < 0 or page_array.max() >= n_all:
        raise IndexError(f'page index out of range for {n_all} pages')
    if offsets_np[0] != 0 or offsets_np[-1] != len(matrix) or (np.diff(offsets_np) < 0).any():
        raise ValueError(f'offsets do not describe the {len(matrix)} token rows')
    q_all = torch.cat([q.float() for q in queries])
    if q_all.shape[1] != matrix.shape[1]:
        raise ValueError(f'query dim {q_all.shape[1]} does not match the stored dim {matrix.shape[1]}')
    if len(q_all) == 0:   # queries without tokens match nothing: 0, as in the numba kernel
        return torch.zeros(len(queries), len(page_array))
    if len(q_all) > MAX_QUERY_TOKENS:   # the kernel keeps <= 512 query tokens' maxima: split the batch
        half = len(queries) // 2
        if half == 0:
            raise ValueError(f'a query of {len(q_all)} tokens exceeds the kernel\'s {MAX_QUERY_TOKENS}')
        return torch.cat([maxsim_simd(queries[:half], tokens, offsets, pages, variant, threads),
                          maxsim_simd(queries[half:], tokens, offsets, pages, variant, threads)])
    q_packed, weights, q_offset = pack_queries(q_all, variant)
    groups = q_packed.shape[1] // GROUP
    q_starts = np.zeros(len(queries) + 1, dtype=np.int64)
    q_starts[1:] = np.cumsum([len(q) for q in queries])
    out = np.empty((len(queries), len(page_array)), dtype=np.float32)
    counter = np.zeros(1, dtype=np.int64)
    n_threads = max(1, min(threads or torch.get_num_threads(), len(page_array)))
    chunk = int(max(1, min(32, len(page_array) // (n_threads * 8))))
    dtype = INT8_CODE if int8 else DTYPE_CODES[matrix.dtype]

    def call() -> int:
        return lib.lcm_maxsim(variant, dtype, matrix.data_ptr(), scales.data_ptr() if int8 else None,
                              offsets_np.ctypes.data, page_array.ctypes.data, len(page_array),
                              q_packed.data_ptr(), groups, weights.data_ptr(), q_offset.data_ptr(),
                              q_starts.ctypes.data,
                              len(queries), matrix.shape[1], out.ctypes.data, counter.ctypes.data, chunk)

    pool = _threads(n_threads)
    codes = [call()] if pool is None else [f.result() for f in [pool.submit(call) for _ in range(n_threads)]]
    if any(code != 0 for code in codes):
        raise RuntimeError(f'the SIMD MaxSim kernel refused its arguments (variant {variant}, dim {matrix.shape[1]})')
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=1)
def self_check() -> bool:
    """Each variant this CPU runs once on a small case against float32 (a compiler or CPU quirk then falls
    back to the other paths instead of giving wrong scores)."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([0, 5, 33, 24, 1])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    pages = torch.randn(int(lengths.sum()), 40, generator=g)
    queries = [torch.randn(3, 40, generator=g), torch.randn(11, 40, generator=g)]
    good = True
    for variant in variants():
        stored = Int8Tokens.encode(pages) if variant == INT8 else \
            pages.bfloat16() if variant == BF16 else pages.half()
        decoded = stored[:] if variant == INT8 else stored.float()
        qs = queries if variant != BF16 else [q.bfloat16().float() for q in queries]
        if variant == INT8:
            from .kernel_units import quantize_queries

            qs = [(lambda c, s: c.float() * s.unsqueeze(1))(*quantize_queries(q)) for q in queries]
        expected = torch.stack([torch.stack([
            (q @ decoded[int(a):int(b)].T).max(dim=1).values.sum() if b > a else torch.tensor(-torch.inf)
            for a, b in zip(offsets[:-1], offsets[1:])]) for q in qs])
        got = maxsim_simd(queries, stored, offsets, variant=variant, threads=2)
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-3):
            LOG.warning(f'the SIMD MaxSim kernel ({VARIANT_NAMES[variant]}) failed its self-check; '
                        f'MaxSim uses the numba / matrix-unit paths')
            good = False
    return good
