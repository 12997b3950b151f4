"""BM25 over page texts, built once per index version and queried in milliseconds.

Same tokenisation and scoring as LazyLLM's ``bm25`` / ``bm25_chinese`` similarities (bm25s; English: stopwords
+ Snowball stemmer; Chinese: jieba words + LazyLLM's Chinese stopwords), without LazyLLM 1.4's per-query cost:
its ``Retriever`` reloads every node from the store and sha256-hashes every node's text on each query to find
the cached BM25 model, then copies each hit node (``benchmarks/bench_bm25.py`` measures each part).

    >>> index = PageBM25(['the pump filter is replaced yearly', 'revenue grew in 2023'], ['p1', 'p2'])
    >>> [page for page, _ in index.search('When is the filter replaced?', 2)]
    ['p1']
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple


def _quiet():
    import logging
    logging.getLogger('bm25s').setLevel(logging.WARNING)   # it logs every index build at DEBUG


def _tokenizer(language: str) -> Tuple[Callable[[str], str], object, object]:
    """``(pre-tokenizer, stopwords, stemmer)`` exactly as ``lazyllm.tools.rag.component.bm25.BM25`` sets them."""
    if language == 'zh':
        import jieba

        from .._compat import import_lazyllm_rag
        import_lazyllm_rag()
        from lazyllm.tools.rag.component.stopwords import STOPWORDS_CHINESE

        jieba.setLogLevel(60)   # jieba prints its dictionary loading to stderr otherwise
        return (lambda text: ' '.join(jieba.lcut(text))), STOPWORDS_CHINESE, None
    if language != 'en':
        raise ValueError(f'BM25 language must be "en" or "zh", not {language!r}')
    import Stemmer

    return (lambda text: text), 'en', Stemmer.Stemmer('english')


class PageBM25:
    """A bm25s index over page texts; ``search`` returns ``(page_id, score)`` with score > 0, best first."""

    def __init__(self, texts: Sequence[str], page_ids: Sequence[str], language: str = 'en'):
        import bm25s

        if len(texts) != len(page_ids):
            raise ValueError(f'{len(texts)} texts for {len(page_ids)} page ids')
        self.page_ids: List[str] = list(page_ids)
        self.language = language
        self._pre, self._stopwords, self._stemmer = _tokenizer(language)
        _quiet()
        self._model: Optional[bm25s.BM25] = None
        if self.page_ids:
            tokens = bm25s.tokenize([self._pre(t) for t in texts], stopwords=self._stopwords, stemmer=self._stemmer,
                                    show_progress=False)
            self._model = bm25s.BM25()
            self._model.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.page_ids)

    def search(self, query: str, topk: int = 10) -> List[Tuple[str, float]]:
        import bm25s

        if self._model is None or topk <= 0:
            return []
        tokens = bm25s.tokenize([self._pre(query)], stopwords=self._stopwords, stemmer=self._stemmer,
                                return_ids=False, show_progress=False)
        if not tokens[0]:
            return []
        rows, scores = self._model.retrieve(tokens, k=min(topk, len(self.page_ids)), show_progress=False)
        return [(self.page_ids[int(i)], float(s)) for i, s in zip(rows[0], scores[0]) if s > 0]
