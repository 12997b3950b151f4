"""Multi-hop retrieval: a wrapper around any arm that follows a chain of concepts from page to page.

    from lazyllm_colpali.multihop import MultiHopRetriever, OfflineBridges, VLMBridges
    chain = MultiHopRetriever(text_arm('./pdfs'), hops=3)          # any arm: visual, text, layout, hybrid
"""
from .bridges import Bridge, BridgeError, OfflineBridges, VLMBridges, parse_bridges
from .page_text import CollectionText, UnknownCollectionError
from .retriever import Hop, IndexArm, MultiHopResult, MultiHopRetriever, fuse_hops
from .terms import CollectionTerms

__all__ = ['Bridge', 'BridgeError', 'CollectionTerms', 'CollectionText', 'Hop', 'IndexArm', 'MultiHopResult',
           'MultiHopRetriever', 'OfflineBridges', 'UnknownCollectionError', 'VLMBridges', 'fuse_hops', 'parse_bridges']
