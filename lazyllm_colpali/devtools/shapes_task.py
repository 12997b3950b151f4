"""A learnable retrieval task rendered offline as real PDFs, for showing that fine-tuning learns (no
pretrained weights exist here; tiny random models know nothing).

Each class is a (shape, colour, background) combination - ``"red circle on blue"`` - and every page shows one
class with the signal covering most of the page: a full-bleed background and a large shape placed and sized
at random. Training pages and held-out pages are different renderings (other positions and sizes) of the
same classes; the held-out split has one page per class, so Recall@1 by chance is 1 / classes. Pages that
are mostly white with a small mark would teach a MaxSim model to match the shared white background (see
docs/finetune.md: the loss then sits at ln(batch) with no gradient); this task avoids that on purpose.

    >>> classes = task_classes(5, seed=1)
    >>> len(classes), len(set(classes))
    (5, 5)
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

COLOURS = {'red': (220, 30, 30), 'green': (30, 170, 60), 'blue': (30, 60, 220), 'yellow': (240, 210, 30),
           'black': (20, 20, 20), 'white': (250, 250, 250)}
SHAPES = ('circle', 'square', 'stripes')
Class = Tuple[str, str, str]   # shape, colour, background


def task_classes(n: int, seed: int = 0) -> List[Class]:
    every = [(s, fg, bg) for s, fg, bg in itertools.product(SHAPES, COLOURS, COLOURS) if fg != bg]
    if not 1 <= n <= len(every):
        raise ValueError(f'between 1 and {len(every)} classes, got {n}')
    random.Random(seed).shuffle(every)
    return every[:n]


def query_for(cls: Class) -> str:
    shape, colour, background = cls
    return f'{colour} {shape} on {background}'


def _draw(pdf, cls: Class, rng: random.Random, side: float) -> None:
    shape, colour, background = cls
    pdf.add_page()
    pdf.set_fill_color(*COLOURS[background])
    pdf.rect(0, 0, side, side, style='F')
    pdf.set_fill_color(*COLOURS[colour])
    size = side * rng.uniform(0.6, 0.8)
    x, y = rng.uniform(0, side - size), rng.uniform(0, side - size)
    if shape == 'circle':
        pdf.ellipse(x, y, size, size, style='F')
    elif shape == 'square':
        pdf.rect(x, y, size, size, style='F')
    else:
        bands = 3
        offset = rng.uniform(0, side / (2 * bands))
        for i in range(bands):
            pdf.rect(0, offset + 2 * i * side / (2 * bands), side, side / (2 * bands), style='F')


@dataclass
class ShapesTask:
    folder: Path
    train: List[dict]     # {"query", "page"} records, pages relative to folder
    val: List[dict]


def make_shapes_task(folder: str | Path, n_classes: int = 16, train_per_class: int = 4, *, seed: int = 0,
                     side_pt: float = 216) -> ShapesTask:
    """Write ``train.pdf`` (``train_per_class`` renderings of each class, shuffled) and ``val.pdf`` (one more
    of each) under ``folder``, plus ``train.jsonl`` / ``val.jsonl`` pairs; 216 pt pages render at 432 px at
    the indexing default of 144 DPI."""
    import json

    from fpdf import FPDF

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    classes = task_classes(n_classes, seed)
    splits = {}
    for split, per_class in (('train', train_per_class), ('val', 1)):
        items = [c for c in classes for _ in range(per_class)]
        rng.shuffle(items)
        pdf = FPDF(unit='pt', format=(side_pt, side_pt))
        pdf.set_auto_page_break(False)
        records = []
        for number, cls in enumerate(items, 1):
            _draw(pdf, cls, rng, side_pt)
            records.append({'query': query_for(cls), 'page': f'{split}.pdf#{number}'})
        pdf.output(str(folder / f'{split}.pdf'))
        (folder / f'{split}.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
        splits[split] = records
    return ShapesTask(folder, splits['train'], splits['val'])
