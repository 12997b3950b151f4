"""Compressed codes, the centroid candidate index, retriever modes, the GPU path (skipped without CUDA)
and a smoke run of the MaxSim benchmark. Synthetic data comes from benchmarks/synthetic.py."""
import sys
from pathlib import Path

import pytest
import torch

from lazyllm_colpali.retrieve.candidates import CentroidIndex
from lazyllm_colpali.retrieve.compression import BinaryTokens, Int8Tokens, compress, token_bytes
from lazyllm_colpali.retrieve.maxsim import maxsim_packed, maxsim_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
from synthetic import make_pages, make_queries  # noqa: E402


@pytest.fixture(scope='module')
def corpus():
    return make_pages(300, tokens=64, seed=0)


def test_int8_round_trip_error_is_within_half_a_step():
    x = torch.nn.functional.normalize(torch.randn(500, 128), dim=1)
    codes = Int8Tokens.encode(x)
    error = (codes[0:500] - x).abs()
    assert bool((error <= codes.scales.float() / 2 + 1e-3).all())
    assert codes.nbytes == 500 * 128 + 500 * 2


def test_binary_codes_keep_signs_and_scale():
    x = torch.randn(10, 16)
    decoded = BinaryTokens.encode(x)[0:10]
    assert torch.equal(decoded > 0, x > 0)
    assert torch.allclose(decoded.norm(dim=1), torch.ones(10))
    assert BinaryTokens.encode(x).nbytes == 10 * 2


def test_compressed_scores_match_the_reference_on_decoded_vectors(corpus):
    from lazyllm_colpali.retrieve import kernel_units

    queries = make_queries(corpus, 3)
    for codec in ('float16', 'int8', 'binary'):
        packed = compress(corpus.pages, codec)
        decoded = [packed.tokens[int(packed.offsets[i]):int(packed.offsets[i + 1])] for i in range(len(packed))]
        seen = queries
        if kernel_units.available(packed.tokens):   # int8 dot products: the query is int8 codes x a scale too
            seen = [c.float() * s.unsqueeze(1) for c, s in map(kernel_units.quantize_queries, queries)]
        assert torch.allclose(maxsim_packed(queries, packed), maxsim_reference(seen, decoded), atol=1e-3)
    assert token_bytes(compress(corpus.pages, 'binary')) * 16 == token_bytes(corpus.pages)


def test_int8_keeps_the_exact_top10(corpus):
    queries = make_queries(corpus, 5)
    exact = maxsim_packed(queries, corpus.pages).topk(10, dim=1).indices
    int8 = maxsim_packed(queries, compress(corpus.pages, 'int8')).topk(10, dim=1).indices
    overlap = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, int8)]
    assert sum(overlap) / 50 >= 0.9


def test_centroid_candidates_find_the_target_and_full_budget_is_exact(corpus):
    index = CentroidIndex(n_centroids=128, nprobe=4).build(corpus.pages)
    assert int(index.list_offsets[-1]) == len(index.list_pages) and len(index.centroids) == 128
    queries = make_queries(corpus, 8)
    exact_best = maxsim_packed(queries, corpus.pages).argmax(dim=1)
    found = [int(b) in index.candidates(q, 30).tolist() for q, b in zip(queries, exact_best)]
    assert sum(found) >= 7                                # the clear winner is nearly always a candidate
    assert sorted(index.candidates(queries[0], 10_000).tolist()) == list(range(300))


