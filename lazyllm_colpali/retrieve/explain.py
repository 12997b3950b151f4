"""Where on a page a query matched: per-query-token similarity maps on the page's patch grid.

Late interaction scores every query token against every page token; the page's image tokens sit on a patch
grid (:mod:`lazyllm_colpali.models.geometry`), so each query token's similarities form a map of the page.
Maps come from the page's *stored* vectors (the page is never encoded again; only the query is, and the
encoder's query cache usually has it from the search): a pooled page's vectors are mapped back to the
tokens they pooled through the token groups the store keeps, and ColSmol's global-image tokens are laid
over the tile grid (a cell shows the best of its tile token and the global token covering it).
colpali-engine's ``get_similarity_maps_from_embeddings`` and ``normalize_similarity_map`` do the maps.

    explanation = index.explain('revenue in 2023', hits[0])       # or a page id
    explanation.query_map            # (n_y, n_x) tensor: the mean map of the query's own tokens
    explanation.token_maps           # (n_tokens, n_y, n_x): one map per query token (prompt tokens too)
    explanation.region()             # (x0, y0, x1, y1) page pixels of the best-matching area
    explanation.overlay().save('hit1.png')                         # the page with the heat map on it
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import ColPaliError
from ..models.geometry import Box, PageGeometry, page_geometry, query_tokens

HEAT_COLORMAP = 'inferno'


class ExplainError(ColPaliError):
    """A page cannot be explained (not in the collection, or its stored vectors do not fit its geometry)."""


def similarity_maps(query: torch.Tensor, page: torch.Tensor, geometry: PageGeometry,
                    token_groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(n_query_tokens, n_y, n_x)`` similarities of each query token with the page's image tokens, on the
    finest grid of ``geometry``. ``page`` is the page's stored vectors; ``token_groups`` (pooled pages) maps
    each token the encoder emitted to its stored row."""
    from colpali_engine.interpretability.similarity_map_utils import get_similarity_maps_from_embeddings

    query, page = query.float(), page.float()
    if token_groups is not None and (len(token_groups) == 0 or int(token_groups.max()) + 1 != len(page)):
        raise ExplainError(f'the page\'s token groups name {int(token_groups.max()) + 1 if len(token_groups) else 0} '
                           f'pooled vectors but {len(page)} are stored: re-index the page to explain it')
    tokens = page if token_groups is None else page[token_groups]     # back to the encoder's own positions
    if tokens.shape[0] != geometry.n_tokens:
        raise ExplainError(f'the page has {tokens.shape[0]} stored tokens but {geometry.family} gives '
                           f'{geometry.n_tokens} for a {geometry.width} x {geometry.height} page: it was indexed with '
                           f'another model, or with token pooling before pooled pages kept their token groups '
                           f'(re-index it to explain it)')
    layers = []
    for grid in geometry.grids:
        cells = tokens[grid.positions.flatten()]                        # row by row, like the patches
        maps = get_similarity_maps_from_embeddings(
            image_embeddings=cells[None], query_embeddings=query[None], n_patches=(grid.n_x, grid.n_y),
            image_mask=torch.ones(1, len(cells), dtype=torch.bool))[0]  # (n_q, n_x, n_y)
        layers.append(maps.permute(0, 2, 1))                            # (n_q, n_y, n_x)
    fine = layers[0]
    for coarse in layers[1:]:   # e.g. ColSmol's global image: the token covering each fine cell's centre
        ys = (torch.arange(fine.shape[1]) * 2 + 1) * coarse.shape[1] // (2 * fine.shape[1])
        xs = (torch.arange(fine.shape[2]) * 2 + 1) * coarse.shape[2] // (2 * fine.shape[2])
        fine = torch.maximum(fine, coarse[:, ys][:, :, xs])
    return fine


