"""Training pairs: ``{"query": "...", "page": "file.pdf#3", "negatives": ["file.pdf#7", ...]}`` per line.

A page is named the way ``eval`` qrels name pages: a path relative to the corpus folder (or absolute), ``#``,
and a 1-based page number (an image file is ``scan.png#1``; a reference without ``#`` means page 1). Every
line is checked before any model loads - JSON, fields, files, page ranges - and every problem is reported
with its file and line number.

    >>> ref = PageRef.parse('reports/2023.pdf#3')
    >>> ref.path, ref.page, str(ref)
    ('reports/2023.pdf', 3, 'reports/2023.pdf#3')
    >>> PageRef.parse('scan.png').page
    1
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from ..errors import ColPaliError, DocumentError

MAX_QUERY_CHARS = 2000   # the indexer's limit on a search query
MAX_REPORTED = 10        # problems listed in one error (the count says how many more)


class PairsError(ColPaliError):
    """A pairs file cannot be used for training; the message names the file and line of each problem."""


@dataclass(frozen=True)
class PageRef:
    """One page of one file: ``path`` as written (relative to the corpus, or absolute) and its 1-based number."""

    path: str
    page: int

    @classmethod
    def parse(cls, text: str) -> 'PageRef':
        if not isinstance(text, str) or not text.strip():
            raise ValueError('a page reference must be a non-empty string like "file.pdf#3"')
        path, sep, number = text.strip().rpartition('#')
        if not sep:
            return cls(text.strip(), 1)
        if not path:
            raise ValueError(f'{text!r} names no file before "#"')
        if not number.isdigit() or int(number) < 1:
            raise ValueError(f'{text!r}: the page after "#" must be a number from 1, got {number!r}')
        return cls(path, int(number))

    def file(self, corpus: Optional[Path]) -> Path:
        path = Path(self.path).expanduser()
        return path if path.is_absolute() or corpus is None else Path(corpus) / path

    def __str__(self) -> str:
        return f'{self.path}#{self.page}'


@dataclass
class TrainingPair:
    query: str
    page: PageRef
    negatives: List[PageRef] = field(default_factory=list)
    line: int = 0                 # where it came from (1-based), for messages
    source: str = ''

    def to_json(self) -> Dict[str, object]:
        record: Dict[str, object] = {'query': self.query, 'page': str(self.page)}
        if self.negatives:
            record['negatives'] = [str(n) for n in self.negatives]
        return record


def _parse_line(text: str) -> TrainingPair:
    try:
        record = json.loads(text)
    except ValueError as e:
        raise ValueError(f'not valid JSON ({e})') from None
    if not isinstance(record, dict):
        raise ValueError('expected a JSON object like {"query": "...", "page": "file.pdf#3"}, got '
                         f'{type(record).__name__}')
    unknown = sorted(set(record) - {'query', 'page', 'negatives', 'page_id', 'source'})
    if unknown:
        raise ValueError(f'unknown field(s) {", ".join(map(repr, unknown))}; expected query, page, negatives')
    query = record.get('query')
    if not isinstance(query, str) or not query.strip():
        raise ValueError('"query" must be a non-empty string')
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f'"query" has {len(query)} characters; at most {MAX_QUERY_CHARS} (a question, not a document)')
    if 'page' not in record:
        raise ValueError('"page" is missing (a page reference like "file.pdf#3")')
    try:
        page = PageRef.parse(record['page'])
    except ValueError as e:
        raise ValueError(f'"page": {e}') from None
    negatives = record.get('negatives') or []
    if not isinstance(negatives, list):
        raise ValueError('"negatives" must be a list of page references')
    parsed = []
    for i, negative in enumerate(negatives):
        try:
            parsed.append(PageRef.parse(negative))
        except ValueError as e:
            raise ValueError(f'"negatives"[{i}]: {e}') from None
    return TrainingPair(query.strip(), page, parsed, source=str(record.get('source') or ''))


def read_pairs(path: str | Path) -> List[TrainingPair]:
    """Parse a pairs file; every malformed line is reported (file:line: reason), none is skipped silently."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise PairsError(f'{path}: no such pairs file') from None
    except (OSError, UnicodeDecodeError) as e:
        raise PairsError(f'{path}: cannot be read ({e})') from None
    pairs: List[TrainingPair] = []
    problems: List[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            pair = _parse_line(line)
        except ValueError as e:
            problems.append(f'{path}:{number}: {e}')
            continue
        pair.line = number
        pairs.append(pair)
    _raise(problems)
    if not pairs:
        raise PairsError(f'{path}: no training pairs (the file is empty); one JSON object per line, e.g. '
                         '{"query": "revenue in 2023", "page": "report.pdf#3"}')
    for pair in pairs:
        pair.source = pair.source or str(path)
    return pairs


def _raise(problems: Sequence[str]) -> None:
    if problems:
        more = f'\n  ... and {len(problems) - MAX_REPORTED} more' if len(problems) > MAX_REPORTED else ''
        raise PairsError(f'{len(problems)} problem(s) in the training pairs:\n  ' +
                         '\n  '.join(problems[:MAX_REPORTED]) + more)


def validate_pages(pairs: Iterable[TrainingPair], corpus: Optional[Path]) -> Dict[Path, int]:
    """Check that every page a pair names exists (file readable, page in range), before any training starts.
    Returns the page count of each file."""
    from ..ingest.render import count_pages
    from ..ingest.sources import SUPPORTED_SUFFIXES

    counts: Dict[Path, int] = {}
    broken: Dict[Path, str] = {}
    problems: List[str] = []
    for pair in pairs:
        where = f'{pair.source}:{pair.line}'
        for role, ref in [('page', pair.page)] + [(f'negatives[{i}]', n) for i, n in enumerate(pair.negatives)]:
            file = ref.file(corpus)
            if file not in counts and file not in broken:
                if not file.is_file():
                    broken[file] = 'no such file' + (f' in the corpus {corpus}' if corpus else
                                                     ' (pass --corpus DIR for paths relative to a folder)')
                elif file.suffix.lower() not in SUPPORTED_SUFFIXES:
                    broken[file] = f'unsupported file type {file.suffix!r} (PDF or image)'
                else:
                    try:
                        counts[file] = count_pages(file)
                    except (DocumentError, OSError) as e:
                        broken[file] = getattr(e, 'reason', str(e))
            if file in broken:
                problems.append(f'{where}: {role} {str(ref)!r}: {broken[file]}')
            elif ref.page > counts[file]:
                problems.append(f'{where}: {role} {str(ref)!r}: {file.name} has {counts[file]} page(s)')
    _raise(problems)
    return counts


def write_pairs(path: str | Path, pairs: Iterable[TrainingPair]) -> Path:
    """Write pairs as JSON lines, atomically (a reader sees the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    tmp.write_text(''.join(json.dumps(p.to_json(), ensure_ascii=False) + '\n' for p in pairs), encoding='utf-8')
    os.replace(tmp, path)
    return path

