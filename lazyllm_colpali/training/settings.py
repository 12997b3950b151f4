"""Every knob of a fine-tuning run, checked before anything loads."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import ColPaliError

LOSSES = ('auto', 'in-batch', 'pairwise', 'negative-ce')
DEFAULT_EPOCHS = 3
MIN_DEFAULT_STEPS = 100   # without --epochs/--steps: 3 epochs, but at least this many steps (small pair sets)


class FinetuneError(ColPaliError):
    """A fine-tuning run cannot start or cannot go on; the message says what to change."""


@dataclass
class FinetuneSettings:
    """What ``lazyllm-colpali finetune`` takes (see its ``--help``); paths may be strings."""

    model: str
    out: Path
    train: List[Path] = field(default_factory=list)   # pairs files (feedback exports are pairs files too)
    corpus: Optional[Path] = None                      # folder the pairs' page references are relative to
    val: Optional[Path] = None
    from_pdfs: Optional[Path] = None                   # make pairs from this folder's PDFs instead of --train
    val_fraction: float = 0.2                          # of the documents, with --from-pdfs
    queries_per_page: int = 2
    epochs: Optional[float] = None
    steps: Optional[int] = None
    lr: float = 5e-4
    batch_size: int = 8
    grad_accum: int = 1
    lora_r: int = 16
    lora_alpha: Optional[int] = None                   # default: = lora_r
    lora_dropout: float = 0.0
    hard_negatives: int = 0
    loss: str = 'auto'
    temperature: float = 0.02
    seed: int = 0
    resume: bool = False
    save_steps: int = 50
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    dpi: int = 144
    max_side: int = 2048
    device: str = 'auto'
    bf16: Optional[bool] = None                        # default: where the device has it (CUDA with bf16)
    gradient_checkpointing: Optional[bool] = None      # default: on GPUs (memory), off on CPUs (speed)
    merge: Optional[Path] = None
    family: Optional[str] = None
    keep_checkpoints: bool = False
    eval_batch_size: int = 4
    eval_steps: int = 0                                # held-out recall also every N steps (0: only at the ends)
    progress: bool = True
    vlm: Any = field(default=None, repr=False)         # a chat module: its page questions join --from-pdfs pairs

    def __post_init__(self) -> None:
        self.out = Path(self.out).expanduser()
        self.train = [Path(p).expanduser() for p in (self.train if isinstance(self.train, list) else [self.train])
                      if p]
        for name in ('corpus', 'val', 'from_pdfs', 'merge'):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value).expanduser())
        if self.lora_alpha is None:
            self.lora_alpha = self.lora_r

    def check(self) -> None:
        """Settings that are wrong on their own (files are checked by :func:`pairs.validate_pages`)."""
        if not self.model:
            raise FinetuneError('no base model: pass --model NAME_OR_FOLDER')
        if bool(self.train) == bool(self.from_pdfs):
            raise FinetuneError('give training pairs with --train pairs.jsonl, or --from-pdfs DIR to make them '
                                'from your PDFs (one of the two)')
        if self.from_pdfs is not None and not self.from_pdfs.is_dir():
            raise FinetuneError(f'--from-pdfs {self.from_pdfs}: not a folder')
        if self.corpus is not None and not self.corpus.is_dir():
            raise FinetuneError(f'--corpus {self.corpus}: not a folder')
        if self.epochs is not None and self.steps is not None:
            raise FinetuneError('--epochs and --steps both given; pass one')
        for name in ('batch_size', 'grad_accum', 'lora_r', 'lora_alpha', 'save_steps', 'dpi', 'eval_batch_size',
                     'queries_per_page'):
            if getattr(self, name) < 1:
                raise FinetuneError(f'--{name.replace("_", "-")} must be at least 1, got {getattr(self, name)}')
        for name in ('epochs', 'steps', 'lr', 'temperature'):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise FinetuneError(f'--{name} must be positive, got {value}')
        if self.hard_negatives < 0:
            raise FinetuneError(f'--hard-negatives must be 0 or more, got {self.hard_negatives}')
        if not 0 <= self.val_fraction < 1:
            raise FinetuneError(f'--val-fraction must be in [0, 1), got {self.val_fraction}')
        if not 0 <= self.lora_dropout < 1:
            raise FinetuneError(f'--lora-dropout must be in [0, 1), got {self.lora_dropout}')
        if self.loss not in LOSSES:
            raise FinetuneError(f'--loss must be one of {", ".join(LOSSES[1:])} (or auto), got {self.loss!r}')
        if self.hard_negatives and self.loss == 'in-batch':
            raise FinetuneError('--hard-negatives with --loss in-batch: that loss uses no explicit negatives; use '
                                '--loss negative-ce or pairwise (auto picks negative-ce)')
        if self.batch_size < 2 and self.loss in ('auto', 'in-batch', 'pairwise') and not self.hard_negatives:
            raise FinetuneError('--batch-size 1 leaves in-batch losses no other page to learn from; use 2 or more '
                                '(or --hard-negatives K with --loss negative-ce)')

    def record(self) -> Dict[str, Any]:
        """JSON-ready settings, for the run record and the report."""
        data = asdict(self)
        data.pop('vlm', None)
        return {k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if k == 'train' else v)
                for k, v in data.items()}
