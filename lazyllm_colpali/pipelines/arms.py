"""Ready retrievers for every arm, all with one contract (``arm(query, filters=None, *, topk=None)`` -> top
pages as LazyLLM nodes; ``arm.search(...)`` -> SearchHits), so a flow built on one takes any other by
changing one line:

    from lazyllm_colpali.pipelines import visual_arm, text_arm, caption_arm, hybrid_arm, build_search

    search = build_search(visual_arm('./pdfs'))                          # ColPali
    search = build_search(text_arm('./pdfs'))                            # text layer + OCR, BM25
    search = build_search(caption_arm('./pdfs', vlm))                    # VLM caption + QA, BM25
    search = build_search(hybrid_arm(visual_arm('./pdfs'), text_arm('./pdfs'),
                                     weights={'visual': 1.0, 'text': 0.5}))   # RRF of both

Any of them follows chains of concepts across documents when wrapped: ``multihop_arm(text_arm('./pdfs'))``.

Arms given to ``hybrid_arm`` positionally are named by kind: ``visual``, ``text`` (``ocr``, ``mineru``,
``text-layer`` for those extractors), ``caption``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from ..lazyllm_glue.arms import HybridRetriever, PageTextRetriever
from ..lazyllm_glue.components import ColPaliDocument, ColPaliRetriever
from ..lazyllm_glue.embed import ColPaliEmbed
from ..settings import data_home
from ..text import CaptionQAAugmenter, PageTextIndex

__all__ = ['caption_arm', 'hybrid_arm', 'multihop_arm', 'text_arm', 'visual_arm']

Paths = Union[str, Path, list]


def _workdir(name: str, dataset_path: Paths, workdir: Optional[str]) -> Path:
    if workdir:
        return Path(workdir)
    key = hashlib.sha1(str(dataset_path).encode()).hexdigest()[:10]
    return data_home() / 'arms' / f'{name}-{key}'


def visual_arm(dataset_path: Paths, model: Union[str, ColPaliEmbed, None] = None, db: Optional[str] = None,
               topk: int = 5, **document_kwargs: Any) -> ColPaliRetriever:
    """ColPali pages in Milvus (Lite file by default), exact MaxSim."""
    embed = model if isinstance(model, ColPaliEmbed) else ColPaliEmbed(model)
    return ColPaliRetriever(ColPaliDocument(dataset_path, embed=embed, db=db, **document_kwargs), topk=topk)


def text_arm(dataset_path: Paths, extractor: str = 'auto', workdir: Optional[str] = None, topk: int = 5,
             embed: Optional[Callable] = None, store_conf: Optional[Dict[str, Any]] = None) -> PageTextRetriever:
    """Page text (text layer, OCR for scans; ``'ocr'``; ``'mineru'``) in a LazyLLM Document: BM25, or cosine
    over ``embed`` (any LazyLLM embedding module)."""
    index = PageTextIndex(_workdir(f'text-{extractor}', dataset_path, workdir), extractor=extractor, embed=embed,
                          store_conf=store_conf)
    return PageTextRetriever(index, dataset_path=dataset_path, topk=topk)


def caption_arm(dataset_path: Paths, vlm: Callable, workdir: Optional[str] = None, topk: int = 5,
                concurrency: int = 4) -> PageTextRetriever:
    """Captions + QA pairs written by ``vlm`` (any LazyLLM chat module of type VLM), searched with BM25."""
    index = PageTextIndex(_workdir('caption', dataset_path, workdir),
                          extractor=CaptionQAAugmenter(vlm, concurrency=concurrency))
    return PageTextRetriever(index, dataset_path=dataset_path, topk=topk, name='caption')


def hybrid_arm(*arms: Any, weights: Optional[Dict[str, float]] = None, topk: int = 5, **named: Any) -> HybridRetriever:
    """Reciprocal rank fusion; arms given positionally are named by kind (``visual``, ``text``, ``caption``,
    a second one of a kind ``text2``), arms given by keyword keep their names."""
    members = dict(named)
    for arm in arms:
        kind = getattr(arm, 'arm_name', None) or type(arm).__name__.lower()
        name, n = kind, 2
        while name in members:
            name, n = f'{kind}{n}', n + 1
        members[name] = arm
    return HybridRetriever(members, weights=weights, topk=topk)


def multihop_arm(arm: Any, hops: int = 3, vlm: Optional[Callable] = None, **options: Any):
    """``arm`` (any of the above) following chains of concepts: up to ``hops`` searches in a row, each for the
    bridge concepts the last one's pages point at (offline, or named by ``vlm``, a LazyLLM chat module of
    type VLM). Options: see :class:`lazyllm_colpali.multihop.MultiHopRetriever`."""
    from ..multihop import MultiHopRetriever, VLMBridges

    return MultiHopRetriever(arm, hops=hops, bridges=VLMBridges(vlm) if vlm is not None else None, **options)
