"""Checkpoints in transformers' own format: ``ColPaliForRetrieval`` and ``ColQwen2ForRetrieval`` (the "-hf"
folders ViDoRe publishes beside the colpali-engine ones, e.g. ``vidore/colqwen2-v1.0-hf``).

Such a folder's ``config.json`` names the retrieval class (``model_type`` ``colpali`` / ``colqwen2``) and its
weights sit under ``vlm.*`` + ``embedding_proj_layer.*``, where colpali-engine's checkpoints have the bare
backbone keys + ``custom_text_proj.*`` (transformers' ``convert_col*_weights_to_hf.py`` scripts map one to the
other). :func:`inspect_checkpoint` tells the two layouts apart from the config and the weights' key names
(read from the safetensors header, nothing loaded) and refuses a folder whose config and weights disagree;
:func:`load_native` loads a transformers-format folder with its own classes behind the encoder's contract:
``model(**batch)`` -> ``(batch, tokens, dim)`` L2-normalised embeddings zeroed on padding, ``model.dim``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..errors import UnsupportedModelError

# model_type -> (retrieval class, processor class, colpali-engine family of the same architecture)
NATIVE = {'colqwen2': ('ColQwen2ForRetrieval', 'ColQwen2Processor', 'colqwen2'),
          'colpali': ('ColPaliForRetrieval', 'ColPaliProcessor', 'colpali')}
_NATIVE_KEYS = ('embedding_proj_layer.', 'vlm.')
_ENGINE_KEYS = ('custom_text_proj.', 'linear.')


@dataclass
class Checkpoint:
    """What a model folder holds, as far as choosing a loader goes."""

    folder: Path
    format: str                          # 'transformers', 'colpali-engine' or 'unknown'
    architectures: List[str] = field(default_factory=list)
    model_type: str = ''
    weight_prefixes: List[str] = field(default_factory=list)

    def describe(self) -> str:
        weights = ', '.join(self.weight_prefixes[:6]) or 'no safetensors weights'
        return (f'config.json architectures {self.architectures or "none"}, model_type '
                f'{self.model_type or "none"}; weights {weights}')


def _weight_keys(folder: Path) -> List[str]:
    index = folder / 'model.safetensors.index.json'
    if index.is_file():
        return list(json.loads(index.read_text()).get('weight_map', {}))
    files = sorted(folder.glob('*.safetensors'))
    if not files:
        return []
    from safetensors import safe_open

    with safe_open(str(files[0]), framework='pt') as f:   # the header only; no tensor is read
        return list(f.keys())


def inspect_checkpoint(folder: str | Path) -> Checkpoint:
    """Which layout a local model folder is in; raises :class:`UnsupportedModelError` for a folder whose
    config and weights disagree (a transformers config over colpali-engine weights, or the reverse).

    >>> inspect_checkpoint(tmp).format      # an empty folder: nothing to go by
    'unknown'
    """
    folder = Path(folder)
    config = json.loads((folder / 'config.json').read_text()) if (folder / 'config.json').is_file() else {}
    keys = _weight_keys(folder)
    prefixes = sorted({k.split('.')[0] + '.' for k in keys})
    found = Checkpoint(folder, 'unknown', list(config.get('architectures') or []), config.get('model_type', ''),
                       prefixes)
    native_config = found.model_type in NATIVE or any(a.endswith('ForRetrieval') for a in found.architectures)
    native_weights = any(k.startswith(_NATIVE_KEYS) for k in keys)
    engine_weights = any(k.startswith(_ENGINE_KEYS) for k in keys)
    if native_config and engine_weights or (config and not native_config and native_weights):
        raise UnsupportedModelError(
            f'model folder {folder} mixes two checkpoint layouts: {found.describe()}. A transformers-format folder '
            f'(ColPaliForRetrieval / ColQwen2ForRetrieval) has vlm.* and embedding_proj_layer.* weights; a '
            f'colpali-engine folder has the backbone keys and custom_text_proj.*; copy config.json and the '
            f'*.safetensors of one download together')
    if native_config:
        if found.model_type not in NATIVE:
            raise UnsupportedModelError(
                f'model folder {folder} is a transformers retrieval checkpoint this package does not load '
                f'({found.describe()}); supported: {", ".join(c for c, _, _ in NATIVE.values())}')
        found.format = 'transformers'
    elif config or keys:
        found.format = 'colpali-engine'
    return found


class NativeRetrievalModel(torch.nn.Module):
    """A transformers ``Col*ForRetrieval`` behind colpali-engine's calling convention (``model(**batch)``
    returns the embeddings tensor; ``dim``; ``config``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config
        self.dim = int(model.config.embedding_dim)

    def forward(self, **batch: Any) -> torch.Tensor:
        if self.config.model_type == 'colqwen2' and batch.get('image_grid_thw') is not None:
            batch.setdefault('position_ids', self._mrope_positions(batch))
        return self.model(**batch).embeddings

    def _mrope_positions(self, batch: Dict[str, Any]) -> torch.Tensor:
        # ColQwen2ForRetrieval (transformers 5.4) runs its backbone on inputs_embeds without input_ids, so Qwen2-VL
        # cannot build its multimodal (temporal, height, width) RoPE positions and page patches get 1-D ones;
        # colpali-engine's ColQwen2 gets the 3-D ones. Computing them here gives both formats the same page
        # embeddings (measured: 7.8e-4 max difference on a tiny model without this, 0 with it).
        input_ids = batch['input_ids']
        image_tokens = (input_ids == self.config.vlm_config.image_token_id).int()   # 1 = image, as processors mark it
        positions, _ = self.model.vlm.model.get_rope_index(input_ids, image_tokens, batch['image_grid_thw'], None,
                                                           batch.get('attention_mask'))
        return positions


