"""Thumbs up/down on each page the chat cites, stored like the API's ``POST /feedback``.

Each answer ends with one line of links, one pair per cited source (``1. 👍 👎  2. 👍 👎``). A link carries
only a random token; the server keeps what the token stands for (question and page id, the latest 10,000),
so a page cannot be made to vote for a page it never showed and no question text travels in a URL. A script
in the chat page turns a click on such a link into ``POST /colpali/feedback`` (the page's own origin, behind
its Host check) and marks the choice; the links are plain ``#`` anchors that go nowhere without it.
"""
from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

from starlette.requests import Request   # module level: FastAPI resolves the endpoint's annotation by name

from ..logging import LOG
from ..training.feedback import FeedbackError, FeedbackStore
from .i18n import text

ROUTE = '/colpali/feedback'
ANCHOR = '#colpali-feedback'
MAX_TOKENS = 10_000

# Event delegation: answers are added to the page long after it loads.
SCRIPT = '''<script>
document.addEventListener('click', function (event) {
  var link = event.target.closest && event.target.closest('a[href*="%(anchor)s/"]');
  if (!link) { return; }
  event.preventDefault(); event.stopPropagation();
  var parts = link.getAttribute('href').split('%(anchor)s/')[1].split('/');
  fetch('%(route)s', {method: 'POST', headers: {'Content-Type': 'application/json'},
                      body: JSON.stringify({token: parts[0], useful: parts[1] === '1'})})
    .then(function (r) { return r.json().then(function (body) { return [r.ok, body]; }); })
    .then(function (res) {
      var mark = document.createElement('span');
      mark.className = 'colpali-feedback-done';
      mark.textContent = res[0] ? (parts[1] === '1' ? ' (marked useful)' : ' (marked not useful)')
                                : ' (not saved: ' + JSON.stringify(res[1].detail || 'error') + ')';
      link.parentNode.insertBefore(mark, link.nextSibling);
    });
}, true);
</script>''' % {'anchor': ANCHOR, 'route': ROUTE}


class ChatFeedback:
    """Links for the chat's answers and the route that records clicks on them."""

    def __init__(self, index: Callable[[], Any], store: Optional[Callable[[], FeedbackStore]] = None):
        self._index = index        # callables: the chat's document opens its index lazily
        self._store = store
        self._tokens: 'OrderedDict[str, Tuple[str, str]]' = OrderedDict()
        self._lock = threading.Lock()
        self.script = SCRIPT

    @property
    def store(self) -> FeedbackStore:
        return self._store() if self._store else FeedbackStore.for_store(self._index().store)

    def _token(self, query: str, page_id: str) -> str:
        token = secrets.token_urlsafe(12)
        with self._lock:
            self._tokens[token] = (query, page_id)
            while len(self._tokens) > MAX_TOKENS:
                self._tokens.popitem(last=False)
        return token

    def markdown(self, query: str, hits: List[Any], lang: str = 'en') -> str:
        """One line of 👍/👎 links, numbered like the answer's sources ('' without sources)."""
        if not hits:
            return ''
        items = []
        for number, hit in enumerate(hits, 1):
            token = self._token(query, hit.page_id)
            items.append(f'{number}. [👍]({ANCHOR}/{token}/1) [👎]({ANCHOR}/{token}/0)')
        return f'\n\n*{text("feedback_ask", lang)}* ' + ' &nbsp; '.join(items)

    def record(self, token: str, useful: bool) -> Dict[str, Any]:
        from .feedback_api import record_feedback

        with self._lock:
            found = self._tokens.get(token)
        if found is None:
            raise FeedbackError('this answer is too old to rate (the server was restarted or has rated 10,000 '
                                'pages since); ask again')
        query, page_id = found
        return record_feedback(self._index(), self.store, query, page_id, useful, via='chat')

    def install(self, app: Any) -> None:
        """Add ``POST /colpali/feedback`` to the chat page's own FastAPI app (gradio's), ahead of its routes."""
        from fastapi.routing import APIRoute
        from starlette.responses import JSONResponse

        async def post(request: Request):
            try:
                body = await request.json()
                token, useful = body.get('token'), body.get('useful')
                if not isinstance(token, str) or not isinstance(useful, bool):
                    raise FeedbackError('expected {"token": "...", "useful": true|false}')
                import asyncio
                stored = await asyncio.to_thread(self.record, token, useful)
            except (ValueError, AttributeError, FeedbackError) as e:
                return JSONResponse({'detail': str(e) or 'bad request'}, status_code=400)
            LOG.info(f'chat feedback stored: {stored["id"]}')
            return JSONResponse({'stored': stored['id']})

        app.router.routes.insert(0, APIRoute(ROUTE, post, methods=['POST']))
