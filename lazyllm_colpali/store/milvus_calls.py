"""Calls to Milvus that survive a server restart.

A restarted server answers again within seconds but leaves every collection released ("call load() before
search/get/query"): a long-running reader must load them again itself. So each call here is classified on
failure and

- ``released`` / not loaded: the store's collections are loaded again and the call repeated (twice at most);
- ``down`` (connection refused, unavailable, deadline): retried with a bounded backoff (``retry_delays``); once
  a call has used up that backoff the server counts as down, and later calls fail after one try (a quick 503
  for a web request instead of a hang) until one succeeds again;
- anything else fails at once as a :class:`StoreError` naming the URI, the collection and the operation.

>>> classify(Exception("Collection 'c__meta' is in state 'released'; call load() before search/get/query"))
'released'
>>> classify(Exception('Fail connecting to server on 127.0.0.1:19530, server unavailable'))
'down'
>>> classify(Exception('collection not found'))
'other'
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional, Sequence

from ..errors import StoreError, StoreUnavailableError
from ..logging import LOG

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 4.0)   # ~11.5 s: a restarting milvus-lite or Milvus 2.3 server is back by then
_RELOADS = 2
_DOWN_WORDS = ('connect', 'unavailable', 'timeout', 'deadline', 'closed channel', 'socket closed', 'broken pipe',
               'connection reset', 'not ready', 'serviceunavailable')
_RELEASED_WORDS = ("state 'released'", 'not loaded', 'collection not loaded', 'released; call load')
DOWN_HINT = 'is the server running and reachable? Nothing stored so far is lost'


def classify(error: BaseException) -> str:
    """``'released'``, ``'down'`` or ``'other'`` for an exception raised by a pymilvus call."""
    text = str(error).lower()
    if any(w in text for w in _RELEASED_WORDS):
        return 'released'
    if any(w in text for w in _DOWN_WORDS):
        return 'down'
    return 'other'


class MilvusCaller:
    """``caller(what, fn, *args, **kwargs)``: run one pymilvus call with the rules above.

    ``reload()`` loads the store's collections again (called after a 'released' answer). ``remote`` False
    (a Milvus Lite file) means no retries: an embedded server does not restart under us.
    """

    def __init__(self, uri: str, collection: str, remote: bool, reload: Callable[[], None],
                 retry_delays: Sequence[float] = RETRY_DELAYS):
        self.uri, self.collection, self.remote = uri, collection, remote
        self.reload = reload
        self.retry_delays = tuple(retry_delays)
        self.down_since: Optional[float] = None    # monotonic time of the failure that marked the server down
        self.last_error = ''
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def __call__(self, what: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        delays = self.retry_delays if self.remote and not self.down else ()
        attempt = reloads = 0
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:   # pymilvus raises several types (MilvusException, grpc errors, OSError)
                kind = classify(e) if self.remote else 'other'
                if kind == 'released' and reloads < _RELOADS:
                    reloads += 1
                    LOG.info(f'Milvus at {self.uri} released {self.collection!r} (a restarted server?): loading '
                             f'it again')
                    self._reload()
                    continue
                if kind == 'down' and attempt < len(delays):
                    time.sleep(delays[attempt])
                    attempt += 1
                    continue
                raise self._error(what, e, kind) from e
            if self.down_since is not None:
                LOG.warning(f'Milvus at {self.uri} answers again')
                self.down_since = None
            return result

    def _reload(self) -> None:
        try:
            self.reload()
        except Exception as e:   # the retried call reports what is still wrong
            LOG.info(f'reloading collections on {self.uri} failed: {type(e).__name__}: {e}')

    def _error(self, what: str, error: Exception, kind: str) -> StoreError:
        text = str(error).strip()
        where = f'Milvus {what} failed on {self.uri!r} collection {self.collection!r}'
        if kind == 'down':
            with self._lock:
                if self.down_since is None:
                    self.down_since = time.monotonic()
            self.last_error = f'{type(error).__name__}: {text.splitlines()[0] if text else ""}'
            return StoreUnavailableError(f'{where}: {self.last_error}; {DOWN_HINT}')
        return StoreError(f'{where}: {type(error).__name__}: {text}')