def load_native(source: str, model_kwargs: Dict[str, Any], local_only: bool) -> Optional[Tuple[Any, Any, str]]:
    """``(model, processor, family name)`` for a transformers-format folder; None for any other folder or a
    hub name (those load through colpali-engine's classes)."""
    folder = Path(source)
    if not folder.is_dir():
        return None
    checkpoint = inspect_checkpoint(folder)
    if checkpoint.format != 'transformers':
        return None
    import transformers

    model_class, processor_class, family = NATIVE[checkpoint.model_type]
    model = getattr(transformers, model_class).from_pretrained(source, **model_kwargs)
    processor = getattr(transformers, processor_class).from_pretrained(source, local_files_only=local_only)
    return NativeRetrievalModel(model), processor, family


def detect_family_here(source: str):
    """colpali-engine's family of ``source``; an unknown folder's error names what the folder holds (and
    points a single-vector checkpoint at ``--dense-model``)."""
    from .dense import is_dense_family
    from .families import detect_family

    try:
        return detect_family(source)
    except UnsupportedModelError as e:
        folder = Path(source)
        if not folder.is_dir():
            raise
        found = inspect_checkpoint(folder)
        hint = ''
        dense = any(is_dense_family(a) for a in found.architectures)
        if dense or 'Qwen2VLForConditionalGeneration' in found.architectures:
            hint = ' It is a single-vector (dense) model: use it with --dense-model for the dense arm.'
        raise UnsupportedModelError(f'{e}. Found in {folder}: {found.describe()}.{hint}') from None


# -- writing (tiny test models) --------------------------------------------------------------------------------
def to_transformers_format(family: str, model: torch.nn.Module, processor: Any) -> Tuple[Any, Any]:
    """The same weights in transformers' layout: a colpali-engine ``ColQwen2`` / ``ColPali`` (model and
    processor) as ``ColQwen2ForRetrieval`` / ``ColPaliForRetrieval`` with their processors.

    The mapping follows transformers' ``convert_colqwen2_weights_to_hf.py`` / ``convert_colpali_weights_to_hf.py``:
    the backbone becomes ``vlm`` (colpali-engine's ColQwen2 *is* a ``Qwen2VLModel``, which transformers keeps
    as ``vlm.model``; ColPali wraps a ``PaliGemmaForConditionalGeneration`` as ``model``, transformers as
    ``vlm``), ``custom_text_proj`` becomes ``embedding_proj_layer``, and an absent ``lm_head`` is the input
    embedding (tied). Every weight must land (``strict``) or this raises.
    """
    import transformers

    if family not in ('colqwen2', 'colpali'):
        raise ValueError(f'transformers has no retrieval class for family {family!r}; use colqwen2 or colpali')
    if family == 'colqwen2':
        config = transformers.ColQwen2Config(vlm_config=model.config.to_dict(), embedding_dim=model.dim)
        native = transformers.ColQwen2ForRetrieval(config)
        backbone = {k: v for k, v in model.state_dict().items() if not k.startswith('custom_text_proj.')}
        native.vlm.model.load_state_dict(backbone, strict=True)
        native.vlm.lm_head.weight.data.copy_(native.vlm.model.language_model.embed_tokens.weight.data)
        out_processor = transformers.ColQwen2Processor(
            image_processor=processor.image_processor, tokenizer=processor.tokenizer,
            video_processor=getattr(processor, 'video_processor', None),
            visual_prompt_prefix=processor.visual_prompt_prefix, query_prefix=processor.query_prefix)
    else:
        config = transformers.ColPaliConfig(vlm_config=model.config.to_dict(), embedding_dim=model.dim)
        native = transformers.ColPaliForRetrieval(config)
        native.vlm.load_state_dict(model.model.state_dict(), strict=True)
        out_processor = transformers.ColPaliProcessor(
            image_processor=processor.image_processor, tokenizer=processor.tokenizer, query_prefix=processor.query_prefix)
    native.embedding_proj_layer.load_state_dict(model.custom_text_proj.state_dict(), strict=True)
    return native.eval(), out_processor