def test_retriever_modes_agree_when_budgets_cover_the_collection(db_path, corpus):
    from lazyllm_colpali import MaxSimRetriever, MilvusMultiVectorStore, PageRecord

    store = MilvusMultiVectorStore(db_path, dim=128)
    store.add([(PageRecord(page_id=p, doc_id='d', source='s', file_name='f.pdf', page_number=i + 1, width=0,
                           height=0), corpus.pages.page(i), None) for i, p in enumerate(corpus.pages.page_ids[:120])])
    query = make_queries(corpus, 1)[0]
    results = {mode: [h.page_id for h in
                      MaxSimRetriever(store, mode=mode, candidate_budget=120).search_vectors(query, 5)]
               for mode in ('exact', 'candidates', 'centroids')}
    assert results['exact'] == results['candidates'] == results['centroids']
    filtered = MaxSimRetriever(store, mode='centroids').search_vectors(query, 5, filters={'pages': (1, 10)})
    assert filtered and all(1 <= h.page <= 10 for h in filtered)
    store.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_gpu_path_matches_the_reference(corpus):
    # fp16 matmuls on the GPU: tolerance 2e-2 on sums of 20 cosine maxima (fp16 has ~3 decimal digits).
    queries = make_queries(corpus, 4)
    gpu = maxsim_packed(queries, corpus.pages, device='cuda')
    assert torch.allclose(gpu, maxsim_packed(queries, compress(corpus.pages, 'float32')), atol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_gpu_resident_tokens_take_the_fused_kernel_and_match(corpus):
    from lazyllm_colpali.retrieve import kernel_gpu
    from lazyllm_colpali.store.vector_file import PackedMultiVectors

    queries = make_queries(corpus, 4)
    on_gpu = PackedMultiVectors(corpus.pages.page_ids, corpus.pages.tokens.cuda(), corpus.pages.offsets)
    assert kernel_gpu.available(on_gpu.tokens)
    got = maxsim_packed(queries, on_gpu, device='cuda', pages=[5, 0, 7])
    expected = maxsim_packed(queries, compress(corpus.pages, 'float32'))[:, [5, 0, 7]]
    assert torch.allclose(got, expected, atol=2e-2)


def test_benchmark_smoke(tmp_path):
    import json
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
    import bench_maxsim

    out = tmp_path / 'maxsim.json'
    result = bench_maxsim.main(['--sizes', '120', '--tokens', '32', '--queries', '3', '--slow-queries', '2',
                                '--pool-pages', '8', '--budgets', '10,40', '--milvus-server', '--out', str(out)])
    data = json.loads(out.read_text())
    rows = {r['path']: r for r in data['rows']}
    assert rows['matmul fp32 cache (previous default)']['recall@10'] == 1.0
    assert rows['matmul fp32 cache (previous default)']['cpu_vs_previous'] == 1.0
    assert rows['fused kernel fp16 (ours, default)']['recall@10'] == 1.0
    assert rows['fused kernel fp16 (ours, default)']['cpu_s_per_query'] > 0
    assert rows['colpali-engine score_multi_vector']['recall@10'] == 1.0
    assert data['kernel_compile']['cached_load_s'] > 0
    assert any(p.startswith('milvus lite') for p in rows) and len(result['rows']) >= 17
    fused = rows['fused kernel fp16 (ours, default)']
    assert fused['memory_read_ms'] > 0 and fused['x_memory_bound'] == fused['p50_ms'] / fused['memory_read_ms']
    assert rows['fused kernel bf16 (numba)']['recall@10'] == 1.0
    from lazyllm_colpali.retrieve import kernel_units
    if kernel_units.has_units('int8'):
        assert rows['matrix units int8 + exact fp16 rerank (retriever int8)']['recall@10'] == 1.0
        assert rows['matrix units int8 + scale (VNNI/AMX)']['x_memory_bound'] > 0
    server = rows['milvus server (gRPC, HNSW) pooled candidates + rerank@40']
    assert 0.0 < server['recall@10'] <= 1.0 and server['p50_ms'] > 0


def test_centroid_index_sync_equals_a_fresh_build_with_the_same_centroids(corpus):
    first = corpus.pages.subset(list(range(200)))
    later = corpus.pages.subset(list(range(50, 300)))     # 50 pages deleted, 100 added
    index = CentroidIndex(n_centroids=64).build(first)
    index.sync(later)
    fresh = CentroidIndex(n_centroids=64)
    fresh.centroids = index.centroids
    fresh.sync(later)
    assert torch.equal(index.list_pages, fresh.list_pages) and torch.equal(index.list_offsets, fresh.list_offsets)
    assert index.n_pages == 250 and sorted(index._page_centroids) == sorted(later.page_ids)


def _store_with(db_path, corpus, n):
    from lazyllm_colpali import MilvusMultiVectorStore, PageRecord

    store = MilvusMultiVectorStore(db_path, dim=128)
    store.add([(PageRecord(page_id=p, doc_id='d', source='s', file_name='f.pdf', page_number=i + 1, width=0,
                           height=0), corpus.pages.page(i), None) for i, p in enumerate(corpus.pages.page_ids[:n])])
    return store


def test_small_collections_score_exactly_without_training_an_index(db_path, corpus):
    # Regression: at ~40 pages the first `centroids` query trained k-means for 19-26 s. A budget that covers
    # the collection now scores every page directly: the same answer as exact, and no index is built.
    from lazyllm_colpali import MaxSimRetriever

    store = _store_with(db_path, corpus, 40)
    query = make_queries(corpus, 1)[0]
    exact = MaxSimRetriever(store, mode='exact').search_vectors(query, 5)
    for mode in ('centroids', 'candidates'):
        retriever = MaxSimRetriever(store, mode=mode)    # default budget max(256, 1%) >= 40 pages
        assert [h.page_id for h in retriever.search_vectors(query, 5)] == [h.page_id for h in exact]
        assert retriever._centroids is None
    store.close()


def test_int8_scoring_layout_keeps_the_ranking_and_bad_dtype_is_named(db_path, corpus):
    from lazyllm_colpali import MaxSimRetriever

    store = _store_with(db_path, corpus, 120)
    queries = make_queries(corpus, 4)
    fp16, int8 = MaxSimRetriever(store, mode='exact'), MaxSimRetriever(store, mode='exact', scoring_dtype='int8')
    for q in queries:
        a, b = fp16.search_vectors(q, 5), int8.search_vectors(q, 5)
        assert [h.page_id for h in a][:3] == [h.page_id for h in b][:3]
        assert abs(a[0].score - b[0].score) < 0.05
    assert type(int8._collection()[1].tokens).__name__ == 'Int8Tokens'
    assert fp16._collection()[1].tokens is fp16._collection()[0].tokens   # fp16: scored as stored, no copy
    with pytest.raises(ValueError, match='scoring_dtype must be one of float16, bfloat16, int8, float32'):
        MaxSimRetriever(store, scoring_dtype='float64')
    store.close()


def test_centroid_index_state_round_trip_needs_no_retraining(corpus):
    first = corpus.pages.subset(list(range(200)))
    index = CentroidIndex(n_centroids=64, nprobe=3).build(first)
    state = index.state_dict()
    assert state['page_ids'] == first.page_ids and state['centroids'].shape == (64, 128)
    later = corpus.pages.subset(list(range(50, 300)))
    restored = CentroidIndex.from_state_dict(state).sync(later)
    index.sync(later)
    assert torch.equal(restored.list_pages, index.list_pages) and torch.equal(restored.list_offsets,
                                                                              index.list_offsets)
    query = make_queries(corpus, 1)[0]
    assert torch.equal(restored.candidates(query, 20), index.candidates(query, 20)) and restored.nprobe == 3
    with pytest.raises(ValueError, match='version 0 is not 1; rebuild the index'):
        CentroidIndex.from_state_dict(dict(state, version=0))


def test_default_centroid_count_shrinks_with_small_collections():
    assert CentroidIndex.default_k(40 * 1030) == 512          # was 1024 before the T/64 cap
    assert CentroidIndex.default_k(10_000 * 1030) == 4096
    assert CentroidIndex.default_k(10) == 16


def test_the_centroid_index_is_trained_once_per_collection_and_shared(tmp_path, monkeypatch):
    """Issue #12: a restart or a second machine (another data dir, the same shared dir) loads the index."""
    from lazyllm_colpali import MaxSimRetriever, MilvusMultiVectorStore
    from lazyllm_colpali.retrieve.candidates import CentroidIndex
    from tests.helpers.store_worker import items_for

    store = MilvusMultiVectorStore(str(tmp_path / 'c.db'), dim=16, shared_dir=tmp_path / 'shared')
    store.add(items_for('aaaaaaaaaaaaaaaa', 300))
    query = store.vectors.get(['aaaaaaaaaaaaaaaa-p00007'])['aaaaaaaaaaaaaaaa-p00007'][:3].float()
    first = MaxSimRetriever(store, mode='centroids', candidate_budget=40)
    hits = first.search_vectors(query, 5)
    assert first.centroid_file.is_file() and hits[0].page_id == 'aaaaaaaaaaaaaaaa-p00007'

    def no_training(*args, **kwargs):
        raise AssertionError('the index was trained again')
    monkeypatch.setattr(CentroidIndex, 'build', no_training)
    store.add(items_for('bbbbbbbbbbbbbbbb', 5))               # pages added since: assigned, not retrained
    again = MaxSimRetriever(store, mode='centroids', candidate_budget=40)
    assert [h.page_id for h in again.search_vectors(query, 5)] == [h.page_id for h in hits]
    assert again._centroids.indexed_pages == 305
    store.close()

    first.centroid_file.write_bytes(b'not a torch file')      # damaged: a retrain and a warning, not a failure
    monkeypatch.undo()
    store = MilvusMultiVectorStore(str(tmp_path / 'c.db'), shared_dir=tmp_path / 'shared')
    assert MaxSimRetriever(store, mode='centroids', candidate_budget=40).search_vectors(query, 1)[0].page_id == \
        'aaaaaaaaaaaaaaaa-p00007'
    store.close()
