"""MaxSim: the reference matches colpali-engine's score_multi_vector; the packed fast path matches the
reference. Tolerances: float32 paths agree to 1e-4 absolute (sums of ~1000 dot products); fp16-stored
vectors are compared against the reference computed on the same fp16-rounded vectors."""
import pytest
import torch

from lazyllm_colpali.retrieve.maxsim import maxsim_matmul, maxsim_packed, maxsim_reference, topk
from lazyllm_colpali.store.vector_file import PackedMultiVectors


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)


def _pages(n, lengths, dim=128, seed=0):
    torch.manual_seed(seed)
    return [_unit(int(lengths[i % len(lengths)]), dim) for i in range(n)]


def test_reference_matches_colpali_engine_score_multi_vector():
    import lazyllm_colpali.models  # noqa: F401  (its torchvision shim first: the file must pass alone)
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    torch.manual_seed(1)
    queries = [_unit(n, 128) for n in (5, 17, 30)]
    pages = _pages(9, [1030, 700, 645])   # variable lengths: colpali-engine zero-pads them
    expected = BaseVisualRetrieverProcessor.score_multi_vector(queries, pages, batch_size=4, device='cpu')
    assert torch.allclose(maxsim_reference(queries, pages), expected, atol=1e-4)


def test_colpali_engine_padding_differs_only_when_every_similarity_is_negative():
    # score_multi_vector maxes over zero pad rows too, so a page whose best match is negative scores 0
    # there; the reference (and our fast path) keep the true negative value.
    import lazyllm_colpali.models  # noqa: F401  (its torchvision shim first: the file must pass alone)
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    query = [torch.tensor([[1.0, 0.0]])]
    pages = [torch.tensor([[-1.0, 0.0]]), torch.tensor([[0.5, 0.5], [0.2, 0.0]])]
    engine = BaseVisualRetrieverProcessor.score_multi_vector(query, pages, device='cpu')
    assert engine.tolist() == [[0.0, 0.5]]
    assert maxsim_reference(query, pages).tolist() == [[-1.0, 0.5]]


def test_reference_matches_score_multi_vector_equal_lengths_exactly():
    import lazyllm_colpali.models  # noqa: F401  (its torchvision shim first: the file must pass alone)
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    torch.manual_seed(2)
    queries = [_unit(20, 128) for _ in range(4)]
    pages = _pages(12, [1030])
    expected = BaseVisualRetrieverProcessor.score_multi_vector(queries, pages, batch_size=5, device='cpu')
    assert torch.allclose(maxsim_reference(queries, pages), expected, atol=1e-4)


@pytest.mark.parametrize('lengths', [[64], [64, 33, 5, 100, 1]])
@pytest.mark.parametrize('chunk_tokens', [1, 97, 1 << 18])
def test_packed_matches_reference(lengths, chunk_tokens):
    pages = _pages(40, lengths, dim=32)
    queries = [_unit(7, 32), _unit(1, 32), torch.randn(12, 32)]   # non-normalised too: MaxSim must not care
    packed = PackedMultiVectors.from_list([str(i) for i in range(len(pages))], pages)
    got = maxsim_packed(queries, packed, chunk_tokens=chunk_tokens)
    assert got.shape == (3, 40)
    assert torch.allclose(got, maxsim_reference(queries, pages), atol=1e-4)


def test_packed_on_fp16_storage_matches_reference_on_same_vectors():
    pages = [p.half() for p in _pages(25, [50, 80])]
    query = _unit(9, 128)
    packed = PackedMultiVectors.from_list([str(i) for i in range(25)], pages)
    assert torch.allclose(maxsim_packed([query], packed), maxsim_reference([query], pages), atol=1e-3)


def test_negative_similarities_are_not_masked_by_padding():
    # Every page token points away from the query: true scores are negative. Zero padding would give 0.
    query = torch.tensor([[1.0, 0.0]])
    pages = [torch.tensor([[-1.0, 0.0]]), torch.tensor([[-0.5, 0.1], [-0.9, 0.0], [-0.7, 0.2]])]
    packed = PackedMultiVectors.from_list(['a', 'b'], pages)
    assert torch.allclose(maxsim_packed([query], packed), torch.tensor([[-1.0, -0.5]]))


def test_subset_and_unpack_round_trip():
    pages = _pages(6, [3, 4, 5], dim=8)
    packed = PackedMultiVectors.from_list(list('abcdef'), pages)
    sub = packed.subset([4, 1])
    assert sub.page_ids == ['e', 'b']
    assert torch.equal(sub.unpack()[0], pages[4]) and torch.equal(sub.unpack()[1], pages[1])


def test_topk_is_stable_on_ties():
    values, indices = topk(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), 3)
    assert indices.tolist() == [[1, 2, 3]] and values.tolist() == [[3.0, 3.0, 2.0]]