def normalized(similarity_map: torch.Tensor, value_range: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """A map scaled to [0, 1] (colpali-engine's ``normalize_similarity_map``), as a numpy array."""
    from colpali_engine.interpretability.similarity_map_utils import normalize_similarity_map

    return normalize_similarity_map(similarity_map.float(), value_range=value_range).clamp(0, 1).numpy()


@dataclass
class PageExplanation:
    """Similarity maps of one query on one page. ``token_maps[i, y, x]`` is query token ``i``'s similarity
    with the page token at cell ``(x, y)``; ``content[i]`` tells the query's own text tokens from the
    family's prompt tokens; ``score`` is the page's MaxSim score from the same stored vectors;
    ``on_image[i]`` whether query token ``i``'s best page token is an image token (False: it matched the
    page's prompt text, which no map can show)."""

    page_id: str
    query: str
    tokens: List[str]
    content: List[bool]
    token_maps: torch.Tensor
    score: float
    geometry: PageGeometry = field(repr=False)
    on_image: List[bool] = field(default_factory=list)
    image_path: str = ''
    file_name: str = ''
    page: int = 0

    @property
    def width(self) -> int:
        return self.geometry.width

    @property
    def height(self) -> int:
        return self.geometry.height

    @property
    def grid_size(self) -> Tuple[int, int]:
        return self.geometry.grid_size

    @property
    def query_map(self) -> torch.Tensor:
        """The mean map of the query's own tokens (all tokens if it has none of its own)."""
        chosen = [i for i, c in enumerate(self.content) if c] or list(range(len(self.tokens)))
        return self.token_maps[chosen].mean(0)

    def map(self, token: Optional[int] = None) -> torch.Tensor:
        return self.query_map if token is None else self.token_maps[token]

    def heat(self, token: Optional[int] = None) -> np.ndarray:
        """The map scaled to [0, 1] (its own min to max)."""
        return normalized(self.map(token))

    def region(self, token: Optional[int] = None, threshold: float = 0.75) -> Box:
        """Page pixels ``(x0, y0, x1, y1)`` of the best-matching area: the cells connected to the best cell
        whose scaled value is at least ``threshold``."""
        heat = self.heat(token)
        y, x = (int(v) for v in np.unravel_index(int(np.argmax(heat)), heat.shape))
        seen, todo = {(y, x)}, [(y, x)]
        while todo:
            cy, cx = todo.pop()
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < heat.shape[0] and 0 <= nx < heat.shape[1] and (ny, nx) not in seen \
                        and heat[ny, nx] >= threshold:
                    seen.add((ny, nx))
                    todo.append((ny, nx))
        ys, xs = [c[0] for c in seen], [c[1] for c in seen]
        x0, y0, _, _ = self.geometry.cell_box(min(xs), min(ys))
        _, _, x1, y1 = self.geometry.cell_box(max(xs), max(ys))
        return x0, y0, x1, y1

    def page_image(self) -> Image.Image:
        if not self.image_path or not Path(self.image_path).is_file():
            raise ExplainError(f'page {self.page_id} has no image on this machine to draw the map on')
        with Image.open(self.image_path) as image:
            return image.convert('RGB')

    def overlay(self, image: Optional[Image.Image] = None, token: Optional[int] = None,
                box: bool = False) -> Image.Image:
        """The page (``image``, default: the stored page image, any size) with the map laid over it, each cell
        exactly over the pixels it covers; ``box`` also outlines :meth:`region`."""
        image = (image or self.page_image()).convert('RGB')
        heat = cells_to_pixels(self.heat(token), image.size)
        alpha = (0.75 * heat ** 2.5)[..., None]   # little where the page did not match, so it stays readable
        blended = np.asarray(image, dtype=np.float32) * (1 - alpha) + heat_colors(heat) * alpha
        out = Image.fromarray(blended.round().astype(np.uint8))
        if box:
            draw_box(out, scale_box(self.region(token), (self.width, self.height), out.size))
        return out

    def crop(self, image: Optional[Image.Image] = None, token: Optional[int] = None, margin: float = 0.5,
             min_width: float = 0.2, min_height: float = 0.2) -> Image.Image:
        """The page around :meth:`region`: the area grown by ``margin`` of its size on each side and to at
        least ``min_width`` x ``min_height`` of the page, so a one-cell match still shows its context."""
        image = image or self.page_image()
        x0, y0, x1, y1 = scale_box(self.region(token), (self.width, self.height), image.size)
        w, h = image.size
        grow_x = max((x1 - x0) * margin, (min_width * w - (x1 - x0)) / 2, 0)
        grow_y = max((y1 - y0) * margin, (min_height * h - (y1 - y0)) / 2, 0)
        left, right = _inside(x0 - grow_x, x1 + grow_x, w)
        top, bottom = _inside(y0 - grow_y, y1 + grow_y, h)
        return image.crop((left, top, right, bottom))

    def to_dict(self, token_maps: bool = True, token: Optional[int] = None, digits: int = 4) -> Dict[str, Any]:
        """Plain data (JSON-ready): the grid, the query map, ``token``'s map if given and, with
        ``token_maps``, one map per token. Maps are ``[y][x]`` rows of raw similarities."""
        def grid(t: torch.Tensor) -> List[List[float]]:
            return [[round(float(v), digits) for v in row] for row in t.tolist()]

        out = {'page_id': self.page_id, 'file_name': self.file_name, 'page': self.page, 'query': self.query,
               'score': self.score, 'width': self.width, 'height': self.height,
               'grid': {'n_x': self.grid_size[0], 'n_y': self.grid_size[1]}, 'family': self.geometry.family,
               'tokens': self.tokens, 'content': self.content, 'on_image': self.on_image,
               'region': list(self.region()),
               'query_map': grid(self.query_map)}
        if token is not None:
            out['token'], out['token_map'] = token, grid(self.token_maps[token])
        if token_maps:
            out['token_maps'] = [grid(m) for m in self.token_maps]
        return out


def _inside(start: float, end: float, size: int) -> Tuple[int, int]:
    """``[start, end)`` moved (not cut) to lie within ``[0, size)`` where it fits.

    >>> _inside(-10, 30, 100), _inside(90, 130, 100), _inside(-5, 120, 100)
    ((0, 40), (60, 100), (0, 100))
    """
    if start < 0:
        start, end = 0, end - start
    if end > size:
        start, end = max(0, start - (end - size)), size
    return int(start), int(end)


def cells_to_pixels(grid: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A ``(n_y, n_x)`` grid spread over ``size = (W, H)`` pixels: pixel ``(px, py)`` takes cell
    ``(px n_x // W, py n_y // H)``, the rule of :meth:`PageGeometry.cell_box`.

    >>> cells_to_pixels(np.array([[0, 1]]), (5, 1)).tolist()
    [[0, 0, 0, 1, 1]]
    """
    w, h = size
    ys = np.arange(h) * grid.shape[0] // h
    xs = np.arange(w) * grid.shape[1] // w
    return grid[ys][:, xs]


def heat_colors(heat: np.ndarray) -> np.ndarray:
    """RGB colours (float32, 0-255) of a [0, 1] array (a colormap look-up)."""
    import matplotlib

    lut = (matplotlib.colormaps[HEAT_COLORMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    return lut[(heat * 255).round().astype(np.int64)]


def scale_box(box: Box, source: Tuple[int, int], target: Tuple[int, int]) -> Box:
    if source == target:
        return box
    sx, sy = target[0] / source[0], target[1] / source[1]
    return (int(box[0] * sx), int(box[1] * sy), max(int(box[0] * sx) + 1, round(box[2] * sx)),
            max(int(box[1] * sy) + 1, round(box[3] * sy)))


def draw_box(image: Image.Image, box: Box, color: str = '#00e5ff') -> None:
    width = max(2, round(max(image.size) / 250))
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=color, width=width)


def explain_page(query_vectors: torch.Tensor, page_vectors: torch.Tensor, geometry: PageGeometry, *,
                 tokens: Optional[Sequence[str]] = None, content: Optional[Sequence[bool]] = None,
                 token_groups: Optional[torch.Tensor] = None, page_id: str = '', query: str = '',
                 **page: Any) -> PageExplanation:
    """A :class:`PageExplanation` from vectors alone (``page``: ``image_path``, ``file_name``, ``page``)."""
    n = len(query_vectors)
    tokens = list(tokens) if tokens is not None else [f'#{i}' for i in range(n)]
    content = list(content) if content is not None else [True] * n
    if len(tokens) != n or len(content) != n:
        raise ExplainError(f'{n} query vectors but {len(tokens)} token labels')
    maps = similarity_maps(query_vectors, page_vectors, geometry, token_groups)
    sims = query_vectors.float() @ page_vectors.float().T
    best = sims.max(dim=1).values
    if token_groups is not None:
        sims = sims[:, token_groups]                    # per encoder position
    image = torch.zeros(sims.shape[1], dtype=torch.bool)
    image[geometry.image_positions()] = True
    on_image = ((sims == best[:, None]) & image).any(dim=1).tolist()
    return PageExplanation(page_id, query, tokens, content, maps, float(best.sum()), geometry, on_image, **page)


def safe_name(text: str, limit: int = 60) -> str:
    """A file-name part from any text (file names, query tokens): letters, digits, ``.``, ``-``, ``_``.

    >>> safe_name('../b](.env) uploaded.pdf')
    'b_.env_uploaded.pdf'
    """
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', text).strip('._') or 'x'
    return name[:limit]


def write_overlays(explanation: PageExplanation, folder: Union[str, Path], rank: int,
                   per_token: bool = False) -> List[Path]:
    """``<rank>_<file>_p<page>.png`` (the whole query, best area outlined) in ``folder``, and with
    ``per_token`` one ``..._t<i>_<token>.png`` per token of the query's own text."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f'{rank:02d}_{safe_name(Path(explanation.file_name).stem or explanation.page_id)}_p{explanation.page}'
    image = explanation.page_image()
    written = [folder / f'{stem}.png']
    explanation.overlay(image, box=True).save(written[0])
    if per_token:
        for i, (token, own) in enumerate(zip(explanation.tokens, explanation.content)):
            if own and token.strip():
                written.append(folder / f'{stem}_t{i:02d}_{safe_name(token, 20)}.png')
                explanation.overlay(image, token=i).save(written[-1])
    return written


class PageExplainer:
    """Explains hits of a :class:`~lazyllm_colpali.indexer.ColPaliIndex`: query encoded by its encoder, page
    vectors from its retriever's view of the store, geometry from the encoder's processor (cached per size)."""

    def __init__(self, encoder: Any, store: Any, retriever: Any, cache_size: int = 64):
        self.encoder, self.store, self.retriever = encoder, store, retriever
        self._geometry: 'OrderedDict[tuple, PageGeometry]' = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def geometry(self, width: int, height: int) -> PageGeometry:
        key = (self.encoder.family.name, int(width), int(height))
        with self._lock:
            if key in self._geometry:
                self._geometry.move_to_end(key)
                return self._geometry[key]
        found = page_geometry(self.encoder.processor, key[0], width, height)
        with self._lock:
            self._geometry[key] = found
            while len(self._geometry) > self._cache_size:
                self._geometry.popitem(last=False)
        return found

    def explain(self, query: str, page: Union[str, Any]) -> PageExplanation:
        page_id = page if isinstance(page, str) else getattr(page, 'page_id', '')
        vectors = self.retriever.page_vectors(page_id)
        records = self.store.records([page_id]) if vectors is not None else {}
        if vectors is None or page_id not in records:
            raise ExplainError(f'no page {page_id!r} in this collection (ids come from search results)')
        record = records[page_id]
        from ..ingest.context import CONTEXT_KEY

        context = int((record.metadata or {}).get(CONTEXT_KEY, 0))
        if context:   # context vectors (index --context) have no place on the page: maps show the image part
            vectors = vectors[:max(1, len(vectors) - context)]
        labels, content = query_tokens(self.encoder.processor, query)
        query_vectors = self.encoder.encode_queries([query])[0]
        if len(labels) != len(query_vectors):   # a processor that tokenises differently than it encodes
            labels, content = [f'#{i}' for i in range(len(query_vectors))], [True] * len(query_vectors)
        return explain_page(query_vectors, vectors, self.geometry(record.width, record.height), tokens=labels,
                            content=content, token_groups=self.store.token_groups(page_id), page_id=page_id,
                            query=query, image_path=record.image_path, file_name=record.file_name,
                            page=record.page_number)
