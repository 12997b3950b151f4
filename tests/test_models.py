"""Encoders on tiny, randomly initialised but architecturally real models, loaded through the same
``from_pretrained`` path users take; clear errors for models that cannot be found."""
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageDraw

from lazyllm_colpali import ColPaliEncoder, ModelNotFoundError, UnsupportedModelError
from lazyllm_colpali.models.families import detect_family


def _page(text: str) -> Image.Image:
    image = Image.new('RGB', (612, 792), 'white')
    ImageDraw.Draw(image).text((60, 80), text, fill='black')
    return image


@pytest.mark.parametrize('family, encoder', [('colpali', 'colpali_encoder'), ('colqwen2', 'colqwen2_encoder')])
def test_tiny_models_embed_pages_and_queries(family, encoder, request):
    enc = request.getfixturevalue(encoder)
    assert enc.family.name == family and enc.dim == 128
    pages = enc.encode_images([_page('Revenue 2023'), _page('Pump manual')])
    queries = enc.encode_queries(['what was the revenue?', 'pump'])
    for v in pages + queries:
        assert v.dtype == torch.float32 and v.shape[1] == 128 and torch.isfinite(v).all()
        assert torch.allclose(v.norm(dim=1), torch.ones(len(v)), atol=1e-3)   # colpali heads L2-normalise
    assert len(pages[0]) > 500            # one vector per image patch (+ a few text tokens)
    assert len(queries[0]) != len(queries[1])   # padding removed per query


def test_batching_does_not_change_embeddings(colqwen2_encoder):
    images = [_page('one'), _page('two two two'), _page('three')]
    batched = colqwen2_encoder.encode_images(images)
    single = [colqwen2_encoder.encode_images([im])[0] for im in images]
    for a, b in zip(batched, single):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)


def test_token_pooling_shrinks_pages_not_queries(tiny_model_dir):
    enc = ColPaliEncoder(str(tiny_model_dir('colpali')), device='cpu', pool_factor=3)
    full = ColPaliEncoder(str(tiny_model_dir('colpali')), device='cpu')
    page = _page('pooled')
    n_full, n_pooled = len(full.encode_images([page])[0]), len(enc.encode_images([page])[0])
    assert n_pooled == n_full // 3
    assert len(enc.encode_queries(['q'])[0]) == len(full.encode_queries(['q'])[0])


@pytest.mark.parametrize('family', ['colpali', 'colqwen2', 'colqwen2_5', 'colidefics3'])
def test_family_is_detected_from_saved_config(tiny_model_dir, family):
    folder = tiny_model_dir(family)
    assert detect_family(str(folder)).name == family


def test_family_detection_from_names_and_adapters(tmp_path):
    assert detect_family('vidore/colqwen2.5-v0.2').name == 'colqwen2_5'
    assert detect_family('vidore/colSmol-256M').name == 'colidefics3'
    assert detect_family('vidore/colpali-v1.3').name == 'colpali'
    adapter = tmp_path / 'my-finetune'
    adapter.mkdir()
    (adapter / 'adapter_config.json').write_text(json.dumps({'base_model_name_or_path': 'vidore/colqwen2-base'}))
    assert detect_family(str(adapter)).name == 'colqwen2'
    with pytest.raises(UnsupportedModelError, match='--family'):
        detect_family('someone/unknown-model')


def test_hub_name_offline_fails_fast_naming_the_model_and_the_fix():
    # How fast it fails is measured in benchmarks/bench_startup.py, not asserted here (timings vary with load).
    with pytest.raises(ModelNotFoundError) as info:
        ColPaliEncoder('vidore/colqwen2-v1.0').load()
    message = str(info.value)
    assert 'vidore/colqwen2-v1.0' in message and '--model ./models/' in message and 'tiny:' in message


def test_missing_folder_and_unloadable_folder_are_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match='does not exist'):
        ColPaliEncoder(str(tmp_path / 'no-such-model')).load()
    broken = tmp_path / 'colqwen2-broken'
    broken.mkdir()
    (broken / 'config.json').write_text(json.dumps({'architectures': ['ColQwen2']}))
    with pytest.raises(ModelNotFoundError, match='could not be loaded as ColQwen2'):
        ColPaliEncoder(str(broken)).load()


