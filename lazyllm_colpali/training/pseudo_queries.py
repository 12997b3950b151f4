"""Training pairs without labels: pseudo-queries made from each page's own content.

Per page, in order of preference: figure and table captions, headings (short title-like lines, minus running
headers and footers that repeat across a document's pages), then the most distinctive sentence of the text
(highest mean inverse document frequency over the corpus's pages) - each cut to a query's length, never the
whole page. Text comes from the text layer, or OCR for scans (the text arm's ``auto`` extractor). With a VLM
the questions the caption arm asks about each page are added, from its cache when it has seen the page.

Validation is split by document: whole documents are held out, so no validation page is ever trained on.

    >>> query_tokens('Figure 3: Revenue by region')
    ['Figure', '3:', 'Revenue', 'by', 'region']
    >>> caption_query('Table 2. Revenue by region in 2023')
    'Revenue by region in 2023'
    >>> heading_query('3.2 Results on ViDoRe'), heading_query('This sentence ends with a period.')
    ('Results on ViDoRe', None)
"""
from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .pairs import PageRef, TrainingPair

MAX_QUERY_TOKENS = 14
MIN_PAGE_TOKENS = 12     # fewer: no query that is not (nearly) the whole page
_TOKEN = re.compile(r'[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\s\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+')
_CAPTION = re.compile(r'^(?:fig(?:ure)?|table|tab|chart|exhibit|diagram|图|表)\s*\.?\s*'
                      r'[\dA-Za-z一二三四五六七八九十]+\s*[.:：、-]?\s*(.+)$', re.I)
_NUMBERING = re.compile(r'^(?:\d+(?:\.\d+)*\.?|[IVX]+\.|[A-Z]\.)\s+')
_SENTENCE = re.compile(r'(?<=[.!?。！？])\s*')


def query_tokens(text: str) -> List[str]:
    """Words, with each CJK character a word of its own (those scripts have no spaces)."""
    return _TOKEN.findall(text)


def _join(tokens: Sequence[str]) -> str:
    out = ''
    for token in tokens:
        cjk = len(token) == 1 and bool(_TOKEN.fullmatch(token)) and not token.isascii()
        out += token if (cjk or not out) else f' {token}'
    return out.strip()


def _cut(text: str) -> str:
    return _join(query_tokens(text)[:MAX_QUERY_TOKENS]).strip(' ,;:-')


def caption_query(line: str) -> Optional[str]:
    match = _CAPTION.match(line.strip())
    if not match or len(query_tokens(match.group(1))) < 2:
        return None
    return _cut(match.group(1))


def heading_query(line: str) -> Optional[str]:
    text = _NUMBERING.sub('', line.strip())
    tokens = query_tokens(text)
    if not 2 <= len(tokens) <= 12 or text.endswith(('.', ',', ';', ':', '。', '，')):
        return None
    if not (text[:1].isupper() or not text[:1].isascii()) or sum(t.isalpha() and len(t) > 2 for t in tokens) < 1 \
            and not any(not t.isascii() for t in tokens):
        return None
    if sum(c.isdigit() for c in text) > len(text) / 3:   # table rows, dates, page numbers
        return None
    return _cut(text)


@dataclass
class PseudoPairs:
    train: List[TrainingPair] = field(default_factory=list)
    val: List[TrainingPair] = field(default_factory=list)
    files: int = 0
    pages: int = 0
    pages_used: int = 0
    kinds: Counter = field(default_factory=Counter)
    held_out: List[str] = field(default_factory=list)
    files_without_pairs: List[str] = field(default_factory=list)
    failures: List[Tuple[str, str]] = field(default_factory=list)

    def summary(self) -> Dict[str, Any]:
        return {'from_pdfs': {'files': self.files, 'pages': self.pages, 'pages_with_queries': self.pages_used,
                              'by_kind': dict(self.kinds), 'held_out_documents': self.held_out,
                              'files_without_pairs': self.files_without_pairs,
                              'failures': [f'{p}: {r}' for p, r in self.failures]}}

    def describe(self) -> str:
        kinds = ', '.join(f'{n} {k}' for k, n in sorted(self.kinds.items())) or 'none'
        text = (f'made {len(self.train) + len(self.val)} pairs from {self.pages_used} of {self.pages} pages in '
                f'{self.files} files ({kinds}); validation: {len(self.val)} pairs from {len(self.held_out)} held-out '
                f'document(s), never trained on')
        if self.files_without_pairs:
            text += f'; no pairs from {", ".join(self.files_without_pairs)} (no usable text)'
        return text + ''.join(f'\n  skipped {p}: {r}' for p, r in self.failures)


