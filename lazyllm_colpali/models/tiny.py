"""Tiny, randomly initialised but architecturally real colpali-engine models, built offline.

No hub is needed: configs are written here, tokenizers are made from an explicit vocabulary (characters
or bytes, no merges), and the result is saved with ``save_pretrained`` so it loads back through the very
``ColX.from_pretrained(folder)`` path that real checkpoints take. Rankings from these models are
meaningless; shapes, dtypes, padding, batching and every code path are real.

    python -m lazyllm_colpali.models.tiny OUT_DIR --families colpali,colqwen2
"""
from __future__ import annotations

import argparse
import string
from pathlib import Path
from typing import Callable, Dict, List

from .._compat import install_torchvision_shim

install_torchvision_shim()

FAMILIES = ('colpali', 'colqwen2', 'colqwen2_5', 'colidefics3')
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16)
# Characters with their own token; anything else falls back to bytes (Gemma) or is a byte already (Qwen, Llama).
_CHARS = string.ascii_letters + string.digits + string.punctuation + ' \n'


def _char_vocab(special: List[str]) -> Dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(special)}
    for ch in _CHARS.replace(' ', '▁'):
        vocab.setdefault(ch, len(vocab))
    for byte in range(256):
        vocab.setdefault(f'<0x{byte:02X}>', len(vocab))
    return vocab


def _byte_vocab(special: List[str]) -> Dict[str, int]:
    from tokenizers import pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(special)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    return vocab


def _randomise_projection(layer) -> None:
    # colpali-engine zeroes the projection bias at init; with sdpa, left-padded query rows then give
    # 0/0 = NaN in the L2 norm. Trained checkpoints have a non-zero bias, so give it one.
    import torch

    with torch.no_grad():
        layer.bias.normal_(std=0.02)


def _build_colpali(out: Path) -> None:
    from transformers import GemmaTokenizer, PaliGemmaConfig, SiglipImageProcessor

    from colpali_engine.models import ColPali, ColPaliProcessor

    tokenizer = GemmaTokenizer(vocab=_char_vocab(['<pad>', '<eos>', '<bos>', '<unk>', '<mask>']), merges=[])
    image_processor = SiglipImageProcessor(size={'height': 448, 'width': 448}, image_mean=[0.5] * 3,
                                           image_std=[0.5] * 3, resample=3)
    image_processor.image_seq_length = 1024  # PaliGemmaProcessor refuses an image processor without it
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
    tokenizer = processor.tokenizer  # the processor adds <image> and the <loc>/<seg> tokens
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
    model.save_pretrained(out)
    processor.save_pretrained(out)


_QWEN_SPECIAL = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|vision_start|>', '<|vision_end|>',
                 '<|image_pad|>', '<|video_pad|>']


def _build_colqwen(out: Path, version: str) -> None:
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    import colpali_engine.models as cm

    model_cls, processor_cls = (cm.ColQwen2, cm.ColQwen2Processor) if version == '2' else \
        (cm.ColQwen2_5, cm.ColQwen2_5_Processor)
    tokenizer = Qwen2Tokenizer(vocab=_byte_vocab(_QWEN_SPECIAL), merges=[])
    tokenizer.add_special_tokens({'additional_special_tokens': [AddedToken(t, special=True) for t in _QWEN_SPECIAL]})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    pixels = dict(min_pixels=4 * 28 * 28, max_pixels=768 * 28 * 28)  # ~700 page tokens, like the real processor
    processor = processor_cls(image_processor=Qwen2VLImageProcessor(patch_size=14, merge_size=2, **pixels),
                              tokenizer=tokenizer,
                              video_processor=Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2))
    text = dict(_TEXT, vocab_size=len(tokenizer), rope_parameters={'rope_type': 'default', 'rope_theta': 1e6,
                                                                   'mrope_section': [2, 3, 3]})
    vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    if version == '2':
        from transformers import Qwen2VLConfig as Config
    else:
        from transformers import Qwen2_5_VLConfig as Config

        vision = dict(depth=2, hidden_size=32, intermediate_size=64, out_hidden_size=64, num_heads=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[1])
    config = Config(text_config=text, vision_config=vision, image_token_id=ids['<|image_pad|>'],
                    video_token_id=ids['<|video_pad|>'], vision_start_token_id=ids['<|vision_start|>'],
                    vision_end_token_id=ids['<|vision_end|>'], bos_token_id=ids['<|endoftext|>'],
                    eos_token_id=ids['<|im_end|>'], pad_token_id=ids['<|endoftext|>'])
    model = model_cls(config)
    _randomise_projection(model.custom_text_proj)
    model.save_pretrained(out)
    processor.save_pretrained(out)


_IDEFICS_SPECIAL = ['<|endoftext|>', '<|im_start|>', '<end_of_utterance>', '<fake_token_around_image>', '<image>',
                    '<global-img>'] + [f'<row_{r}_col_{c}>' for r in range(1, 7) for c in range(1, 7)]


def _build_colidefics3(out: Path) -> None:
    from tokenizers import AddedToken
    from transformers import Idefics3Config, Idefics3ImageProcessor, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from colpali_engine.models import ColIdefics3, ColIdefics3Processor

    backend = Tokenizer(models.BPE(vocab=_byte_vocab(_IDEFICS_SPECIAL), merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token='<|im_start|>',
                                        eos_token='<end_of_utterance>', pad_token='<|endoftext|>',
                                        unk_token='<|endoftext|>')
    tokenizer.add_special_tokens({'additional_special_tokens': [AddedToken(t, special=True)
                                                                for t in _IDEFICS_SPECIAL]})
    image_processor = Idefics3ImageProcessor(size={'longest_edge': 2048}, max_image_size={'longest_edge': 512},
                                             do_image_splitting=True)
    processor = ColIdefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=64)
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=512, patch_size=16),
        text_config=dict(model_type='llama', vocab_size=len(tokenizer), **_TEXT,
                         pad_token_id=tokenizer.pad_token_id),
        image_token_id=tokenizer.convert_tokens_to_ids('<image>'), scale_factor=4, pad_token_id=tokenizer.pad_token_id)
    model = ColIdefics3(config)
    _randomise_projection(model.linear)
    model.save_pretrained(out)
    processor.save_pretrained(out)


_BUILDERS: Dict[str, Callable[[Path], None]] = {
    'colpali': _build_colpali,
    'colqwen2': lambda out: _build_colqwen(out, '2'),
    'colqwen2_5': lambda out: _build_colqwen(out, '2.5'),
    'colidefics3': _build_colidefics3,
}


def build_tiny_model(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a tiny random ``family`` model + processor into ``out_dir`` (deterministic for a seed)."""
    import torch

    if family not in _BUILDERS:
        raise ValueError(f'unknown tiny model family {family!r}; choose from {", ".join(FAMILIES)}')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _BUILDERS[family](out)
    return out


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description='Build tiny random colpali-engine models offline.')
    parser.add_argument('out_dir')
    parser.add_argument('--families', default=','.join(FAMILIES))
    args = parser.parse_args(argv)
    for family in args.families.split(','):
        print(f'{family}: {build_tiny_model(family, Path(args.out_dir) / family)}')


if __name__ == '__main__':
    main()
