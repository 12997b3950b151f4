"""MaxSim on the CPU's matrix units (retrieve/kernel_units.py) against the reference, and its dispatch.

Tolerances, from what each path rounds:
- bf16: the query is rounded to bf16 and each GEMM output (a similarity) is rounded to bf16, i.e. each query
  token's max m_i is off by at most |m_i| * 2**-8; compared with the float32 reference on the same
  bf16-rounded query and pages, a score is within sum_i |m_i| * 2**-8 (+1e-4 for float32 summation order).
- int8: integer dot products are exact, so the score equals the float32 reference on the decoded query
  (codes x per-token scale) and decoded pages up to float32 rounding (rtol 1e-5, atol 1e-4).
Tests that need the units skip on CPUs without them (the numba kernel is the path there, tested in
test_maxsim.py); the dispatch and fallback tests run everywhere.
"""
import sys
from pathlib import Path

import pytest
import torch

from lazyllm_colpali.retrieve import kernel, kernel_units
from lazyllm_colpali.retrieve.compression import Int8Tokens, compress
from lazyllm_colpali.retrieve.cpu_features import matrix_units
from lazyllm_colpali.retrieve.maxsim import maxsim_packed, maxsim_reference
from lazyllm_colpali.store.vector_file import PackedMultiVectors

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
from synthetic import make_pages, make_queries  # noqa: E402

needs_bf16 = pytest.mark.skipif(not kernel_units.has_units('bfloat16'), reason='no bf16 matrix units on this CPU')
needs_int8 = pytest.mark.skipif(not kernel_units.has_units('int8'), reason='no int8 matrix units on this CPU')
LAYOUTS = [([64], 128), ([64, 33, 5, 100, 1, 2, 3], 128), ([700, 9], 64)]   # equal, variable, > one tile


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)


def _packed(n, lengths, dim, seed=0):
    torch.manual_seed(seed)
    pages = [_unit(lengths[i % len(lengths)], dim) for i in range(n)]
    return pages, PackedMultiVectors.from_list([str(i) for i in range(n)], pages)


def _queries(dim):
    return [_unit(20, dim), _unit(1, dim), 3 * torch.randn(12, dim)]   # non-normalised too


def _bf16(x):
    return x.bfloat16().float()


@needs_bf16
@pytest.mark.parametrize('lengths,dim', LAYOUTS)
def test_bf16_tiles_match_the_reference_within_output_rounding(lengths, dim):
    pages, packed = _packed(23, lengths, dim)
    queries = _queries(dim)
    tokens = packed.tokens.bfloat16()
    got = kernel_units.maxsim_tiles(queries, tokens, packed.offsets, tile_tokens=256)
    rounded_pages = [_bf16(p) for p in pages]
    for qi, q in enumerate(queries):
        q = _bf16(q)
        for pi, p in enumerate(rounded_pages):
            maxima = (q @ p.T).max(dim=1).values
            assert abs(float(got[qi, pi]) - float(maxima.sum())) <= float(maxima.abs().sum()) * 2 ** -8 + 1e-4
    assert torch.equal(maxsim_packed(queries, PackedMultiVectors(packed.page_ids, tokens, packed.offsets)), got)


@needs_int8
@pytest.mark.parametrize('lengths,dim', LAYOUTS)
def test_int8_tiles_equal_the_reference_on_decoded_vectors(lengths, dim):
    pages, packed = _packed(23, lengths, dim)
    queries = _queries(dim)
    codes = Int8Tokens.encode(packed.tokens)
    got = kernel_units.maxsim_tiles(queries, codes, packed.offsets, tile_tokens=256)
    decoded_pages = [codes[int(packed.offsets[i]):int(packed.offsets[i + 1])] for i in range(len(pages))]
    decoded_queries = [c.float() * s.unsqueeze(1) for c, s in map(kernel_units.quantize_queries, queries)]
    assert torch.allclose(got, maxsim_reference(decoded_queries, decoded_pages), rtol=1e-5, atol=1e-4)
    # and near the float32 scores: each coordinate of a query and a page is off by at most half its step
    assert (got - maxsim_reference(queries, pages)).abs().max() < 0.05 * 20
    assert torch.equal(maxsim_packed(queries, PackedMultiVectors(packed.page_ids, codes, packed.offsets)), got)


@needs_int8
@needs_bf16
@pytest.mark.parametrize('codec', ['bfloat16', 'int8'])
def test_units_score_chosen_pages_in_order_and_empty_pages_last(codec):
    pages = [_unit(30, 32), torch.zeros(0, 32), _unit(7, 32), _unit(300, 32), torch.zeros(0, 32)]
    packed = compress(PackedMultiVectors.from_list(list('abcde'), pages), codec)
    queries = [_unit(5, 32), _unit(2, 32)]
    full = kernel_units.maxsim_tiles(queries, packed.tokens, packed.offsets, tile_tokens=40)
    assert torch.isinf(full[:, [1, 4]]).all() and (full[:, [1, 4]] < 0).all()
    assert torch.isfinite(full[:, [0, 2, 3]]).all()
    chosen = [3, 1, 0, 3, 2, 4]   # repeats, gaps, empty pages, a page longer than a tile
    picked = kernel_units.maxsim_tiles(queries, packed.tokens, packed.offsets, pages=chosen, tile_tokens=40)
    assert torch.equal(picked, full[:, chosen])
    assert torch.equal(kernel_units.maxsim_tiles(queries, packed.tokens, packed.offsets, pages=[]),
                       torch.zeros(2, 0))


