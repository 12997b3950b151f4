"""Multi-hop retrieval around any arm: follow a chain of concepts from page to page.

Hop 1 asks the arm the question. Each later hop takes bridge concepts from the pages the previous hop brought
(:mod:`.bridges`: offline phrases weighted by rarity, or a VLM naming what to look up next) and asks the arm
``"<question> <bridge>"`` for each, keeping pages not seen before (offline bridges: only pages whose text holds
the bridge). The loop stops after ``hops`` hops, when no bridge is left, or when a hop brings nothing new.

Fusion keeps hop 1's best ``keep_first`` pages in place, then alternates the later hops' pages (each bridge's
best new page first, the strongest bridge of every hop before the next one) with hop 1's remaining ones.
Every page says how it came:
``metadata['hop']`` (1, 2, ...), and for later hops ``metadata['bridge']`` (the phrase that brought it) and
``metadata['bridge_from']`` (the page that phrase was taken from). Fused scores are ``1 / position`` (the arm's
own score is kept in ``metadata['arm_score']``), so flows that sort by score keep the fused order.

    text = text_arm('./pdfs')
    chain = MultiHopRetriever(text, hops=3)                 # offline bridges
    chain = MultiHopRetriever(text, bridges=VLMBridges(vlm))  # a VLM names the bridges
    nodes = chain('Which model has the highest Veltrix score, and why?')
    result = chain.search_with_trace('...')                 # hits, hops (bridges, new pages), searches
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

from lazyllm.module import ModuleBase

from ..errors import EmptyQueryError, QueryTooLongError
from ..lazyllm_glue.arms import Filters, arm_hits
from ..lazyllm_glue.components import hit_to_node
from ..lazyllm_glue.output import check_output_format, format_nodes
from ..logging import LOG
from ..retrieve.retriever import SearchHit
from .bridges import Bridge, BridgeError, OfflineBridges
from .page_text import CollectionText, Paths

MAX_HOPS = 8


@dataclass
class Hop:
    number: int
    bridges: List[str] = field(default_factory=list)
    searches: int = 0
    new_pages: List[str] = field(default_factory=list)


@dataclass
class MultiHopResult:
    hits: List[SearchHit]
    hops: List[Hop]
    searches: int
    stopped: str          # why the loop ended: 'hops', 'no bridge', 'nothing new', or the bridge error

    def to_dict(self) -> Dict[str, Any]:
        return {'hits': [h.to_dict() for h in self.hits], 'searches': self.searches, 'stopped': self.stopped,
                'hops': [vars(h) for h in self.hops]}


class MultiHopRetriever(ModuleBase):
    """Wraps any arm with the arm contract (``arm(query, filters=None, *, topk=None)``, ``arm.search(...)`` ->
    SearchHits, or any LazyLLM retriever) and is one itself, so it composes in ``lazyllm.pipeline``,
    ``build_search`` and ``build_rag`` like the arm it wraps.

    ``bridges``: :class:`OfflineBridges` (default) or :class:`VLMBridges`. ``per_bridge``: new pages kept from
    each bridge's search; ``depth``: pages asked of the arm per later search (seen pages rank high there, as
    the question is part of the query). ``corpus``/``extractor``: where the collection's page text comes from
    when the arm keeps none (see :class:`.page_text.CollectionText`)."""

    def __init__(self, arm: Callable, hops: int = 3, bridges: Optional[Callable] = None, *, topk: Optional[int] = None,
                 keep_first: int = 3, per_bridge: int = 2, depth: int = 20, corpus: Optional[Paths] = None,
                 extractor: str = 'text-layer', output_format: Optional[str] = None, join: Union[bool, str] = False,
                 name: Optional[str] = None, return_trace: bool = False):
        super().__init__(return_trace=return_trace)
        check_output_format(output_format, join)
        if not 1 <= int(hops) <= MAX_HOPS:
            raise ValueError(f'hops must be between 1 and {MAX_HOPS}, got {hops}')
        if keep_first < 0 or per_bridge < 1 or depth < 1:
            raise ValueError('keep_first must be >= 0, per_bridge and depth >= 1')
        self.arm = arm
        self.hops = int(hops)
        self.bridges = bridges if bridges is not None else OfflineBridges()
        self.topk = topk or getattr(arm, 'topk', None) or 5
        self.keep_first, self.per_bridge, self.depth = keep_first, per_bridge, depth
        self.output_format, self.join = output_format, join
        self.collection = CollectionText(arm, corpus=corpus, extractor=extractor)
        self.arm_name = name or f'{getattr(arm, "arm_name", None) or type(arm).__name__.lower()}-multihop'

    # -- the loop ---------------------------------------------------------------------------------------
    def search_with_trace(self, query: str, filters: Filters = None, *, topk: Optional[int] = None,
                          hops: Optional[int] = None) -> MultiHopResult:
        if not query or not query.strip():
            raise EmptyQueryError('the query is empty')
        k = topk or self.topk
        max_hops = self.hops if hops is None else int(hops)
        first = arm_hits(self.arm, query, filters, k)
        trace = [Hop(1, searches=1, new_pages=[h.page_id for h in first])]
        seen: Set[str] = {h.page_id for h in first}
        used: Set[str] = set()
        later: List[Tuple[int, int, int, SearchHit]] = []   # (rank in its search, bridge order, hop, hit)
        frontier, stopped = first, 'hops'
        terms = None
        for number in range(2, max_hops + 1):
            if not frontier:
                stopped = 'nothing new'
                break
            if terms is None and getattr(self.bridges, 'needs_terms', True):
                terms = self.collection.terms()
            try:
                bridges: List[Bridge] = self.bridges(query, frontier, seen=seen, used=used, terms=terms)
            except BridgeError as e:
                LOG.warning(f'multi-hop: {e}; stopping after hop {number - 1}')
                stopped = str(e)
                break
            if not bridges:
                stopped = 'no bridge'
                break
            hop = Hop(number, bridges=[b.phrase for b in bridges])
            trace.append(hop)
            found: List[SearchHit] = []
            for order, bridge in enumerate(bridges):
                used.add(bridge.phrase)
                hop.searches += 1
                kept = 0
                for hit in self._ask(f'{query} {bridge.phrase}', bridge.phrase, filters, max(self.depth, k)):
                    if kept >= self.per_bridge:
                        break
                    if hit.page_id in seen or not self._holds(terms, hit, bridge):
                        continue
                    seen.add(hit.page_id)
                    kept += 1
                    hit = replace(hit, metadata={**hit.metadata, 'hop': number, 'bridge': bridge.phrase,
                                                 'bridge_from': bridge.source})
                    found.append(hit)
                    later.append((kept, order, number, hit))
            hop.new_pages = [h.page_id for h in found]
            if not found:
                stopped = 'nothing new'
                break
            frontier = found
        hits = fuse_hops(first, later, k, self.keep_first)
        return MultiHopResult(hits, trace, sum(h.searches for h in trace), stopped)

    def _ask(self, query: str, bridge: str, filters: Filters, depth: int) -> List[SearchHit]:
        try:
            return arm_hits(self.arm, query, filters, depth)
        except QueryTooLongError:   # a question near the arm's limit leaves no room for the bridge: ask for it alone
            return arm_hits(self.arm, bridge, filters, depth)

    @staticmethod
    def _holds(terms, hit: SearchHit, bridge: Bridge) -> bool:
        if not bridge.must_hold or terms is None:
            return True
        if terms.text(hit.page_id) is not None:
            return terms.holds(hit.page_id, bridge.phrase)
        text = hit.metadata.get('text')
        return True if not text else bridge.phrase in ' '.join(text.lower().split())

    # -- the arm contract -------------------------------------------------------------------------------
    def search(self, query: str, filters: Filters = None, *, topk: Optional[int] = None) -> List[SearchHit]:
        return self.search_with_trace(query, filters, topk=topk).hits

    def forward(self, query: str, filters: Filters = None, *, topk: Optional[int] = None, **kw):
        return format_nodes([hit_to_node(h) for h in self.search(query, filters, topk=topk)],
                            self.output_format, self.join)


class IndexArm:
    """An index with ``search(query, topk, filters)`` (the visual ``ColPaliIndex``, ``PageTextIndex``) as an arm
    (``search(query, filters, *, topk)``), for the CLI and the search API to wrap."""

    def __init__(self, index: Any, topk: int = 5):
        self.index, self.topk = index, topk
        self.arm_name = 'visual' if hasattr(index, 'encoder') else 'text'

    def search(self, query: str, filters: Filters = None, *, topk: Optional[int] = None) -> List[SearchHit]:
        return self.index.search(query, topk or self.topk, filters)


def fuse_hops(first: Sequence[SearchHit], later: Sequence[Tuple[int, int, int, SearchHit]], topk: int,
              keep_first: int = 3) -> List[SearchHit]:
    """Hop 1's top ``keep_first`` in place, then later-hop pages (by rank in their search, then the bridge's
    place in its hop - the strongest bridges of every hop first, so a chain's backbone comes before side
    branches - then hop) alternating with hop 1's remaining pages; scores become ``1 / position``.

    >>> from lazyllm_colpali.retrieve.retriever import SearchHit
    >>> h = lambda pid, hop=1: SearchHit(pid, 'd', '/a.pdf', 'a.pdf', 1, 1.0, '', {'hop': hop})
    >>> fused = fuse_hops([h('a'), h('b'), h('c')], [(1, 0, 2, h('x', 2)), (1, 0, 3, h('y', 3))], topk=4, keep_first=1)
    >>> [x.page_id for x in fused], [x.metadata['hop'] for x in fused]
    (['a', 'x', 'b', 'y'], [1, 2, 1, 3])
    """
    firsts = [replace(h, metadata={**h.metadata, 'hop': h.metadata.get('hop', 1)}) for h in first]
    order: List[SearchHit] = firsts[:keep_first]
    rest = iter(firsts[keep_first:])
    extra = iter(hit for *_, hit in sorted(later, key=lambda t: t[:3]))
    take_extra = True
    while len(order) < topk:
        source = (extra, rest) if take_extra else (rest, extra)
        nxt = next(source[0], None) or next(source[1], None)
        if nxt is None:
            break
        order.append(nxt)
        take_extra = not take_extra
    return [replace(h, score=1.0 / i, metadata={**h.metadata, 'arm_score': h.score})
            for i, h in enumerate(order[:topk], 1)]
