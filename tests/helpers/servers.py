"""Run an ASGI app on a real loopback port in a thread (uvicorn), for tests that speak HTTP to it."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from lazyllm_colpali.serving.chat import free_port


@contextmanager
def serve_in_thread(app) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning'))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, 'uvicorn did not start in 30 s'
    try:
        yield f'http://127.0.0.1:{port}'
    finally:
        server.should_exit = True
        thread.join(timeout=30)
