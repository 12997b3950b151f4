"""Evaluation datasets: a corpus of files, queries, and graded relevance judgements (qrels) on pages.

A page is named ``<path relative to the corpus folder>#<page number>`` (``report.pdf#3``), whatever arm
retrieved it. Two layouts load:

* this project's: ``DIR/corpus/`` (PDFs, images) + ``DIR/queries.jsonl`` (``{"query_id", "query"}``) +
  ``DIR/qrels.jsonl`` (``{"query_id", "page": "report.pdf#3", "score": 1}``) or ``qrels.tsv``;
* BEIR / ViDoRe-v2 style: ``corpus``, ``queries``, ``qrels`` as ``.jsonl`` or ``.parquet`` (``corpus-id``,
  ``image`` bytes, ``query-id``, ``query``, ``score``); page images are written once under
  ``DIR/.materialized/`` and each ``corpus-id`` becomes ``<corpus-id>.png#1``.

Gold answers (optional, for answer-level evaluation): ``DIR/answers.jsonl`` (``{"query_id", "answers": [...]}``,
or ``"answer": "..."``), or an ``answer``/``answers`` field in the queries file. ``Not answerable`` marks a
question the corpus does not answer (the system should abstain).
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
    answers: Dict[str, List[str]] = field(default_factory=dict)   # query id -> gold answers (may be empty)
    # position of each gold page in its query's chain of concepts (qrels' optional "hop" field; eval/chains.py)
    chain_hops: Dict[str, Dict[str, int]] = field(default_factory=dict)
    # where each (query id, page key) of the qrels was read, e.g. 'qrels.tsv:7', to name it in messages
    qrel_lines: Dict[Tuple[str, str], str] = field(default_factory=dict)

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
            shown = [self._line_naming(lambda qid, key: qid == m) + m for m in missing[:5]]
            raise DatasetError(f'{self.name}: qrels name queries that do not exist: {shown}')
        judged = [q for q in self.queries if self.qrels.get(q)]
        if not judged:
            raise DatasetError(f'{self.name}: no query has a relevant page in the qrels')
        unknown = sorted({key.split('#')[0] for rel in self.qrels.values() for key in rel
                          if not (self.corpus_dir / key.split('#')[0]).exists()})
        if unknown:
            shown = [self._line_naming(lambda qid, key: key.split('#')[0] == u) + u for u in unknown[:5]]
            raise DatasetError(f'{self.name}: qrels name files missing from {self.corpus_dir}: {shown}')
        unreachable = self.unreachable_pages()
        if unreachable:
            shown = '; '.join(f'{self._where(qid, key)}query {qid}: {key} ({why})'
                              for qid, key, why in unreachable[:20])
            pages = f'{len(unreachable)} gold page' + 's' * (len(unreachable) != 1)
            self.note(f'{self.name}: {pages} no arm can return (page 0 or past the last page '
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
                    raise DatasetError(f'{self._where(qid, key) or self.name + ": "}query {qid}: page {key!r} '
                                       'has no page number after "#"')
                if not 1 <= int(number) <= sizes[name]:
                    out.append((qid, key, f'the file has {sizes[name]} page' + 's' * (sizes[name] != 1)))
        return out

    def _where(self, qid: str, key: str) -> str:
        where = self.qrel_lines.get((qid, key))
        return f'{where}: ' if where else ''

    def _line_naming(self, matches) -> str:
        """'path:line: ' of the first qrels line whose (query id, page key) ``matches``, or '' when unknown."""
        found = sorted((where for (qid, key), where in self.qrel_lines.items() if matches(qid, key)),
                       key=lambda where: int(where.rpartition(':')[2]))
        return f'{found[0]}: ' if found else ''

    def note(self, message: str) -> None:
        """Record a problem the run goes on with, and say it now, before any long work."""
        if message not in self.notes:
            self.notes.append(message)
            from ..logging import LOG
            LOG.warning(message)


def _read_records(path: Path) -> List[dict]:
    return [record for _, record in _numbered_records(path)]


def _numbered_records(path: Path) -> List[Tuple[int, dict]]:
    """(line number, record) for each record of ``path``; a Parquet file's rows are numbered from 1."""
    try:
        if path.suffix == '.parquet':
            import pyarrow.parquet as pq
            return list(enumerate(pq.read_table(path).to_pylist(), 1))
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1) if line.strip()]
        if path.suffix == '.tsv':
            rows = [(n, line.split('\t')) for n, line in lines]
            has_header = rows and not rows[0][1][-1].lstrip('-').isdigit()
            header = rows[0][1] if has_header else ['query-id', 'corpus-id', 'score']
            return [(n, dict(zip(header, row))) for n, row in rows[1 if has_header else 0:]]
        records = []
        for n, line in lines:
            try:
                records.append((n, json.loads(line)))
            except ValueError as e:
                raise DatasetError(f'{path}:{n}: not a JSON record ({e})') from e
        return records
    except (OSError, ValueError) as e:
        raise DatasetError(f'{path}: cannot be read ({e})') from e


