"""MaxSim: the reference matches colpali-engine's score_multi_vector; the packed fast path matches the
reference. Tolerances: float32 paths agree to 1e-4 absolute (sums of ~1000 dot products); fp16-stored
vectors are compared against the reference computed on the same fp16-rounded vectors."""
import pytest
import torch

from lazyllm_colpali.retrieve.maxsim import maxsim_packed, maxsim_reference, topk
from lazyllm_colpali.store.vector_file import PackedMultiVectors


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)


def _pages(n, lengths, dim=128, seed=0):
    torch.manual_seed(seed)
    return [_unit(int(lengths[i % len(lengths)]), dim) for i in range(n)]


def test_reference_matches_colpali_engine_score_multi_vector():
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    torch.manual_seed(1)
    queries = [_unit(n, 128) for n in (5, 17, 30)]
    pages = _pages(9, [1030, 700, 645])   # variable lengths: colpali-engine zero-pads them
    expected = BaseVisualRetrieverProcessor.score_multi_vector(queries, pages, batch_size=4, device='cpu')
    assert torch.allclose(maxsim_reference(queries, pages), expected, atol=1e-4)


def test_colpali_engine_padding_differs_only_when_every_similarity_is_negative():
    # score_multi_vector maxes over zero pad rows too, so a page whose best match is negative scores 0
    # there; the reference (and our fast path) keep the true negative value.
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    query = [torch.tensor([[1.0, 0.0]])]
    pages = [torch.tensor([[-1.0, 0.0]]), torch.tensor([[0.5, 0.5], [0.2, 0.0]])]
    engine = BaseVisualRetrieverProcessor.score_multi_vector(query, pages, device='cpu')
    assert engine.tolist() == [[0.0, 0.5]]
    assert maxsim_reference(query, pages).tolist() == [[-1.0, 0.5]]


def test_reference_matches_score_multi_vector_equal_lengths_exactly():
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
