"""Terms of a page collection, for finding bridge concepts: which phrases (1-3 words) occur on which pages.

A bridge is a phrase a retrieved page uses that the question does not, that is rare in the collection (a
high inverse document frequency) and that occurs on some page not retrieved yet - a phrase found only on
pages already in hand leads nowhere. Phrases a page *defines* or writes as a name (``X is a ...``,
``X (ABC)``, Title Case, acronyms) weigh more than plain words.

    >>> terms = CollectionTerms({'p1': 'The Quorra framework weighs answers.',
    ...                          'p2': 'Quorra framework: a method that relies on the Dunmore algorithm.',
    ...                          'p3': 'Answers are weighed by hand.'})
    >>> sorted(terms.pages('quorra framework'))
    ['p1', 'p2']
    >>> [c.phrase for c in terms.candidates(['p1'], question='How are answers weighed?', seen={'p1'})][:1]
    ['quorra framework']
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

# Function words and the filler of technical prose: never a bridge on their own or at a phrase's edge.
STOPWORDS = frozenset('''
a about above after again against all also although am among an and any are as at be because been before being
below between both but by can cannot could did do does doing done down during each either else etc even ever every
few for from further had has have having he her here hers herself him himself his how however i if in into is it its
itself just least less let like made many may me might more most much must my myself neither no nor not now of off
often on once one only or other others our ours ourselves out over own per rather same several she should since so
some such than that the their theirs them themselves then there these they this those though through thus to too
two under until up upon us use used uses using very via was we well were what when where whether which while who
whom whose why will with within without would yet you your yours yourself yourselves
answer answers based called e.g fig figure first given i.e new page pages paper section see shown table three way
'''.split())

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-'][A-Za-z0-9]+)*|[0-9]+(?:\.[0-9]+)?")
_SENTENCE_END = re.compile(r'[.!?;:]\s')
# "X is a/an/the", "X (ABC)", "called X", "X refers to", glossary rows "X: a ..." / "X  A ...", and the first
# cell of a Markdown table row ("| X | ..."; a table's first column names what its row describes): the X a page
# defines.
_DEFINITION = re.compile(r"([A-Z][\w-]*(?:\s+[A-Za-z][\w-]*){0,3})\s+(?:is|are)\s+(?:a|an|the)\b"
                         r"|([A-Z][\w-]*(?:\s+[A-Za-z][\w-]*){0,3})\s*\([A-Z][\w-]+\)"
                         r"|(?:called|named|termed|known as)\s+(?:the\s+)?([A-Za-z][\w-]*(?:\s+[A-Za-z][\w-]*){0,2})"
                         r"|([A-Z][\w-]*(?:\s+[A-Za-z][\w-]*){0,3})\s+(?:refers to|stands for|denotes|is defined)"
                         r"|^\s*([A-Z][\w-]*(?:[ \t]+[a-z][\w-]*){0,2})"
                         r"(?:[ \t]*[:\u2013\u2014][ \t]*|[ \t]*\n[ \t]*|[ \t]+)(?:A|An)\s+[a-z]"
                         r"|^[ \t]*\|[ \t]*([A-Z][\w-]*(?:[ \t]+[A-Za-z][\w-]*){0,2})[ \t]*\|", re.M)
_NAME = re.compile(r'\b(?:[A-Z][a-z0-9]+(?:-[A-Za-z0-9]+)*|[A-Z]{2,}[0-9]*|[A-Z][a-z]+[A-Z]\w*)'
                   r'(?:\s+(?:[A-Z][a-z0-9]+(?:-[A-Za-z0-9]+)*|[A-Z]{2,}[0-9]*))*')
MAX_WORDS = 3


def words(text: str) -> List[str]:
    """Lower-case word tokens (letters, digits, inner hyphens)."""
    return [w.lower() for w in _WORD.findall(text)]


def phrases(tokens: Sequence[str], max_words: int = MAX_WORDS) -> Iterable[Tuple[str, ...]]:
    """Every run of 1..max_words tokens without a stopword or a number."""
    return (phrase for _, phrase in _positioned(tokens, max_words))


def definitions(text: str) -> Set[str]:
    """Phrases the text defines: the X of "X is a ...", "X (ABC)", "called X", "X refers to", "X: a ...", "| X |".

    >>> sorted(definitions('| Zimsil score | Moreven framework |\\nThe Quorra framework is a method.'))
    ['quorra framework', 'zimsil score']
    """
    found = {' '.join(_trim(words(next(g for g in m.groups() if g)))) for m in _DEFINITION.finditer(text)}
    found.discard('')
    return found


def defined_phrases(text: str) -> Set[str]:
    """Phrases the text defines (:func:`definitions`) or writes as a name: Title Case runs and acronyms
    (lower-cased, stopwords trimmed from the edges).

    >>> sorted(defined_phrases('The Quorra framework is a method. It uses BM25 and the Dunmore Index.'))
    ['bm25', 'dunmore index', 'quorra framework']
    """
    found = definitions(text)
    for sentence in _SENTENCE_END.split(text):
        for i, match in enumerate(_NAME.finditer(sentence)):
            tokens = _trim(words(match.group(0)))
            # A capital at a sentence start says nothing; a lone capitalised word there is not a name.
            if tokens and not (i == 0 and match.start() == 0 and len(tokens) == 1 and not match.group(0).isupper()):
                found.add(' '.join(tokens[:MAX_WORDS]))
    found.discard('')
    return found


def _trim(tokens: List[str]) -> List[str]:
    while tokens and (tokens[0] in STOPWORDS or tokens[0][0].isdigit()):
        tokens = tokens[1:]
    while tokens and (tokens[-1] in STOPWORDS or tokens[-1][0].isdigit()):
        tokens = tokens[:-1]
    return tokens


@dataclass
class Candidate:
    phrase: str
    weight: float
    df: int             # pages of the collection holding the phrase
    unseen: int         # of those, pages not retrieved yet
    defined: bool       # written as a name or defined on a source page


class CollectionTerms:
    """Which pages hold each phrase (1-3 words). Phrases on a single page are dropped after counting (they
    can lead nowhere), and so are phrases on more than ``max_df_share`` of the pages (common words)."""

    def __init__(self, texts: Mapping[str, str], max_df_share: float = 0.2, max_words: int = MAX_WORDS):
        self.max_words = max_words
        self.max_df_share = max_df_share
        self.n_pages = len(texts)
        self._tokens: Dict[str, List[str]] = {pid: words(text) for pid, text in texts.items()}
        self._texts = dict(texts)
        counts: Counter = Counter()
        self._word_df: Counter = Counter()
        for tokens in self._tokens.values():
            counts.update(set(phrases(tokens, max_words)))
            self._word_df.update(set(tokens))
        ceiling = max(2, int(max_df_share * self.n_pages))
        keep = {p for p, df in counts.items() if 2 <= df <= ceiling}
        del counts
        self._postings: Dict[Tuple[str, ...], Set[str]] = {p: set() for p in keep}
        for pid, tokens in self._tokens.items():
            for phrase in set(phrases(tokens, max_words)):
                if phrase in self._postings:
                    self._postings[phrase].add(pid)
        # where each phrase is defined: a bridge worth a search leads to a page that explains it
        self._defined_on: Dict[Tuple[str, ...], Set[str]] = {}
        for pid, text in self._texts.items():
            for phrase in definitions(text):
                self._defined_on.setdefault(tuple(phrase.split()), set()).add(pid)

    def __len__(self) -> int:
        return self.n_pages

    def text(self, page_id: str) -> Optional[str]:
        return self._texts.get(page_id)

    def pages(self, phrase: str) -> Set[str]:
        """Pages holding ``phrase`` (lower-case words); empty for phrases on one page or on too many."""
        return set(self._postings.get(tuple(phrase.split()), ()))

    def holds(self, page_id: str, phrase: str) -> bool:
        key = tuple(words(phrase))
        tokens = self._tokens.get(page_id)
        if tokens is None or not key:
            return False
        n = len(key)
        return any(tuple(tokens[i:i + n]) == key for i in range(len(tokens) - n + 1))

    def word_idf(self, word: str) -> float:
        return math.log((self.n_pages + 1) / (self._word_df.get(word, 0) + 0.5))

    def rare_words(self, text: str) -> Set[str]:
        """The words of ``text`` that are not stopwords and occur on at most ``max_df_share`` of the pages."""
        ceiling = self.max_df_share * self.n_pages
        return {w for w in words(text) if w not in STOPWORDS and self._word_df.get(w, 0) <= ceiling}

    def sources(self, page_ids: Sequence[str], anchors: str, n: int) -> List[str]:
        """The ``n`` pages to take bridges from: pages that define one of the anchors' rare words first (the
        next link of a chain is explained there), then pages that hold one, then by rank."""
        rare = self.rare_words(anchors)

        def key(item):
            rank, pid = item
            text = self._texts.get(pid, '')
            defines = any(rare & set(d.split()) for d in definitions(text))
            holds = bool(rare & set(self._tokens.get(pid, ())))
            return (not defines, not holds, rank)
        return [pid for _, pid in sorted(enumerate(page_ids), key=key)[:n]]

    def candidates(self, source_pages: Sequence[str], question: str, seen: Set[str],
                   exclude: Iterable[str] = (), texts: Optional[Mapping[str, str]] = None,
                   anchors: Iterable[str] = (), window: int = 20) -> List[Candidate]:
        """Bridge candidates from ``source_pages`` (best first): phrases the question does not contain, that
        occur on at least one page outside ``seen``. Weighed by rarity (the phrase's idf squared, times how rare its
        rarest word is: "term meaning builds" is a rare phrase of common words), by use on the source pages
        (earlier pages count more, pages that define an anchor double), 3x within ``window`` words of an
        anchor (the question's rare words and the bridge that brought the page: a concept is explained
        next to the one it builds on), 1.5x when a source page defines it or writes it as a name, and 2x
        when a page not seen yet defines it (the next link of a chain of definitions)."""
        asked = set(words(question))
        done = {tuple(words(e)) for e in exclude}
        rare = self.rare_words(' '.join([question, *anchors]))
        tf: Counter = Counter()
        defined: Set[str] = set()
        for rank, pid in enumerate(source_pages):
            text = (texts or {}).get(pid) or self._texts.get(pid) or ''
            tokens = words(text)
            defined |= defined_phrases(text)
            share = (2.0 if any(rare & set(d.split()) for d in definitions(text)) else 1.0) / (1 + rank)
            marks = [i for i, t in enumerate(tokens) if t in rare]
            for i, phrase in _positioned(tokens, self.max_words):
                near = any(abs(i - m) <= window for m in marks)
                tf[phrase] += share * (3.0 if near else 1.0)
        defined_words = {w for d in defined for w in d.split()}
        top_idf = math.log(self.n_pages + 1) or 1.0
        out: List[Candidate] = []
        for phrase, freq in tf.items():
            holders = self._postings.get(phrase)
            if not holders or all(w in asked for w in phrase) or phrase in done:
                continue
            unseen = len(holders - seen)
            if not unseen:
                continue
            name = ' '.join(phrase)
            rarest = max(phrase, key=self.word_idf)
            is_defined = name in defined or rarest in defined_words
            idf = math.log((self.n_pages + 1) / (len(holders) + 0.5)) ** 2 / top_idf   # squared: rarity decides
            explained = bool(self._defined_on.get(phrase, set()) - seen)
            weight = (idf * (self.word_idf(rarest) / top_idf) * (1 + math.log1p(freq)) * (1.5 if is_defined else 1.0)
                      * (2.0 if explained else 1.0))
            out.append(Candidate(name, weight, len(holders), unseen, is_defined))
        out.sort(key=lambda c: (-round(c.weight, 9), -len(c.phrase.split()), c.phrase))
        return out


def _positioned(tokens: Sequence[str], max_words: int) -> Iterable[Tuple[int, Tuple[str, ...]]]:
    """Runs of 1..max_words content words (no stopword or number anywhere in the run), with their position."""
    for i in range(len(tokens)):
        for n in range(1, max_words + 1):
            if i + n > len(tokens):
                break
            last = tokens[i + n - 1]
            if last in STOPWORDS or last[0].isdigit():
                break
            yield i, tuple(tokens[i:i + n])


def pick(candidates: Sequence[Candidate], n: int, terms: Optional[CollectionTerms] = None) -> List[Candidate]:
    """The ``n`` best candidates, skipping one that shares a word with a phrase already picked (``quorra`` after
    ``quorra framework``) or that would find exactly the same pages."""
    chosen: List[Candidate] = []
    for cand in candidates:
        if len(chosen) >= n:
            break
        tokens = set(cand.phrase.split())
        if any(tokens & set(c.phrase.split()) for c in chosen):
            continue
        if terms is not None and any(terms.pages(cand.phrase) == terms.pages(c.phrase) for c in chosen):
            continue
        chosen.append(cand)
    return chosen