def _find(root: Path, stem: str) -> Optional[Path]:
    for suffix in ('.jsonl', '.parquet', '.tsv'):
        for candidate in (root / f'{stem}{suffix}', root / stem / f'test{suffix}'):
            if candidate.exists():
                return candidate
    return None


def _field(record: dict, *names: str, where: Path | str):
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    raise DatasetError(f'{where}: a record has none of the fields {names}: {str(record)[:120]}')


def load_queries(path: Path) -> Dict[str, str]:
    return {str(_field(r, 'query_id', 'query-id', '_id', 'id', where=path)): str(_field(r, 'query', 'text', where=path))
            for r in _read_records(path)}


def load_qrels(path: Path, aliases: Optional[Dict[str, str]] = None) -> Dict[str, Dict[str, int]]:
    return read_qrels(path, aliases)[0]


def read_qrels(path: Path, aliases: Optional[Dict[str, str]] = None
               ) -> Tuple[Dict[str, Dict[str, int]], Dict[Tuple[str, str], str], List[Tuple[int, int]]]:
    """The qrels of ``path``; where each (query, page) was read ('path:line', the last line that names it);
    and (line, earlier line) for each line that repeats a (query, page) pair already read (the last grade is
    kept)."""
    qrels: Dict[str, Dict[str, int]] = {}
    first: Dict[Tuple[str, str], int] = {}
    lines: Dict[Tuple[str, str], str] = {}
    duplicates: List[Tuple[int, int]] = []
    for line, record in _numbered_records(path):
        where = f'{path}:{line}'
        qid = str(_field(record, 'query_id', 'query-id', 'qid', where=where))
        page = str(_field(record, 'page', 'corpus_id', 'corpus-id', 'doc_id', where=where))
        page = (aliases or {}).get(page, page)
        if '#' not in page:
            page = f'{page}#1'
        try:
            score = int(float(record.get('score', record.get('relevance', 1))))
        except (TypeError, ValueError):
            raise DatasetError(f'{where}: the score must be a number: {str(record)[:120]}') from None
        if (qid, page) in first:
            duplicates.append((line, first[qid, page]))
        first.setdefault((qid, page), line)
        lines[qid, page] = where
        if score > 0:
            qrels.setdefault(qid, {})[page] = score
    return qrels, lines, duplicates


def _with_qrels(name: str, corpus_dir: Path, queries: Dict[str, str], qrels_file: Path,
                aliases: Optional[Dict[str, str]] = None, validate: bool = True) -> EvalDataset:
    qrels, lines, duplicates = read_qrels(qrels_file, aliases)
    dataset = EvalDataset(name, corpus_dir, queries, qrels, chain_hops=load_hops(qrels_file, aliases),
                          qrel_lines=lines)
    if duplicates:
        shown = ', '.join(f'line {line} repeats line {earlier}' for line, earlier in duplicates[:10])
        dataset.note(f'{qrels_file}: {len(duplicates)} duplicate qrel line' + 's' * (len(duplicates) != 1)
                     + f' (same query and page; the last grade is kept): {shown}'
                     + (' ...' if len(duplicates) > 10 else ''))
    if validate:
        dataset.validate()
    return dataset