@needs_bf16
def test_units_reject_a_dimension_mismatch():
    packed = compress(PackedMultiVectors.from_list(['a'], [_unit(3, 16)]), 'bfloat16')
    with pytest.raises(ValueError, match='query dim 32 does not match the stored dim 16'):
        kernel_units.maxsim_tiles([_unit(2, 32)], packed.tokens, packed.offsets)


@pytest.mark.skipif(not kernel.available(), reason='numba is not installed')
@pytest.mark.parametrize('codec', ['bfloat16', 'int8'])
def test_switching_the_units_off_gives_the_numba_kernel_with_the_same_ranking(monkeypatch, codec):
    corpus = make_pages(60, tokens=50, variable=True, seed=5)   # clustered: rankings without near-ties
    packed = compress(corpus.pages, codec)
    queries = make_queries(corpus, 3, seed=6)
    monkeypatch.setenv('LAZYLLM_COLPALI_KERNEL', 'numba')
    assert not kernel_units.available(packed.tokens)
    numba_scores = maxsim_packed(queries, packed)
    assert torch.equal(numba_scores, kernel.maxsim_fused(queries, packed.tokens, packed.offsets))
    monkeypatch.setenv('LAZYLLM_COLPALI_KERNEL', 'auto')
    units_scores = maxsim_packed(queries, packed)
    assert (units_scores - numba_scores).abs().max() < 0.02 * 20
    assert torch.equal(units_scores.topk(3).indices, numba_scores.topk(3).indices)


@pytest.mark.skipif(not kernel.available(), reason='numba is not installed')
def test_numba_kernel_reads_bf16_tokens_exactly():
    pages, packed = _packed(15, [33, 8], 64)
    tokens = packed.tokens.bfloat16()
    queries = _queries(64)
    got = kernel.maxsim_fused(queries, tokens, packed.offsets)
    assert torch.allclose(got, maxsim_reference(queries, [_bf16(p) for p in pages]), rtol=1e-5, atol=1e-4)


def test_tiny_dimensions_stay_on_the_numba_or_matmul_path():
    # torch._int_mm returns wrong products for K=1 (torch 2.13, CPU): small dims never take the units
    packed = compress(PackedMultiVectors.from_list(['a', 'b'], [_unit(3, 4), _unit(5, 4)]), 'int8')
    assert not kernel_units.available(packed.tokens)
    assert not kernel_units.available(torch.zeros(3, 1, dtype=torch.bfloat16))
    assert not kernel_units.available(torch.zeros(3, 128, dtype=torch.float16))   # fp16: the numba kernel


def test_matrix_units_agree_with_the_cpu_flags():
    flags = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').exists() else ''
    if not flags:
        pytest.skip('no /proc/cpuinfo')
    flags = set(next(line for line in flags.splitlines() if line.startswith('flags')).split(':', 1)[1].split())
    units = matrix_units()
    assert units.bf16 == bool({'avx512_bf16', 'amx_bf16'} & flags)
    assert units.int8 == bool({'avx512_vnni', 'avx_vnni', 'amx_int8'} & flags)
    assert units.amx == ('amx_tile' in flags)


@pytest.mark.parametrize('dtype', ['bfloat16', 'int8'])
def test_approximate_scoring_layouts_return_exact_scores_and_the_exact_ranking(db_path, dtype):
    from lazyllm_colpali import MaxSimRetriever, MilvusMultiVectorStore, PageRecord

    corpus = make_pages(150, tokens=64, seed=3)
    store = MilvusMultiVectorStore(db_path, dim=128)
    store.add([(PageRecord(page_id=p, doc_id='d', source='s', file_name='f.pdf', page_number=i + 1, width=0,
                           height=0), corpus.pages.page(i), None) for i, p in enumerate(corpus.pages.page_ids)])
    exact, fast = MaxSimRetriever(store, mode='exact'), MaxSimRetriever(store, mode='exact', scoring_dtype=dtype)
    for q in make_queries(corpus, 6, seed=4):
        a, b = exact.search_vectors(q, 10), fast.search_vectors(q, 10)
        assert [h.page_id for h in a] == [h.page_id for h in b]
        assert [h.score for h in a] == [h.score for h in b]   # re-scored from the stored tokens
    layout = fast._collection()[1].tokens
    assert (type(layout).__name__ == 'Int8Tokens') if dtype == 'int8' else layout.dtype == torch.bfloat16
    store.close()


def test_a_document_takes_the_scoring_layout_and_rejects_a_bad_one_before_indexing(colpali_encoder, pdf_dir,
                                                                                   tmp_path):
    from lazyllm_colpali import ColPaliDocument, ColPaliEmbed, MaxSimRetriever

    with pytest.raises(ValueError, match="scoring_dtype must be one of float16, bfloat16, int8, float32, got 'int4'"):
        ColPaliDocument(str(pdf_dir), embed=ColPaliEmbed(colpali_encoder), db=str(tmp_path / 'bad.db'),
                        scoring_dtype='int4')
    assert not (tmp_path / 'bad.db').exists()
    doc = ColPaliDocument(str(pdf_dir), embed=ColPaliEmbed(colpali_encoder), db=str(tmp_path / 'v.db'), dpi=40,
                          scoring_dtype='int8', progress=False)
    assert doc.index.retriever.scoring_dtype == 'int8'
    exact = MaxSimRetriever(doc.index.store, mode='exact')
    for query in ('Install the pump', 'Quarterly memo about hiring'):
        vectors = colpali_encoder.encode_queries([query])[0]
        assert [(h.page_id, h.score) for h in doc.index.search(query, 3)] == \
            [(h.page_id, h.score) for h in exact.search_vectors(vectors, 3)]
    doc.close()
