"""Does a page's layout text say what its PDF text layer says? Word counts on both sides, for tests and the
benchmark (``benchmarks/bench_layout_words.py``).

A word of the layout text that the text layer does not have as often (a doubled-letter "affffefected", a
fragment "CO", a word read twice) is *foreign*; a word of the text layer the layout text lacks is *missing*
(running headers and footers are dropped on purpose: the caller passes them as ``allowed``). Markdown
markup is not a word; CJK characters count one by one (lines of Chinese are joined without spaces); a word
hyphenated across a line end may appear joined.

    >>> foreign_words('## Net income\\n\\n| Revenues | $ 14,826 |', 'Net income\\r\\nRevenues $ 14,826')
    []
    >>> foreign_words('Our rere sults were afaffected', 'Our results were affected')
    ['rere', 'sults', 'afaffected']
    >>> missing_words('Our results', 'Our results were affected\\r\\nF-4', allowed=['F-4'])
    ['were', 'affected']
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, List

_TOKEN = re.compile(r'[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]|[^\s\u3000-\u303f\u3400-\u4dbf'
                    r'\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]+')
_MARKUP = re.compile(r'^(?:#{1,6}|\|(?:-*\|)*|-+|\*\*(?:Table|Figure):?\*\*)$')
_SOFT = re.compile('[\x02\u00ad]')


def words(text: str) -> List[str]:
    """Words of ``text`` as the checks count them: whitespace-separated, CJK characters one by one, Markdown
    emphasis and table bars stripped, soft hyphens removed, '|' inside a cell read as '/'."""
    out = []
    for token in _TOKEN.findall(_SOFT.sub('', text)):
        if _MARKUP.match(token):
            continue
        token = token.strip('*').replace('|', '/')
        if token:
            out.append(token)
    return out


def layer_words(layer: str) -> Counter:
    """The text layer's words, plus both forms of each word hyphenated across a line end: joined, and (for a
    soft hyphen) its two halves."""
    counts = Counter(words(layer))
    for head, tail in re.findall(r'(\S+)[\x02\u00ad]\s*(\S+)', layer):
        counts.update(words(head + tail) + words(head) + words(tail))
    for head, tail in re.findall(r'(\S+-)\r?\n(\S+)', layer):
        counts.update(words(head + tail))
    return counts


def foreign_words(layout: str, layer: str) -> List[str]:
    """Words of the layout text beyond what the text layer has (in layout order)."""
    budget = layer_words(layer)
    out = []
    for word in words(layout):
        if budget[word] > 0:
            budget[word] -= 1
        else:
            out.append(word)
    return out


def missing_words(layout: str, layer: str, allowed: Iterable[str] = ()) -> List[str]:
    """Words of the text layer the layout text lacks, leaving out the ``allowed`` ones (headers, footers)."""
    have = Counter(words(layout))
    for word in allowed:
        for w in words(word):
            have[w] += 1
    out = []
    for word in words(layer):
        if have[word] > 0:
            have[word] -= 1
        else:
            out.append(word)
    return out
