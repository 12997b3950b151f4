"""MaxSim scoring: a plain reference and a fast path over packed multi-vectors.

``score(q, p) = sum_i max_j <q_i, p_j>`` over a query's tokens ``i`` and a page's tokens ``j``.

- :func:`maxsim_reference` is the obviously-correct definition (one page at a time, float32). Every fast
  path is tested against it, and it matches colpali-engine's ``processor.score_multi_vector``.
- :func:`maxsim_packed` is the fast path. On CPU, bf16 tokens and int8 codes go to the matrix units where
  the CPU has them (:mod:`.kernel_units`: torch/oneDNN bf16 and int8 GEMMs on cache-sized tiles, per-page
  max fused into the tile loop; AVX-512 BF16 / VNNI / AMX, see :mod:`.cpu_features`); everything else (and
  every CPU without the units) runs the fused kernel of :mod:`.kernel` (numba), which reads fp16 / bf16 /
  fp32 / int8 tokens as stored and never builds a similarity matrix. On CUDA, tokens already
  on the GPU go through the Triton kernel of :mod:`.kernel_gpu` (measured at the memory-bandwidth bound on
  an H200). Elsewhere (host tensors streamed to a GPU, 1-bit codes, no numba/triton) it uses
  :func:`maxsim_matmul`.
- :func:`maxsim_matmul` streams pages in chunks of the packed ``(total_tokens, dim)`` tensor: one matmul
  per chunk, a reshape-max when a chunk's pages share a length (ColPali) or a segment max otherwise
  (ColQwen's variable lengths), so no ``(n_pages, max_len)`` padding or full similarity tensor is built.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from ..store.vector_file import PackedMultiVectors
from . import kernel, kernel_units


def maxsim_reference(queries: Sequence[torch.Tensor], pages: Sequence[torch.Tensor]) -> torch.Tensor:
    """Scores ``(n_queries, n_pages)`` in float32, one query-page pair at a time.

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    >>> maxsim_reference([q], [p])   # token 1 best matches row 2 (1.0), token 2 matches row 1 (0.5)
    tensor([[1.5000]])
    """
    scores = torch.empty(len(queries), len(pages), dtype=torch.float32)
    for qi, q in enumerate(queries):
        for pi, p in enumerate(pages):
            scores[qi, pi] = (q.float() @ p.float().T).max(dim=1).values.sum()
    return scores


def _chunks(offsets: torch.Tensor, max_tokens: int) -> List[tuple]:
    """Page ranges [a, b) whose tokens fit in ``max_tokens`` (at least one page each)."""
    bounds, start, n = [], 0, len(offsets) - 1
    while start < n:
        end = int(torch.searchsorted(offsets, offsets[start] + max_tokens, right=True)) - 1
        end = min(max(end, start + 1), n)
        bounds.append((start, end))
        start = end
    return bounds


def _fused_reads(tokens) -> bool:
    if isinstance(tokens, torch.Tensor):
        return tokens.dtype in (torch.float16, torch.bfloat16, torch.float32) and tokens.device.type == 'cpu'
    return hasattr(tokens, 'codes') and hasattr(tokens, 'scales')   # Int8Tokens


def maxsim_packed(queries: Sequence[torch.Tensor], packed: PackedMultiVectors, *,
                  chunk_tokens: int = 1 << 16, device: str = 'cpu',
                  pages: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Exact scores ``(n_queries, n_pages)`` for all pages of ``packed`` (float32 accumulation), or for the
    page indices ``pages`` in that order (the rerank of candidates, without copying their tokens).

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> packed = PackedMultiVectors.from_list(['a', 'b'], [torch.tensor([[0.5, 0.5], [1.0, 0.0]]),
    ...                                                    torch.tensor([[0.0, 2.0]])])
    >>> maxsim_packed([q], packed)
    tensor([[1.5000, 2.0000]])
    """
    if device == 'cpu' and kernel_units.available(packed.tokens):   # bf16 / int8 on the CPU's matrix units
        return kernel_units.maxsim_tiles(queries, packed.tokens, packed.offsets, pages=pages)
    if device == 'cpu' and kernel.available() and _fused_reads(packed.tokens):
        return kernel.maxsim_fused(queries, packed.tokens, packed.offsets, pages=pages)
    if device.startswith('cuda') and isinstance(packed.tokens, torch.Tensor) and packed.tokens.is_cuda:
        from . import kernel_gpu

        if kernel_gpu.available(packed.tokens):   # GPU-resident fp16: one fused pass at the bandwidth bound
            return kernel_gpu.maxsim_triton(queries, packed.tokens, packed.offsets, pages=pages)
    if pages is not None:
        packed = packed.subset(list(pages))
    return maxsim_matmul(queries, packed, chunk_tokens=chunk_tokens, device=device)


def maxsim_matmul(queries: Sequence[torch.Tensor], packed: PackedMultiVectors, *,
                  chunk_tokens: int = 1 << 16, device: str = 'cpu') -> torch.Tensor:
    """Exact scores ``(n_queries, n_pages)`` by chunked matmul + max (any codec with row slicing, any device)."""
    n_pages = len(packed)
    if not queries or n_pages == 0:
        return torch.zeros(len(queries), n_pages)
    compute = torch.float32 if device == 'cpu' else torch.float16  # CPU half matmuls are slow; GPU ones are not
    lengths_q = [len(q) for q in queries]
    q_all = torch.cat([q.to(device, compute) for q in queries])          # (sum Lq, d)
    per_token = torch.empty(n_pages, q_all.shape[0], dtype=torch.float32, device=device)
    page_lengths = packed.lengths
    for a, b in _chunks(packed.offsets, chunk_tokens):
        start, end = int(packed.offsets[a]), int(packed.offsets[b])
        # (sum Lq, chunk tokens): with the corpus as the right operand the BLAS kernel streams it once;
        # measured ~25% faster on CPU than tokens @ q.T, and a smaller chunk keeps the sims in cache.
        sims = q_all @ packed.tokens[start:end].to(device, compute).T
        lens = page_lengths[a:b]
        if bool((lens == lens[0]).all()):
            per_token[a:b] = sims.view(-1, b - a, int(lens[0])).amax(dim=2).T.float()
        else:
            per_token[a:b] = torch.segment_reduce(sims.float(), 'max', axis=1,
                                                  lengths=lens.to(device).expand(sims.shape[0], -1)).T
    # Sum each query's own token columns.
    out = torch.stack([cols.sum(dim=1) for cols in per_token.split(lengths_q, dim=1)])
    return out.cpu()


def topk(scores: torch.Tensor, k: int) -> tuple:
    """Top-k per row, ties broken by lower index (stable), as ``(values, indices)``."""
    k = min(k, scores.shape[-1])
    order = torch.sort(scores, dim=-1, descending=True, stable=True)
    return order.values[..., :k], order.indices[..., :k]
