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

    with torch.no_grad():
        layer.bias.normal_(std=0.02)


def _colpali() -> ModelAndProcessor:
    from colpali_engine.models import ColPali, ColPaliProcessor
    from transformers import GemmaTokenizer, PaliGemmaConfig, SiglipImageProcessor

    image_processor = SiglipImageProcessor(size={'height': 448, 'width': 448}, image_mean=[0.5] * 3,
                                           image_std=[0.5] * 3, resample=3)
    image_processor.image_seq_length = 1024  # (448/14)^2; PaliGemmaProcessor refuses an image processor without it
    tokenizer = GemmaTokenizer(vocab=_char_vocab(['<pad>', '<eos>', '<bos>', '<unk>', '<mask>']), merges=[])
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
    tokenizer = processor.tokenizer  # the processor adds <image> and 1152 <loc>/<seg> tokens: size the vocab after
    config = PaliGemmaConfig(
        vision_config=dict(model_type='siglip_vision_model', hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, image_size=448, patch_size=14,
                           projection_dim=64),
        text_config=dict(model_type='gemma', vocab_size=len(tokenizer), tie_word_embeddings=False, **_TEXT),
        image_token_index=tokenizer.convert_tokens_to_ids('<image>'), projection_dim=64, hidden_size=64,
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False)  # a tied, unused lm_head is left on the meta device when reloaded
    model = ColPali(config)
    _randomise_projection(model.custom_text_proj)
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


def _colqwen(version: str) -> ModelAndProcessor:
    import colpali_engine.models as cm
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    model_cls, processor_cls, config_cls = (cm.ColQwen2, cm.ColQwen2Processor, Qwen2VLConfig) if version == '2' \
        else (cm.ColQwen2_5, cm.ColQwen2_5_Processor, Qwen2_5_VLConfig)
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
    _randomise_projection(model.custom_text_proj)
    return model, processor


def _colidefics3() -> ModelAndProcessor:
    from colpali_engine.models import ColIdefics3, ColIdefics3Processor
    from transformers import GPT2Tokenizer, Idefics3Config, Idefics3ImageProcessor

    # SmolVLM ships a GPT2 (byte-level BPE) tokenizer with these special tokens.
    tokenizer = _add_special(GPT2Tokenizer(vocab=_byte_vocab(_IDEFICS_SPECIAL), merges=[], bos_token='<|im_start|>',
                                           eos_token='<end_of_utterance>', pad_token='<|endoftext|>',
                                           unk_token='<|endoftext|>'), _IDEFICS_SPECIAL)
    # Pages are split into 512px tiles (plus a global view); each tile gives (512/16)^2 / 4^2 = 64 tokens.
    image_processor = Idefics3ImageProcessor(size={'longest_edge': 2048}, max_image_size={'longest_edge': 512},
                                             do_image_splitting=True)
    processor = ColIdefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=64)
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=512, patch_size=16),
        text_config=dict(model_type='llama', vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **_TEXT),
        image_token_id=tokenizer.convert_tokens_to_ids('<image>'), scale_factor=4,
        pad_token_id=tokenizer.pad_token_id)
    model = ColIdefics3(config)
    _randomise_projection(model.linear)  # ColIdefics3 names its projection 'linear', not 'custom_text_proj'
    return model, processor


_BUILDERS: Dict[str, Callable[[], ModelAndProcessor]] = {
    'colpali': _colpali,
    'colqwen2': lambda: _colqwen('2'),
    'colqwen2_5': lambda: _colqwen('2.5'),
    'colidefics3': _colidefics3,
}


def build_tiny_model(family: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build a tiny random ``family`` model + processor, save it to ``out_dir`` (created) and return the path.

    Deterministic for a given seed; the caller's torch RNG state is left untouched.
    """
    import torch

    if family not in _BUILDERS:
        raise ValueError(f'unknown tiny model family {family!r}; choose from {", ".join(FAMILIES)}')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = _BUILDERS[family]()
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
    args = parser.parse_args(argv)
    for family in args.families.split(','):
        print(f'{family}: {build_tiny_model(family, Path(args.out_dir) / family, seed=args.seed)}')


if __name__ == '__main__':
    main()
