"""LoRA on a colpali-engine model the way the published checkpoints were trained: adapters on the language
model's attention and MLP projections (page tokens flow through it too), the vision tower frozen, and the
final projection head (``custom_text_proj``; ``linear`` in ColIdefics3) trained in full and saved with the
adapter."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

import torch

# The language-model projections every family's published LoRA config targets.
LM_PROJECTIONS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')
VISION_SCOPES = ('vision', 'visual')


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    init: str = 'gaussian'   # as colpali-engine's published configs


def projection_head(model: Any) -> str:
    """The name of the model's last projection: a Linear direct child of the model mapping to its ``dim``."""
    dim = getattr(model, 'dim', None)
    heads = [name for name, module in model.named_children()
             if isinstance(module, torch.nn.Linear) and (dim is None or module.out_features == dim)]
    if len(heads) != 1:
        raise ValueError(f'cannot tell the projection head of {type(model).__name__} (candidates: {heads})')
    return heads[0]


def lora_targets(model: Any) -> List[str]:
    """Full names of the language model's projection layers (no vision tower, no numeric names such as the
    ``0``/``2`` of a Sequential, which would also match whole vision blocks)."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        leaf = name.rsplit('.', 1)[-1]
        if leaf in LM_PROJECTIONS and not any(scope in name for scope in VISION_SCOPES):
            names.append(name)
    if not names:
        raise ValueError(f'{type(model).__name__} has no language-model projections ({", ".join(LM_PROJECTIONS)}) '
                         'to put LoRA adapters on')
    return names


def apply_lora(model: Any, settings: LoraSettings) -> Any:
    """Wrap ``model`` in a PEFT LoRA model: adapters on :func:`lora_targets`, the projection head trained."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=lora_targets(model), modules_to_save=[projection_head(model)],
                        init_lora_weights=settings.init, bias='none')
    return get_peft_model(model, config)


def trainable_parameters(model: Any) -> tuple:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
