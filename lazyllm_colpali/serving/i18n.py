"""The chat's words in English (default) or Chinese: ``--lang``, else the locale (``LC_ALL``, ``LC_MESSAGES``,
``LANG``) decides. LazyLLM's ``WebModule`` labels its controls in Chinese only; :func:`localize_webmodule`
relabels them.

    >>> pick_lang('zh'), pick_lang(None, {'LANG': 'zh_CN.UTF-8'}), pick_lang(None, {'LANG': 'C.UTF-8'})
    ('zh', 'zh', 'en')
    >>> text('sources', 'zh')
    '来源'
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

LANGS = ('en', 'zh')

TEXT = {
    # our chat
    'sources': ('Sources', '来源'),
    'page': ('p.', '第{n}页'),
    'score': ('score', '得分'),
    'matched': ('matched area', '匹配区域'),
    'open_full': ('click to open the full page', '点击查看整页'),
    'no_index': ('No documents are indexed yet. Attach PDFs to a message here (they are indexed right away), or '
                 'run `lazyllm-colpali index FOLDER` with the same --db and restart.',
                 '还没有索引任何文档。请在消息中附加 PDF（会立即建立索引），或用相同的 --db 运行 '
                 '`lazyllm-colpali index FOLDER` 后重启。'),
    'feedback_ask': ('Was a source useful?', '来源有帮助吗？'),
    'no_vlm': ('*(No VLM configured, so here are the best pages. Start `lazyllm-colpali serve` with --vlm-url and '
               '--vlm-model to get written answers.)*',
               '*（未配置 VLM，以下是最相关的页面。启动 `lazyllm-colpali serve` 时加上 --vlm-url 和 --vlm-model '
               '即可得到文字回答。）*'),
    'no_match': ('No indexed page matches this question.', '没有与此问题匹配的已索引页面。'),
    'ask': ('Ask a question about your documents.', '请就您的文档提一个问题。'),
    'vlm_down': ('The answer model is unavailable: {error}\n\nThe best pages are below.',
                 '回答模型不可用：{error}\n\n以下是最相关的页面。'),
    # WebModule's controls (its Chinese label -> ours)
    'ui_title': ('lazyllm-colpali: chat with your documents', 'lazyllm-colpali：与文档对话'),
    'ui_model': ('Model structure', '模型结构'),
    'ui_context': ('Use context', '使用上下文'),
    'ui_stream': ('Stream output', '流式输出'),
    'ui_append': ('Append output', '追加输出'),
    'ui_log': ('Processing log', '处理日志'),
    'ui_clear': ('Clear history', '清空历史'),   # no emoji: it shows as a box without an emoji font
    'ui_new_session': ('New session', '添加新会话'),
    'ui_session': ('Session:', '选择会话：'),
    'ui_delete_session': ('Delete session', '删除当前会话'),
    'ui_placeholder': ('Ask about your documents, or attach PDFs to index them', '输入问题并回车，或附加 PDF 建立索引'),
}

# WebModule 1.4's own strings, by the component attribute that holds them
_WEBMODULE = {'模型结构': 'ui_model', '使用上下文': 'ui_context', '流式输出': 'ui_stream', '追加输出': 'ui_append',
              '处理日志': 'ui_log', '🗑️  Clear history': 'ui_clear', '添加新会话': 'ui_new_session',
              '选择会话：': 'ui_session', '删除当前会话': 'ui_delete_session', '输入内容并回车!!!': 'ui_placeholder'}


def pick_lang(lang: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> str:
    """``lang`` if given (``en`` or ``zh``), else Chinese when the locale is Chinese, else English."""
    if lang:
        lang = lang.lower().split('_')[0].split('-')[0]
        if lang not in LANGS:
            raise ValueError(f'language {lang!r} is not one of {", ".join(LANGS)}')
        return lang
    environ = os.environ if environ is None else environ
    for key in ('LC_ALL', 'LC_MESSAGES', 'LANG'):
        if environ.get(key):
            return 'zh' if environ[key].lower().startswith('zh') else 'en'
    return 'en'


def text(key: str, lang: str = 'en', **values: Any) -> str:
    words = TEXT[key][LANGS.index(lang)]
    return words.format(**values) if values else words


def page_label(page: int, lang: str = 'en') -> str:
    return f'p. {int(page)}' if lang == 'en' else text('page', lang, n=int(page))


def localize_webmodule(demo: Any, lang: str = 'en') -> int:
    """Relabel WebModule's controls (labels, button texts, the input's placeholder) in ``lang`` before the page
    is launched; returns how many were changed (a new WebModule that renames its controls shows fewer)."""
    changed = 0
    for block in getattr(demo, 'blocks', {}).values():
        for attribute in ('label', 'value', 'placeholder'):
            current = getattr(block, attribute, None)
            if isinstance(current, str) and current in _WEBMODULE:
                setattr(block, attribute, text(_WEBMODULE[current], lang))
                changed += 1
    return changed
