"""Trainer callbacks: a tqdm bar with loss, lr, steps/s and ETA; collapse detection; the data-order log."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from .._compat import install_torchvision_shim

install_torchvision_shim()   # before transformers is imported (see _compat)

from transformers import TrainerCallback  # noqa: E402


def collapse_loss(loss: str, batch_size: int, in_batch_weight: float = 0.5) -> float:
    """The loss when every query scores every page the same (see docs/finetune.md): the value a collapsed
    run sits at with a zero gradient."""
    if loss == 'in-batch':
        return math.log(batch_size)
    if loss == 'negative-ce':
        return (1 - in_batch_weight) * math.log(2) + in_batch_weight * math.log(batch_size)
    return math.log(2)   # pairwise: softplus(0), with or without explicit negatives


class StepProgress(TrainerCallback):
    """One tqdm bar over optimizer steps (rate and ETA from tqdm) with the latest loss and learning rate."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc='Fine-tuning', unit='step',
                        disable=not self.enabled, dynamic_ncols=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The Trainer logs a step after on_step_end: the bar moves here, with that step's own loss.
        if self.bar is not None and logs and 'loss' in logs:
            self.bar.set_postfix(loss=f'{logs["loss"]:.4f}', lr=f'{logs.get("learning_rate", 0.0):.2e}',
                                 refresh=False)
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CollapseCallback(TrainerCallback):
    """Stops training when the loss sits at its all-pages-equal value with a vanishing gradient for
    ``patience`` logged steps: every query then scores every page the same and nothing more is learnt."""

    def __init__(self, collapsed_at: float, patience: int = 3, loss_tol: float = 1e-3, grad_tol: float = 1e-4):
        self.collapsed_at = collapsed_at
        self.patience = patience
        self.loss_tol = loss_tol
        self.grad_tol = grad_tol
        self.streak = 0
        self.detected: Optional[Dict[str, Any]] = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or 'loss' not in logs or 'grad_norm' not in logs:
            return
        flat = abs(logs['loss'] - self.collapsed_at) < self.loss_tol and float(logs['grad_norm']) < self.grad_tol
        self.streak = self.streak + 1 if flat else 0
        if self.streak >= self.patience:
            self.detected = {'step': state.global_step, 'loss': logs['loss'], 'grad_norm': float(logs['grad_norm']),
                             'collapse_loss': self.collapsed_at}
            control.should_training_stop = True


class DataOrderLog:
    """Which examples each optimizer step consumed, one JSON line per micro-batch, appended and flushed, so a
    resumed run can be compared with an uninterrupted one. Entries past the checkpoint a run resumes from
    (steps done after it and lost) are dropped when it resumes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self._lines() if json.loads(line)['step'] < step]
        tmp = self.path.with_suffix('.tmp')
        tmp.write_text(''.join(line + '\n' for line in kept))
        os.replace(tmp, self.path)

    def _lines(self) -> List[str]:
        out = []
        for line in self.path.read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:   # a line torn by kill -9
                continue
            out.append(line)
        return out

    def append(self, step: int, ids: List[int]) -> None:
        with open(self.path, 'a') as f:
            f.write(json.dumps({'step': step, 'ids': ids}) + '\n')

    def read(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self._lines()] if self.path.exists() else []
