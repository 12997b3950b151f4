"""Text arms beside the visual one: page text (text layer, OCR, offline layout parsing, MinerU), caption+QA
augmentation, and a BM25 or LazyLLM ``Document``/``Retriever`` text index keyed by the same page ids as the
visual index."""
from .augment import CaptionQAAugmenter, parse_caption_qa
from .bm25 import PageBM25
from .extract import (AutoExtractor, ExtractorUnavailableError, MinerUExtractor, OcrExtractor, TextExtractor,
                      TextLayerExtractor, get_extractor, text_layer_usable)
from .layout import LayoutExtractor
from .page_index import PageTextIndex, mostly_chinese
from .page_text_store import PageText, PageTextStore

__all__ = ['AutoExtractor', 'CaptionQAAugmenter', 'ExtractorUnavailableError', 'LayoutExtractor', 'MinerUExtractor',
           'OcrExtractor', 'PageBM25', 'PageText', 'PageTextIndex', 'PageTextStore', 'TextExtractor',
           'TextLayerExtractor', 'get_extractor', 'mostly_chinese', 'parse_caption_qa', 'text_layer_usable']
