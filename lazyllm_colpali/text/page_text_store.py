"""A folder of page texts (one ``<page_id>.txt`` per page) plus an SQLite manifest of where each came from.

The folder is what LazyLLM's ``Document`` reads; the manifest maps a hit back to file and page. Writing a
page's text is atomic (temp file + rename), so an interrupted run leaves only whole pages and a rerun
skips them: the folder doubles as the cache that keeps OCR or a VLM from being paid twice.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence


@dataclass
class PageText:
    page_id: str
    doc_id: str
    source: str
    file_name: str
    page: int
    text: str = ''
    producer: str = ''   # which extractor or augmenter wrote it


class PageTextStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.pages_dir = self.root / 'pages'
        self.pages_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.root / 'manifest.sqlite'), check_same_thread=False)
        self._db.execute('CREATE TABLE IF NOT EXISTS pages (page_id TEXT PRIMARY KEY, doc_id TEXT, source TEXT, '
                         'file_name TEXT, page INTEGER, producer TEXT, chars INTEGER)')
        self._db.commit()
        self.version = 0   # bumped on every change so readers know to rebuild their index

    def path_of(self, page_id: str) -> Path:
        return self.pages_dir / f'{page_id}.txt'

    def has(self, page_id: str) -> bool:
        with self._lock:
            row = self._db.execute('SELECT 1 FROM pages WHERE page_id=?', (page_id,)).fetchone()
        return row is not None and self.path_of(page_id).exists()

    def put(self, page: PageText) -> None:
        path = self.path_of(page.page_id)
        tmp = path.with_suffix('.tmp')
        tmp.write_text(page.text, encoding='utf-8')
        os.replace(tmp, path)
        with self._lock:
            self._db.execute('INSERT OR REPLACE INTO pages VALUES (?,?,?,?,?,?,?)',
                             (page.page_id, page.doc_id, page.source, page.file_name, page.page, page.producer,
                              len(page.text)))
            self._db.commit()
            self.version += 1

    def get(self, page_ids: Sequence[str], with_text: bool = False) -> Dict[str, PageText]:
        out: Dict[str, PageText] = {}
        with self._lock:
            for i in range(0, len(page_ids), 500):
                chunk = list(page_ids[i:i + 500])
                rows = self._db.execute(f'SELECT page_id, doc_id, source, file_name, page, producer FROM pages '
                                        f'WHERE page_id IN ({",".join("?" * len(chunk))})', chunk).fetchall()
                for pid, doc_id, source, file_name, page, producer in rows:
                    out[pid] = PageText(pid, doc_id, source, file_name, page, producer=producer)
        if with_text:
            for pid, record in out.items():
                record.text = self.path_of(pid).read_text(encoding='utf-8')
        return out

    def doc_ids_for_source(self, source: str) -> List[str]:
        with self._lock:
            return [r[0] for r in self._db.execute('SELECT DISTINCT doc_id FROM pages WHERE source=?', (source,))]

    def delete_docs(self, doc_ids: Iterable[str]) -> int:
        removed = 0
        with self._lock:
            for doc_id in doc_ids:
                ids = [r[0] for r in self._db.execute('SELECT page_id FROM pages WHERE doc_id=?', (doc_id,))]
                for pid in ids:
                    self.path_of(pid).unlink(missing_ok=True)
                self._db.execute('DELETE FROM pages WHERE doc_id=?', (doc_id,))
                removed += len(ids)
            self._db.commit()
            self.version += 1
        return removed

    def count(self) -> int:
        with self._lock:
            return self._db.execute('SELECT COUNT(*) FROM pages').fetchone()[0]

    def text_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.pages_dir.glob('*.txt'))

    def all_ids(self) -> List[str]:
        with self._lock:
            return [r[0] for r in self._db.execute('SELECT page_id FROM pages ORDER BY page_id')]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def default_text_root(name: str, base: Optional[str | Path] = None) -> Path:
    from ..settings import data_home
    return Path(base) if base else data_home() / 'text_indexes' / name
