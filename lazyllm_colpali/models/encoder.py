"""ColPali-family encoder: pages (PIL images) and queries (text) to multi-vectors."""
from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence

import torch
from PIL import Image

from ..errors import ModelNotFoundError
from ..logging import LOG
from .families import Family, detect_family, get_family
from .loading import how_to_fix, resolve_model

_DTYPES = {'float32': torch.float32, 'fp32': torch.float32, 'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16,
           'float16': torch.float16, 'fp16': torch.float16}


def pick_device(device: str = 'auto') -> str:
    if device != 'auto':
        return device
    if torch.cuda.is_available():
        return 'cuda'
    if getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available():
        return 'mps'
    return 'cpu'


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == 'auto':  # bf16 where the hardware does it well, fp32 on CPU (bf16 matmuls are slow there)
        return torch.bfloat16 if device.startswith('cuda') else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f'dtype {dtype!r} is not one of auto, {", ".join(_DTYPES)}')
    return _DTYPES[dtype]


class ColPaliEncoder:
    """Loads any colpali-engine family by hub name or local folder and embeds pages and queries.

    Embeddings come back as a list of float32 CPU tensors ``(n_tokens_i, dim)``, one per input, with
    padding removed. ``pool_factor > 1`` applies colpali-engine's hierarchical token pooling to pages.

    CPU speed (measured in benchmarks/bench_encode.py): ``quantize='int8'`` swaps the language tower's
    linear layers for dynamically quantised int8 ones (fbgemm), the bulk of a query's time; the vision
    tower keeps its dtype. ``compile=True`` wraps the model in ``torch.compile`` (ColSmol-256M bf16: 0.15 s
    instead of 0.82 s per query, after ~95 s compiling the first one and again for each new batch size: for
    long-running servers, not CLI runs). ``query_cache_size`` keeps that many recent query embeddings (LRU):
    a repeated query costs a dictionary lookup instead of a forward pass.

    >>> enc = ColPaliEncoder('tiny:colpali', batch_size=2)   # a tiny random model, built offline
    >>> [tuple(v.shape)[1] for v in enc.encode_queries(['revenue in 2023', 'pump'])]
    [128, 128]
    """

    def __init__(self, model: str, *, family: Optional[str] = None, device: str = 'auto', dtype: str = 'auto',
                 batch_size: int = 4, query_batch_size: int = 16, pool_factor: int = 1,
                 attn_implementation: Optional[str] = None, quantize: Optional[str] = None,
                 query_cache_size: int = 1024, compile: bool = False):
        if pool_factor < 1:
            raise ValueError(f'pool_factor must be >= 1, got {pool_factor}')
        if quantize not in (None, 'int8'):
            raise ValueError(f'quantize must be None or "int8", got {quantize!r}')
        self.model_name = model
        self.family_name = family
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.query_batch_size = query_batch_size
        self.pool_factor = pool_factor
        self.attn_implementation = attn_implementation
        self.quantize = quantize
        if quantize and self.device != 'cpu':
            raise ValueError(f'quantize="int8" is a CPU option (dynamic int8 matmuls); device is {self.device!r}')
        self.query_cache_size = query_cache_size
        self.compile = compile
        self._query_cache: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
        self._model = None
        self._processor = None
        self._family: Optional[Family] = None
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------------------
    def load(self) -> 'ColPaliEncoder':
        with self._lock:
            if self._model is None:
                self._load()
        return self

    def _load(self) -> None:
        import colpali_engine.models as cm

        source, local_only = resolve_model(self.model_name)
        family = get_family(self.family_name) if self.family_name else detect_family(source)
        kwargs = dict(torch_dtype=self.dtype, local_files_only=local_only)
        if self.attn_implementation:
            kwargs['attn_implementation'] = self.attn_implementation
        LOG.info(f'Loading {family.model_class} from {source} on {self.device} ({self.dtype})')
        try:
            model = getattr(cm, family.model_class).from_pretrained(source, **kwargs)
            processor = getattr(cm, family.processor_class).from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError) as e:
            first_line = str(e).splitlines()[0] if str(e) else ''
            raise ModelNotFoundError(f'model {self.model_name!r} could not be loaded as {family.model_class} '
                                     f'({type(e).__name__}: {first_line}). ' + how_to_fix(self.model_name)) from e
        model = model.to(self.device).eval()
        if self.quantize == 'int8':
            model = quantize_language_tower(model)
        if self.compile:   # pays in long-running servers only: the first query compiles (~95 s for ColSmol)
            model = torch.compile(model, dynamic=True)
        self._model = model
        self._processor = processor
        self._family = family

    def warm_up(self) -> float:
        """Pay a process's one-time costs before the first user query: one short query through the model pages
        in the weights (memory-mapped by ``from_pretrained``, read from disk on first use) and runs the
        libraries' lazy set-up. Measured (benchmarks/bench_first_query.py): the first query of a process cost
        2-3x a repeat and a new query length 0.9-1.6x, so one warm-up, not one per length, is what a
        long-running server needs. Returns the seconds spent."""
        started = time.perf_counter()
        self._encode(['warm-up query'], self.processor.process_queries, 1)
        return time.perf_counter() - started

    @property
    def model(self):
        return self.load()._model

    @property
    def processor(self):
        return self.load()._processor

    @property
    def family(self) -> Family:
        return self.load()._family

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    # -- encoding --------------------------------------------------------------------------------------
    def encode_images(self, images: Sequence[Image.Image]) -> List[torch.Tensor]:
        out = self._encode(list(images), self.processor.process_images, self.batch_size)
        if self.pool_factor > 1:
            from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

            out = HierarchicalTokenPooler().pool_embeddings(out, pool_factor=self.pool_factor)
            out = [t.float().contiguous() for t in out]
        return out

    def encode_queries(self, queries: Sequence[str]) -> List[torch.Tensor]:
        queries = list(queries)
        if self.query_cache_size <= 0:
            return self._encode(queries, self.processor.process_queries, self.query_batch_size)
        with self._lock:
            found = {q: self._query_cache[q] for q in queries if q in self._query_cache}
            for q in found:
                self._query_cache.move_to_end(q)
        missing = list(dict.fromkeys(q for q in queries if q not in found))
        if missing:
            fresh = dict(zip(missing, self._encode(missing, self.processor.process_queries, self.query_batch_size)))
            found.update(fresh)
            with self._lock:
                self._query_cache.update(fresh)
                while len(self._query_cache) > self.query_cache_size:
                    self._query_cache.popitem(last=False)
        return [found[q].clone() for q in queries]   # callers may modify what they get

    def _encode(self, items: list, process: Callable, batch_size: int) -> List[torch.Tensor]:
        model = self.model
        results: List[torch.Tensor] = []
        for start in range(0, len(items), batch_size):
            batch = process(items[start:start + batch_size]).to(self.device)
            with torch.inference_mode():
                embeddings = model(**batch)
            mask = batch['attention_mask'].bool()
            # Padding rows are zeroed by the model; drop them so stored pages hold real tokens only.
            results.extend(e[m].float().cpu() for e, m in zip(embeddings, mask))
        return results


def quantize_language_tower(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation (per-channel weights, activations quantised per batch) of every
    ``nn.Linear`` outside the vision tower and the final projection: the language tower is all of a
    query's compute. On this project's CPUs the int8 GEMMs run ~5x faster than fp32 (see docs/performance.md)."""
    from torch.ao.quantization import quantize_dynamic

    skip = ('vision', 'visual', 'custom_text_proj', 'connector', 'multi_modal_projector')
    names = {name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and not any(s in name for s in skip)
             and name not in ('linear',)}
    with warnings.catch_warnings():   # torch.ao eager quantisation warns that it will move to torchao
        warnings.simplefilter('ignore')
        return quantize_dynamic(model.float(), names, dtype=torch.qint8, inplace=True)
