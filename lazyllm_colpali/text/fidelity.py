"""Does a page's layout text say what its PDF text layer says? Word counts on both sides, for tests and the
benchmark (``benchmarks/bench_layout_words.py``).

A word of the layout text that the text layer does not have as often (a doubled-letter "affffefected", a
fragment "CO", a word read twice) is *foreign*, unless it is one of a few consecutive pieces that together
make a text-layer word (*split*: "re sults", or two stacked chart labels PDFium ran together as "-20%0%");
a word of the text layer the layout text lacks is *missing*
(running headers and footers are dropped on purpose: the caller passes them as ``allowed``). Markdown
markup is not a word; CJK characters count one by one (lines of Chinese are joined without spaces); a word
the text layer hyphenates across a line end may appear joined or in halves.

    >>> foreign_words('## Net income\\n\\n| Revenues | $ 14,826 |', 'Net income\\r\\nRevenues $ 14,826')
    []
    >>> compare_words('Our rere sults were afaffected C O N S O L I D A T E D',
    ...               'Our results were affected CONSOLIDATED')
    (['rere', 'sults', 'afaffected', 'C', 'O', 'N', 'S', 'O', 'L', 'I', 'D', 'A', 'T', 'E', 'D'], [])
    >>> compare_words('0% -20% re sults', '-20%0% results')
    ([], ['0%', '-20%', 're', 'sults'])
    >>> missing_words('Our results', 'Our results were affected\\r\\nF-4', allowed=['F-4'])
    ['were', 'affected']
"""
from __future__ import annotations

import re
from collections import Counter
from itertools import permutations
from typing import Iterable, List, Tuple

_CJK = '\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef'   # punctuation, ideographs, full width
_TOKEN = re.compile(f'[{_CJK}]|[^\\s{_CJK}]+')
_MARKUP = re.compile(r'^(?:#{1,6}|\|(?:-*\|)*|\*\*(?:Table|Figure):?\*\*)$')
_SOFT = re.compile('[\x02\u00ad]')


def words(text: str, markdown: bool = True) -> List[str]:
    """Words of ``text`` as the checks count them: whitespace-separated, CJK characters one by one, soft
    hyphens removed, '|' read as '/' (a table cell writes it so); with ``markdown``, markup (headings, table
    bars, emphasis) is not a word."""
    out = []
    for token in _TOKEN.findall(_SOFT.sub('', text)):
        if markdown and _MARKUP.match(token):
            continue
        token = token.strip('*').replace('|', '/')
        if token:
            out.append(token)
    return out


def layer_words(layer: str) -> Counter:
    """The text layer's words, plus both forms of each word it hyphenates across a line end (PDFium's
    ``\x02``): joined, and its two halves."""
    counts = Counter(words(layer, markdown=False))
    for head, tail in re.findall(r'(\S+)[\x02\u00ad]\s*(\S+)', layer):
        counts.update(words(head + tail, False) + words(head, False) + words(tail, False))
    return counts


def compare_words(layout: str, layer: str, max_pieces: int = 4) -> Tuple[List[str], List[str]]:
    """(foreign, split): layout words beyond what the text layer has, in layout order; of those, the ones
    that are 2 to ``max_pieces`` consecutive pieces of one text-layer word are *split* (e.g. two chart
    labels PDFium ran together without a space, read apart by their positions) and the rest *foreign*."""
    budget = layer_words(layer)
    rest = []
    for word in words(layout):
        if budget[word] > 0:
            budget[word] -= 1
        else:
            rest.append(word)
    split = [False] * len(rest)
    for i in range(len(rest)):
        for j in range(i + 2, min(len(rest), i + max_pieces) + 1):
            if any(split[i:j]):
                break
            # Read in layout order, pieces may come in another order (axis labels read top-down, drawn
            # bottom-up): two or three pieces in any order, more in order.
            orders = permutations(rest[i:j]) if j - i <= 3 else [rest[i:j]]
            joined = next((w for w in map(''.join, orders) if budget[w] > 0), None)
            if joined is not None:
                budget[joined] -= 1
                split[i:j] = [True] * (j - i)
                break
    return ([w for w, s in zip(rest, split) if not s], [w for w, s in zip(rest, split) if s])


def foreign_words(layout: str, layer: str) -> List[str]:
    """Words of the layout text the text layer does not have (as often), split pieces of its words aside."""
    return compare_words(layout, layer)[0]


def missing_words(layout: str, layer: str, allowed: Iterable[str] = ()) -> List[str]:
    """Words of the text layer the layout text lacks, leaving out the ``allowed`` ones (headers, footers)."""
    have = Counter(words(layout))
    for word in allowed:
        for w in words(word):
            have[w] += 1
    out = []
    for word in words(layer, markdown=False):
        if have[word] > 0:
            have[word] -= 1
        else:
            out.append(word)
    return out
