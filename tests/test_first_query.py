"""The encoder's warm-up: it pays a process's one-time costs (weights paged in, lazy library set-up) with a
short query, and changes no embedding. The speed it buys is measured in benchmarks/bench_first_query.py."""
import torch

from lazyllm_colpali import ColPaliEncoder


def test_warm_up_runs_the_model_once_and_changes_no_embedding(tiny_model_dir):
    folder = str(tiny_model_dir('colqwen2'))
    cold = ColPaliEncoder(folder, device='cpu', query_cache_size=0)
    expected = cold.encode_queries(['pump maintenance interval'])[0]
    warm = ColPaliEncoder(folder, device='cpu', query_cache_size=0)
    calls = []
    warm.load()._model.register_forward_hook(lambda *_: calls.append(1))
    assert warm.warm_up() > 0 and calls == [1]
    assert torch.equal(warm.encode_queries(['pump maintenance interval'])[0], expected)
    assert not warm._query_cache   # the warm-up query is not cached as if a user had asked it
