"""Tiny, randomly initialised but architecturally real colpali-engine models, built offline.

No hub is needed: configs are written here, tokenizers are made from an explicit vocabulary (characters
or bytes, no merges), and the result is saved with ``save_pretrained`` so it loads back through the very
``ColX.from_pretrained(folder)`` path that real checkpoints take. Rankings from these models are
meaningless; shapes, dtypes, padding, batching and every code path are real.

    python -m lazyllm_colpali.models.tiny OUT_DIR --families colpali,colqwen2
"""
from __future__ import annotations

import argparse
import os
import string
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._compat import install_torchvision_shim

install_torchvision_shim()  # before anything imports transformers / colpali_engine

FAMILIES = ('colpali', 'colqwen2', 'colqwen2_5', 'colidefics3')
ModelAndProcessor = Tuple[Any, Any]

# Shared by every language backbone: 2 layers, hidden 64, head_dim 16 (so Qwen's mrope sections sum to 8).
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16)
# Characters with their own Gemma token; anything else falls back to <0xNN> byte tokens.
_CHARS = string.ascii_letters + string.digits + string.punctuation + ' \n'
_QWEN_SPECIAL = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|vision_start|>', '<|vision_end|>',
                 '<|image_pad|>', '<|video_pad|>']
_IDEFICS_SPECIAL = ['<|endoftext|>', '<|im_start|>', '<end_of_utterance>', '<fake_token_around_image>',
                    '<image>', '<global-img>'] + [f'<row_{r}_col_{c}>' for r in range(1, 7) for c in range(1, 7)]


def _char_vocab(special: List[str]) -> Dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(special)}
    for ch in _CHARS.replace(' ', '▁'):  # sentencepiece spells spaces as '▁'
        vocab.setdefault(ch, len(vocab))
    for byte in range(256):
        vocab.setdefault(f'<0x{byte:02X}>', len(vocab))
    return vocab


def _byte_vocab(special: List[str]) -> Dict[str, int]:
    # The 256-symbol byte-level alphabet covers any text, so no merges (and no training) are needed.
    from tokenizers import pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(special)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    return vocab


def _add_special(tokenizer: Any, tokens: List[str]) -> Any:
    from tokenizers import AddedToken

    tokenizer.add_special_tokens({'additional_special_tokens': [AddedToken(t, special=True) for t in tokens]})
    return tokenizer


def _randomise_projection(layer: Any) -> None:
    # colpali-engine zeroes the projection bias at init; with sdpa, left-padded query rows then give
    # 0/0 = NaN in the L2 norm. Trained checkpoints have a non-zero bias, so give it one.
    import torch

    if layer is None:   # single-vector (Bi*) models pool hidden states and have no projection
        return
    with torch.no_grad():
        layer.bias.normal_(std=0.02)


def _colpali(model_class: str = 'ColPali', processor_class: str = 'ColPaliProcessor') -> ModelAndProcessor:
    import colpali_engine.models as cm
    from transformers import GemmaTokenizer, PaliGemmaConfig, SiglipImageProcessor

    image_processor = SiglipImageProcessor(size={'height': 448, 'width': 448}, image_mean=[0.5] * 3,
                                           image_std=[0.5] * 3, resample=3)
    image_processor.image_seq_length = 1024  # (448/14)^2; PaliGemmaProcessor refuses an image processor without it
    tokenizer = GemmaTokenizer(vocab=_char_vocab(['<pad>', '<eos>', '<bos>', '<unk>', '<mask>']), merges=[])
    processor = getattr(cm, processor_class)(image_processor=image_processor, tokenizer=tokenizer)
    tokenizer = processor.tokenizer  # the processor adds <image> and 1152 <loc>/<seg> tokens: size the vocab after
    config = PaliGemmaConfig(
        vision_config=dict(model_type='siglip_vision_model', hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, image_size=448, patch_size=14,
                           projection_dim=64),
        text_config=dict(model_type='gemma', vocab_size=len(tokenizer), tie_word_embeddings=False, **_TEXT),
        image_token_index=tokenizer.convert_tokens_to_ids('<image>'), projection_dim=64, hidden_size=64,
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False)  # a tied, unused lm_head is left on the meta device when reloaded
    model = getattr(cm, model_class)(config)
    _randomise_projection(getattr(model, 'custom_text_proj', None))
    return model, processor


