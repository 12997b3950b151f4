"""Answer generation: top pages (images and any text) -> a VLM prompt -> an answer citing file and page."""
from .answer import (Answer, AnswerSettings, PageAnswerer, VLMUnavailableError, answer_markdown,
                     answer_text_with_sources, hits_from, sanitize_markdown, source_line)
from .page_images import page_image

__all__ = ['Answer', 'AnswerSettings', 'PageAnswerer', 'VLMUnavailableError', 'answer_markdown',
           'answer_text_with_sources', 'hits_from', 'page_image', 'sanitize_markdown', 'source_line']
