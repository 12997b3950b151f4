"""A small local HTTP server that speaks the OpenAI chat-completions API, standing in for a real VLM.

It lets the whole product run offline (captioning, answers, the chat UI) through LazyLLM's own
``OnlineChatModule``, and tells tests exactly what a model would have received:

* caption requests (prompts carrying ``[caption-qa]``) get JSON built from the page text in the prompt;
* bridge requests of multi-hop retrieval (prompts carrying ``[bridge-concepts]``) get the names and defined
  phrases of the page text in the prompt that the question lacks, one per line (it reads no image);
* other requests get an answer that names how many images arrived, their sizes, and cites the pages the
  prompt lists, so a reader sees the flow worked - and that no real model answered.

Run it: ``lazyllm-colpali standin-vlm --port 8011``; point a module at ``http://127.0.0.1:8011/v1/``.
``fail_first`` makes the first N requests answer HTTP 500 and ``delay`` slows each answer: both exist to
test retries and concurrency limits.
"""
from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

MODEL_NAME = 'standin-vlm'


def _parts(message: Dict[str, Any]) -> Tuple[str, List[str]]:
    content = message.get('content')
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for part in content or []:
        if part.get('type') == 'text':
            texts.append(part.get('text', ''))
        elif part.get('type') == 'image_url':
            url = part.get('image_url')
            images.append(url.get('url', '') if isinstance(url, dict) else str(url))
    return '\n'.join(texts), images


def _image_size(data_uri: str) -> Optional[Tuple[int, int]]:
    try:
        from PIL import Image
        with Image.open(io.BytesIO(base64.b64decode(data_uri.split(',', 1)[1]))) as image:
            return image.size
    except Exception:
        return None


def caption_reply(prompt: str, n_images: int) -> str:
    match = re.search(r'"""\n(.*?)\n"""', prompt, re.S)
    text = (match.group(1) if match else '').strip()
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) > 3]
    caption = ('Stand-in caption of a page: ' + ' '.join(lines)[:400]) if lines else \
        f'Stand-in caption: a page image ({n_images} attached) with no readable text given.'
    qa = [{'q': f'What does the page say about "{" ".join(line.split()[:4])}"?', 'a': line[:200]}
          for line in lines[:3]]
    return json.dumps({'caption': caption, 'qa': qa}, ensure_ascii=False)


def answer_reply(prompt: str, sizes: List[Optional[Tuple[int, int]]]) -> str:
    cited = re.findall(r'\[[^\[\]]+?, p\. \d+\]', prompt)
    question = prompt.rsplit('Question:', 1)[-1].strip() if 'Question:' in prompt else prompt.strip()[-200:]
    shown = ', '.join(f'{w}x{h}' if (w, h) != (0, 0) else '?' for w, h in (s or (0, 0) for s in sizes))
    return (f'[stand-in VLM, not a real model] I received {len(sizes)} page image(s) ({shown}) for the question '
            f'"{question[:200]}". ' + (f'The best match is {cited[0]}.' if cited else 'No pages were cited.'))


# --- bridge mode (multi-hop retrieval: lazyllm_colpali/multihop/bridges.py) ------------------------------------
def bridge_reply(prompt: str) -> str:
    """What a VLM asked for bridge concepts would write, made from the page text in the prompt: its names and
    defined phrases (Title Case runs, acronyms, "X is a ...") that the question and the already looked-up
    list lack, in order of appearance, one per line; NONE when there are none."""
    from ..multihop.terms import defined_phrases, words

    question = re.search(r'^Question: (.*)$', prompt, re.M)
    used = re.search(r'^Already looked up: (.*)\.$', prompt, re.M)
    wanted = re.search(r'Name up to (\d+) ', prompt)
    asked = set(words(question.group(1) if question else ''))
    looked_up = set(words(used.group(1) if used and used.group(1) != 'nothing' else ''))
    out: List[str] = []
    for block in re.findall(r'"""\n(.*?)\n"""', prompt, re.S):
        for phrase in sorted(defined_phrases(block), key=lambda p: block.lower().find(p.split()[0])):
            tokens = set(phrase.split())
            if not tokens <= asked and not tokens & looked_up and phrase not in out:
                out.append(phrase)
    return '\n'.join(out[:int(wanted.group(1)) if wanted else 3]) or 'NONE'
