"""Sizes of the full published architectures, as plain dicts (no imports), shared by bench_encode.py and
bench_gpu.py (which runs on a GPU machine with only torch and transformers). ``tiny=True`` shrinks them for
smoke runs."""
from __future__ import annotations

from typing import Dict, Tuple


def qwen2vl_2b(tiny: bool = False) -> Tuple[Dict, Dict]:
    """Qwen2-VL-2B (ColQwen2's backbone): ``(vision_config, text_config)`` keyword dicts."""
    vision = dict(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    text = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                num_key_value_heads=2, vocab_size=151936, rms_norm_eps=1e-6, max_position_embeddings=32768,
                rope_parameters={'rope_type': 'default', 'rope_theta': 1e6, 'mrope_section': [16, 24, 24]})
    if tiny:
        vision.update(depth=1, embed_dim=32, hidden_size=64, num_heads=2)
        text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2,
                    rope_parameters={'rope_type': 'default', 'rope_theta': 1e6, 'mrope_section': [2, 3, 3]})
    return vision, text
