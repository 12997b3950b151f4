"""Logging goes through LazyLLM's logger, so plugin messages land where a LazyLLM user looks.

Also the noise controls a program (the CLI) opts into: :func:`quiet_environment` before the heavy imports,
:func:`quiet_loggers` after; :func:`drop_alloc_timestamp_noise` is the one filter library code installs.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ['LOG', 'drop_alloc_timestamp_noise', 'drop_ocr_noise', 'quiet_environment', 'quiet_loggers',
           'quiet_progress_bars', 'quiet_transformers', 'verbose']

# Third-party loggers whose INFO lines (server ports, faiss loading, OCR model paths) bury a command's result.
NOISY_LOGGERS = ('milvus_lite', 'faiss', 'faiss.loader', 'pymilvus', 'bm25s', 'jieba', 'RapidOCR', 'matplotlib',
                 'numba', 'httpx', 'urllib3', 'gradio', 'transformers')


def __getattr__(name: str) -> Any:
    if name == 'LOG':   # imported on first use, so importing this module costs nothing
        from lazyllm import LOG
        return LOG
    raise AttributeError(name)


class _AllocTimestampFilter(logging.Filter):
    """Drops the ``AllocTimestamp ... NotImplementedError`` traceback that pymilvus's gRPC stub logs through
    ``grpc._server`` whenever Milvus Lite creates a collection: the call is optional and the work succeeds."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, NotImplementedError):
            return True
        tb = record.exc_info[2]
        while tb is not None:
            if tb.tb_frame.f_code.co_name == 'AllocTimestamp':
                return False
            tb = tb.tb_next
        return True


_FILTER = _AllocTimestampFilter()


def drop_alloc_timestamp_noise() -> None:
    """Install the filter on ``grpc._server`` (idempotent; it drops only that one known-harmless record)."""
    logger = logging.getLogger('grpc._server')
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


_LOUD = False   # quiet_loggers(verbose=True) was called: a program asked for everything


def verbose() -> bool:
    """Whether third-party logs, warnings and bars should show: ``LAZYLLM_COLPALI_VERBOSE=1`` (the CLI's ``-v``)
    or a program's ``quiet_loggers(verbose=True)``."""
    return _LOUD or os.environ.get('LAZYLLM_COLPALI_VERBOSE', '').lower() in ('1', 'true', 'yes', 'on')


_QUIET_LOCK = threading.Lock()
_QUIET_DEPTH = 0
_QUIET_SAVED: tuple = ()


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Around this package's own calls into transformers (loading and saving a model, encoding): its progress
    bars ("Loading weights", "Writing model shards") and one-off warnings stay off, and the caller's settings
    come back afterwards (nested and concurrent uses share one saved state). ``LAZYLLM_COLPALI_VERBOSE=1``
    leaves them on, as ``-v`` does for the CLI."""
    global _QUIET_DEPTH, _QUIET_SAVED
    if verbose():
        yield
        return
    from transformers.utils import logging as hf_logging

    with _QUIET_LOCK:
        if _QUIET_DEPTH == 0:
            _QUIET_SAVED = (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity())
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        _QUIET_DEPTH += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_DEPTH -= 1
            if _QUIET_DEPTH == 0:
                bars, level = _QUIET_SAVED
                hf_logging.set_verbosity(level)
                if bars:
                    hf_logging.enable_progress_bar()


class _OcrNoiseFilter(logging.Filter):
    """RapidOCR's INFO lines (model paths, each time an engine loads) and its "The text detection result is
    empty" warning (one for every image without text: to this package an answer, not a problem). RapidOCR
    resets its logger's level whenever it builds an engine, so this is a filter on the logger itself (its
    own handler prints, not the root's). Shown again with -v (``quiet_loggers(verbose=True)``)."""

    verbose = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        return record.levelno >= logging.WARNING and 'text detection result is empty' not in record.getMessage()


_OCR_NOISE = _OcrNoiseFilter()


def drop_ocr_noise() -> None:
    """Install the filter on RapidOCR's logger (idempotent); library code calls it when it loads the engine."""
    logger = logging.getLogger('RapidOCR')
    if _OCR_NOISE not in logger.filters:
        logger.addFilter(_OCR_NOISE)


def quiet_environment(verbose: bool = False) -> None:
    """Before LazyLLM / transformers are imported: their INFO logs, the weights-loading bars and one-off
    warnings off unless ``verbose``. Process-wide, so for programs (the CLI), not for library code."""
    os.environ.setdefault('LAZYLLM_TRACE_ENABLED', 'False')   # no OpenTelemetry exporter here
    if verbose:
        os.environ['LAZYLLM_COLPALI_VERBOSE'] = '1'
        return
    os.environ.setdefault('LAZYLLM_LOG_LEVEL', 'WARNING')
    os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')   # transformers' "Loading weights" bars
    os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')     # e.g. the prefill token_type_ids warning
    os.environ.setdefault('DISABLE_TQDM', '1')                   # bm25s (its package-level bars)


class _Below(logging.Filter):
    """Drops records under a level. A filter, not ``setLevel``: some libraries (RapidOCR, bm25s) set their
    own logger's level when they load, after we ran."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def quiet_loggers(verbose: bool = False) -> None:
    """After :func:`quiet_environment`: third-party INFO/DEBUG lines and warnings off unless ``verbose``."""
    import warnings

    global _LOUD
    drop_alloc_timestamp_noise()
    _OcrNoiseFilter.verbose = _LOUD = verbose
    if verbose:
        return
    for name in NOISY_LOGGERS:   # the level covers child loggers, the filter a library resetting its level
        logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger(name).addFilter(_Below(logging.WARNING))
    logging.getLogger().addFilter(_Below(logging.WARNING))   # libraries that log through logging.info()
    # A locked Lite file is logged with a full traceback before pymilvus raises; the error we then print
    # names the file and the fix.
    for name in ('milvus_lite', 'milvus_lite.server_manager'):
        logging.getLogger(name).setLevel(logging.CRITICAL)
        logging.getLogger(name).addFilter(_Below(logging.CRITICAL))
    warnings.filterwarnings('ignore', module=r'(ranx|numba|transformers|torch|pymilvus|milvus_lite)(\..*)?$')


def quiet_progress_bars(*modules: str) -> None:
    """Turn off the tqdm bars of third-party ``modules`` (e.g. ``bm25s.tokenization``, one bar per LazyLLM BM25
    query), leaving this package's own bars alone. Modules that are not installed are skipped."""
    from tqdm.auto import tqdm

    def silent(*args: Any, **kwargs: Any):
        kwargs['disable'] = True
        return tqdm(*args, **kwargs)

    for name in modules:
        try:
            module = __import__(name, fromlist=['tqdm'])
        except ImportError:
            continue
        if getattr(module, 'tqdm', None) is not None:
            module.tqdm = silent
