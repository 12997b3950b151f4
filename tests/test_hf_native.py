"""Checkpoints in transformers' own format (ColQwen2ForRetrieval, ColPaliForRetrieval): loaded by the right class
behind the same embeddings contract, with the same results as the colpali-engine folder of the same weights."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageDraw

from lazyllm_colpali import ColPaliEncoder
from lazyllm_colpali.errors import UnsupportedModelError
from lazyllm_colpali.models.hf_native import NativeRetrievalModel, inspect_checkpoint
from lazyllm_colpali.models.tiny import build_tiny_model


@pytest.fixture(scope='module')
def colqwen2_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('formats')
    out = subprocess.run([sys.executable, '-m', 'lazyllm_colpali.cli', 'make-tiny-model', root / 'hf', '--family',
                          'colqwen2', '--format', 'transformers'], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return build_tiny_model('colqwen2', root / 'engine'), root / 'hf'


def _pages():
    pages = []
    for i, (text, size) in enumerate([('Revenue 2023', (612, 792)), ('Pump manual', (500, 700)),
                                      ('Warranty', (700, 500))]):
        image = Image.new('RGB', size, ['white', 'lightyellow', 'lightblue'][i])
        ImageDraw.Draw(image).text((40, 40), text, fill='black')
        pages.append(image)
    return pages


def _aligned(encoder: ColPaliEncoder) -> ColPaliEncoder:
    # colpali-engine 0.3.18's ColQwen2Processor adds no query prefix; transformers' always adds "Query: " (it
    # treats an empty prefix as unset). Same text in, to compare the models themselves.
    encoder.processor.query_prefix = ''
    return encoder


def test_transformers_folder_is_written_in_transformers_layout(colqwen2_folders):
    engine, hf = colqwen2_folders
    config = json.loads((hf / 'config.json').read_text())
    assert config['architectures'] == ['ColQwen2ForRetrieval'] and config['model_type'] == 'colqwen2'
    assert inspect_checkpoint(hf).format == 'transformers' and inspect_checkpoint(engine).format == 'colpali-engine'
    assert 'embedding_proj_layer.' in inspect_checkpoint(hf).weight_prefixes
    assert 'custom_text_proj.' in inspect_checkpoint(engine).weight_prefixes


def test_both_formats_give_the_same_embeddings(colqwen2_folders):
    engine, hf = (ColPaliEncoder(str(f), device='cpu', batch_size=3) for f in colqwen2_folders)
    _aligned(hf)
    assert isinstance(hf.model, NativeRetrievalModel) and type(hf.model.model).__name__ == 'ColQwen2ForRetrieval'
    assert hf.family.name == engine.family.name == 'colqwen2' and hf.dim == engine.dim == 128
    pages_e, pages_h = engine.encode_images(_pages()), hf.encode_images(_pages())   # a padded batch of 3 sizes
    queries = ['revenue in 2023', 'pump', 'what does the warranty cover']
    queries_e, queries_h = engine.encode_queries(queries), hf.encode_queries(queries)
    for a, b in zip(pages_e + queries_e, pages_h + queries_h):
        assert a.shape == b.shape                               # same masks: padding removed alike
        assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(b.norm(dim=-1), torch.ones(len(b)), atol=1e-4)   # L2-normalised rows


def test_both_formats_give_the_same_top10(colqwen2_folders, pdf_dir, tmp_path):
    from lazyllm_colpali import ColPaliIndex, MaxSimRetriever, MilvusMultiVectorStore

    rankings = []
    for name, folder in zip(('engine', 'hf'), colqwen2_folders):
        encoder = _aligned(ColPaliEncoder(str(folder), device='cpu')) if name == 'hf' else \
            ColPaliEncoder(str(folder), device='cpu')
        store = MilvusMultiVectorStore(str(tmp_path / f'{name}.db'), 'pages', dim=encoder.dim)
        try:
            index = ColPaliIndex(encoder, store, retriever=MaxSimRetriever(store, mode='exact'), progress=False)
            index.add([pdf_dir])
            rankings.append([[(h.page_id, round(h.score, 3)) for h in index.search(q, topk=10)]
                             for q in ('Replace the filter every month', 'revenue 2023', 'hiring')])
        finally:
            store.close()
    assert rankings[0] == rankings[1] and len(rankings[0][0]) == 6


def test_colpali_transformers_format_maps_every_weight(tmp_path):
    engine = ColPaliEncoder(str(build_tiny_model('colpali', tmp_path / 'engine')), device='cpu')
    hf = ColPaliEncoder(str(build_tiny_model('colpali', tmp_path / 'hf', format='transformers')), device='cpu')
    assert type(hf.model.model).__name__ == 'ColPaliForRetrieval'
    # The two processors word pages and queries differently (colpali-engine 0.3.18 prompts "<bos><bos>Describe
    # the image."; transformers adds a trailing newline to queries), so compare the models on the same inputs.
    for batch in (engine.processor.process_images(_pages()[:2]), engine.processor.process_queries(['revenue', 'x'])):
        with torch.inference_mode():
            assert torch.equal(engine.model(**batch), hf.model(**batch))


def test_mixed_and_unknown_folders_are_refused_naming_what_was_found(colqwen2_folders, tmp_path):
    engine, hf = colqwen2_folders
    mixed = tmp_path / 'mixed'
    shutil.copytree(engine, mixed)
    shutil.copy(hf / 'config.json', mixed / 'config.json')   # a transformers config over colpali-engine weights
    with pytest.raises(UnsupportedModelError, match=r'mixes two checkpoint layouts.*ColQwen2ForRetrieval.*'
                                                    r'custom_text_proj'):
        ColPaliEncoder(str(mixed)).load()
    unknown = tmp_path / 'unknown'
    shutil.copytree(engine, unknown)
    config = json.loads((unknown / 'config.json').read_text())
    (unknown / 'config.json').write_text(json.dumps({**config, 'architectures': ['LlamaForCausalLM']}))
    with pytest.raises(UnsupportedModelError, match=r"LlamaForCausalLM.*model_type qwen2_vl"):
        ColPaliEncoder(str(unknown)).load()
