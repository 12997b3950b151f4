"""``lazyllm.finetune.ColPaliFinetune``: fine-tuning of ColPali-family retrievers as a LazyLLM finetune method.

Like LazyLLM's ``FlagembeddingFinetune``, it builds a command from its arguments (``lazyllm-colpali finetune``)
and hands it to a LazyLLM launcher, so the same call runs in this process's machine
(``launchers.empty``) or on a cluster (``launchers.remote``: slurm, sco, k8s, as LazyLLM is configured):

    import lazyllm
    from lazyllm_colpali.training.lazyllm_method import ColPaliFinetune   # registers lazyllm.finetune.colpalifinetune

    tune = ColPaliFinetune('vidore/colqwen2-base', './adapters/contracts', corpus='./pdfs', steps=500,
                           launcher=lazyllm.launchers.empty(sync=True))
    adapter = tune('pairs.jsonl', 'val.jsonl')     # the adapter folder, ready for --model / ColPaliEmbed(adapter)

The command always carries ``--resume``: when a launcher restarts a failed job, training continues from the
last checkpoint with the same data order instead of starting over.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from lazyllm import LazyLLMCMD, launchers
from lazyllm.components.finetune.base import LazyLLMFinetuneBase

from .run_folder import REPORT
from .settings import FinetuneError

# keyword -> CLI flag; booleans become bare flags
OPTIONS = ('corpus', 'epochs', 'steps', 'lr', 'batch_size', 'grad_accum', 'lora_r', 'lora_alpha', 'hard_negatives',
           'loss', 'seed', 'save_steps', 'merge', 'keep_checkpoints', 'family', 'device', 'dpi', 'val_fraction',
           'from_pdfs')


class ColPaliFinetune(LazyLLMFinetuneBase):
    """LoRA fine-tuning of a ColPali-family model (``base_model``: a name, folder or ``tiny:FAMILY``) into the
    adapter folder ``target_path``. Keywords are ``lazyllm-colpali finetune`` options (``steps=500``,
    ``hard_negatives=4``, ``corpus='./pdfs'``...); unknown ones are an error at once."""

    def __init__(self, base_model: str, target_path: str, *,
                 launcher: Any = launchers.remote(ngpus=1, sync=True), **kw: Any):  # noqa: B008 (LazyLLM idiom)
        unknown = sorted(set(kw) - set(OPTIONS))
        if unknown:
            raise FinetuneError(f'ColPaliFinetune: unknown option(s) {", ".join(unknown)}; known: {", ".join(OPTIONS)}')
        super().__init__(base_model, str(Path(target_path).expanduser().resolve()), launcher=launcher)
        self.kw: Dict[str, Any] = kw

    def cmd(self, trainset: Optional[str] = None, valset: Optional[str] = None) -> LazyLLMCMD:
        args = [sys.executable, '-m', 'lazyllm_colpali.cli', 'finetune', '--model', str(self.base_model),
                '--out', self.target_path, '--resume', '--no-progress']
        if trainset:
            args += ['--train', str(trainset)]
        elif 'from_pdfs' not in self.kw:
            raise FinetuneError('ColPaliFinetune needs a trainset (pairs.jsonl) or from_pdfs=FOLDER')
        if valset:
            args += ['--val', str(valset)]
        for key, value in self.kw.items():
            flag = '--' + key.replace('_', '-')
            if value is True:
                args.append(flag)
            elif value not in (None, False):
                args += [flag, str(value)]
        report = Path(self.target_path) / REPORT
        # checkf: LazyLLM restarts a job whose check fails; with --resume the restart goes on from a checkpoint.
        return LazyLLMCMD(shlex.join(args), return_value=self.target_path, checkf=lambda *_: report.is_file())

    def __call__(self, *args: Any, **kw: Any) -> str:
        result = super().__call__(*args, **kw)
        if getattr(self._launcher, 'sync', True) and not (Path(self.target_path) / REPORT).is_file():
            raise FinetuneError(f'fine-tuning into {self.target_path} did not finish; see the job\'s output above')
        return result
