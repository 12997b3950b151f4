"""Supervised fine-tuning data for the generator: (question, the retrieved page images, gold answer), written
in the format LazyLLM's ``finetune.llamafactory`` route reads.

LazyLLM hands the file to LLaMA-Factory with a ``dataset_info.json`` it builds from the first record: a JSON list
whose records have ``messages`` is read as ShareGPT with OpenAI-style tags (``role``/``content``,
``user``/``assistant``), and an ``images`` field becomes the image column. LLaMA-Factory needs one ``<image>``
placeholder per image in the messages, and reads image paths as given (LazyLLM puts ``dataset_dir`` in a
temporary folder, so the paths are absolute). One record:

    {"messages": [{"role": "user", "content": "<image><image><image>Answer the question using only ..."},
                  {"role": "assistant", "content": "16 bar [hydra_pump_manual.pdf, p. 1]"}],
     "images": ["/abs/OUT_images/hydra_pump_manual.pdf_p1_....jpg", ...]}

The user turn is the exact prompt the RAG flow sends (``PageAnswerer.prompt``) with the same pages at the same
size, so the model learns the task it is asked at inference. The assistant turn is the first gold answer with a
citation of the relevant page it came from (the prompt asks for citations; scoring strips them); a question
marked ``Not answerable`` teaches the abstention. Questions whose shown pages include no relevant page are left
out: their answer is not in the images, and training on them would teach answering without evidence.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from .answers import ABSTENTION_TEXT, is_unanswerable

IMAGE_PLACEHOLDER = '<image>'   # LLaMA-Factory's default (env IMAGE_PLACEHOLDER)


def sft_record(prompt: str, images: List[str], answer: str) -> Dict[str, Any]:
    """One training example.

    >>> sft_record('Question: q', ['/a.jpg', '/b.jpg'], '7')['messages'][0]['content']
    '<image><image>Question: q'
    """
    return {'messages': [{'role': 'user', 'content': IMAGE_PLACEHOLDER * len(images) + prompt},
                         {'role': 'assistant', 'content': answer}],
            'images': list(images)}


def _image_name(page_key: str) -> str:
    stem = re.sub(r'[^A-Za-z0-9._-]+', '_', page_key.replace('#', '_p'))[-80:]
    return f'{stem}_{hashlib.sha1(page_key.encode()).hexdigest()[:8]}.jpg'


class SFTExporter:
    """An arm hook for :func:`~lazyllm_colpali.eval.harness.run_eval`: writes ``path`` from the pages ``arm``
    retrieved (the top ``pages``, as the generator sees them) and the dataset's gold answers; page images are
    copied next to it, into ``<path stem>_images/``."""

    def __init__(self, path: str | Path, arm: str = 'colpali', pages: int = 3, max_image_side: int = 1024):
        self.path = Path(path).expanduser().resolve()
        self.arm, self.pages, self.max_image_side = arm, pages, max_image_side
        self.written: Optional[int] = None
        self.skipped: Dict[str, int] = {}

    @property
    def notes(self) -> List[str]:
        if self.written is None:
            return [f'export-sft: the {self.arm} arm did not run, so nothing was written to {self.path}']
        left_out = ', '.join(f'{n} {why}' for why, n in self.skipped.items() if n)
        return [f'export-sft: {self.written} examples from the {self.arm} arm\'s top {self.pages} pages written to '
                f'{self.path}' + (f' (left out: {left_out})' if left_out else '')]

    def __call__(self, result, dataset, workdir: Path) -> None:
        if result.arm != self.arm:
            return
        from ..generation import AnswerSettings, PageAnswerer
        from ..generation.page_images import page_image

        prompter = PageAnswerer(None, AnswerSettings(pages=self.pages, max_image_side=self.max_image_side))
        image_dir = self.path.parent / f'{self.path.stem}_images'
        image_dir.mkdir(parents=True, exist_ok=True)
        records, self.skipped = [], {'with no relevant page shown': 0, 'with no page retrieved': 0,
                                     'with a page image missing': 0}
        for qid, golds in dataset.answers.items():
            if qid not in dataset.queries:
                continue
            shown = result.hits.get(qid, [])[:self.pages]
            if not shown:
                self.skipped['with no page retrieved'] += 1
                continue
            keys = [dataset.page_key(h.source, h.page) for h in shown]
            relevant = [h for h, key in zip(shown, keys) if dataset.qrels.get(qid, {}).get(key, 0) > 0]
            if is_unanswerable(golds):
                target = ABSTENTION_TEXT
            elif relevant:
                target = f'{golds[0]} [{relevant[0].file_name}, p. {relevant[0].page}]'
            else:
                self.skipped['with no relevant page shown'] += 1
                continue
            images = []
            for hit, key in zip(shown, keys):
                source = page_image(hit, self.max_image_side)
                if source is None:
                    break
                target_image = image_dir / _image_name(key)
                if not target_image.exists():
                    shutil.copyfile(source, target_image)
                images.append(str(target_image))
            if len(images) != len(shown):
                self.skipped['with a page image missing'] += 1
                continue
            records.append(sft_record(prompter.prompt(dataset.queries[qid], shown), images, target))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f'.{self.path.name}.{os.getpid()}.tmp')
        tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding='utf-8')
        tmp.replace(self.path)
        self.written = len(records)
