"""Bridge concepts: what the pages found so far point at that the question needs next.

* :class:`OfflineBridges` - phrases the pages use (and preferably define or write as names) that the question
  lacks, weighted by how rare they are in the collection, and only those that occur on some page not found
  yet (:mod:`.terms`). No model; deterministic.
* :class:`VLMBridges` - a VLM (any LazyLLM chat module) reads the question and the page images (plus their
  text where known) and names what must be looked up next, one per line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Set

from ..logging import LOG
from ..retrieve.retriever import SearchHit
from .terms import CollectionTerms, pick, words

BRIDGE_MARKER = '[bridge-concepts]'   # the stand-in VLM's bridge mode keys on this (devtools/standin_vlm.py)
PROMPT = (BRIDGE_MARKER + ' You help a search engine follow a chain of concepts across documents.\n'
          'Question: {question}\n'
          'Already looked up: {used}.\n'
          'The attached pages were found so far{text_note}. Name up to {n} terms, names or concepts that these '
          'pages use but do not explain, and that must be looked up in other documents to answer the question. '
          'Write one per line, nothing else; write NONE if nothing is missing.{texts}')


@dataclass
class Bridge:
    phrase: str
    source: str = ''           # page id of the page it came from ('' when a VLM named it from several)
    weight: float = 0.0
    must_hold: bool = True     # a page it brings must contain the phrase in its text (offline bridges)


class BridgeError(RuntimeError):
    """Bridges could not be named (a VLM that did not answer): the loop stops with what it has."""


class OfflineBridges:
    """``n`` bridges per hop from the text of ``source_pages`` new pages of the previous hop: those defining a rare
    word of the question (or of the bridge that brought them) first, then those holding one, then by rank."""

    def __init__(self, n: int = 2, source_pages: int = 3):
        if n < 1 or source_pages < 1:
            raise ValueError('OfflineBridges needs n >= 1 and source_pages >= 1')
        self.n, self.source_pages = n, source_pages
        self.needs_terms = True

    def __call__(self, question: str, pages: Sequence[SearchHit], *, seen: Set[str], used: Set[str],
                 terms: Optional[CollectionTerms]) -> List[Bridge]:
        if terms is None:
            raise ValueError('offline bridges need the collection terms')
        by_id = {h.page_id: h for h in pages}
        anchors = [h.metadata['bridge'] for h in pages if h.metadata.get('bridge')]
        source = terms.sources([h.page_id for h in pages], ' '.join([question, *anchors]), self.source_pages)
        shown = [by_id[pid] for pid in source]
        texts = {h.page_id: h.metadata['text'] for h in shown
                 if h.metadata.get('text') and terms.text(h.page_id) is None}
        anchors = [h.metadata['bridge'] for h in shown if h.metadata.get('bridge')]
        chosen = pick(terms.candidates(source, question, seen, exclude=used, texts=texts, anchors=anchors), self.n,
                      terms)
        holder = {}
        for cand in chosen:
            holder[cand.phrase] = next((pid for pid in source if terms.holds(pid, cand.phrase)
                                        or cand.phrase in ' '.join(words(texts.get(pid, '')))), '')
        return [Bridge(c.phrase, holder[c.phrase], c.weight) for c in chosen]


class VLMBridges:
    """A VLM names the next things to look up from the question and the top ``pages`` page images."""

    def __init__(self, vlm: Callable, n: int = 2, pages: int = 3, max_image_side: int = 768,
                 max_text_chars: int = 1200):
        self.vlm = vlm
        self.n, self.pages = n, pages
        self.max_image_side = max_image_side
        self.max_text_chars = max_text_chars
        self.needs_terms = False

    def prompt(self, question: str, pages: Sequence[SearchHit], used: Set[str], terms) -> str:
        blocks = []
        for h in pages:
            text = (terms.text(h.page_id) if terms is not None else None) or h.metadata.get('text') or ''
            if text:
                blocks.append(f'\n[{h.file_name}, p. {h.page}] text:\n"""\n{text[:self.max_text_chars]}\n"""')
        return PROMPT.format(question=question, used=', '.join(sorted(used)) or 'nothing', n=self.n,
                             text_note=' (with their text)' if blocks else '', texts=''.join(blocks))

    def __call__(self, question: str, pages: Sequence[SearchHit], *, seen: Set[str], used: Set[str],
                 terms: Optional[CollectionTerms]) -> List[Bridge]:
        from lazyllm.components.formatter import encode_query_with_filepaths

        from ..generation.page_images import page_image
        from ..text.augment import answer_text

        shown = list(pages[:self.pages])
        images = [str(p) for p in (page_image(h, self.max_image_side) for h in shown) if p]
        try:
            raw = self.vlm(encode_query_with_filepaths(self.prompt(question, shown, used, terms), images))
        except Exception as e:   # LazyLLM wraps HTTP failures in several types; all mean "no bridges"
            raise BridgeError(f'the VLM did not name bridges ({type(e).__name__}: {str(e)[:200]})') from e
        return [Bridge(p, must_hold=False) for p in parse_bridges(str(answer_text(raw) or ''), question, used, self.n)]


def parse_bridges(reply: str, question: str, used: Set[str], n: int) -> List[str]:
    """Lines of a VLM's reply as bridge phrases: bullets, numbering and quotes removed; NONE, phrases the
    question already holds and ones looked up before dropped.

    >>> parse_bridges('1. "Quorra framework"\\n- NONE\\n* Veltrix score\\nDunmore algorithm', 'Veltrix score?', set(), 2)
    ['Quorra framework', 'Dunmore algorithm']
    """
    asked = set(words(question))
    done = {' '.join(words(u)) for u in used}
    out: List[str] = []
    for line in reply.splitlines():
        phrase = re.sub(r'^\s*(?:[-*\u2022]|\d+[.)])\s*', '', line).strip().strip('"\'`').strip()
        tokens = words(phrase)
        if not tokens or phrase.upper().startswith('NONE') or len(phrase) > 80:
            continue
        joined = f' {" ".join(tokens)} '
        if all(t in asked for t in tokens) or any(f' {d} ' in joined for d in done) or phrase in out:
            continue   # the question's own words, or a concept looked up before (also inside a longer name)
        out.append(phrase)
        if len(out) >= n:
            break
    if not out and reply.strip() and 'NONE' not in reply.upper():
        LOG.info(f'multi-hop: no bridge in the VLM reply {reply[:120]!r}')
    return out


def describe(bridges: Any) -> str:
    return type(bridges).__name__.replace('Bridges', '').lower() or 'custom'
