"""Ready retrievers for every arm, all the same shape (``query -> top-k pages as ImageDocNodes``), so a flow
built on one takes any other by changing one line:

    from pipelines.arms import visual_arm, text_arm, caption_arm, hybrid_arm
    from pipelines.flows import build_search

    search = build_search(visual_arm('./pdfs'))                          # ColPali
    search = build_search(text_arm('./pdfs'))                            # text layer + OCR, BM25
    search = build_search(caption_arm('./pdfs', vlm))                    # VLM caption + QA, BM25
    search = build_search(hybrid_arm(visual_arm('./pdfs'), text_arm('./pdfs')))   # RRF of both
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from lazyllm_colpali import ColPaliDocument, ColPaliEmbed, ColPaliRetriever
from lazyllm_colpali.lazyllm_glue.arms import HybridRetriever, PageTextRetriever
from lazyllm_colpali.settings import data_home
from lazyllm_colpali.text import CaptionQAAugmenter, PageTextIndex

Paths = Union[str, Path, list]


def _workdir(name: str, dataset_path: Paths, workdir: Optional[str]) -> Path:
    if workdir:
        return Path(workdir)
    import hashlib
    key = hashlib.sha1(str(dataset_path).encode()).hexdigest()[:10]
    return data_home() / 'arms' / f'{name}-{key}'


def visual_arm(dataset_path: Paths, model: Optional[str] = None, db: Optional[str] = None, topk: int = 5,
               **document_kwargs: Any) -> ColPaliRetriever:
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
    return PageTextRetriever(index, dataset_path=dataset_path, topk=topk)


def hybrid_arm(*arms: Any, weights: Optional[Dict[str, float]] = None, topk: int = 5, **named: Any) -> HybridRetriever:
    """Reciprocal rank fusion; arms given positionally are named by kind (visual, text, ...)."""
    members = dict(named)
    for arm in arms:
        kind = 'visual' if isinstance(arm, ColPaliRetriever) else getattr(arm.index.extractor, 'name', 'text')
        name, n = kind, 2
        while name in members:
            name, n = f'{kind}{n}', n + 1
        members[name] = arm
    return HybridRetriever(members, weights=weights, topk=topk)
