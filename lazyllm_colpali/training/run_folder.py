"""The output folder of a fine-tuning run and what makes it resumable.

    OUT/run.json                 base model, family, settings and data fingerprints (written first)
    OUT/pairs/train.jsonl        the pairs actually trained on (mined negatives and --from-pdfs pairs included)
    OUT/pairs/val.jsonl
    OUT/checkpoints/checkpoint-N the Trainer's checkpoints (adapter, optimizer, scheduler, RNG, state)
    OUT/checkpoints/data_order.jsonl, before.json
    OUT/adapter_config.json ...  the adapter and its processor (when training finished)
    OUT/finetune_report.json     written last: its presence means the adapter is complete

A checkpoint is complete once ``trainer_state.json`` (the Trainer writes it last) parses, names the
checkpoint's step, and the adapter and optimizer files it resumes from read; one cut short by ``kill -9`` or
damaged on disk afterwards is removed on ``--resume`` and the previous one is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from .settings import FinetuneError, FinetuneSettings

REPORT = 'finetune_report.json'
RUN = 'run.json'
# Settings that fix the data order and the optimisation: a resume with other values is not a resume.
RESUME_KEYS = ('batch_size', 'grad_accum', 'seed', 'lr', 'loss', 'hard_negatives', 'lora_r', 'lora_alpha',
               'temperature', 'epochs', 'steps', 'from_pdfs', 'val_fraction', 'queries_per_page', 'dpi')


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_json_atomic(path: Path, data: Any) -> Path:
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding='utf-8')
    with open(tmp, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


class RunFolder:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.pairs = self.out / 'pairs'
        self.checkpoints = self.out / 'checkpoints'
        self.discarded: List[str] = []   # checkpoints removed as incomplete or damaged, with the reason

    @property
    def report_file(self) -> Path:
        return self.out / REPORT

    @property
    def run_file(self) -> Path:
        return self.out / RUN

    def previous_run(self) -> Optional[Dict[str, Any]]:
        try:
            return json.loads(self.run_file.read_text(encoding='utf-8'))
        except (OSError, ValueError):
            return None

    def check(self, settings: FinetuneSettings) -> None:
        """What the folder allows, before anything loads: a new run needs a new or empty folder."""
        if self.report_file.exists():
            raise FinetuneError(f'{self.out} already holds a finished adapter ({REPORT}); pass another --out')
        if self.out.exists() and not self.out.is_dir():
            raise FinetuneError(f'--out {self.out} is a file; give a folder')
        if not settings.resume:
            if self.previous_run() is not None or self.checkpoints.exists():
                raise FinetuneError(f'{self.out} holds an unfinished run: pass --resume to continue it from its last '
                                    'checkpoint, or another --out')
            if self.out.exists() and any(self.out.iterdir()):
                raise FinetuneError(f'--out {self.out} is a folder that is not empty; give a new or empty folder')

    def prepare(self, settings: FinetuneSettings, run_record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Compare a resumed run with the earlier one (model, settings, data), then record this one."""
        self.check(settings)
        previous = self.previous_run()
        if settings.resume and previous is not None:
            self._check_same_run(previous, run_record)
        self.pairs.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        if previous is None:
            write_json_atomic(self.run_file, run_record)
        return previous

    def _check_same_run(self, previous: Dict[str, Any], current: Dict[str, Any]) -> None:
        if previous.get('family') != current.get('family'):
            raise FinetuneError(f'{self.out} was trained from a {previous.get("family")} model '
                                f'({previous.get("base_model")!r}), not {current.get("family")} '
                                f'({current.get("base_model")!r}): the model and the checkpoint do not fit; '
                                f'pass --model {previous.get("base_model")} or another --out')
        if previous.get('base_fingerprint') != current.get('base_fingerprint'):
            raise FinetuneError(f'{self.out} was trained from {previous.get("base_model")!r}, which is not the '
                                f'model {current.get("base_model")!r} given now; pass the same --model to resume')
        changed = [k for k in RESUME_KEYS if previous['settings'].get(k) != current['settings'].get(k)]
        if changed:
            listed = ', '.join(f'--{k.replace("_", "-")} {previous["settings"].get(k)} (now '
                               f'{current["settings"].get(k)})' for k in changed)
            raise FinetuneError(f'cannot resume {self.out} with other settings: {listed}; resuming keeps the run\'s '
                                'data order and optimiser, so pass the same values or another --out')
        if previous.get('inputs') != current.get('inputs'):
            raise FinetuneError(f'the training pairs changed since {self.out} started (the files hash differently '
                                'now); resume with the same files, or start a new run with another --out')

    def valid_checkpoints(self) -> List[Path]:
        """Complete checkpoints, oldest first. Incomplete ones (cut short by a crash) and damaged ones (an
        adapter file whose header does not read, a missing optimizer state) are removed and remembered in
        ``self.discarded`` so the report can name them; the previous complete one is used."""
        found = []
        for folder in self.checkpoints.glob('checkpoint-*'):
            suffix = folder.name.rsplit('-', 1)[-1]
            if not folder.is_dir() or not suffix.isdigit():
                continue
            problem = checkpoint_problem(folder, int(suffix))
            if problem is None:
                found.append(folder)
            else:
                self.discarded.append(f'{folder.name}: {problem}')
                shutil.rmtree(folder, ignore_errors=True)
        return sorted(found, key=lambda f: int(f.name.rsplit('-', 1)[-1]))

    def last_checkpoint(self) -> Optional[Path]:
        valid = self.valid_checkpoints()
        return valid[-1] if valid else None

    def publish(self, staged: Path) -> None:
        """Move a fully written adapter folder's files into OUT (each move atomic); the report comes after."""
        for item in sorted(staged.iterdir()):
            target = self.out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        shutil.rmtree(staged, ignore_errors=True)


def checkpoint_problem(folder: Path, step: int) -> Optional[str]:
    """Why a Trainer checkpoint cannot be resumed from, or None. Reads only the state file and the adapter
    file's header (safetensors' own reader), so checking is cheap at any model size."""
    try:
        state = json.loads((folder / 'trainer_state.json').read_text())
    except (OSError, ValueError):
        return 'no readable trainer_state.json (cut short while saving)'
    if state.get('global_step') != step:
        return f'trainer_state.json says step {state.get("global_step")}, not {step}'
    safetensors_file = folder / 'adapter_model.safetensors'
    if safetensors_file.is_file():
        from safetensors import safe_open
        try:
            with safe_open(str(safetensors_file), framework='pt') as f:
                f.keys()
        except Exception as e:   # safetensors raises its own error type for torn or rotten headers
            return f'adapter_model.safetensors does not read ({e})'
    elif not (folder / 'adapter_model.bin').is_file():
        return 'no adapter file'
    optimizer = folder / 'optimizer.pt'
    if not optimizer.is_file() or optimizer.stat().st_size == 0:
        return 'no optimizer state'
    return None
