"""One escaping rule for text shown to people: in the chat's Markdown/HTML, and on the terminal.

Why the chat needs it: ``lazyllm.WebModule`` replaces every ``![..](PATH)`` in an answer with the bytes of
PATH (any local file that exists, or a URL it fetches), and gradio renders Markdown and HTML. So text this
package did not write - file names, upload names, page text, model output, error messages - must not be
able to open an image, link, HTML tag, code span, math block or escape. :func:`markdown_text` entity-encodes
every character that could (entities render as the character but never act as syntax), drops control and
bidirectional-override characters, and folds line breaks where the text sits inside one line.
Images reach the chat only through :mod:`lazyllm_colpali.serving.chat_view`: the bytes of a page looked up
by its page key in the collection's own image store, embedded as ``data:`` URIs, so WebModule reads no path.

    >>> markdown_text('b](.env) uploaded.pdf')
    'b&#93;&#40;.env&#41; uploaded.pdf'
    >>> markdown_text('<img src=x onerror=alert(1)>')
    '&lt;img src=x onerror=alert&#40;1&#41;&gt;'
    >>> markdown_text('line one\\nline two', inline=True)
    'line one line two'
    >>> terminal_text('evil\\x1b[2Jname.pdf')
    'evil\\\\x1b[2Jname.pdf'
"""
from __future__ import annotations

import re
import unicodedata

# Characters that open Markdown/HTML constructs (links, images, tags, entities, code, math, escapes) or end
# an HTML attribute. ``*``, ``_``, ``#``, ``|`` and ``-`` only format text and stay, so answers keep lists.
_ACTIVE = '&<>[]()!`$\\"\''
_ENTITIES = {ord(c): f'&#{ord(c)};' for c in _ACTIVE}
_ENTITIES.update({ord('&'): '&amp;', ord('<'): '&lt;', ord('>'): '&gt;'})
_LINE_BREAKS = re.compile(r'\r\n|[\r\n\x0b\x0c\x85\u2028\u2029]')
# WebModule's own pattern for "an image to inline": used to check that only our images remain.
WEBMODULE_IMAGE = re.compile(r'!\[.*?\]\((.*?)\)')


def _visible(ch: str) -> bool:
    """False for control, format (incl. bidi overrides, zero-width) and lone surrogate characters."""
    return unicodedata.category(ch) not in ('Cc', 'Cf', 'Cs') or ch in '\n\t'


def markdown_text(text: object, *, inline: bool = False) -> str:
    """Untrusted text as inert Markdown: shows as written, can open no image, link, tag, code or math.
    ``inline=True`` folds line breaks to spaces (for a name inside a list item or a sentence)."""
    text = _LINE_BREAKS.sub(' ' if inline else '\n', str(text if text is not None else ''))
    text = ''.join(ch if _visible(ch) else ('\ufffd' if unicodedata.category(ch) == 'Cs' else '') for ch in text)
    if inline:
        text = text.replace('\t', ' ')
    return text.translate(_ENTITIES)


def terminal_text(text: object) -> str:
    """A name as it may be printed on a terminal: bytes that are not UTF-8 (file names decoded with
    surrogateescape) as ``\\xNN``, control/format characters (ANSI escapes, bidi overrides, line breaks) and
    other lone surrogates as Python escapes; everything else as is."""
    text = str(text)
    try:
        text = text.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
    except UnicodeEncodeError:   # a surrogate that is not an escaped byte: shown by the rule below
        pass
    return ''.join(ch if ch.isprintable() or ch == ' ' else ch.encode('unicode_escape').decode('ascii')
                   for ch in text)


def only_our_images(markdown: str) -> bool:
    """True when every image the chat would show is an embedded JPEG (what
    :mod:`lazyllm_colpali.serving.chat_view` writes): no path or URL of anyone else's choosing, neither as a
    Markdown image (which WebModule inlines) nor as an HTML ``<img>`` (escaped text never makes one).

    >>> only_our_images('<img src="data:image/jpeg;base64,AAAA" alt="p. 1">'), only_our_images('<img src=/etc/x>')
    (True, False)
    """
    if not all(url.startswith('data:image/jpeg;base64,') for url in WEBMODULE_IMAGE.findall(markdown)):
        return False
    ours = re.findall(r'<img src="data:image/jpeg;base64,[A-Za-z0-9+/=]*"', markdown)
    return len(re.findall(r'<img\b', markdown, re.IGNORECASE)) == len(ours)
