"""Evaluation datasets: a corpus of files, queries, and graded relevance judgements (qrels) on pages.

A page is named ``<path relative to the corpus folder>#<page number>`` (``report.pdf#3``), whatever arm
retrieved it. Two layouts load:

* this project's: ``DIR/corpus/`` (PDFs, images) + ``DIR/queries.jsonl`` (``{"query_id", "query"}``) +
  ``DIR/qrels.jsonl`` (``{"query_id", "page": "report.pdf#3", "score": 1}``) or ``qrels.tsv``;
* BEIR / ViDoRe-v2 style: ``corpus``, ``queries``, ``qrels`` as ``.jsonl`` or ``.parquet`` (``corpus-id``,
  ``image`` bytes, ``query-id``, ``query``, ``score``); page images are written once under
  ``DIR/.materialized/`` and each ``corpus-id`` becomes ``<corpus-id>.png#1``.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from ..errors import ColPaliError


class DatasetError(ColPaliError):
    """An evaluation dataset is missing a part or has a malformed record (the message names the file)."""


@dataclass
class EvalDataset:
    name: str
    corpus_dir: Path
    queries: Dict[str, str]
    qrels: Dict[str, Dict[str, int]]
    notes: List[str] = field(default_factory=list)

    def page_key(self, source: str, page: int) -> str:
        path = Path(source).resolve()
        try:
            relative = path.relative_to(self.corpus_dir.resolve()).as_posix()
        except ValueError:
            relative = path.name
        return f'{relative}#{page}'

    def validate(self) -> None:
        if not self.queries:
            raise DatasetError(f'{self.name}: no queries')
        missing = sorted(set(self.qrels) - set(self.queries))
        if missing:
            raise DatasetError(f'{self.name}: qrels name queries that do not exist: {missing[:5]}')
        judged = [q for q in self.queries if self.qrels.get(q)]
        if not judged:
            raise DatasetError(f'{self.name}: no query has a relevant page in the qrels')
        unknown = sorted({key.split('#')[0] for rel in self.qrels.values() for key in rel
                          if not (self.corpus_dir / key.split('#')[0]).exists()})
        if unknown:
            raise DatasetError(f'{self.name}: qrels name files missing from {self.corpus_dir}: {unknown[:5]}')
        unreachable = self.unreachable_pages()
        if unreachable:
            shown = '; '.join(f'query {qid}: {key} ({why})' for qid, key, why in unreachable[:20])
            self.note(f'{self.name}: {len(unreachable)} gold pages no arm can return (page 0 or past the last page '
                      f'of their file; they count as misses): {shown}' + (' ...' if len(unreachable) > 20 else ''))

    def unreachable_pages(self) -> List[Tuple[str, str, str]]:
        """(query id, page key, why) for each gold page numbered 0, or past the last page of its file."""
        from ..errors import DocumentError
        from ..ingest.render import count_pages

        sizes: Dict[str, int] = {}
        out = []
        for qid in sorted(self.qrels):
            for key in self.qrels[qid]:
                name, _, number = key.rpartition('#')
                if name not in sizes:
                    try:
                        sizes[name] = count_pages(self.corpus_dir / name)
                    except DocumentError as e:
                        raise DatasetError(f'{self.name}: qrels name {name}, which cannot be read: {e}') from e
                if not number.lstrip('-').isdigit():
                    raise DatasetError(f'{self.name}: query {qid}: page {key!r} has no page number after "#"')
                if not 1 <= int(number) <= sizes[name]:
                    out.append((qid, key, f'the file has {sizes[name]} page' + 's' * (sizes[name] != 1)))
        return out

    def note(self, message: str) -> None:
        """Record a problem the run goes on with, and say it now, before any long work."""
        if message not in self.notes:
            self.notes.append(message)
            from ..logging import LOG
            LOG.warning(message)


def _read_records(path: Path) -> List[dict]:
    try:
        if path.suffix == '.parquet':
            import pyarrow.parquet as pq
            return pq.read_table(path).to_pylist()
        if path.suffix == '.tsv':
            lines = [line.rstrip('\n').split('\t') for line in path.read_text(encoding='utf-8').splitlines() if line]
            has_header = lines and not lines[0][-1].lstrip('-').isdigit()
            header = lines[0] if has_header else ['query-id', 'corpus-id', 'score']
            body = lines[1:] if has_header else lines
            return [dict(zip(header, row)) for row in body]
        return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise DatasetError(f'{path}: cannot be read ({e})') from e


def _find(root: Path, stem: str) -> Optional[Path]:
    for suffix in ('.jsonl', '.parquet', '.tsv'):
        for candidate in (root / f'{stem}{suffix}', root / stem / f'test{suffix}'):
            if candidate.exists():
                return candidate
    return None


def _field(record: dict, *names: str, where: Path):
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    raise DatasetError(f'{where}: a record has none of the fields {names}: {str(record)[:120]}')


def load_queries(path: Path) -> Dict[str, str]:
    return {str(_field(r, 'query_id', 'query-id', '_id', 'id', where=path)): str(_field(r, 'query', 'text', where=path))
            for r in _read_records(path)}


def load_qrels(path: Path, aliases: Optional[Dict[str, str]] = None) -> Dict[str, Dict[str, int]]:
    return read_qrels(path, aliases)[0]


def read_qrels(path: Path, aliases: Optional[Dict[str, str]] = None) -> Tuple[Dict[str, Dict[str, int]], int]:
    """The qrels of ``path``, and how many of its lines repeat a (query, page) pair already read (the last
    grade is kept)."""
    qrels: Dict[str, Dict[str, int]] = {}
    seen, duplicates = set(), 0
    for record in _read_records(path):
        qid = str(_field(record, 'query_id', 'query-id', 'qid', where=path))
        page = str(_field(record, 'page', 'corpus_id', 'corpus-id', 'doc_id', where=path))
        page = (aliases or {}).get(page, page)
        if '#' not in page:
            page = f'{page}#1'
        score = int(float(record.get('score', record.get('relevance', 1))))
        duplicates += (qid, page) in seen
        seen.add((qid, page))
        if score > 0:
            qrels.setdefault(qid, {})[page] = score
    return qrels, duplicates


def _with_qrels(name: str, corpus_dir: Path, queries: Dict[str, str], qrels_file: Path,
                aliases: Optional[Dict[str, str]] = None) -> EvalDataset:
    qrels, duplicates = read_qrels(qrels_file, aliases)
    dataset = EvalDataset(name, corpus_dir, queries, qrels)
    if duplicates:
        dataset.note(f'{qrels_file}: {duplicates} duplicate qrel line' + 's' * (duplicates != 1)
                     + ' (same query and page; the last grade is kept)')
    dataset.validate()
    return dataset


def _materialize_corpus(root: Path, corpus_file: Path) -> Dict[str, str]:
    """BEIR-style corpus with image bytes -> ``.materialized/<corpus-id>.png``; returns corpus-id -> page key."""
    from PIL import Image

    out = root / '.materialized'
    out.mkdir(exist_ok=True)
    aliases = {}
    for record in _read_records(corpus_file):
        cid = str(_field(record, 'corpus-id', 'corpus_id', '_id', 'id', where=corpus_file))
        target = out / f'{cid}.png'
        if not target.exists():
            image = record.get('image')
            data = image.get('bytes') if isinstance(image, dict) else image
            if isinstance(data, (bytes, bytearray)):
                Image.open(io.BytesIO(data)).convert('RGB').save(target)
            elif isinstance(image, dict) and image.get('path') and Path(root, image['path']).exists():
                Image.open(Path(root, image['path'])).convert('RGB').save(target)
            else:
                raise DatasetError(f'{corpus_file}: corpus record {cid!r} has no image bytes')
        aliases[cid] = f'{cid}.png#1'
    return aliases


def load_dataset(path: str | Path, name: Optional[str] = None) -> EvalDataset:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f'{root}: no such dataset folder')
    queries_file, qrels_file = _find(root, 'queries'), _find(root, 'qrels')
    if queries_file is None or qrels_file is None:
        raise DatasetError(f'{root}: expected queries.jsonl|parquet and qrels.jsonl|parquet|tsv in the folder')
    if (root / 'corpus').is_dir():
        corpus_dir, aliases = root / 'corpus', {}
    else:
        corpus_file = _find(root, 'corpus')
        if corpus_file is None:
            raise DatasetError(f'{root}: no corpus/ folder and no corpus.jsonl|parquet')
        aliases = _materialize_corpus(root, corpus_file)
        corpus_dir = root / '.materialized'
    return _with_qrels(name or root.name, corpus_dir, load_queries(queries_file), qrels_file, aliases)


def from_parts(corpus: str | Path, queries: str | Path, qrels: str | Path, name: Optional[str] = None) -> EvalDataset:
    """A user's folder of documents plus a queries file and a qrels file (any of the layouts above)."""
    corpus_dir = Path(corpus).expanduser()
    if not corpus_dir.is_dir():
        raise DatasetError(f'{corpus_dir}: the corpus must be a folder of PDFs or images')
    return _with_qrels(name or corpus_dir.name, corpus_dir, load_queries(Path(queries)), Path(qrels))


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in records), encoding='utf-8')
