"""The training set as colpali-engine's trainer wants it: examples ``{"query", "pos_target", "neg_target"}``
batched by its ``VisualRetrieverCollator``, plus the example ids (so a run can prove its data order) and the
inputs some families need only when training."""
from __future__ import annotations

import random
from typing import Any, Dict, List, Sequence

import torch
from torch.utils.data import Dataset

from .pages import PageImages
from .pairs import PageRef, TrainingPair


class PairDataset(Dataset):
    """Pairs with page images rendered on demand; every example has exactly ``n_negatives`` negatives (the
    collator stacks them), padded with other training pages when a pair has fewer."""

    def __init__(self, pairs: Sequence[TrainingPair], pages: PageImages, n_negatives: int = 0, seed: int = 0):
        self.pairs = list(pairs)
        self.pages = pages
        self.n_negatives = n_negatives
        self.negatives = [self._fill(i, seed) for i in range(len(self.pairs))] if n_negatives else []

    def _fill(self, index: int, seed: int) -> List[PageRef]:
        pair = self.pairs[index]
        chosen = list(dict.fromkeys(n for n in pair.negatives if n != pair.page))[:self.n_negatives]
        if len(chosen) < self.n_negatives:
            rng = random.Random(f'{seed}-{index}')   # fixed per example: a resumed run sees the same negatives
            others = sorted({p.page for p in self.pairs} - {pair.page} - set(chosen), key=str)
            rng.shuffle(others)
            chosen += others[:self.n_negatives - len(chosen)]
        if len(chosen) < self.n_negatives:
            raise ValueError(f'{self.n_negatives} negatives per pair need at least {self.n_negatives + 1} distinct '
                             f'pages in the training pairs; there are {len({p.page for p in self.pairs})}')
        return chosen

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        pair = self.pairs[index]
        example = {'query': pair.query, 'pos_target': self.pages[pair.page], 'example_id': index}
        if self.n_negatives:
            example['neg_target'] = [self.pages[ref] for ref in self.negatives[index]]
        return example


def family_inputs(family: str):
    """Inputs a family needs in training mode that its processor leaves out. PaliGemma (ColPali) refuses to
    train without ``token_type_ids``; all zeros give every token the bidirectional attention that inference
    (no token types) uses, so training and inference see the same attention pattern."""
    def prepare(batch: Dict[str, Any]) -> Dict[str, Any]:
        if family == 'colpali' and 'input_ids' in batch and 'token_type_ids' not in batch:
            batch['token_type_ids'] = torch.zeros_like(batch['input_ids'])
        return batch
    return prepare


class TrainingCollator:
    """colpali-engine's ``VisualRetrieverCollator`` (query augmentation tokens, padding, negatives stacked),
    with the example ids kept and each family's training inputs added."""

    def __init__(self, processor: Any, family: str):
        from colpali_engine.collators import VisualRetrieverCollator

        self.inner = VisualRetrieverCollator(processor=processor)
        self.family = family
        # ContrastiveTrainer reads the prefixes from its collator.
        self.query_prefix = self.inner.query_prefix
        self.pos_doc_prefix = self.inner.pos_doc_prefix
        self.neg_doc_prefix = self.inner.neg_doc_prefix

    def __call__(self, examples: List[Dict[str, Any]]) -> Dict[str, Any]:
        batch = self.inner(examples)
        for prefix in (self.pos_doc_prefix, self.neg_doc_prefix):
            # PaliGemma's processor adds language-model labels to pages; the retrieval loss never uses them
            batch.pop(f'{prefix}labels', None)
        if self.family == 'colpali':
            for prefix in (self.query_prefix, self.pos_doc_prefix, self.neg_doc_prefix):
                if f'{prefix}input_ids' in batch and f'{prefix}token_type_ids' not in batch:
                    batch[f'{prefix}token_type_ids'] = torch.zeros_like(batch[f'{prefix}input_ids'])
        batch['example_ids'] = torch.tensor([e['example_id'] for e in examples])
        return batch