def _page_queries(text: str, repeated: set, idf: Dict[str, float], limit: int) -> List[Tuple[str, str]]:
    tokens = query_tokens(text)
    if len(tokens) < MIN_PAGE_TOKENS:
        return []
    lines = [re.sub(r'\s+', ' ', line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line and line not in repeated]
    found: List[Tuple[str, str]] = []
    for kind, make in (('captions', caption_query), ('headings', heading_query)):
        for line in lines:
            query = make(line)
            if query and all(query != q for _, q in found):
                found.append((kind, query))
                if kind == 'headings':
                    break   # the first heading-like line; more are usually table cells
    sentences = [s.strip() for s in _SENTENCE.split(re.sub(r'\s+', ' ', text)) if 6 <= len(query_tokens(s)) <= 40]
    if sentences:
        def salience(sentence: str) -> float:
            words = [t.lower() for t in query_tokens(sentence) if t.isalpha() or not t.isascii()]
            return sum(idf.get(w, 0.0) for w in words) / max(1, len(words))
        found.append(('sentences', _cut(max(sentences, key=salience))))
    whole = _join(tokens)
    return [(k, q) for k, q in found if q and q != whole][:limit]


def _document_frequencies(texts: Sequence[str]) -> Dict[str, float]:
    df: Counter = Counter()
    for text in texts:
        df.update({t.lower() for t in query_tokens(text)})
    n = max(1, len(texts))
    return {w: math.log((n + 1) / (c + 0.5)) for w, c in df.items()}


def _held_out(files: Sequence[Path], fraction: float, seed: int) -> set:
    if fraction <= 0 or len(files) < 2:
        return set()
    ranked = sorted(files, key=lambda f: hashlib.sha256(f'{seed}:{f.name}'.encode()).hexdigest())
    return set(ranked[:min(len(files) - 1, max(1, round(fraction * len(files))))])


def _vlm_questions(vlm: Callable, path: Path, numbers: Sequence[int]) -> Dict[int, List[str]]:
    """The caption arm's questions per page (its cache is reused: same renders, prompt and model id)."""
    import tempfile

    from ..ingest.render import render_pages
    from ..text.augment import AugmentationError, CaptionQAAugmenter

    augmenter = CaptionQAAugmenter(vlm)
    out: Dict[int, List[str]] = {}
    with tempfile.TemporaryDirectory(prefix='pseudo_') as tmp:
        for number, image in render_pages(path, dpi=augmenter.dpi, max_side=augmenter.max_side, pages=set(numbers)):
            image_path = Path(tmp) / f'page{number:05d}.png'
            image.save(image_path)
            try:
                data = augmenter.describe(str(image_path))
            except AugmentationError:
                continue
            out[number] = [_cut(qa['q']) for qa in data.get('qa', []) if qa.get('q', '').strip()]
    return out


def pairs_from_pdfs(folder: Path, *, val_fraction: float = 0.2, seed: int = 0, per_page: int = 2,
                    vlm: Optional[Callable] = None, progress: bool = True,
                    extractor: Any = 'auto') -> PseudoPairs:
    """Pseudo-query pairs for every page of every PDF/image under ``folder`` (page references relative to it)."""
    from tqdm.auto import tqdm

    from ..errors import DocumentError
    from ..ingest.sources import expand_sources
    from ..text.extract import get_extractor

    folder = Path(folder)
    files, problems = expand_sources([folder])
    result = PseudoPairs(files=len(files), failures=list(problems))
    extract = get_extractor(extractor)
    texts: Dict[Path, List[Tuple[int, str]]] = {}
    for path in tqdm(files, desc='Reading pages for pseudo-queries', unit='file', disable=not progress):
        try:
            texts[path] = extract.extract(path)
        except (DocumentError, OSError) as e:
            result.failures.append((str(path), getattr(e, 'reason', str(e))))
    idf = _document_frequencies([t for pages in texts.values() for _, t in pages])
    held_out = _held_out(list(texts), val_fraction, seed)
    for path, pages in texts.items():
        result.pages += len(pages)
        lines = Counter(line.strip() for _, text in pages for line in set(text.splitlines()) if line.strip())
        repeated = {line for line, n in lines.items() if len(pages) > 2 and n > len(pages) / 2}
        questions = _vlm_questions(vlm, path, [n for n, _ in pages]) if vlm is not None else {}
        made = 0
        for number, text in pages:
            queries = _page_queries(text, repeated, idf, per_page)
            queries += [('vlm questions', q) for q in questions.get(number, [])][:per_page]
            result.pages_used += bool(queries)
            ref = PageRef(path.relative_to(folder).as_posix(), number)
            for kind, query in queries:
                result.kinds[kind] += 1
                (result.val if path in held_out else result.train).append(TrainingPair(query, ref, source=kind))
                made += 1
        if not made:
            result.files_without_pairs.append(path.name)
    result.held_out = sorted(p.relative_to(folder).as_posix() for p in held_out)
    return result
