"""``finetune(settings)``: LoRA fine-tuning of a ColPali-family retriever on query-page pairs with
colpali-engine's own trainer (``ContrastiveTrainer``), collator and late-interaction losses.

The run is checked before any model loads (settings, every pair's file and page), checkpoints every
``save_steps`` optimizer steps, resumes with the same data order (also after ``kill -9``), stops and says so
when the loss collapses (every query scoring every page the same), and ends with an adapter folder plus a
JSON report (loss curve, held-out Recall@1/5 before and after, time, steps/s, peak memory).
"""
from __future__ import annotations

import hashlib
import json
import math
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .. import models  # noqa: F401  (installs the torchvision shim before transformers loads)
from ..logging import LOG
from .callbacks import CollapseCallback, DataOrderLog, StepProgress, collapse_loss
from .data import PairDataset, TrainingCollator, family_inputs
from .evaluate import recall_at_k
from .lora import LoraSettings, apply_lora, trainable_parameters
from .pages import PageImages
from .pairs import TrainingPair, read_pairs, validate_pages, write_pairs
from .run_folder import RunFolder, file_sha256, write_json_atomic
from .settings import DEFAULT_EPOCHS, MIN_DEFAULT_STEPS, FinetuneError, FinetuneSettings


def _loss_function(name: str, n_negatives: int, temperature: float):
    from colpali_engine.loss.late_interaction_losses import (ColbertLoss, ColbertNegativeCELoss,
                                                             ColbertPairwiseCELoss, ColbertPairwiseNegativeCELoss)

    if name == 'in-batch':
        return ColbertLoss(temperature=temperature)
    if name == 'negative-ce':
        return ColbertNegativeCELoss(temperature=temperature)
    # Pairwise softplus on (best negative - positive): colpali-engine uses temperature 1 for the in-batch form.
    return ColbertPairwiseNegativeCELoss(temperature=temperature) if n_negatives else ColbertPairwiseCELoss()


def _resolve_loss(settings: FinetuneSettings, n_negatives: int) -> str:
    if settings.loss == 'auto':
        return 'negative-ce' if n_negatives else 'in-batch'
    if settings.loss == 'negative-ce' and not n_negatives:
        raise FinetuneError('--loss negative-ce needs negatives: pass --hard-negatives K, or pairs with "negatives"')
    return settings.loss


def _device(settings: FinetuneSettings) -> Tuple[str, bool, bool]:
    from ..models.encoder import pick_device

    device = pick_device(settings.device)
    cuda = device.startswith('cuda')
    bf16 = settings.bf16 if settings.bf16 is not None else (cuda and torch.cuda.is_bf16_supported())
    checkpointing = settings.gradient_checkpointing if settings.gradient_checkpointing is not None else cuda
    return device, bool(bf16), bool(checkpointing)


def _base_name(model: str, source: str) -> str:
    """How the adapter names its base: as given for hub and ``tiny:`` names, absolute for local folders."""
    from ..models.adapters import adapter_base, is_adapter_folder

    if is_adapter_folder(source):
        return adapter_base(source)
    return model if model.startswith('tiny:') or not Path(source).is_dir() else str(Path(source).resolve())


def _inputs_record(settings: FinetuneSettings) -> Dict[str, str]:
    files = list(settings.train) + ([settings.val] if settings.val else [])
    return {str(f): file_sha256(f) for f in files if f.is_file()}


def load_pairs(settings: FinetuneSettings, run: RunFolder,
               resuming: bool) -> Tuple[List[TrainingPair], List[TrainingPair], Optional[Path], Dict[str, Any]]:
    """The training and validation pairs and the corpus folder; all pages checked before any model loads."""
    train_file, val_file = run.pairs / 'train.jsonl', run.pairs / 'val.jsonl'
    note: Dict[str, Any] = {}
    if settings.from_pdfs is not None:
        corpus = settings.from_pdfs
        if resuming and train_file.exists():
            train, val = read_pairs(train_file), read_pairs(val_file) if val_file.exists() else []
        else:
            from .pseudo_queries import pairs_from_pdfs

            made = pairs_from_pdfs(corpus, val_fraction=settings.val_fraction, seed=settings.seed,
                                   per_page=settings.queries_per_page, vlm=settings.vlm,
                                   progress=settings.progress)
            train, val = made.train, made.val
            note = made.summary()
            LOG.info(made.describe())
    else:
        corpus = settings.corpus
        train = [p for f in settings.train for p in read_pairs(f)]
        val = read_pairs(settings.val) if settings.val else []
        if resuming and train_file.exists():   # mined negatives of the interrupted run
            train = read_pairs(train_file)
    validate_pages(train + val, corpus)
    return train, val, corpus, note