def _qwen_processor(processor_cls: Any) -> Any:
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = _add_special(Qwen2Tokenizer(vocab=_byte_vocab(_QWEN_SPECIAL), merges=[]), _QWEN_SPECIAL)
    grid = dict(patch_size=14, merge_size=2)
    # max_pixels keeps a page near 645 tokens, close to the real processors and fast on a CPU.
    image_processor = Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=768 * 28 * 28, **grid)
    # transformers v5's Qwen2VLProcessor raises TypeError without a video processor, even for images only.
    return processor_cls(image_processor=image_processor, tokenizer=tokenizer,
                         video_processor=Qwen2VLVideoProcessor(temporal_patch_size=2, **grid))


def _qwen_vision(version: str) -> Dict[str, Any]:
    grid = dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, num_heads=2)
    if version == '2':  # Qwen2-VL: embed_dim is the ViT width, hidden_size the merger's output (= text hidden)
        return dict(depth=1, embed_dim=32, hidden_size=64, **grid)
    # Qwen2.5-VL: two blocks so both windowed and full attention run.
    return dict(depth=2, hidden_size=32, intermediate_size=64, out_hidden_size=64, window_size=112,
                fullatt_block_indexes=[1], **grid)


def _colqwen(version: str, kind: str = 'col') -> ModelAndProcessor:
    """``kind``: 'col' (ColQwen2/2.5), 'bi' (BiQwen2/2.5, one vector per input) or 'vlm' (the plain
    Qwen2-VL generation model with its own processor, as DSE / gme checkpoints ship it)."""
    import colpali_engine.models as cm
    import transformers
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    classes = {('2', 'col'): (cm.ColQwen2, cm.ColQwen2Processor),
               ('2.5', 'col'): (cm.ColQwen2_5, cm.ColQwen2_5_Processor),
               ('2', 'bi'): (cm.BiQwen2, cm.BiQwen2Processor), ('2.5', 'bi'): (cm.BiQwen2_5, cm.BiQwen2_5_Processor),
               ('2', 'vlm'): (transformers.Qwen2VLForConditionalGeneration, transformers.Qwen2VLProcessor)}
    model_cls, processor_cls = classes[(version, kind)]
    config_cls = Qwen2VLConfig if version == '2' else Qwen2_5_VLConfig
    processor = _qwen_processor(processor_cls)
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    # mrope_section (temporal, height, width) must sum to head_dim / 2.
    text = dict(_TEXT, vocab_size=len(processor.tokenizer),
                rope_parameters={'rope_type': 'default', 'rope_theta': 1e6, 'mrope_section': [2, 3, 3]})
    config = config_cls(text_config=text, vision_config=_qwen_vision(version),
                        image_token_id=ids['<|image_pad|>'], video_token_id=ids['<|video_pad|>'],
                        vision_start_token_id=ids['<|vision_start|>'], vision_end_token_id=ids['<|vision_end|>'],
                        bos_token_id=ids['<|endoftext|>'], eos_token_id=ids['<|im_end|>'],
                        pad_token_id=ids['<|endoftext|>'])
    model = model_cls(config)
    _randomise_projection(getattr(model, 'custom_text_proj', None))
    return model, processor


def _idefics_tokenizer(special: List[str]) -> Any:
    from transformers import GPT2Tokenizer

    # SmolVLM ships a GPT2 (byte-level BPE) tokenizer with these special tokens.
    return _add_special(GPT2Tokenizer(vocab=_byte_vocab(special), merges=[], bos_token='<|im_start|>',
                                      eos_token='<end_of_utterance>', pad_token='<|endoftext|>',
                                      unk_token='<|endoftext|>'), special)


def _colidefics3(model_class: str = 'ColIdefics3', processor_class: str = 'ColIdefics3Processor') -> ModelAndProcessor:
    import colpali_engine.models as cm
    from transformers import Idefics3Config, Idefics3ImageProcessor

    tokenizer = _idefics_tokenizer(_IDEFICS_SPECIAL)
    # Pages are split into 512px tiles (plus a global view); each tile gives (512/16)^2 / 4^2 = 64 tokens.
    image_processor = Idefics3ImageProcessor(size={'longest_edge': 2048}, max_image_size={'longest_edge': 512},
                                             do_image_splitting=True)
    processor = getattr(cm, processor_class)(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=64)
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=512, patch_size=16),
        text_config=dict(model_type='llama', vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **_TEXT),
        image_token_id=tokenizer.convert_tokens_to_ids('<image>'), scale_factor=4,
        pad_token_id=tokenizer.pad_token_id)
    model = getattr(cm, model_class)(config)
    _randomise_projection(getattr(model, 'linear', None))  # ColIdefics3 names its projection 'linear'
    return model, processor


