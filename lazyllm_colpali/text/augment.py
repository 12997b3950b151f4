"""Caption-plus-QA augmentation: a VLM (any LazyLLM chat module) describes each page image with a caption
and a few question-answer pairs, which are indexed as text linked to the page.

    from lazyllm import OnlineChatModule
    vlm = OnlineChatModule(source='openai', base_url='http://127.0.0.1:8000/v1/', model='qwen2.5-vl',
                           type='VLM', skip_auth=True)
    index = PageTextIndex('./caption_index', extractor=CaptionQAAugmenter(vlm, concurrency=4))
    index.add(['./pdfs'])      # a rerun asks the VLM only for pages it has no answer for yet

Calls run ``concurrency`` at a time, each retried ``retries`` times with exponential backoff; a page whose
calls all fail is reported and left out, so the next run asks again. Answers are cached by page image hash
+ prompt + model, so the same page in another index, or a rerun, costs nothing.
"""
from __future__ import annotations

import json
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from ..errors import ColPaliError
from ..ingest.render import render_pages
from ..logging import LOG
from ..model_calls import CachedModelCalls, answer_text  # noqa: F401  (answer_text re-exported)
from .extract import TextExtractor, TextLayerExtractor

CAPTION_PROMPT = (
    'You are indexing a document page for search. [caption-qa]\n'
    'Look at the attached page image and reply with JSON only, no prose:\n'
    '{{"caption": "<2-4 sentences: what the page is about, including what its figures, charts and tables '
    'show, with key numbers>", "qa": [{{"q": "<a question this page answers>", "a": "<the answer>"}}, ...]}}\n'
    'Write {num_qa} question-answer pairs, in the language of the page.{text_hint}')
TEXT_HINT = '\nText extracted from the page, to help with small print:\n"""\n{text}\n"""'


class AugmentationError(ColPaliError):
    """The VLM could not describe a page after every retry."""


def parse_caption_qa(answer: str) -> Dict[str, Any]:
    """Pull ``{"caption": str, "qa": [{"q", "a"}]}`` out of a model's answer (tolerates code fences and prose
    around the JSON; falls back to the whole answer as the caption).

    >>> parse_caption_qa('```json\\n{"caption": "A bar chart.", "qa": [{"q": "Max?", "a": "7"}]}\\n```')
    {'caption': 'A bar chart.', 'qa': [{'q': 'Max?', 'a': '7'}]}
    >>> parse_caption_qa('Just a caption.')
    {'caption': 'Just a caption.', 'qa': []}
    """
    match = re.search(r'\{.*\}', answer or '', re.S)
    if match:
        try:
            data = json.loads(match.group(0))
            qa = [{'q': str(p.get('q', '')), 'a': str(p.get('a', ''))} for p in data.get('qa') or []
                  if isinstance(p, dict)]
            return {'caption': str(data.get('caption', '')).strip(), 'qa': qa}
        except (json.JSONDecodeError, AttributeError):
            pass
    return {'caption': (answer or '').strip(), 'qa': []}


def augmentation_text(data: Dict[str, Any]) -> str:
    lines = [data.get('caption', '')]
    for pair in data.get('qa', []):
        lines.append(f'Q: {pair["q"]}\nA: {pair["a"]}')
    return '\n'.join(line for line in lines if line).strip()


class CaptionQAAugmenter(TextExtractor):
    """A page-text producer backed by a VLM. Plugs into :class:`PageTextIndex` like an extractor."""

    name = 'caption-qa'

    def __init__(self, llm: Callable, *, num_qa: int = 3, concurrency: int = 4, retries: int = 3,
                 backoff: float = 1.0, dpi: int = 110, max_side: int = 1280, include_page_text: bool = True,
                 cache_dir: Optional[str | Path] = None, model_id: Optional[str] = None):
        self.llm = llm
        self.num_qa = num_qa
        self.concurrency = max(1, concurrency)
        self.dpi = dpi
        self.max_side = max_side
        self.include_page_text = include_page_text
        from ..settings import data_home
        self.cache_dir = Path(cache_dir) if cache_dir else data_home() / 'caption_cache'
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # cache, retries and the limit on calls in flight: the machinery every VLM step shares
        self.model_calls = CachedModelCalls(llm, self.cache_dir, model_id=model_id, retries=retries, backoff=backoff,
                                            concurrency=self.concurrency, error=AugmentationError)
        self.model_id = self.model_calls.model_id
        self.failures: List[Tuple[str, str]] = []

    @property
    def calls(self) -> int:
        """VLM calls made (retries included): what a rerun must not pay again."""
        return self.model_calls.calls

    def prompt(self, page_text: str) -> str:
        hint = TEXT_HINT.format(text=page_text[:3000]) if self.include_page_text and page_text else ''
        return CAPTION_PROMPT.format(num_qa=self.num_qa, text_hint=hint)

    def describe(self, image_path: str, page_text: str = '') -> Dict[str, Any]:
        """Caption + QA for one page image, from the cache or the VLM (with retries)."""
        return self.model_calls.ask(self.prompt(page_text), [image_path], parse=parse_caption_qa, what=image_path)

    def pages(self, path: Path, todo: Optional[Set[int]] = None) -> Iterator[Tuple[int, str]]:
        texts = dict(TextLayerExtractor().pages(path, todo)) if self.include_page_text else {}
        with tempfile.TemporaryDirectory(prefix='caption_') as tmp:
            jobs = []
            for number, image in render_pages(path, dpi=self.dpi, max_side=self.max_side):
                if todo is not None and number not in todo:
                    continue
                image_path = Path(tmp) / f'page{number:05d}.png'
                image.save(image_path)
                jobs.append((number, str(image_path)))
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix='caption') as pool:
                futures = [(n, pool.submit(self.describe, p, texts.get(n, ''))) for n, p in jobs]
                for number, future in futures:
                    try:
                        yield number, augmentation_text(future.result())
                    except AugmentationError as e:
                        LOG.warning(str(e))
                        self.failures.append((f'{path} p. {number}', str(e)))
