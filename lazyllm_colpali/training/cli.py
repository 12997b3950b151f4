"""``lazyllm-colpali finetune`` and ``lazyllm-colpali feedback export`` (hooked into the main CLI)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

FINETUNE_EPILOG = '''examples:
  lazyllm-colpali finetune --model vidore/colqwen2-base --corpus ./pdfs --train pairs.jsonl --val val.jsonl \
      --out ./adapter
  lazyllm-colpali finetune --model tiny:colqwen2 --from-pdfs ./pdfs --out ./adapter --steps 200
  lazyllm-colpali finetune ... --out ./adapter --resume          # continue after a crash or Ctrl-C
  lazyllm-colpali index ./pdfs --model ./adapter --collection tuned   # the adapter works wherever --model does

pairs.jsonl: one {"query": "...", "page": "file.pdf#3", "negatives": ["file.pdf#7"]} per line, pages relative
to --corpus (as eval qrels name them). Without --epochs/--steps: 3 epochs, at least 100 steps.'''


def add_parsers(sub, add_store_args: Callable, add_vlm_args: Callable) -> None:
    from .settings import FinetuneSettings as S

    p = sub.add_parser('finetune', help='train a LoRA adapter on query-page pairs from your documents',
                       epilog=FINETUNE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, help='base model (name, folder, tiny:FAMILY) or an adapter to go on from')
    p.add_argument('--out', required=True, help='the adapter folder to write (new or empty, or with --resume)')
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument('--train', action='append', help='pairs .jsonl (repeatable; `feedback export` writes one)')
    data.add_argument('--from-pdfs', help='make pairs from this folder\'s PDFs (pseudo-queries; validation = '
                                          'held-out documents)')
    p.add_argument('--corpus', help='folder the pairs\' page references are relative to')
    p.add_argument('--val', help='validation pairs .jsonl: Recall@1/5 before and after')
    p.add_argument('--val-fraction', type=float, default=S.val_fraction,
                   help=f'documents held out with --from-pdfs (default: {S.val_fraction})')
    steps = p.add_mutually_exclusive_group()
    steps.add_argument('--epochs', type=float)
    steps.add_argument('--steps', type=int, help='optimizer steps')
    p.add_argument('--lr', type=float, default=S.lr, help=f'learning rate (default: {S.lr})')
    p.add_argument('--batch-size', type=int, default=S.batch_size, help=f'pairs per step (default: {S.batch_size})')
    p.add_argument('--grad-accum', type=int, default=S.grad_accum, help='gradient accumulation steps (default: 1)')
    p.add_argument('--lora-r', type=int, default=S.lora_r, help=f'LoRA rank (default: {S.lora_r})')
    p.add_argument('--lora-alpha', type=int, default=None, help='LoRA alpha (default: the rank)')
    p.add_argument('--hard-negatives', type=int, default=0, metavar='K',
                   help='mine K hard negatives per pair with this project\'s index (default: 0)')
    p.add_argument('--loss', default='auto', choices=['auto', 'in-batch', 'pairwise', 'negative-ce'],
                   help='colpali-engine loss: in-batch (ColbertLoss), pairwise (ColbertPairwiseCELoss), '
                        'negative-ce (ColbertNegativeCELoss); auto: negative-ce with negatives, else in-batch')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--save-steps', type=int, default=S.save_steps, help=f'checkpoint every N steps '
                                                                         f'(default: {S.save_steps})')
    p.add_argument('--resume', action='store_true', help='continue --out from its last complete checkpoint')
    p.add_argument('--merge', nargs='?', const='', default=None, metavar='DIR',
                   help='also write the merged full model (default DIR: OUT/merged)')
    p.add_argument('--keep-checkpoints', action='store_true', help='keep OUT/checkpoints after success')
    p.add_argument('--family', default=None, help='model family when it cannot be detected')
    p.add_argument('--device', default='auto', help='auto, cpu, cuda, ...')
    p.add_argument('--dpi', type=int, default=S.dpi, help='page rendering resolution, as for `index` (default: 144)')
    p.add_argument('--json', action='store_true', help='print the report as JSON')
    p.add_argument('--no-progress', action='store_true')
    add_vlm_args(p)

    p = sub.add_parser('feedback', help='people\'s thumbs up/down on pages: export them as training pairs')
    fsub = p.add_subparsers(dest='feedback_command', required=True, metavar='ACTION')
    e = fsub.add_parser('export', help='write the collection\'s feedback as pairs.jsonl for `finetune --train`')
    e.add_argument('--out', required=True, help='pairs file to write')
    e.add_argument('--corpus', help='write page references relative to this folder (as `finetune --corpus`)')
    add_store_args(e)


def settings_from_args(args):
    from pathlib import Path

    from .settings import FinetuneSettings

    merge = None
    if args.merge is not None:
        merge = Path(args.merge) if args.merge else Path(args.out) / 'merged'
    return FinetuneSettings(
        model=args.model, out=args.out, train=args.train or [], corpus=args.corpus, val=args.val,
        from_pdfs=args.from_pdfs, val_fraction=args.val_fraction, epochs=args.epochs, steps=args.steps, lr=args.lr,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        hard_negatives=args.hard_negatives, loss=args.loss, seed=args.seed, resume=args.resume,
        save_steps=args.save_steps, dpi=args.dpi, device=args.device, merge=merge, family=args.family,
        keep_checkpoints=args.keep_checkpoints, progress=not args.no_progress)


def _recall(block: dict) -> str:
    if not block:
        return 'n/a (no validation pairs)'
    return f'Recall@1 {block.get("recall@1", 0):.3f}, Recall@5 {block.get("recall@5", 0):.3f}'


def cmd_finetune(args) -> int:
    from .settings import FinetuneError

    settings = settings_from_args(args)
    settings.check()   # before a VLM or model is touched
    server = None
    if args.from_pdfs and (args.vlm_url or args.vlm_model):
        from ..vlm import make_vlm
        settings.vlm, server = make_vlm(args.vlm_url, args.vlm_model, source=args.vlm_source,
                                        api_key_env=args.vlm_key_env)
    try:
        from . import finetune
        report = finetune(settings)
    except FinetuneError as e:
        print(f'error: {e}', file=sys.stderr)
        return 3
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    if report.get('resumed_from_step') is not None:
        skipped = ''.join(f'; removed {d}' for d in report.get('discarded_checkpoints', []))
        print(f'resumed from step {report["resumed_from_step"]}{skipped}')
    pairs = report['pairs']
    if 'from_pdfs' in pairs:
        made = pairs['from_pdfs']
        print(f'pairs from {made["files"]} files ({made["pages_with_queries"]} of {made["pages"]} pages): '
              f'{pairs["train"]} for training, {pairs["val"]} for validation from held-out '
              f'{", ".join(made["held_out_documents"]) or "(none)"}; by kind {made["by_kind"]}')
    curve = report['loss_curve']
    print(f'{report["steps"]} steps ({report["epochs"]:.1f} epochs, loss {report["loss"]}, '
          f'{report["negatives_per_pair"]} negatives/pair): train loss {curve[0][1]:.4f} -> {curve[-1][1]:.4f}' if curve
          else f'{report["steps"]} steps')
    print(f'validation before: {_recall(report["val_before"])}')
    print(f'validation after:  {_recall(report["val_after"])}')
    rate = report.get('steps_per_second')
    print(f'{report["seconds"]:.1f} s ({rate:.2f} steps/s), peak RSS {report["peak_rss_mb"]:.0f} MB'
          if rate else f'{report["seconds"]:.1f} s')
    print(f'adapter: {report["adapter"]}' + (f'; merged model: {report["merged"]}' if report.get('merged') else '') +
          f'; report: {report["adapter"]}/finetune_report.json')
    return 0


def cmd_feedback(args) -> int:
    from pathlib import Path

    from ..settings import DEFAULT_COLLECTION, default_db
    from ..store.milvus_store import default_data_dir
    from .feedback import ExportSummary, FeedbackStore, export_pairs, feedback_path
    from .pairs import write_pairs

    import os
    collection = args.collection or DEFAULT_COLLECTION
    shared = args.shared_dir or os.environ.get('LAZYLLM_COLPALI_SHARED_DIR') or args.data_dir or \
        default_data_dir(args.db or default_db(), collection)
    store = FeedbackStore(feedback_path(shared, collection))
    records = store.records()
    if not records:
        print(f'error: no feedback recorded for collection {collection!r} (looked in {store.path})', file=sys.stderr)
        return 2
    summary = ExportSummary()
    pairs = export_pairs(records, args.corpus, summary)
    write_pairs(Path(args.out), pairs)
    print(f'{summary.describe()}; wrote {args.out}')
    return 0
