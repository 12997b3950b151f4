"""Does fine-tuning learn? LoRA fine-tuning of tiny random ColPali, ColQwen2 and ColIdefics3 models on a
learnable task rendered offline as real PDFs (``lazyllm_colpali.devtools.shapes_task``: pages that each show
one large shape in one colour on a full-bleed background; queries name them - "red circle on blue"), with
held-out pages (other renderings of the same classes) never trained on.

Each family runs in its own process (clean CPU-time and peak-RSS figures) with ``finetune``'s defaults -
learning rate, LoRA rank/alpha, loss, temperature, batch size, schedule - and only the number of epochs set
here. Reported per family: the loss curve, steps/s, CPU seconds, peak RSS, held-out Recall@1/5 before and
after, and a held-out Recall@1 curve against CPU seconds (``--eval-every`` steps): where it first reaches
the goal (0.8) and how many CPU-seconds that took (the goal: within 300; the curve's own measurements are
not counted, loading and the 'before' evaluation are).

    nice python benchmarks/bench_finetune.py --out benchmarks/results/finetune.json
    python benchmarks/bench_finetune.py --families colqwen2 --classes 4 --train-per-class 2 --epochs 1 \\
        --out /tmp/finetune_smoke.json                                                    # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402

FAMILIES = ('colpali', 'colqwen2', 'colidefics3')
GOAL = 0.8
GOAL_CPU_S = 300


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_family(family: str, task_dir: Path, out_dir: Path, epochs: float, eval_every: int, seed: int,
               lr: Optional[float] = None) -> Dict[str, Any]:
    """One fine-tuning run in this process (called in a child process by :func:`main`)."""
    from lazyllm_colpali.training import FinetuneSettings, finetune

    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    report = finetune(FinetuneSettings(model=f'tiny:{family}', out=out_dir, train=[task_dir / 'train.jsonl'],
                                       val=task_dir / 'val.jsonl', corpus=task_dir, epochs=epochs, seed=seed,
                                       eval_steps=eval_every, progress=False,
                                       **({'lr': lr} if lr else {})))
    cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
    reached = next((p for p in report['val_curve'] if p['recall@1'] >= GOAL), None)
    return {
        'family': family, 'steps': report['steps'], 'epochs': report['epochs'], 'loss': report['loss'],
        'batch_size': report['settings']['batch_size'], 'lr': report['settings']['lr'],
        'lora_r': report['settings']['lora_r'], 'trainable_parameters': report['trainable_parameters'],
        'total_parameters': report['total_parameters'], 'cpu_s': cpu, 'wall_s': wall,
        'curve_cpu_s': report['val_curve_cpu_s'],   # spent measuring the curve (not in goal_cpu_s)
        'steps_per_s': report['steps_per_second'], 'peak_rss_mb': report['peak_rss_mb'],
        'loss_curve': report['loss_curve'], 'val_before': report['val_before'], 'val_after': report['val_after'],
        'recall_curve': [{k: p[k] for k in ('step', 'cpu_s', 'recall@1', 'recall@5')} for p in report['val_curve']],
        'goal_step': reached['step'] if reached else None,
        # CPU seconds of this process until then: imports, model load, the 'before' evaluation and training;
        # not the curve's own measurements
        'goal_cpu_s': reached['cpu_s'] if reached else None,
    }


def _child(args) -> int:
    result = run_family(args.one, Path(args.task), Path(args.run_dir), args.epochs, args.eval_every, args.seed,
                        args.lr)
    Path(args.result).write_text(json.dumps(result))
    return 0


def _table(rows: List[Dict[str, Any]]) -> str:
    head = (f'| family | steps (epochs) | CPU s | wall s | steps/s | peak RSS MB | loss first -> last | '
            f'held-out R@1 before -> after | R@5 before -> after | R@1 >= {GOAL} at step (CPU s) |')
    lines = [head, '|' + '---|' * 10]
    for r in rows:
        if 'error' in r:
            lines.append(f'| {r["family"]} | error: {r["error"][:80]} |' + ' |' * 8)
            continue
        curve = r['loss_curve']
        goal = f'{r["goal_step"]} ({r["goal_cpu_s"]:.0f})' if r['goal_step'] else 'not reached'
        lines.append(
            f'| {r["family"]} | {r["steps"]} ({r["epochs"]:.1f}) | {r["cpu_s"]:.0f} | {r["wall_s"]:.0f} | '
            f'{r["steps_per_s"]:.2f} | {r["peak_rss_mb"]:.0f} | {curve[0][1]:.3f} -> {curve[-1][1]:.3f} | '
            f'{r["val_before"]["recall@1"]:.3f} -> {r["val_after"]["recall@1"]:.3f} | '
            f'{r["val_before"]["recall@5"]:.3f} -> {r["val_after"]["recall@5"]:.3f} | {goal} |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--families', default=','.join(FAMILIES))
    parser.add_argument('--classes', type=int, default=16, help='classes; held-out Recall@1 by chance = 1/classes')
    parser.add_argument('--train-per-class', type=int, default=4, help='training renderings per class')
    parser.add_argument('--epochs', type=float, default=15)
    parser.add_argument('--eval-every', type=int, default=8, help='held-out recall every N steps')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--lr', type=float, default=None, help='learning rate (default: finetune\'s default)')
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--out', default='benchmarks/results/finetune.json')
    # internal: one family in a child process
    parser.add_argument('--one', help=argparse.SUPPRESS)
    parser.add_argument('--task', help=argparse.SUPPRESS)
    parser.add_argument('--run-dir', help=argparse.SUPPRESS)
    parser.add_argument('--result', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return {'rc': _child(args)}

    from lazyllm_colpali.devtools.shapes_task import make_shapes_task

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix='bench_finetune_'))
    task = make_shapes_task(workdir / 'task', args.classes, args.train_per_class, seed=args.seed)
    load_before = os.getloadavg()
    rows = []
    for family in [f for f in args.families.split(',') if f]:
        result_file = workdir / f'{family}.json'
        command = [sys.executable, __file__, '--one', family, '--task', str(task.folder), '--run-dir',
                   str(workdir / f'run-{family}-{int(time.time())}'), '--result', str(result_file),
                   '--epochs', str(args.epochs), '--eval-every', str(args.eval_every), '--seed', str(args.seed)]
        command += ['--lr', str(args.lr)] if args.lr else []
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({'family': family, 'error': done.stderr.strip().splitlines()[-1] if done.stderr else 'failed'})
            print(done.stderr[-3000:], file=sys.stderr)
            continue
        rows.append(json.loads(result_file.read_text()))
        print(_table(rows[-1:]).splitlines()[-1], flush=True)
    result = {'task': {'classes': args.classes, 'train_pages': len(task.train), 'val_pages': len(task.val),
                       'chance_recall_at_1': 1 / args.classes, 'page_px': 432},
              'goal': {'recall@1': GOAL, 'cpu_s': GOAL_CPU_S}, 'epochs': args.epochs,
              'load_average_before': load_before, 'load_average_after': os.getloadavg(), 'rows': rows}
    print(_table(rows))
    print(f'load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (figures taken under that load)')
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
