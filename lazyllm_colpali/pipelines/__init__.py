"""Ready LazyLLM flows on any arm: ``arms`` builds one retriever per arm, ``flows`` turns any of them into
a search or RAG pipeline, ``visual_rag`` does both for a ColPali document. Installed with the package:

    from lazyllm_colpali.pipelines import visual_arm, text_arm, hybrid_arm, build_search, build_rag
"""
from .arms import caption_arm, hybrid_arm, multihop_arm, text_arm, visual_arm
from .flows import build_rag, build_search, cite
from .visual_rag import build_visual_rag, build_visual_search

__all__ = ['build_rag', 'build_search', 'build_visual_rag', 'build_visual_search', 'caption_arm', 'cite',
           'hybrid_arm', 'multihop_arm', 'text_arm', 'visual_arm']
