"""Hard negatives mined with the project's own index: the pages the current model ranks highest for a query
that are not its answer. Near-duplicates of the answer are skipped - a page that renders to the same pixels,
or the same page of another copy/version of the file (same file name, same page number) - because training
the model to push those away would teach it to tell identical pages apart."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from .pages import PageImages
from .pairs import PageRef, TrainingPair

EXTRA = 10   # hits fetched beyond k, so skipped pages can be replaced


def _ref_for(source: str, page: int, corpus: Optional[Path]) -> PageRef:
    path = Path(source).resolve()
    if corpus is not None:
        try:
            return PageRef(path.relative_to(Path(corpus).resolve()).as_posix(), page)
        except ValueError:
            pass
    return PageRef(str(path), page)


def _key(ref: PageRef, corpus: Optional[Path]) -> Tuple[str, int]:
    return str(ref.file(corpus).resolve()), ref.page


def mine_hard_negatives(model: str, pairs: Sequence[TrainingPair], corpus: Optional[Path], k: int,
                        pages: PageImages, *, workdir: Path, device: str = 'cpu', family: Optional[str] = None,
                        progress: bool = True, batch_size: int = 4) -> Tuple[List[TrainingPair], Dict[str, Any]]:
    """``pairs`` with up to ``k`` mined negatives each (after any they already had), and counts of what was
    mined and skipped. The pages of every file the pairs name are indexed into ``workdir`` (a Milvus Lite
    collection; indexing is incremental, so a rerun reuses it) and searched with each query."""
    from tqdm.auto import tqdm

    from ..indexer import ColPaliIndex
    from ..models.encoder import ColPaliEncoder
    from ..retrieve.retriever import MaxSimRetriever
    from ..store.milvus_store import MilvusMultiVectorStore

    files = sorted({str(ref.file(corpus).resolve()) for p in pairs for ref in [p.page, *p.negatives]})
    positives: Dict[str, Set[Tuple[str, int]]] = {}
    for pair in pairs:
        positives.setdefault(pair.query, set()).add(_key(pair.page, corpus))
    encoder = ColPaliEncoder(model, family=family, device=device, batch_size=batch_size).load()
    workdir.mkdir(parents=True, exist_ok=True)
    store = MilvusMultiVectorStore(str(workdir / 'mining.db'), 'mining', dim=encoder.dim, data_dir=str(workdir))
    stats = {'pages_indexed': 0, 'mined': 0, 'skipped_same_pixels': 0, 'skipped_other_version': 0,
             'pairs_short_of_k': 0}
    try:
        index = ColPaliIndex(encoder, store, dpi=pages.dpi, max_side=pages.max_side, progress=progress,
                             retriever=MaxSimRetriever(store, mode='exact'))
        index.add(files)
        stats['pages_indexed'] = store.count()
        mined: Dict[str, List[Any]] = {}
        for query in tqdm(list(positives), desc='Mining hard negatives', unit='query', disable=not progress):
            mined[query] = index.search(query, k + EXTRA + len(positives[query]))
    finally:
        store.close()
    answers: Dict[str, Dict[str, set]] = {}
    for pair in pairs:   # what counts as "the answer" for a query: its pages, their pixels, their (name, page)
        found = answers.setdefault(pair.query, {'hashes': set(), 'names': set()})
        found['hashes'].add(pages.content_hash(pair.page))
        found['names'].add((Path(pair.page.path).name, pair.page.page))
    out = []
    for pair in pairs:
        answer = answers[pair.query]
        chosen = list(pair.negatives)
        for hit in mined[pair.query]:
            if len(chosen) >= len(pair.negatives) + k:
                break
            ref = _ref_for(hit.source, hit.page, corpus)
            if (str(Path(hit.source).resolve()), hit.page) in positives[pair.query] or ref in chosen:
                continue
            if (Path(hit.source).name, hit.page) in answer['names']:
                stats['skipped_other_version'] += 1
                continue
            if pages.content_hash(ref) in answer['hashes']:
                stats['skipped_same_pixels'] += 1
                continue
            chosen.append(ref)
            stats['mined'] += 1
        stats['pairs_short_of_k'] += len(chosen) - len(pair.negatives) < k
        out.append(replace(pair, negatives=chosen))
    return out, stats
