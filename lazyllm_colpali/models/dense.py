"""Single-vector (dense) visual encoders: a page image or a query becomes ONE L2-normalised vector.

Two kinds of checkpoint, one contract:

- colpali-engine's bi-encoders (``BiPali``, ``BiQwen2``, ``BiQwen2_5``, ``BiIdefics3``, ``BiModernVBert``):
  the model pools its own hidden states (mean or last token) and normalises; their processors add the
  query prefix and augmentation tokens the models were trained with.
- DSE / gme-style last-token pooling of a plain Qwen2-VL checkpoint (``Qwen2VLForConditionalGeneration``
  folders such as ``MrLight/dse-qwen2-2b-mrl-v1`` or ``Alibaba-NLP/gme-Qwen2-VL-2B-Instruct``): the prompt
  ends with ``<|endoftext|>``, the tokenizer pads on the left, and the last position's final hidden state
  is the embedding. The prompts follow each model card (DSE: "What is shown in this image?" / "Query: ...";
  gme: a system instruction for queries); text-only query prompts (DSE's card adds a 1-pixel dummy image).

One vector per page is ~1000x fewer numbers than a ColPali page (one 1536-float row for Qwen2-VL-2B against
~1000 x 128 patches), so storing and searching it is an ordinary Milvus dense-vector search.

:class:`DenseEncoder` returns each embedding as a ``(1, dim)`` tensor, the multi-vector contract with one
row, so the visual arm's indexer, store and checks take a dense page unchanged.

>>> enc = DenseEncoder('tiny:biqwen2')            # a tiny random BiQwen2, built offline
>>> [tuple(v.shape) for v in enc.encode_queries(['revenue in 2023'])]
[(1, 64)]
>>> enc.family.name, enc.dim
('biqwen2', 64)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from PIL import Image

from ..errors import UnsupportedModelError
from .encoder import ColPaliEncoder
from .families import family_by_name, family_from_architectures, family_from_name

_QWEN_SYSTEM = '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'
_GME_QUERY_INSTRUCTION = "Find a screenshot that relevant to the user's question."


@dataclass(frozen=True)
class DenseFamily:
    name: str
    model_class: str                  # colpali_engine.models attribute, or a transformers class for 'last_token'
    processor_class: str
    architectures: Tuple[str, ...]    # config.json "architectures" of checkpoints of this family
    name_pattern: str                 # regex on hub / folder names when the config does not decide
    pooling: str = 'model'            # 'model': the Bi* model pools; 'last_token': DSE/gme pooling done here
    prompts: str = ''                 # 'dse' or 'gme' for last-token families


# More specific patterns first (biqwen2.5 before biqwen2; gme before the generic Qwen2-VL architecture).
DENSE_FAMILIES: Tuple[DenseFamily, ...] = (
    DenseFamily('biqwen2_5', 'BiQwen2_5', 'BiQwen2_5_Processor', ('BiQwen2_5',), r'biqwen2[._]?5'),
    DenseFamily('biqwen2', 'BiQwen2', 'BiQwen2Processor', ('BiQwen2',), r'biqwen2'),
    DenseFamily('biidefics3', 'BiIdefics3', 'BiIdefics3Processor', ('BiIdefics3',), r'biidefics3|bismol'),
    DenseFamily('bimodernvbert', 'BiModernVBert', 'BiModernVBertProcessor', ('BiModernVBert',), r'bimodernvbert'),
    # BiPaliProcessor(*args, **kwargs) hides its parts from transformers 5's ProcessorMixin (it loads with no
    # tokenizer); it only adds a scoring method to ColPaliProcessor, whose inputs are the same.
    DenseFamily('bipali', 'BiPali', 'ColPaliProcessor', ('BiPali',), r'bipali'),
    DenseFamily('gme_qwen2', 'Qwen2VLForConditionalGeneration', 'Qwen2VLProcessor', (), r'gme',
                pooling='last_token', prompts='gme'),
    DenseFamily('dse_qwen2', 'Qwen2VLForConditionalGeneration', 'Qwen2VLProcessor',
                ('Qwen2VLForConditionalGeneration', 'Qwen2VLModel'), r'dse', pooling='last_token', prompts='dse'),
)
DENSE_FAMILY_NAMES = tuple(f.name for f in DENSE_FAMILIES)


def get_dense_family(name: str) -> DenseFamily:
    return family_by_name(name, DENSE_FAMILIES, 'dense model family')


def is_dense_family(name: Optional[str]) -> bool:
    """Whether a family name (e.g. one a collection recorded) is a single-vector family."""
    return bool(name) and name.lower().replace('.', '_').replace('-', '_') in DENSE_FAMILY_NAMES


def detect_dense_family(name_or_path: str) -> DenseFamily:
    """The dense family of a folder (``config.json`` architectures, then the name) or a hub name."""
    folder = Path(name_or_path).expanduser()
    architectures: List[str] = []
    config = folder / 'config.json'
    if folder.is_dir() and config.is_file():
        architectures = list(json.loads(config.read_text()).get('architectures') or [])
    by_name = family_from_name(name_or_path, DENSE_FAMILIES)
    family = family_from_architectures(architectures, DENSE_FAMILIES)
    if family is not None:
        # a plain Qwen2-VL folder: its name says whether gme's or DSE's prompts apply
        return by_name if family.pooling == 'last_token' and by_name and by_name.pooling == 'last_token' else family
    if by_name and not architectures:
        return by_name
    found = f'config.json architectures {architectures}' if architectures else 'no config.json architectures'
    raise UnsupportedModelError(
        f'{name_or_path!r} is not a known single-vector (dense) model ({found}); the dense arm loads '
        f'colpali-engine Bi* checkpoints ({", ".join(f.model_class for f in DENSE_FAMILIES if f.pooling == "model")}) '
        f'and Qwen2-VL checkpoints with DSE/gme last-token pooling; pass --dense-family one of '
        f'{", ".join(DENSE_FAMILY_NAMES)}')


class DenseEncoder(ColPaliEncoder):
    """Loads a single-vector visual encoder and embeds pages and queries, one vector each.

    :class:`~lazyllm_colpali.models.encoder.ColPaliEncoder`'s constructor, loading, query cache and
    ``encode_images`` / ``encode_queries`` contract, each result a ``(1, dim)`` float32 tensor.
    """

    def __init__(self, model: str, **kwargs):
        kwargs.pop('pool_factor', None)   # one vector per page: nothing to pool
        super().__init__(model, **kwargs)
        self._dim: Optional[int] = None

    def _load_native(self, source: str, kwargs: dict, local_only: bool):
        return None   # transformers' retrieval classes are multi-vector: a dense folder is a Bi* or Qwen2-VL one

    def _family_of(self, source: str):
        family = get_dense_family(self.family_name) if self.family_name else detect_dense_family(source)
        if family.pooling == 'last_token':
            import transformers as module
        else:
            import colpali_engine.models as module
        return family, module

    def _load(self) -> None:
        super()._load()
        if self._family.pooling == 'last_token':
            self._processor.tokenizer.padding_side = 'left'   # the last position is every sequence's last token

    @property
    def dim(self) -> int:
        if self._dim is None:   # Bi* models have no ``dim``: it is the pooled hidden size, read off one probe
            self._dim = int(self.encode_queries(['dim'])[0].shape[1])
        return self._dim

    # -- inputs and pooling per family -----------------------------------------------------------------
    def _process_images(self, images: List[Image.Image]):
        family = self.family
        if family.pooling == 'model':
            return self.processor.process_images(images)
        ask = 'What is shown in this image?' if family.prompts == 'dse' else ''
        prompt = (f'{_QWEN_SYSTEM}<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{ask}<|im_end|>\n'
                  f'<|im_start|>assistant\n<|endoftext|>')
        return self.processor(text=[prompt] * len(images), images=[i.convert('RGB') for i in images],
                              padding='longest', return_tensors='pt')

    def _process_queries(self, queries: List[str]):
        family = self.family
        if family.pooling == 'model':
            return self.processor.process_queries(queries)
        if family.prompts == 'gme':
            system, text = f'<|im_start|>system\n{_GME_QUERY_INSTRUCTION}<|im_end|>\n', '{}'
        else:
            system, text = _QWEN_SYSTEM, 'Query: {}'
        prompts = [f'{system}<|im_start|>user\n{text.format(q)}<|im_end|>\n<|im_start|>assistant\n<|endoftext|>'
                   for q in queries]
        return self.processor(text=prompts, padding='longest', return_tensors='pt')

    def _outputs(self, batch) -> List[torch.Tensor]:
        if self.family.pooling == 'model':
            vectors = self.model(**batch)   # the Bi* model pools and normalises
        else:
            backbone = getattr(self.model, 'model', self.model)   # *ForConditionalGeneration wraps Qwen2VLModel
            hidden = backbone(**batch, use_cache=False, return_dict=True).last_hidden_state
            vectors = torch.nn.functional.normalize(hidden[:, -1].float(), dim=-1)   # left padding: the last token
        return [v.float().cpu().reshape(1, -1) for v in vectors]
