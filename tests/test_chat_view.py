"""The chat people read (issue 20): English controls (Chinese on request or by locale), compact source blocks
with the matched area, the full page with its map on click; everything in them ours or escaped."""
from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from lazyllm_colpali.generation.answer import Answer
from lazyllm_colpali.retrieve.retriever import SearchHit
from lazyllm_colpali.serving.chat_view import CROP_SIZE, FULL_SIDE, THUMB_SIDE, render_answer, source_views
from lazyllm_colpali.serving.escape import only_our_images
from lazyllm_colpali.serving.i18n import pick_lang
from tests.helpers.pdfs import make_text_pdf

CJK = re.compile(r'[\u4e00-\u9fff]')


def _labels(server) -> list:
    return [getattr(b, a) for b in server.web.demo.blocks.values() for a in ('label', 'value', 'placeholder')
            if isinstance(getattr(b, a, None), str)]


@pytest.mark.parametrize('lang, environ, expected', [(None, {'LANG': 'C.UTF-8'}, 'en'), (None, {'LANG': 'zh_CN.UTF-8'}, 'zh'),
                                                      (None, {'LC_ALL': 'en_US', 'LANG': 'zh_CN'}, 'en'),
                                                      ('zh', {'LANG': 'en_US'}, 'zh'), (None, {}, 'en')])
def test_the_language_comes_from_the_flag_then_the_locale(lang, environ, expected):
    assert pick_lang(lang, environ) == expected


def test_webmodule_controls_are_english_by_default_and_chinese_on_request(monkeypatch, tmp_path):
    from lazyllm_colpali.serving.chat import ChatServer, VisualChat

    monkeypatch.setenv('GRADIO_TEMP_DIR', str(tmp_path / 'gradio'))
    for var in ('LC_ALL', 'LC_MESSAGES'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('LANG', 'C.UTF-8')
    english = ChatServer(VisualChat(None))
    labels = _labels(english)
    assert {'Use context', 'Stream output', 'Append output', 'New session', 'Delete session'} <= set(labels)
    assert not [t for t in labels if CJK.search(t)], labels              # WebModule's own are all Chinese
    chinese = ChatServer(VisualChat(None, lang='zh'))
    assert {'使用上下文', '流式输出', '添加新会话'} <= set(_labels(chinese)) and CJK.search(chinese.web.title)
    for server in (english, chinese):
        server.chat.close()


@pytest.fixture(scope='module')
def cited(colpali_encoder, tmp_path_factory):
    from lazyllm_colpali import ColPaliIndex, MilvusMultiVectorStore

    root = tmp_path_factory.mktemp('chatview')
    make_text_pdf(root / 'docs' / '<img src=x onerror=alert(1)> b](.env).pdf', ['Pressure 5 bar.', 'Flow rate.'])
    store = MilvusMultiVectorStore(str(root / 'c.db'), dim=colpali_encoder.dim)
    index = ColPaliIndex(colpali_encoder, store, dpi=60, progress=False)
    index.add([root / 'docs'])
    yield index, index.search('pressure', 2)
    store.close()


def _jpeg_sizes(markdown: str):
    sizes = []
    for data in re.findall(r'data:image/jpeg;base64,([A-Za-z0-9+/=]+)', markdown):
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            sizes.append(image.size)
    return sizes


def test_each_source_is_a_compact_block_with_its_matched_area_and_the_full_page_on_click(cited):
    index, hits = cited
    answer = Answer('pressure', 'It is 5 bar ![x](.env) <img src=y>', hits)
    views = source_views(answer, index.store.images, lambda hit: index.explain('pressure', hit))
    markdown = render_answer(answer, views, 'en')
    assert only_our_images(markdown) and markdown.count('<details class="lazyllm-colpali-source">') == 2
    sizes = _jpeg_sizes(markdown)
    assert len(sizes) == 6                                        # thumbnail, matched area, full page per source
    thumbs, crops, fulls = sizes[0::3], sizes[1::3], sizes[2::3]
    assert all(h == THUMB_SIDE for _, h in thumbs)
    assert all(w <= CROP_SIZE[0] and h <= CROP_SIZE[1] for w, h in crops)
    assert all(max(w, h) <= FULL_SIDE and h > 3 * THUMB_SIDE for w, h in fulls)
    assert '<img src=x' not in markdown and '![x](.env)' not in markdown      # names and model text escaped
    assert '&lt;img src=x onerror=alert&#40;1&#41;&gt; b&#93;&#40;.env&#41;.pdf, p. ' in markdown
    assert '**Sources**' in markdown and 'score ' in markdown
    chinese = render_answer(answer, views, 'zh')
    assert '**来源**' in chinese and re.search(r'第[12]页', chinese)


def test_a_source_without_a_stored_image_or_map_is_listed_plainly(cited):
    index, hits = cited
    text_hit = SearchHit('x-p00001', '', '/tmp/a.pdf', 'a.pdf', 1, 3.0, '', {'text': 'page text'})
    answer = Answer('pressure', 'Answer.', [hits[0], text_hit])
    views = source_views(answer, index.store.images, explain=None)            # no maps: plain page thumbnail
    markdown = render_answer(answer, views, 'en')
    assert len(_jpeg_sizes(markdown)) == 2 and '<p><b>2.</b> a.pdf, p. 1' in markdown and only_our_images(markdown)
    failing = source_views(answer, index.store.images, explain=lambda hit: 1 / 0)   # a map that fails: page still shown
    assert failing[0].thumbnail and failing[0].crop is None