def _load_model(settings: FinetuneSettings, device: str, bf16: bool, checkpointing: bool):
    import colpali_engine.models as cm

    from ..models.adapters import adapter_base, is_adapter_folder, load_adapted_model
    from ..models.encoder import check_family, load_processor
    from ..models.loading import resolve_model

    source, local_only = resolve_model(settings.model)
    family = check_family(source, settings.family)
    model_class = getattr(cm, family.model_class)
    dtype = torch.bfloat16 if bf16 else torch.float32
    if is_adapter_folder(source):   # go on training an adapter
        base_source, base_local = resolve_model(adapter_base(source))
        model = load_adapted_model(model_class, base_source, source, trainable=True, torch_dtype=dtype,
                                   local_files_only=base_local)
    else:
        model = model_class.from_pretrained(source, torch_dtype=dtype, local_files_only=local_only)
        if checkpointing:
            model.enable_input_require_grads()   # LoRA on a frozen embedding: checkpointed blocks need a grad input
        model = apply_lora(model, LoraSettings(r=settings.lora_r, alpha=settings.lora_alpha,
                                               dropout=settings.lora_dropout))
    processor = load_processor(family, source, local_only)
    return model.to(device), processor, family, source


def _base_fingerprint(model: Any) -> str:
    base = model.get_base_model() if hasattr(model, 'get_base_model') else model
    config = base.config.to_json_string(use_diff=False)
    lines = [line for line in config.splitlines() if '_name_or_path' not in line and 'dtype' not in line
             and 'transformers_version' not in line]
    return hashlib.sha256('\n'.join(lines).encode()).hexdigest()[:16]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RecallCurve:
    """Held-out recall every ``every`` steps (a learning curve against compute: how soon a run is good enough).
    ``cpu_s`` is the process's CPU time at that point without the time these measurements took."""

    def __init__(self, every: int, measure):
        from transformers import TrainerCallback

        self.points: List[Dict[str, Any]] = []
        self.measuring_cpu_s = 0.0
        curve = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if every and state.global_step % every == 0:
                    start = _cpu_seconds()
                    point = {'step': state.global_step, 'cpu_s': start - curve.measuring_cpu_s, **measure()}
                    curve.measuring_cpu_s += _cpu_seconds() - start
                    curve.points.append(point)
        self.callback = Callback()


