"""LoRA fine-tuning of the full-size ColQwen2-2B and ColSmol-256M architectures at random weights: step
time, pages/s and peak memory at batch 32 with gradient checkpointing in bf16, through ``finetune`` (the
path users take). Made for a GPU session; ``--tiny --device cpu`` runs the same code on a CPU as a smoke test.

No weights exist offline: the models are built from their published configs (``bench_encode.build_folder``)
with the tiny models' offline processors, so every shape, token count and memory figure is real and the
rankings are meaningless (nothing here measures learning: ``bench_finetune.py`` does).

    python benchmarks/bench_finetune_gpu.py --out benchmarks/results/finetune_gpu.json             # on a GPU
    python benchmarks/bench_finetune_gpu.py --tiny --device cpu --batch-size 2 --steps 2 --out /tmp/ft_gpu.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_io import write_json  # noqa: E402

MODELS = ('colqwen2-2b', 'colsmol-256m')


def run_model(name: str, workdir: Path, task_dir: Path, args) -> Dict[str, Any]:
    import torch

    from bench_encode import build_folder
    from lazyllm_colpali.training import FinetuneSettings, finetune

    folder = build_folder(name, workdir / 'models', args.tiny)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    report = finetune(FinetuneSettings(
        model=str(folder), out=workdir / f'run-{name}-{int(time.time())}', train=[task_dir / 'train.jsonl'],
        corpus=task_dir, steps=args.steps, batch_size=args.batch_size, device=args.device,
        gradient_checkpointing=True, bf16=args.device.startswith('cuda'), save_steps=10 ** 6, progress=False))
    steps_per_s = report['steps_per_second']
    return {'model': name, 'tiny': args.tiny, 'device': args.device, 'bf16': report['bf16'],
            'gradient_checkpointing': report['gradient_checkpointing'], 'batch_size': args.batch_size,
            'steps': report['steps'], 's_per_step': 1 / steps_per_s if steps_per_s else None,
            # each step encodes batch_size pages (and as many queries) forward and backward
            'pages_per_s': args.batch_size * steps_per_s if steps_per_s else None,
            'peak_gpu_gib': report.get('peak_gpu_mb', 0) / 1024, 'peak_rss_gib': report['peak_rss_mb'] / 1024,
            'trainable_parameters': report['trainable_parameters'], 'total_parameters': report['total_parameters'],
            'loss_curve': report['loss_curve'], 'wall_s': time.perf_counter() - started}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default=','.join(MODELS))
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=6, help='the first step (warm-up) is in the average too')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--tiny', action='store_true', help='tiny towers (smoke test)')
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--out', default='benchmarks/results/finetune_gpu.json')
    args = parser.parse_args(argv)

    from lazyllm_colpali.devtools.shapes_task import make_shapes_task

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix='bench_finetune_gpu_'))
    # 612 pt pages (a letter page's width): 1224 px square at the indexing default of 144 DPI.
    pages_needed = max(args.batch_size, 2)
    classes = min(90, pages_needed)
    task = make_shapes_task(workdir / 'task', classes, -(-pages_needed // classes), side_pt=612)
    rows = []
    for name in [m for m in args.models.split(',') if m]:
        try:
            rows.append(run_model(name, workdir, task.folder, args))
        except Exception as e:   # an out-of-memory on one model still reports the other
            rows.append({'model': name, 'error': f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'})
        row = rows[-1]
        print(row if 'error' in row else
              f'{name}: {row["s_per_step"]:.2f} s/step, {row["pages_per_s"]:.1f} pages/s, peak GPU '
              f'{row["peak_gpu_gib"]:.1f} GiB, RSS {row["peak_rss_gib"]:.1f} GiB (batch {args.batch_size}, '
              f'bf16 {row["bf16"]}, gradient checkpointing)', flush=True)
    result = {'rows': rows, 'batch_size': args.batch_size, 'load_average': os.getloadavg()}
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