# --- end of bridge mode ---------------------------------------------------------------------------------------


class StandinVLMServer:
    """Start with ``with StandinVLMServer() as server: ... server.base_url``."""

    def __init__(self, host: str = '127.0.0.1', port: int = 0, *, fail_first: int = 0, delay: float = 0.0):
        self.fail_first = fail_first
        self.delay = delay
        self.requests: List[Dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f'http://127.0.0.1:{self.port}/v1/'

    def start(self) -> 'StandinVLMServer':
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name='standin-vlm')
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def respond(self, body: Dict[str, Any]) -> Tuple[int, str]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            number = len(self.requests)
            messages = body.get('messages') or []
            text, images = _parts(messages[-1]) if messages else ('', [])
            record = {'prompt': text, 'n_images': len(images), 'sizes': [_image_size(i) for i in images],
                      'status': 200}
            self.requests.append(record)
        try:
            if self.delay:
                time.sleep(self.delay)
            if number < self.fail_first:
                record['status'] = 500
                return 500, 'injected failure'
            if '[bridge-concepts]' in text:
                return 200, bridge_reply(text)
            if '[caption-qa]' in text:
                return 200, caption_reply(text, len(images))
            return 200, answer_reply(text, record['sizes'])
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test and CLI output clean
                pass

            def _json(self, status: int, payload: Dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip('/').endswith('/models'):
                    self._json(200, {'object': 'list', 'data': [{'id': MODEL_NAME, 'object': 'model'}]})
                else:
                    self._json(404, {'error': {'message': f'no route {self.path}'}})

            def do_POST(self):
                if not self.path.rstrip('/').endswith('/chat/completions'):
                    self._json(404, {'error': {'message': f'no route {self.path}'}})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get('Content-Length') or 0)) or b'{}')
                except json.JSONDecodeError:
                    self._json(400, {'error': {'message': 'body is not JSON'}})
                    return
                status, text = server.respond(body)
                if status != 200:
                    self._json(status, {'error': {'message': text, 'type': 'server_error'}})
                    return
                created, model = int(time.time()), body.get('model', MODEL_NAME)
                if not body.get('stream'):
                    self._json(200, {'id': 'standin', 'object': 'chat.completion', 'created': created, 'model': model,
                                     'choices': [{'index': 0, 'finish_reason': 'stop',
                                                  'message': {'role': 'assistant', 'content': text}}],
                                     'usage': {'prompt_tokens': 0, 'completion_tokens': 0, 'total_tokens': 0}})
                    return
                self.send_response(200)
                self.send_header('Content-Type', 'text/event-stream')
                self.end_headers()
                words = re.findall(r'\S+\s*', text) or ['']
                for i in range(0, len(words), 8):
                    chunk = {'id': 'standin', 'object': 'chat.completion.chunk', 'created': created, 'model': model,
                             'choices': [{'index': 0, 'delta': {'content': ''.join(words[i:i + 8])},
                                          'finish_reason': None}]}
                    self.wfile.write(f'data: {json.dumps(chunk)}\n\n'.encode())
                end = {'id': 'standin', 'object': 'chat.completion.chunk', 'created': created, 'model': model,
                       'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]}
                self.wfile.write(f'data: {json.dumps(end)}\n\ndata: [DONE]\n\n'.encode())
                self.wfile.flush()

        return Handler


def serve_forever(host: str = '127.0.0.1', port: int = 8011) -> None:
    server = StandinVLMServer(host, port)
    try:
        server._httpd.serve_forever()
    finally:
        server._httpd.server_close()