def test_unreachable_hub_without_offline_mode_fails_in_seconds(tmp_path):
    # No HF_HUB_OFFLINE: the probe must still answer quickly (the hub points at a closed local port).
    env = {k: v for k, v in __import__('os').environ.items() if k not in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')}
    env['HF_ENDPOINT'] = 'http://127.0.0.1:9'
    code = ('import lazyllm_colpali as lc\ntry:\n    lc.ColPaliEncoder("vidore/colpali-v1.3").load()\n'
            'except lc.ModelNotFoundError as e:\n    print("CLEAR", e)\n')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert 'CLEAR' in out.stdout and 'cannot be reached' in out.stdout, out.stderr[-2000:]


def test_query_cache_returns_the_same_embeddings_without_a_forward_pass(tiny_model_dir, monkeypatch):
    enc = ColPaliEncoder(str(tiny_model_dir('colqwen2')), device='cpu', query_cache_size=2).load()
    calls = []
    real = enc._encode
    monkeypatch.setattr(enc, '_encode', lambda items, *a: calls.append(list(items)) or real(items, *a))
    first = enc.encode_queries(['revenue', 'pump', 'revenue'])
    assert calls == [['revenue', 'pump']]                 # duplicates encoded once
    assert torch.equal(first[0], first[2])
    first[0].zero_()                                      # a caller's edit must not reach the cache
    again = enc.encode_queries(['pump', 'revenue'])
    assert len(calls) == 1 and torch.equal(again[0], first[1]) and again[1].abs().sum() > 0
    enc.encode_queries(['valve'])                         # LRU: 'pump' was used less recently than 'revenue'
    assert list(enc._query_cache) == ['revenue', 'valve']
    uncached = ColPaliEncoder(str(tiny_model_dir('colqwen2')), device='cpu', query_cache_size=0)
    assert torch.allclose(uncached.encode_queries(['revenue'])[0], again[1], atol=1e-5)


def test_int8_language_tower_keeps_query_embeddings(tiny_model_dir):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    full = ColPaliEncoder(str(tiny_model_dir('colqwen2')), device='cpu', query_cache_size=0)
    int8 = ColPaliEncoder(str(tiny_model_dir('colqwen2')), device='cpu', quantize='int8', query_cache_size=0)
    queries = ['what was the revenue in 2023?', 'pump maintenance interval']
    for a, b in zip(full.encode_queries(queries), int8.encode_queries(queries)):
        assert a.shape == b.shape
        assert torch.nn.functional.cosine_similarity(a, b, dim=1).min() > 0.98
    kinds = {name: type(m) for name, m in int8.model.named_modules()}
    assert any(k is DynamicInt8Linear for n, k in kinds.items() if 'language_model' in n)
    assert not any(k is DynamicInt8Linear for n, k in kinds.items() if 'visual' in n or n == 'custom_text_proj')
    page = int8.encode_images([_page('Revenue 2023')])[0]      # pages still run (vision tower untouched)
    assert page.shape[1] == 128 and torch.isfinite(page).all()


def test_quantize_option_is_checked():
    with pytest.raises(ValueError, match='quantize must be None or "int8"'):
        ColPaliEncoder('tiny:colqwen2', quantize='int4')
    with pytest.raises(ValueError, match='quantize="int8" is a CPU option'):
        ColPaliEncoder('tiny:colqwen2', device='cuda', quantize='int8')


def test_compiled_encoder_gives_the_eager_embeddings(tiny_model_dir):
    eager = ColPaliEncoder(str(tiny_model_dir('colqwen2')), device='cpu', query_cache_size=0)
    compiled = ColPaliEncoder(str(tiny_model_dir('colqwen2')), device='cpu', query_cache_size=0, compile=True)
    queries = ['what was the revenue in 2023?']
    for a, b in zip(eager.encode_queries(queries), compiled.encode_queries(queries)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
