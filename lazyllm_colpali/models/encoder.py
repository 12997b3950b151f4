"""ColPali-family encoder: pages (PIL images) and queries (text) to multi-vectors."""
from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from ..errors import ModelNotFoundError, UnsupportedModelError
from ..logging import LOG, quiet_transformers
from .adapters import adapter_base, is_adapter_folder, load_adapted_model
from .families import Family, detect_family, get_family
from .hf_native import detect_family_here, load_native
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

    def _family_of(self, source: str):
        """The family of ``source`` and the module that holds its model and processor classes."""
        import colpali_engine.models as cm

        if self.family_name or is_adapter_folder(source):   # an adapter's family must match what it was trained on
            return check_family(source, self.family_name), cm
        return detect_family_here(source), cm

    def _load_native(self, source: str, kwargs: dict, local_only: bool):
        return load_native(source, kwargs, local_only)

    def _load(self) -> None:
        source, local_only = resolve_model(self.model_name)
        kwargs = dict(torch_dtype=self.dtype, local_files_only=local_only)
        if self.attn_implementation:
            kwargs['attn_implementation'] = self.attn_implementation
        family = None
        try:
            with quiet_transformers():   # no "Loading weights" bar in a library call (LAZYLLM_COLPALI_VERBOSE=1)
                # transformers-format folders (ColQwen2ForRetrieval, ...) load with transformers' own classes
                native = None if self.family_name or is_adapter_folder(source) \
                    else self._load_native(source, kwargs, local_only)
                if native is not None:
                    model, processor, family = native[0], native[1], get_family(native[2])
                else:
                    family, module = self._family_of(source)
                    LOG.info(f'Loading {family.model_class} from {source} on {self.device} ({self.dtype})')
                    model_class = getattr(module, family.model_class)
                    if is_adapter_folder(source):   # a fine-tuned LoRA adapter: its base, then the adapter merged in
                        base_source, base_local = resolve_model(adapter_base(source))
                        model = load_adapted_model(model_class, base_source, source,
                                                   **dict(kwargs, local_files_only=base_local))
                    else:
                        model = model_class.from_pretrained(source, **kwargs)
                    processor = load_processor(family, source, local_only, module)
        except (OSError, ValueError) as e:
            first_line = str(e).splitlines()[0] if str(e) else ''
            raise ModelNotFoundError(f'model {self.model_name!r} could not be loaded as '
                                     f'{family.model_class if family else "a supported model"} '
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
        self._encode(['warm-up query'], self._process_queries, 1)
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
    def _process_images(self, images: list):
        return self.processor.process_images(images)

    def _process_queries(self, queries: list):
        return self.processor.process_queries(queries)

    def encode_images(self, images: Sequence[Image.Image]) -> List[torch.Tensor]:
        return self.encode_images_grouped(images)[0]

    def encode_images_grouped(self, images: Sequence[Image.Image]) -> Tuple[List[torch.Tensor],
                                                                           List[Optional[torch.Tensor]]]:
        """Page vectors and, with ``pool_factor > 1``, each page's token groups: for every token the encoder
        emitted, the row of the pooled vectors it was pooled into (what maps pooled vectors back to the patches
        they cover, see :mod:`lazyllm_colpali.retrieve.explain`); None for pages stored as encoded."""
        out = self._encode(list(images), self._process_images, self.batch_size)
        if self.pool_factor <= 1:
            return out, [None] * len(out)
        from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

        pooled = HierarchicalTokenPooler().pool_embeddings(out, pool_factor=self.pool_factor, return_dict=True)
        vectors = [t.float().contiguous() for t in pooled.pooled_embeddings]
        groups = [pooled_rows(clusters, len(tokens)) for clusters, tokens in zip(pooled.cluster_id_to_indices, out)]
        for v, g in zip(vectors, groups):
            if int(g.max()) + 1 != len(v):
                raise RuntimeError(f'token pooling gave {len(v)} vectors but {int(g.max()) + 1} groups')
        return vectors, groups

    def encode_queries(self, queries: Sequence[str]) -> List[torch.Tensor]:
        queries = list(queries)
        if self.query_cache_size <= 0:
            return self._encode(queries, self._process_queries, self.query_batch_size)
        with self._lock:
            found = {q: self._query_cache[q] for q in queries if q in self._query_cache}
            for q in found:
                self._query_cache.move_to_end(q)
        missing = list(dict.fromkeys(q for q in queries if q not in found))
        if missing:
            fresh = dict(zip(missing, self._encode(missing, self._process_queries, self.query_batch_size)))
            found.update(fresh)
            with self._lock:
                self._query_cache.update(fresh)
                while len(self._query_cache) > self.query_cache_size:
                    self._query_cache.popitem(last=False)
        return [found[q].clone() for q in queries]   # callers may modify what they get

    def encode_texts(self, texts: Sequence[str]) -> List[torch.Tensor]:
        """Token vectors of plain text through the model's text path (no query prefix or augmentation tokens):
        a page's context text (ingest/context.py)."""
        process = getattr(self.processor, 'process_texts', None)
        if process is None:   # transformers' processors have none: the bare tokenizer
            def process(batch):
                return self.processor.tokenizer(batch, return_tensors='pt', padding='longest')
        return self._encode(list(texts), process, self.query_batch_size)

    def _encode(self, items: list, process: Callable, batch_size: int) -> List[torch.Tensor]:
        results: List[torch.Tensor] = []
        for start in range(0, len(items), batch_size):
            batch = process(items[start:start + batch_size]).to(self.device)
            if self._family.name == 'colpali' and 'token_type_ids' not in batch:
                # PaliGemma warns when a prompt comes without token types, then treats every token as prefix
                # (bidirectional attention): zeros say exactly that, so the embeddings are the same, unwarned.
                batch['token_type_ids'] = torch.zeros_like(batch['input_ids'])
            with torch.inference_mode():
                results.extend(self._outputs(batch))
        return results

    def _outputs(self, batch) -> List[torch.Tensor]:
        embeddings = self.model(**batch)
        mask = batch['attention_mask'].bool()
        # Padding rows are zeroed by the model; drop them so stored pages hold real tokens only.
        return [e[m].float().cpu() for e, m in zip(embeddings, mask)]


def check_family(source: str, family_name: Optional[str] = None) -> Family:
    """The family of ``source``; a ``family_name`` that contradicts what the folder says is an error (an adapter
    trained on one family cannot be loaded as another)."""
    if not family_name:
        return detect_family(source)
    family = get_family(family_name)
    if is_adapter_folder(source):
        try:
            detected = detect_family(source)
        except UnsupportedModelError:
            return family
        if detected != family:
            raise UnsupportedModelError(
                f'{source}: this adapter was trained on a {detected.name} model ({adapter_base(source)!r} in its '
                f'adapter_config.json), not {family.name}; drop --family or pass --family {detected.name}')
    return family


def load_processor(family: Family, source: str, local_only: bool = True, module=None):
    """The processor saved beside the weights; an adapter folder without one uses its base model's.
    ``module``: where the family's classes live (colpali-engine's models by default)."""
    if module is None:
        import colpali_engine.models as module

    processor_class = getattr(module, family.processor_class)
    if is_adapter_folder(source) and not (Path(source) / 'preprocessor_config.json').is_file() \
            and not (Path(source) / 'processor_config.json').is_file():
        base_source, local_only = resolve_model(adapter_base(source))
        return processor_class.from_pretrained(base_source, local_files_only=local_only)
    return processor_class.from_pretrained(source, local_files_only=local_only)


def pooled_rows(cluster_id_to_indices: Dict[int, tuple], n_tokens: int) -> torch.Tensor:
    """Token -> pooled row, from colpali-engine's ``cluster_id_to_indices``: its pooler appends one vector per
    non-empty cluster in cluster-id order, so the k-th non-empty cluster is row k."""
    rows = torch.full((n_tokens,), -1, dtype=torch.int64)
    row = 0
    for cluster_id in sorted(cluster_id_to_indices):
        indices = cluster_id_to_indices[cluster_id][0]
        if indices.numel():
            rows[indices] = row
            row += 1
    if bool((rows < 0).any()):
        raise RuntimeError('token pooling left tokens outside every cluster')
    return rows


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