class _ColPaliTrainer:
    """Built lazily: ContrastiveTrainer imports datasets and accelerate."""

    @staticmethod
    def make(order_log: DataOrderLog, **kwargs):
        from colpali_engine.trainer.contrastive_trainer import ContrastiveTrainer

        class ColPaliTrainer(ContrastiveTrainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                ids = inputs.pop('example_ids', None)
                if ids is not None and model.training:
                    order_log.append(self.state.global_step, ids.tolist())
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        return ColPaliTrainer(**kwargs)


def _validation_loss(trainer: Any, collator: TrainingCollator, dataset: PairDataset, batch_size: int,
                     device: str) -> Optional[float]:
    if len(dataset) < 2:
        return None
    model = trainer.model
    was_training = model.training
    model.eval()
    losses = []
    try:
        with torch.no_grad():
            for start in range(0, len(dataset) - 1, batch_size):
                examples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                if len(examples) < 2:
                    break
                batch = {k: v.to(device) if hasattr(v, 'to') else v for k, v in collator(examples).items()}
                losses.append(float(trainer.compute_loss(model, batch)))
    finally:
        model.train(was_training)
    return sum(losses) / len(losses) if losses else None


def _evaluate(trainer, model, processor, pages, val, val_set, collator, settings, family, device,
              n_negatives: int) -> Dict[str, Any]:
    if not val:
        return {}
    result: Dict[str, Any] = recall_at_k(model, processor, pages, val, batch_size=settings.eval_batch_size,
                                         prepare=family_inputs(family.name), device=device)
    # the training loss on held-out pairs (not when they name too few pages for the negatives it needs)
    result['loss'] = _validation_loss(trainer, collator, val_set, settings.batch_size, device) \
        if val_set.n_negatives == n_negatives else None
    return result


def _steps(settings: FinetuneSettings, n_train: int) -> Tuple[int, int]:
    per_step = settings.batch_size * settings.grad_accum
    steps_per_epoch = n_train // per_step
    if steps_per_epoch == 0:
        raise FinetuneError(f'{n_train} training pairs do not fill one step of --batch-size {settings.batch_size} x '
                            f'--grad-accum {settings.grad_accum}; add pairs or lower the batch size')
    if settings.steps:
        return settings.steps, steps_per_epoch
    if settings.epochs:
        return max(1, math.ceil(settings.epochs * steps_per_epoch)), steps_per_epoch
    return max(DEFAULT_EPOCHS * steps_per_epoch, MIN_DEFAULT_STEPS), steps_per_epoch


def _training_arguments(settings: FinetuneSettings, run: RunFolder, max_steps: int, device: str, bf16: bool,
                        checkpointing: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(run.checkpoints), per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, learning_rate=settings.lr, max_steps=max_steps,
        lr_scheduler_type='linear', warmup_steps=settings.warmup_ratio, weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm, logging_steps=1, save_strategy='steps', save_steps=settings.save_steps,
        save_total_limit=2, seed=settings.seed, data_seed=settings.seed, bf16=bf16,
        gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs={'use_reentrant': False},
        report_to=[], disable_tqdm=True, dataloader_drop_last=True, dataloader_num_workers=0,
        dataloader_pin_memory=device.startswith('cuda'), remove_unused_columns=False, use_cpu=device == 'cpu',
        log_level='error')


def _peak_memory(device: str) -> Dict[str, float]:
    peak = {'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith('cuda'):
        peak['peak_gpu_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
    return peak


def _mine(settings, run, train, corpus, pages, device) -> Tuple[List[TrainingPair], Dict[str, Any]]:
    from .negatives import mine_hard_negatives

    mined, stats = mine_hard_negatives(settings.model, train, corpus, settings.hard_negatives, pages,
                                       workdir=run.out / 'mining', device=device, family=settings.family,
                                       progress=settings.progress)
    write_pairs(run.pairs / 'train.jsonl', mined)
    return mined, stats


def finetune(settings: FinetuneSettings) -> Dict[str, Any]:
    """Train a LoRA adapter into ``settings.out``; returns the report (also written as ``finetune_report.json``).
    Raises :class:`FinetuneError` (bad settings, data, a collapsed run) naming what to change."""
    started = time.perf_counter()
    settings.check()
    run = RunFolder(settings.out)
    if settings.resume and run.report_file.exists():
        LOG.info(f'{settings.out} is already finished; nothing to resume')
        return json.loads(run.report_file.read_text())
    run.check(settings)
    resuming = settings.resume and run.previous_run() is not None
    train, val, corpus, data_note = load_pairs(settings, run, resuming)
    device, bf16, checkpointing = _device(settings)
    model, processor, family, source = _load_model(settings, device, bf16, checkpointing)
    record = {'base_model': _base_name(settings.model, source), 'family': family.name,
              'base_fingerprint': _base_fingerprint(model), 'settings': settings.record(),
              'inputs': _inputs_record(settings)}
    run.prepare(settings, record)
    pages = PageImages(corpus, dpi=settings.dpi, max_side=settings.max_side)
    mining: Dict[str, Any] = {}
    if settings.hard_negatives and not (resuming and (run.pairs / 'train.jsonl').exists()):
        train, mining = _mine(settings, run, train, corpus, pages, device)
    write_pairs(run.pairs / 'train.jsonl', train)
    if val:
        write_pairs(run.pairs / 'val.jsonl', val)
    n_negatives = settings.hard_negatives or max((len(p.negatives) for p in train), default=0)
    loss_name = _resolve_loss(settings, n_negatives)
    n_negatives = n_negatives if loss_name != 'in-batch' else 0
    train_set = PairDataset(train, pages, n_negatives, settings.seed)
    val_set = PairDataset(val, pages, min(n_negatives, max(0, len({p.page for p in val}) - 1)), settings.seed)
    max_steps, steps_per_epoch = _steps(settings, len(train_set))
    collator = TrainingCollator(processor, family.name)
    order_log = DataOrderLog(run.checkpoints / 'data_order.jsonl')
    checkpoint = run.last_checkpoint() if settings.resume else None
    resumed_from = int(checkpoint.name.rsplit('-', 1)[-1]) if checkpoint else None
    order_log.truncate_after(resumed_from or 0)
    progress = StepProgress(settings.progress)
    collapse = CollapseCallback(collapse_loss(loss_name, settings.batch_size))
    curve = RecallCurve(settings.eval_steps if val else 0,
                        lambda: recall_at_k(model, processor, pages, val, batch_size=settings.eval_batch_size,
                                            prepare=family_inputs(family.name), device=device))
    trainer = _ColPaliTrainer.make(
        order_log, model=model, args=_training_arguments(settings, run, max_steps, device, bf16, checkpointing),
        train_dataset=train_set, eval_dataset=None, data_collator=collator,
        loss_func=_loss_function(loss_name, n_negatives, settings.temperature), is_vision_model=True,
        callbacks=[progress, collapse, curve.callback])
    from transformers import PrinterCallback
    trainer.remove_callback(PrinterCallback)   # it prints every log dict; StepProgress shows them on one bar
    before_file = run.checkpoints / 'before.json'
    if before_file.exists():
        before = json.loads(before_file.read_text())
    else:
        before = _evaluate(trainer, model, processor, pages, val, val_set, collator, settings, family, device,
                           n_negatives)
        write_json_atomic(before_file, before)
    train_started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - train_started
    history = [(h['step'], h['loss']) for h in trainer.state.log_history if 'loss' in h]
    steps_this_run = trainer.state.global_step - (resumed_from or 0)
    report: Dict[str, Any] = {
        'status': 'collapsed' if collapse.detected else 'finished', 'base_model': record['base_model'],
        'family': family.name, 'adapter': str(run.out), 'device': device, 'bf16': bf16,
        'gradient_checkpointing': checkpointing, 'loss': loss_name, 'negatives_per_pair': n_negatives,
        'pairs': {'train': len(train), 'val': len(val), 'train_pages': len({p.page for p in train}),
                  'val_pages': len({p.page for p in val}),
                  'val_pages_also_in_train': len({p.page for p in val} & {p.page for p in train}), **data_note},
        'mining': mining, 'steps': trainer.state.global_step, 'steps_per_epoch': steps_per_epoch,
        'epochs': trainer.state.global_step / steps_per_epoch, 'resumed_from_step': resumed_from,
        'discarded_checkpoints': run.discarded,
        'loss_curve': history, 'train_loss_first': history[0][1] if history else None,
        'train_loss_last': history[-1][1] if history else None,
        'val_before': before, 'val_curve': curve.points, 'val_curve_cpu_s': curve.measuring_cpu_s,
        'seconds_training': train_seconds,
        'steps_per_second': steps_this_run / train_seconds if train_seconds and steps_this_run else None,
        'trainable_parameters': trainable_parameters(model)[0], 'total_parameters': trainable_parameters(model)[1],
        'data_order_sha256': hashlib.sha256(json.dumps(order_log.read()).encode()).hexdigest(),
        'settings': settings.record()}
    if collapse.detected:
        report.update(collapse=collapse.detected, seconds=time.perf_counter() - started, **_peak_memory(device))
        write_json_atomic(run.out / 'collapsed_report.json', report)
        raise FinetuneError(
            f'training collapsed at step {collapse.detected["step"]}: the loss sits at {collapse.detected["loss"]:.4f}'
            f' (= its value when every query scores every page the same) with a vanishing gradient '
            f'({collapse.detected["grad_norm"]:.1e}), so nothing more can be learnt. Lower --lr (now {settings.lr}),'
            f' or train on pages that differ more; no adapter was written (details: '
            f'{run.out / "collapsed_report.json"})')
    report['val_after'] = _evaluate(trainer, model, processor, pages, val, val_set, collator, settings, family,
                                    device, n_negatives)
    _save_adapter(model, processor, run, record['base_model'])
    if settings.merge is not None:
        report['merged'] = str(merge_adapter(run.out, settings.merge, model=model, processor=processor))
    shutil.copy2(order_log.path, run.out / 'data_order.jsonl')
    if not settings.keep_checkpoints:
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    report.update(seconds=time.perf_counter() - started, **_peak_memory(device))
    write_json_atomic(run.report_file, report)
    return report


def _save_adapter(model: Any, processor: Any, run: RunFolder, base_name: str) -> None:
    staged = run.out / '.adapter.tmp'
    shutil.rmtree(staged, ignore_errors=True)
    for config in model.peft_config.values():   # name the base the way --model takes it
        config.base_model_name_or_path = base_name
    model.save_pretrained(str(staged), save_embedding_layers=False)   # LoRA never touches the embeddings
    processor.save_pretrained(str(staged))
    run.publish(staged)


def merge_adapter(adapter_dir: Path, out: Path, *, model: Any = None, processor: Any = None) -> Path:
    """Write the base with the adapter merged in as a full model folder (loads like any checkpoint; its
    config carries the adapter's fingerprint, so it matches collections indexed with the adapter)."""
    from ..models.adapters import adapter_fingerprint, mark_adapter

    out = Path(out).expanduser()
    if model is None:
        from ..models.encoder import ColPaliEncoder

        encoder = ColPaliEncoder(str(adapter_dir), device='cpu', dtype='float32').load()
        merged, processor = encoder.model, encoder.processor
    else:
        merged = model.merge_and_unload()
        mark_adapter(merged, adapter_fingerprint(adapter_dir))
    staged = out.with_name(f'.{out.name}.tmp')
    shutil.rmtree(staged, ignore_errors=True)
    merged.save_pretrained(str(staged))
    processor.save_pretrained(str(staged))
    if out.exists():
        shutil.rmtree(out)
    staged.rename(out)
    return out