def _answer_records(path: Path) -> Iterable[Tuple[str, dict]]:
    """(``line N`` / ``record N``, record) of a queries or answers file, for error messages."""
    if path.suffix != '.jsonl':
        yield from ((f'record {n}', r) for n, r in _numbered_records(path))
        return
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, ValueError) as e:   # unreadable, or not UTF-8
        raise DatasetError(f'{path}: cannot be read ({e})') from e
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError as e:
                raise DatasetError(f'{path}: line {number}: not JSON ({e})') from e
            if not isinstance(record, dict):
                raise DatasetError(f'{path}: line {number}: expected a JSON object')
            yield f'line {number}', record


def _answer_list(value, where: str) -> List[str]:
    values = value if isinstance(value, (list, tuple)) else [value]
    answers = [str(v).strip() for v in values if v is not None and str(v).strip()]
    if not answers:
        raise DatasetError(f'{where}: the gold answer is empty ({value!r})')
    return answers


def load_gold_answers(queries_file: Path, answers_file: Optional[Path],
                      queries: Dict[str, str]) -> Dict[str, List[str]]:
    """Gold answers by query id, from ``answers_file`` (``{"query_id", "answers": [...]}`` or ``"answer"``) and
    from ``answer``/``answers`` fields of the queries file; errors name the file and line."""
    gold: Dict[str, List[str]] = {}
    for line, record in _answer_records(queries_file):
        value = record.get('answers', record.get('answer'))
        if value is not None:
            qid = str(_field(record, 'query_id', 'query-id', '_id', 'id', where=queries_file))
            gold[qid] = _answer_list(value, f'{queries_file}: {line} (query {qid})')
    if answers_file is None:
        return gold
    for line, record in _answer_records(answers_file):
        where = f'{answers_file}: {line}'
        qid = str(_field(record, 'query_id', 'query-id', 'qid', where=where))
        if qid not in queries:
            raise DatasetError(f'{where}: query {qid!r} is not in the queries')
        value = record.get('answers', record.get('answer'))
        if value is None:
            raise DatasetError(f'{where}: no "answers" (a list) or "answer" field')
        known = gold.setdefault(qid, [])
        known.extend(a for a in _answer_list(value, where) if a not in known)
    return gold


def load_hops(path: Path, aliases: Optional[Dict[str, str]] = None) -> Dict[str, Dict[str, int]]:
    """The optional ``hop`` of each gold page (its position in a chain of concepts), from qrels records."""
    hops: Dict[str, Dict[str, int]] = {}
    for record in _read_records(path):
        if record.get('hop') in (None, '') or float(record.get('score', 1)) <= 0:
            continue
        page = str(_field(record, 'page', 'corpus_id', 'corpus-id', 'doc_id', where=path))
        page = (aliases or {}).get(page, page)
        try:
            hop = int(record['hop'])
        except (TypeError, ValueError):
            raise DatasetError(f'{path}: "hop" must be a whole number, got {record["hop"]!r}') from None
        hops.setdefault(str(_field(record, 'query_id', 'query-id', 'qid', where=path)), {})[
            page if '#' in page else f'{page}#1'] = hop
    return hops


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
    dataset = _with_qrels(name or root.name, corpus_dir, load_queries(queries_file), qrels_file, aliases,
                          validate=False)
    dataset.answers = load_gold_answers(queries_file, _find(root, 'answers'), dataset.queries)
    dataset.validate()
    return dataset


def from_parts(corpus: str | Path, queries: str | Path, qrels: str | Path, name: Optional[str] = None,
               answers: str | Path | None = None) -> EvalDataset:
    """A user's folder of documents plus a queries file and a qrels file (any of the layouts above), and
    optionally a gold answers file."""
    corpus_dir = Path(corpus).expanduser()
    if not corpus_dir.is_dir():
        raise DatasetError(f'{corpus_dir}: the corpus must be a folder of PDFs or images')
    if answers is not None and not Path(answers).is_file():
        raise DatasetError(f'{answers}: no such gold answers file')
    dataset = _with_qrels(name or corpus_dir.name, corpus_dir, load_queries(Path(queries)), Path(qrels),
                          validate=False)
    dataset.answers = load_gold_answers(Path(queries), Path(answers) if answers else None, dataset.queries)
    dataset.validate()
    return dataset


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in records), encoding='utf-8')
