"""How the chat shows an answer: the model's text (escaped), then one compact block per cited page.

A source block (:func:`render_source`) is one line of HTML: a small thumbnail of the page with the matched area
outlined, a crop of that area, the file, page and score; a click opens the full page with the similarity map
laid over it (``<details>``, no script). Everything in it is ours: images are JPEG bytes read by page key
from the collection's image store and embedded as ``data:`` URIs, and every text we did not write (file
names, model output) goes through :func:`~lazyllm_colpali.serving.escape.markdown_text`, so it shows as
written and can open nothing. Without a map (text-arm hits, a model family without geometry) the block shows
the plain page.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from PIL import Image

from ..generation.answer import Answer, sanitize_markdown
from ..logging import LOG
from ..retrieve.retriever import SearchHit
from .escape import markdown_text
from .i18n import page_label, text

THUMB_SIDE = 120        # px, the thumbnail's height in the answer
CROP_SIZE = (260, 120)  # px, the matched area at most this wide and high
FULL_SIDE = 1000        # px, the page shown on click


@dataclass(frozen=True)
class Picture:
    """An image embedded in the chat: a ``data:image/jpeg;base64,...`` URI and its size in pixels."""

    uri: str
    width: int
    height: int


@dataclass
class SourceView:
    """One cited page as the chat shows it (None: not shown)."""

    rank: int
    hit: SearchHit
    thumbnail: Optional[Picture]
    crop: Optional[Picture] = None
    full: Optional[Picture] = None


def jpeg_picture(image: Image.Image, quality: int = 82) -> Picture:
    buffer = io.BytesIO()
    image.convert('RGB').save(buffer, format='JPEG', quality=quality)
    uri = 'data:image/jpeg;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')
    return Picture(uri, image.width, image.height)


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    image = image.copy()
    image.thumbnail((width, height))
    return image


def source_view(rank: int, hit: SearchHit, images: Any, explanation: Any = None) -> SourceView:
    """Look the page up by key in the image store (``images``: a :class:`PageImageStore`) and draw the
    thumbnail, the crop and the full page; ``explanation`` (a :class:`PageExplanation` or None) adds the map."""
    stored = images.local_path(images.key_for(hit.doc_id, hit.page_id)) if hit.doc_id and hit.page_id else None
    path = images.resolve(stored) if stored else None
    if path is None:                      # a page not in the store (text arms), and never a file outside it
        return SourceView(rank, hit, None)
    with Image.open(path) as opened:
        page = opened.convert('RGB')
    if explanation is None:
        return SourceView(rank, hit, jpeg_picture(_fit(page, THUMB_SIDE * 2, THUMB_SIDE)),
                          full=jpeg_picture(_fit(page, FULL_SIDE, FULL_SIDE)))
    from ..retrieve.explain import draw_box, scale_box

    region = explanation.region()
    thumb = _fit(page, THUMB_SIDE * 2, THUMB_SIDE)
    draw_box(thumb, scale_box(region, page.size, thumb.size))
    full = _fit(explanation.overlay(page, box=True), FULL_SIDE, FULL_SIDE)
    crop = explanation.crop(page, min_width=0.4, min_height=0.12)   # wide enough to read a line around the match
    return SourceView(rank, hit, jpeg_picture(thumb), jpeg_picture(_fit(crop, *CROP_SIZE)), jpeg_picture(full))


def _img(picture: Picture, alt: str, style: str = '') -> str:
    # The URI is ours (base64 alphabet only) and alt is escaped. The size is given, so the chat's CSS cannot
    # stretch the image; max-width lets a large one shrink with its aspect kept.
    return (f'<img src="{picture.uri}" alt="{markdown_text(alt, inline=True)}" width="{picture.width}" '
            f'height="{picture.height}" style="display:inline-block;vertical-align:middle;width:{picture.width}px;'
            f'height:auto;max-width:100%;max-height:none;object-fit:contain;margin:0 6px 0 0;border:1px solid #bbb;'
            f'{style}">')


def render_source(view: SourceView, lang: str = 'en') -> str:
    """One cited page: thumbnail (matched area outlined), the matched area, ``1. file, p. N (score s)``; a click
    opens the full page with its map. One line of HTML (a Markdown HTML block), safe to show."""
    hit = view.hit
    where = markdown_text(hit.file_name, inline=True) + (f', {page_label(hit.page, lang)}' if hit.page else '')
    label = f'<b>{view.rank}.</b> {where} <small>({text("score", lang)} {hit.score:.2f})</small>'
    if view.thumbnail is None:
        return f'<p>{label}</p>'
    alt = f'{hit.file_name} {page_label(hit.page, lang)}'
    parts = [_img(view.thumbnail, alt)]
    if view.crop:
        parts.append(_img(view.crop, f'{alt}: {text("matched", lang)}'))
    summary = (f'<summary title="{text("open_full", lang)}" style="cursor:zoom-in;list-style-position:outside">'
               f'{"".join(parts)}<span style="vertical-align:middle">{label}</span></summary>')
    full = _img(view.full, f'{alt} ({text("open_full", lang)})', 'margin-top:6px') if view.full else ''
    return f'<details class="lazyllm-colpali-source">{summary}{full}</details>'


def render_answer(answer: Answer, views: List[SourceView], lang: str = 'en', note: str = '') -> str:
    """The whole chat message: our ``note`` (trusted), the model's text made inert, then the sources."""
    lines = [note] if note else []
    if answer.text:
        lines.append(sanitize_markdown(answer.text))
    lines += ['', f'**{text("sources", lang)}**', '']
    for view in views:
        lines += [render_source(view, lang), '']   # a blank line ends each HTML block
    return '\n'.join(lines).strip() + '\n'


def source_views(answer: Answer, images: Any, explain: Optional[Callable[[SearchHit], Any]] = None) -> List[SourceView]:
    """A :class:`SourceView` per cited page; ``explain(hit)`` gives its similarity map (errors: no map)."""
    views = []
    for rank, hit in enumerate(answer.hits, 1):
        explanation = None
        if explain is not None:
            try:
                explanation = explain(hit)
            except Exception as e:   # a map is a bonus: the page is shown without one
                LOG.info(f'no similarity map for {hit.page_id}: {type(e).__name__}: {e}')
        try:
            views.append(source_view(rank, hit, images, explanation))
        except OSError as e:          # an unreadable page image: the source is listed without it
            LOG.warning(f'page image of {hit.page_id} unreadable: {e}')
            views.append(SourceView(rank, hit, None))
    return views
