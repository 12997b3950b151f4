"""Text arms beside the visual one: page text (text layer, OCR, MinerU), caption+QA augmentation, and a
LazyLLM ``Document``/``Retriever`` text index keyed by the same page ids as the visual index."""
from .augment import CaptionQAAugmenter, parse_caption_qa
from .extract import (AutoExtractor, ExtractorUnavailableError, MinerUExtractor, OcrExtractor, TextExtractor,
                      TextLayerExtractor, get_extractor)
from .page_index import PageTextIndex, mostly_chinese
from .page_text_store import PageText, PageTextStore

__all__ = ['AutoExtractor', 'CaptionQAAugmenter', 'ExtractorUnavailableError', 'MinerUExtractor', 'OcrExtractor',
           'PageText', 'PageTextIndex', 'PageTextStore', 'TextExtractor', 'TextLayerExtractor', 'get_extractor',
           'mostly_chinese', 'parse_caption_qa']
