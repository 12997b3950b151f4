"""The hand-written SIMD MaxSim kernel (retrieve/maxsim_simd.c via kernel_simd.py) against the reference, its
build (compiled on first use into a per-user cache) and its fallback where it cannot be built.

Tolerances, from what each variant rounds (pages and queries L2-normalised like ColPali's, so a score is at
most the number of query tokens; a non-normalised query is scaled into the bound):
- fp32 FMA (fp16 / fp32 tokens): the same products as the float32 reference in another summation order:
  rtol 1e-5, atol 1e-4.
- bf16 dot products: the products of bf16 values are exact in float32, so against the float32 reference on
  the bf16-rounded query and pages only the summation order differs (rtol 1e-5, atol 1e-4); against the
  unrounded query each token's max moves by at most |q_i - bf16(q_i)| <= 2**-8 |q_i| (unit pages), so a
  score is within sum_i 2**-8 |q_i| + 1e-4 of the float32 score on the stored bf16 pages.
- int8 dot products: exact int32 products, so the score equals the float32 reference on the decoded query
  (per-token int8 codes x scale) and decoded pages up to float32 rounding (rtol 1e-5, atol 1e-4).
Each variant runs where this CPU has its instructions and skips elsewhere; the numba kernel and the
matrix-unit paths (test_maxsim.py, test_maxsim_units.py) cover the CPUs without them.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lazyllm_colpali.retrieve import kernel, kernel_simd
from lazyllm_colpali.retrieve.compression import Int8Tokens
from lazyllm_colpali.retrieve.kernel_units import quantize_queries
from lazyllm_colpali.retrieve.maxsim import maxsim_packed, maxsim_reference
from lazyllm_colpali.store.vector_file import PackedMultiVectors

REPO = Path(__file__).resolve().parents[1]
VARIANTS = sorted(kernel_simd.VARIANT_NAMES)
# (page lengths, dim): equal lengths, variable with empty and 1-token pages, odd dims (staged with padding).
LAYOUTS = [([32], 128), ([64, 33, 0, 5, 100, 1, 2, 25], 128), ([7, 0, 30], 7), ([40, 3], 33), ([9, 50], 130)]


def _needs(variant):
    if variant not in kernel_simd.variants():
        pytest.skip(f'this CPU (or a missing compiler) does not run {kernel_simd.VARIANT_NAMES[variant]}')


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)


def _packed(n, lengths, dim, seed=0):
    torch.manual_seed(seed)
    pages = [_unit(lengths[i % len(lengths)], dim) for i in range(n)]
    return PackedMultiVectors.from_list([str(i) for i in range(n)], pages)


def _queries(dim):
    return [_unit(20, dim), _unit(1, dim), 0.3 * torch.randn(12, dim)]


def _stored(tokens, variant):
    """The layout the variant reads, and its float32 decoding (what the reference sees)."""
    if variant == kernel_simd.INT8:
        codes = Int8Tokens.encode(tokens)
        return codes, codes[:]
    stored = tokens.bfloat16() if variant == kernel_simd.BF16 else tokens.half()
    return stored, stored.float()


def _query_as_scored(q, variant):
    if variant == kernel_simd.INT8:
        codes, scales = quantize_queries(q.float())
        return codes.float() * scales.unsqueeze(1)
    return q.bfloat16().float() if variant == kernel_simd.BF16 else q


def _reference(queries, decoded, offsets, pages=None):
    split = [decoded[int(a):int(b)] for a, b in zip(offsets[:-1], offsets[1:])]
    chosen = split if pages is None else [split[p] for p in pages]
    nonempty = [i for i, p in enumerate(chosen) if len(p)]
    out = torch.full((len(queries), len(chosen)), -torch.inf)
    out[:, nonempty] = maxsim_reference(queries, [chosen[i] for i in nonempty])
    return out


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('lengths,dim', LAYOUTS)
def test_each_variant_matches_the_float32_reference_of_what_it_scores(variant, lengths, dim):
    _needs(variant)
    packed = _packed(23, lengths, dim)
    stored, decoded = _stored(packed.tokens, variant)
    queries = _queries(dim)
    got = kernel_simd.maxsim_simd(queries, stored, packed.offsets, variant=variant)
    expected = _reference([_query_as_scored(q, variant) for q in queries], decoded, packed.offsets)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert torch.isinf(got[:, packed.lengths == 0]).all() and torch.isfinite(got[:, packed.lengths > 0]).all()


@pytest.mark.parametrize('lengths,dim', LAYOUTS[:3])
def test_bf16_is_within_the_query_rounding_of_the_unrounded_query(lengths, dim):
    _needs(kernel_simd.BF16)
    packed = _packed(23, lengths, dim, seed=1)
    stored = packed.tokens.bfloat16()
    queries = _queries(dim)
    got = kernel_simd.maxsim_simd(queries, stored, packed.offsets, variant=kernel_simd.BF16)
    expected = _reference(queries, stored.float(), packed.offsets)
    for qi, q in enumerate(queries):
        bound = float(q.norm(dim=1).sum()) * 2 ** -8 + 1e-4
        finite = packed.lengths > 0
        assert (got[qi, finite] - expected[qi, finite]).abs().max() <= bound


@pytest.mark.parametrize('variant', VARIANTS)
def test_picked_pages_in_any_order_and_empty_inputs(variant):
    _needs(variant)
    packed = _packed(40, [17, 3, 0, 64], 128, seed=2)
    stored, decoded = _stored(packed.tokens, variant)
    queries = _queries(128)
    pick = [39, 0, 5, 5, 12, 2]
    got = kernel_simd.maxsim_simd(queries, stored, packed.offsets, pages=pick, variant=variant)
    expected = _reference([_query_as_scored(q, variant) for q in queries], decoded, packed.offsets, pick)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert kernel_simd.maxsim_simd(queries, stored, packed.offsets, pages=[], variant=variant).shape == (3, 0)
    assert kernel_simd.maxsim_simd([], stored, packed.offsets, variant=variant).shape == (0, 40)
    no_tokens = torch.zeros(0, 128)
    mixed = kernel_simd.maxsim_simd([no_tokens, queries[0]], stored, packed.offsets, variant=variant)
    assert torch.equal(mixed[0], torch.zeros(40)) and torch.equal(mixed[1], kernel_simd.maxsim_simd(
        queries[:1], stored, packed.offsets, variant=variant)[0])
    alone = kernel_simd.maxsim_simd([no_tokens], stored, packed.offsets, variant=variant)
    assert torch.equal(alone, torch.zeros(1, 40))
    with pytest.raises(IndexError, match='out of range'):
        kernel_simd.maxsim_simd(queries, stored, packed.offsets, pages=[40], variant=variant)


@pytest.mark.parametrize('variant', VARIANTS)
def test_one_thread_and_many_agree_and_long_query_batches_split(variant):
    _needs(variant)
    packed = _packed(57, [30, 31, 1], 64, seed=3)
    stored, _ = _stored(packed.tokens, variant)
    queries = [_unit(40, 64) for _ in range(14)]   # 560 query tokens: more than the kernel holds at once
    one = kernel_simd.maxsim_simd(queries, stored, packed.offsets, variant=variant, threads=1)
    many = kernel_simd.maxsim_simd(queries, stored, packed.offsets, variant=variant, threads=3)
    assert torch.equal(one, many)   # each page is scored whole by one thread: same bits
    alone = kernel_simd.maxsim_simd(queries[3:4], stored, packed.offsets, variant=variant)
    torch.testing.assert_close(one[3:4], alone, rtol=1e-6, atol=1e-6)


def test_dispatch_sends_int8_and_bf16_here_fp16_to_numba_and_the_switch_turns_it_off(monkeypatch):
    packed = _packed(11, [20, 5], 128, seed=4)
    queries = _queries(128)
    for tokens, variant in ((packed.tokens.bfloat16(), kernel_simd.BF16),
                            (Int8Tokens.encode(packed.tokens), kernel_simd.INT8)):
        if variant not in kernel_simd.variants():
            continue
        assert kernel_simd.available(tokens)
        via_dispatch = maxsim_packed(queries, PackedMultiVectors(packed.page_ids, tokens, packed.offsets))
        assert torch.equal(via_dispatch, kernel_simd.maxsim_simd(queries, tokens, packed.offsets, variant=variant))
    fp16 = packed.tokens.half()
    if kernel.available():   # the fp32 variants do not beat numba's kernel per thread: it keeps fp16
        assert not kernel_simd.available(fp16)
        assert torch.equal(maxsim_packed(queries, PackedMultiVectors(packed.page_ids, fp16, packed.offsets)),
                           kernel.maxsim_fused(queries, fp16, packed.offsets))
    monkeypatch.setattr(kernel, 'available', lambda: False)   # without numba: the fp32 variant, if built
    if kernel_simd.fp32_variant() is not None:
        assert kernel_simd.available(fp16) and kernel_simd.handles('float16')
        assert torch.equal(maxsim_packed(queries, PackedMultiVectors(packed.page_ids, fp16, packed.offsets)),
                           kernel_simd.maxsim_simd(queries, fp16, packed.offsets, variant=kernel_simd.fp32_variant()))
    monkeypatch.setenv('LAZYLLM_COLPALI_KERNEL', 'numba')
    assert not any(kernel_simd.handles(d) for d in ('int8', 'bfloat16', 'float16', 'float32'))
    torch.testing.assert_close(maxsim_packed(queries, PackedMultiVectors(packed.page_ids, packed.tokens.bfloat16(),
                                                                         packed.offsets)),
                               maxsim_reference(queries, [p.bfloat16().float() for p in packed.unpack()]),
                               rtol=1e-5, atol=1e-4)


def _fresh_process(code, **env):
    """Run ``code`` in a new interpreter (the kernel is loaded once per process) with ``env`` added."""
    full = {**os.environ, **env}
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_build_is_cached_per_user_and_reused(tmp_path):
    if not kernel_simd.variants():
        pytest.skip('no C compiler or CPU support here')
    code = ('from lazyllm_colpali.retrieve import kernel_simd as k, kernel_simd\n'
            'print(sorted(k.variants()), k.library()._name)')
    first = _fresh_process(code, LAZYLLM_COLPALI_CACHE_DIR=str(tmp_path))
    built = list(tmp_path.glob('maxsim_simd-*.so'))
    assert len(built) == 1 and str(built[0]) in first
    stamp = built[0].stat().st_mtime_ns
    assert _fresh_process(code, LAZYLLM_COLPALI_CACHE_DIR=str(tmp_path)) == first
    assert built[0].stat().st_mtime_ns == stamp   # loaded, not rebuilt
    assert list(tmp_path.iterdir()) == built      # no temporary files left behind


def test_without_a_working_compiler_scores_come_from_the_other_paths(tmp_path):
    code = '''
import torch
from lazyllm_colpali.retrieve import kernel, kernel_simd
from lazyllm_colpali.retrieve.maxsim import maxsim_packed, maxsim_reference
from lazyllm_colpali.store.vector_file import PackedMultiVectors
torch.manual_seed(0)
pages = [torch.randn(n, 128).half() for n in (5, 17, 1)]
packed = PackedMultiVectors.from_list(['a', 'b', 'c'], pages)
q = [torch.randn(4, 128)]
assert not kernel_simd.available(packed.tokens) and kernel_simd.variants() == frozenset()
print(kernel_simd.unavailable_reason())
torch.testing.assert_close(maxsim_packed(q, packed), maxsim_reference(q, [p.float() for p in pages]),
                           rtol=1e-5, atol=1e-4)
'''
    out = _fresh_process(code, CC='/bin/false', LAZYLLM_COLPALI_CACHE_DIR=str(tmp_path))
    assert '/bin/false' in out and 'exited with' in out
    assert not list(tmp_path.glob('*.so')) and not list(tmp_path.glob('*.tmp*'))   # nothing half-built kept