def _bimodernvbert() -> ModelAndProcessor:
    from colpali_engine.models import BiModernVBert, BiModernVBertProcessor
    from transformers import Idefics3ImageProcessor, ModernVBertConfig

    tokenizer = _idefics_tokenizer(_IDEFICS_SPECIAL + ['<|begin_of_text|>'])
    image_processor = Idefics3ImageProcessor(size={'longest_edge': 2048}, max_image_size={'longest_edge': 512},
                                             do_image_splitting=True)
    processor = BiModernVBertProcessor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=64)
    text = dict(model_type='modernbert', vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, global_attn_every_n_layers=2, local_attention=16,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, cls_token_id=tokenizer.bos_token_id,
                sep_token_id=tokenizer.eos_token_id)
    config = ModernVBertConfig(
        text_config=text, vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=512, patch_size=16),
        image_token_id=tokenizer.convert_tokens_to_ids('<image>'), pixel_shuffle_factor=4)
    return BiModernVBert(config), processor


_BUILDERS: Dict[str, Callable[[], ModelAndProcessor]] = {
    'colpali': _colpali,
    'colqwen2': lambda: _colqwen('2'),
    'colqwen2_5': lambda: _colqwen('2.5'),
    'colidefics3': _colidefics3,
    # single-vector (dense) families: colpali-engine's Bi* models, and a plain Qwen2-VL for DSE/gme pooling
    'bipali': lambda: _colpali('BiPali', 'ColPaliProcessor'),   # see models/dense.py on BiPaliProcessor
    'biqwen2': lambda: _colqwen('2', 'bi'),
    'biqwen2_5': lambda: _colqwen('2.5', 'bi'),
    'biidefics3': lambda: _colidefics3('BiIdefics3', 'BiIdefics3Processor'),
    'bimodernvbert': _bimodernvbert,
    'dse_qwen2': lambda: _colqwen('2', 'vlm'),
    'gme_qwen2': lambda: _colqwen('2', 'vlm'),   # the same architecture; the folder name picks gme's prompts
}
DENSE_FAMILIES = ('bipali', 'biqwen2', 'biqwen2_5', 'biidefics3', 'bimodernvbert', 'dse_qwen2', 'gme_qwen2')
FORMATS = ('colpali-engine', 'transformers')


def build_tiny_model(family: str, out_dir: str | os.PathLike, seed: int = 0, format: str = 'colpali-engine') -> Path:
    """Build a tiny random ``family`` model + processor, save it to ``out_dir`` (created) and return the path.

    Deterministic for a given seed; the caller's torch RNG state is left untouched. ``format='transformers'``
    (colpali, colqwen2) writes the same seed's weights in transformers' own layout (``ColPaliForRetrieval``,
    ``ColQwen2ForRetrieval``: the "-hf" checkpoints), so both folders must give the same embeddings.
    """
    import torch

    if family not in _BUILDERS:
        raise ValueError(f'unknown tiny model family {family!r}; choose from {", ".join(_BUILDERS)}')
    if format not in FORMATS:
        raise ValueError(f'unknown checkpoint format {format!r}; choose from {", ".join(FORMATS)}')
    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = _BUILDERS[family]()
    if format == 'transformers':
        from .hf_native import to_transformers_format

        model, processor = to_transformers_format(family, model, processor)
    out.mkdir(parents=True, exist_ok=True)
    from ..logging import quiet_transformers

    with quiet_transformers():   # no "Writing model shards" bar in a library call
        model.save_pretrained(out)  # safetensors
        processor.save_pretrained(out)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Build tiny random colpali-engine models offline.')
    parser.add_argument('out_dir', help='each family is written to OUT_DIR/<family>')
    parser.add_argument('--families', default=','.join(FAMILIES), help=f'comma-separated, from {",".join(FAMILIES)}')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--format', default='colpali-engine', choices=FORMATS)
    args = parser.parse_args(argv)
    for family in args.families.split(','):
        print(f'{family}: {build_tiny_model(family, Path(args.out_dir) / family, args.seed, args.format)}')


if __name__ == '__main__':
    main()