# The fused CPU kernel (retrieve/kernel.py) against the reference. Tolerances: float32 and fp16 tokens are
# exact up to float32 summation order (1e-4 on sums of up to ~100 unit dot products); int8 codes are
# compared with the reference on the decoded (codes x scale) vectors, the same numbers the kernel uses.
kernel = pytest.importorskip('lazyllm_colpali.retrieve.kernel')
needs_kernel = pytest.mark.skipif(not kernel.available(), reason='numba is not installed')


@needs_kernel
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('lengths,dim', [([64], 128), ([64, 33, 5, 100, 1, 2, 3], 128), ([7, 1, 13], 67),
                                         ([4], 1)])
def test_fused_kernel_matches_reference(dtype, lengths, dim, monkeypatch):
    pages = [p.to(dtype) for p in _pages(23, lengths, dim=dim)]
    queries = [_unit(7, dim), _unit(1, dim), torch.randn(12, dim)]
    packed = PackedMultiVectors.from_list([str(i) for i in range(len(pages))], pages)
    got = kernel.maxsim_fused(queries, packed.tokens, packed.offsets)
    assert got.shape == (3, 23) and got.dtype == torch.float32
    assert torch.allclose(got, maxsim_reference(queries, pages), atol=1e-4, rtol=1e-5)
    monkeypatch.setenv('LAZYLLM_COLPALI_KERNEL', 'numba')   # the SIMD kernel (tested in test_maxsim_simd.py) off
    assert torch.equal(maxsim_packed(queries, packed), got)   # the CPU fast path without it is this kernel


@needs_kernel
def test_fused_kernel_reads_int8_codes_with_their_scales():
    from lazyllm_colpali.retrieve.compression import Int8Tokens

    pages = _pages(30, [40, 9, 77], dim=128)
    packed = PackedMultiVectors.from_list([str(i) for i in range(30)], pages)
    codes = Int8Tokens.encode(packed.tokens)
    decoded = [codes[int(packed.offsets[i]):int(packed.offsets[i + 1])] for i in range(30)]
    queries = [_unit(20, 128), _unit(3, 128)]
    got = kernel.maxsim_fused(queries, codes, packed.offsets)
    assert torch.allclose(got, maxsim_reference(queries, decoded), atol=1e-4)
    # and close to the float32 scores: int8 error per coordinate <= scale / 2
    assert (got - maxsim_reference(queries, pages)).abs().max() < 0.05 * 20


@needs_kernel
def test_fused_kernel_scores_chosen_pages_in_the_given_order(monkeypatch):
    monkeypatch.setenv('LAZYLLM_COLPALI_KERNEL', 'numba')   # this kernel, not the SIMD one that auto picks first
    pages = _pages(12, [10, 3], dim=16)
    packed = PackedMultiVectors.from_list([str(i) for i in range(12)], pages)
    query = [_unit(5, 16)]
    full = kernel.maxsim_fused(query, packed.tokens, packed.offsets)
    picked = maxsim_packed(query, packed, pages=[7, 2, 7, 0])
    assert torch.equal(picked, full[:, [7, 2, 7, 0]])
    assert torch.allclose(maxsim_matmul(query, packed.subset([7, 2, 7, 0])), picked, atol=1e-5)


@needs_kernel
def test_empty_pages_rank_last_in_both_paths():
    pages = [_unit(3, 8), torch.zeros(0, 8), _unit(2, 8)]
    packed = PackedMultiVectors.from_list(['a', 'empty', 'c'], pages)
    query = [_unit(4, 8)]
    fused = kernel.maxsim_fused(query, packed.tokens, packed.offsets)
    assert fused[0, 1] == -torch.inf and torch.isfinite(fused[0, [0, 2]]).all()
    assert torch.equal(torch.isinf(maxsim_matmul(query, packed)), torch.isinf(fused))
    assert torch.allclose(fused[0, [0, 2]], maxsim_reference(query, [pages[0], pages[2]])[0], atol=1e-5)


@needs_kernel
def test_fused_kernel_rejects_a_dimension_mismatch():
    packed = PackedMultiVectors.from_list(['a'], [_unit(3, 8)])
    with pytest.raises(ValueError, match='query dim 16 does not match the stored dim 8'):
        kernel.maxsim_fused([_unit(2, 16)], packed.tokens, packed.offsets)


def test_kernel_can_be_switched_off_for_the_matmul_path(monkeypatch):
    monkeypatch.setenv('LAZYLLM_COLPALI_KERNEL', 'torch')
    assert not kernel.available()
    pages = _pages(5, [6, 2], dim=8)
    packed = PackedMultiVectors.from_list(list('abcde'), pages)
    query = [_unit(3, 8)]
    assert torch.allclose(maxsim_packed(query, packed, pages=[4, 0]), maxsim_reference(query, [pages[4], pages[0]]),
                          atol=1e-5)
