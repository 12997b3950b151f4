"""A real browser (Debian's chromium, headless) against `lazyllm-colpali serve`: upload a PDF from the chat,
ask a question, see the answer and page thumbnails. Screenshots go to test-artifacts/ (or
$LAZYLLM_COLPALI_ARTIFACTS). Skipped where chromium is not installed, except in CI, where it must run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from lazyllm_colpali.serving.chat import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get('LAZYLLM_COLPALI_ARTIFACTS', ROOT / 'test-artifacts'))
CHROMIUM, CHROMEDRIVER = shutil.which('chromium'), shutil.which('chromedriver')


def _need_browser():
    missing = [n for n, p in (('chromium', CHROMIUM), ('chromedriver', CHROMEDRIVER)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append('selenium')
    if missing:
        message = f'browser test needs {", ".join(missing)} (apt-get install chromium chromium-driver)'
        if os.environ.get('CI') == 'true':
            pytest.fail(message)
        pytest.skip(message)


def _start_serve(tmp_path: Path):
    port = free_port()
    env = dict(os.environ, LAZYLLM_COLPALI_HOME=str(tmp_path / 'home'))
    log = open(tmp_path / 'serve.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'lazyllm_colpali.cli', 'serve', '--model', 'tiny:colpali',
                             '--vlm-url', 'standin', '--db', str(tmp_path / 'db' / 'c.db'), '--port', str(port),
                             '--pages', '2', '--lang', 'en'], stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=tmp_path)
    url = f'http://127.0.0.1:{port}'
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, log, url
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, (tmp_path / 'serve.log').read_text()[-3000:]
            time.sleep(0.5)
    proc.kill()
    pytest.fail('serve did not come up in 180 s:\n' + (tmp_path / 'serve.log').read_text()[-3000:])


@pytest.fixture
def server(tmp_path):
    proc, log, url = _start_serve(tmp_path)
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--window-size=1400,1000'):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _open_chat(driver, url: str):
    from selenium.webdriver.common.by import By

    driver.get(url)
    for _ in range(60):
        boxes = [t for t in driver.find_elements(By.CSS_SELECTOR, 'textarea') if t.is_displayed()]
        box = next((t for t in boxes if t.get_attribute('placeholder')), None)
        if box:
            return box
        time.sleep(0.5)
    raise AssertionError('chat input not found')


def _wait_for(driver, text: str, timeout: float = 240) -> str:
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    while time.time() < deadline:
        body = driver.find_element(By.TAG_NAME, 'body').text
        if text in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f'{text!r} did not appear; page text ends with:\n{body[-1500:]}')


def test_chat_in_a_browser_uploads_a_pdf_and_answers_with_thumbnails(server, sample_dataset, tmp_path):
    _need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # The UI can read nothing outside the page store: gradio's file route refuses other paths.
    secret = tmp_path / 'secret.png'
    Image.new('RGB', (40, 40), 'red').save(secret)
    for probe in (f'{server}/gradio_api/file={secret}', f'{server}/gradio_api/file=/etc/passwd'):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(probe, timeout=10)
        assert refused.value.code in (403, 404)

    driver = _browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        box = _open_chat(driver, server)

        # 1. An empty collection says what to do.
        box.send_keys('Is anything indexed?', Keys.ENTER)
        _wait_for(driver, 'No documents are indexed yet')

        # 2. Upload a PDF with a question: it is indexed, then answered, with thumbnails of the cited pages.
        driver.find_element(By.CSS_SELECTOR, 'input[type=file]').send_keys(
            str(sample_dataset.corpus_dir / 'hydra_pump_manual.pdf'))
        time.sleep(1.5)
        box.send_keys(f'What is the maximum operating pressure? ![x]({secret})', Keys.ENTER)
        body = _wait_for(driver, 'I received 2 page image(s)')
        assert 'Indexed hydra_pump_manual.pdf: 3 pages added' in body
        assert body.count('hydra_pump_manual.pdf, p. ') >= 2
        # English controls (WebModule's own are Chinese)
        assert all(label in body for label in ('Use context', 'Stream output', 'New session')), body[:500]
        assert '使用上下文' not in body
        # each cited page: a compact thumbnail and the matched area; the full page (with its map) on click
        sources = driver.find_elements(By.CSS_SELECTOR, 'details.lazyllm-colpali-source')
        assert len(sources) == 2
        shown = [i for i in driver.find_elements(By.CSS_SELECTOR, 'img')
                 if (i.get_attribute('src') or '').startswith('data:image/jpeg;base64') and i.is_displayed()]
        assert len(shown) == 4 and all(20 < i.size['height'] <= 130 for i in shown), [i.size for i in shown]
        full = sources[0].find_elements(By.CSS_SELECTOR, 'img')[-1]
        assert not full.is_displayed()
        # the path the question smuggled in (echoed back by the model) was not turned into an image
        assert not [i for i in driver.find_elements(By.CSS_SELECTOR, 'img')
                    if (i.get_attribute('src') or '').startswith('data:image/png')]
        driver.save_screenshot(str(ARTIFACTS / 'chat_answer_with_thumbnails.png'))
        answer = driver.find_element(By.XPATH, "//p[contains(., 'I received 2 page image')]")
        driver.execute_script('arguments[0].scrollIntoView({block: "start"});', answer)
        time.sleep(0.5)
        driver.save_screenshot(str(ARTIFACTS / 'chat_answer_text.png'))
        sources[0].find_element(By.TAG_NAME, 'summary').click()
        for _ in range(20):
            if full.is_displayed() and full.size['width'] > 300:
                break
            time.sleep(0.25)
        assert full.is_displayed() and full.size['width'] > 300, full.size
        driver.execute_script('arguments[0].scrollIntoView({block: "start"});', sources[0])
        time.sleep(0.5)
        driver.save_screenshot(str(ARTIFACTS / 'chat_source_opened_with_map.png'))
    finally:
        driver.quit()
    with Image.open(ARTIFACTS / 'chat_answer_with_thumbnails.png') as shot:
        assert shot.size[0] >= 1000


def test_second_browser_is_answered_during_a_large_upload_and_hostile_names_stay_text(server, tmp_path):
    """Issue 13: one user's large upload blocked every other user, and an upload named like Markdown made the
    chat inline the server's ./.env. Here the uploader's file is named that way and the server's cwd holds a
    .env; a second browser asks while the upload indexes."""
    _need_browser()
    import base64

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from tests.helpers.pdfs import make_text_pdf

    (tmp_path / '.env').write_text('SECRET=hunter2')            # the server runs in tmp_path
    big = make_text_pdf(tmp_path / 'up' / 'b](.env) uploaded.pdf',
                        [f'Section {i}: pump maintenance step {i}.' for i in range(120)])
    uploader, other = _browser(), _browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        box = _open_chat(uploader, server)
        uploader.find_element(By.CSS_SELECTOR, 'input[type=file]').send_keys(str(big))
        time.sleep(1.5)
        box.send_keys('What does section 3 say?', Keys.ENTER)
        _wait_for(uploader, '/120 pages', timeout=120)               # progress streamed into the uploader's chat

        other_box = _open_chat(other, server)
        other_box.send_keys('Which maintenance step comes first?', Keys.ENTER)
        body = _wait_for(other, 'in the background', timeout=120)
        assert 'b](.env) uploaded.pdf' in body and '**Sources**' not in body   # shown as text, Markdown rendered
        assert 'Indexed b](.env)' not in _page_text(uploader), 'the upload finished before the other user was answered'
        other.save_screenshot(str(ARTIFACTS / 'chat_other_user_during_upload.png'))

        body = _wait_for(uploader, 'Indexed b](.env) uploaded.pdf: 120 pages added', timeout=600)
        for driver in (uploader, other):
            for img in driver.find_elements(By.CSS_SELECTOR, 'img'):
                src = img.get_attribute('src') or ''
                if ';base64,' in src:                           # (gradio's own icons are inline SVG text)
                    assert src.startswith('data:image/jpeg;base64,'), src[:80]
                    assert b'hunter2' not in base64.b64decode(src.split(',', 1)[1])
        assert 'hunter2' not in uploader.page_source and base64.b64encode(b'SECRET=hunter2').decode() not in \
            uploader.page_source
        uploader.save_screenshot(str(ARTIFACTS / 'chat_hostile_name_upload.png'))
    finally:
        uploader.quit()
        other.quit()


def _page_text(driver) -> str:
    from selenium.webdriver.common.by import By
    return driver.find_element(By.TAG_NAME, 'body').text


def test_sigterm_stops_serve_within_seconds_mid_upload_keeping_stored_pages(tmp_path):
    """Issue 13: SIGTERM did not stop `serve` within 10 s while an upload indexed."""
    _need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from lazyllm_colpali import MilvusMultiVectorStore
    from tests.helpers.pdfs import make_text_pdf

    big = make_text_pdf(tmp_path / 'up' / 'long manual.pdf', [f'Step {i}.' for i in range(400)])
    proc, log, url = _start_serve(tmp_path)
    driver = _browser()
    try:
        box = _open_chat(driver, url)
        driver.find_element(By.CSS_SELECTOR, 'input[type=file]').send_keys(str(big))
        time.sleep(1.5)
        box.send_keys('Index this', Keys.ENTER)
        _wait_for(driver, '/400 pages', timeout=120)
        stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(20)
            print(f'\nserve exited {time.monotonic() - stop:.1f} s after SIGTERM mid-upload')
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail('serve still running 20 s after SIGTERM:\n' + (tmp_path / 'serve.log').read_text()[-3000:])
    finally:
        driver.quit()
        log.close()
    assert rc == 0, (tmp_path / 'serve.log').read_text()[-3000:]
    store = MilvusMultiVectorStore(str(tmp_path / 'db' / 'c.db'))
    try:
        assert 0 < store.count() < 400                        # stopped mid-upload; what was stored is there
        report = store.check()
        assert not [k for k, v in report.items() if isinstance(v, list) and v], report
    finally:
        store.close()
