"""Where each vector a family emits comes from: page tokens on the page's patch grid, query tokens as text.

A page's multi-vector holds one row per token of the model's input sequence: image tokens (one per patch
cell) and the prompt's text tokens. Each family lays its image tokens out differently:

- **ColPali** (PaliGemma): the page is resized to a fixed square (448 px), so always one 32 x 32 grid of
  14 px patches, stretched over the page; the 1024 image tokens come first, the prompt after them.
- **ColQwen2 / ColQwen2.5** (Qwen2-VL): a dynamic grid. The page is resized to multiples of 28 px within a
  pixel budget (``image_grid_thw`` gives the 14 px patch grid) and every 2 x 2 block of patches is merged
  into one token, so the tokens form a ``(h / 2) x (w / 2)`` grid, row by row, inside the prompt.
- **ColSmol / ColIdefics3**: the page is resized, split into 512 px tiles (rows x cols), each tile becomes
  an 8 x 8 grid of tokens (pixel shuffle), tile after tile, each run of image tokens preceded by its
  ``<row_R_col_C>`` token; then a global image (the whole page at 512 px) as one more 8 x 8 grid.

The layout is read from the family's own processor on a blank image of the page's size (what it does to
the pixels depends only on the size), so it is exactly what the encoder saw, and no page is encoded again.
Every grid covers the whole page: each family stretches the page onto its grid, so cell ``(x, y)`` of an
``n_x x n_y`` grid is the page box ``[x W / n_x, (x + 1) W / n_x) x [y H / n_y, (y + 1) H / n_y)``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from PIL import Image

from ..errors import UnsupportedModelError

Box = Tuple[int, int, int, int]


@dataclass(frozen=True)
class TokenGrid:
    """Sequence positions of the tokens covering a grid of cells over the whole page: ``positions[y, x]``."""

    positions: torch.Tensor   # (n_y, n_x) int64

    @property
    def n_x(self) -> int:
        return int(self.positions.shape[1])

    @property
    def n_y(self) -> int:
        return int(self.positions.shape[0])


@dataclass(frozen=True)
class PageGeometry:
    """The patch geometry of one page size for one family.

    ``n_tokens`` is the length of the sequence the encoder emits for the page (before any token pooling);
    ``grids`` the grids of image tokens, finest first (ColSmol adds its coarse global image).
    """

    family: str
    width: int
    height: int
    n_tokens: int
    grids: Tuple[TokenGrid, ...]

    @property
    def grid_size(self) -> Tuple[int, int]:
        """``(n_x, n_y)`` of the finest grid: the grid explanations are given on."""
        return self.grids[0].n_x, self.grids[0].n_y

    def cell_box(self, x: int, y: int, grid: int = 0) -> Box:
        """The page pixels ``(x0, y0, x1, y1)`` (ends exclusive) that cell ``(x, y)`` of ``grids[grid]`` covers.

        >>> g = PageGeometry('colpali', 612, 792, 1046, (TokenGrid(torch.arange(1024).view(32, 32)),))
        >>> g.cell_box(0, 0), g.cell_box(31, 31)
        ((0, 0, 20, 25), (593, 768, 612, 792))
        """
        n_x, n_y = self.grids[grid].n_x, self.grids[grid].n_y
        return (_edge(x, self.width, n_x), _edge(y, self.height, n_y),
                _edge(x + 1, self.width, n_x), _edge(y + 1, self.height, n_y))

    def cell_at(self, px: float, py: float, grid: int = 0) -> Tuple[int, int]:
        """The cell of ``grids[grid]`` holding page pixel ``(px, py)``."""
        n_x, n_y = self.grids[grid].n_x, self.grids[grid].n_y
        return min(int(px * n_x // self.width), n_x - 1), min(int(py * n_y // self.height), n_y - 1)

    def image_positions(self) -> torch.Tensor:
        return torch.cat([g.positions.flatten() for g in self.grids])


def _edge(i: int, size: int, cells: int) -> int:
    # first pixel whose cell (floor(p * cells / size)) is >= i; the same rule draws the overlays
    return -(-i * size // cells)


def _image_runs(mask: torch.Tensor) -> List[Tuple[int, int]]:
    """``(start, length)`` of each run of consecutive image tokens."""
    runs, start = [], None
    for i, is_image in enumerate(mask.tolist() + [False]):
        if is_image and start is None:
            start = i
        elif not is_image and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def _processed(processor: Any, width: int, height: int) -> Tuple[Any, torch.Tensor, torch.Tensor]:
    """The processor's batch for a blank page of this size, its sequence (padding dropped) and image mask."""
    batch = processor.process_images([Image.new('RGB', (width, height), 'white')])
    keep = batch['attention_mask'][0].bool()
    return batch, batch['input_ids'][0][keep], processor.get_image_mask(batch)[0][keep]


def _single_run(mask: torch.Tensor, n_x: int, n_y: int, what: str) -> TokenGrid:
    runs = _image_runs(mask)
    if len(runs) != 1 or runs[0][1] != n_x * n_y:
        raise UnsupportedModelError(f'{what}: expected one run of {n_x} x {n_y} image tokens, found runs {runs[:4]}')
    start, length = runs[0]
    return TokenGrid(torch.arange(start, start + length).view(n_y, n_x))


def colpali_geometry(processor: Any, width: int, height: int) -> PageGeometry:
    """ColPali: one fixed grid (the processor's square image size over the patch size)."""
    _, ids, mask = _processed(processor, width, height)
    n = int(mask.sum())
    size = processor.image_processor.size
    aspect = size['width'] / size['height']          # 1 for every released ColPali (448 x 448)
    n_x = round(math.sqrt(n * aspect))
    grid = _single_run(mask, n_x, n // max(n_x, 1), 'ColPali page tokens')
    return PageGeometry('colpali', width, height, len(ids), (grid,))


def colqwen_geometry(processor: Any, width: int, height: int, family: str = 'colqwen2') -> PageGeometry:
    """ColQwen2/2.5: the dynamic patch grid of ``image_grid_thw`` with its 2 x 2 merge."""
    batch, ids, mask = _processed(processor, width, height)
    _, grid_h, grid_w = (int(v) for v in batch['image_grid_thw'][0])
    merge = int(getattr(processor.image_processor, 'merge_size', 2))
    grid = _single_run(mask, grid_w // merge, grid_h // merge, f'{family} page tokens')
    return PageGeometry(family, width, height, len(ids), (grid,))


_TILE = re.compile(r'<row_(\d+)_col_(\d+)>')


def idefics3_geometry(processor: Any, width: int, height: int, family: str = 'colidefics3') -> PageGeometry:
    """ColSmol/ColIdefics3: tiles (each run of image tokens named by the ``<row_R_col_C>`` token before it)
    on one fine grid, then the global image as a coarse grid over the whole page."""
    _, ids, mask = _processed(processor, width, height)
    names = processor.tokenizer.convert_ids_to_tokens(ids.tolist())
    tiles: Dict[Tuple[int, int], TokenGrid] = {}
    global_grid: Optional[TokenGrid] = None
    for start, length in _image_runs(mask):
        side = math.isqrt(length)
        if side * side != length:
            raise UnsupportedModelError(f'{family}: a run of {length} image tokens is not a square tile')
        cells = TokenGrid(torch.arange(start, start + length).view(side, side))
        found = _TILE.fullmatch(names[start - 1]) if start else None
        if found:
            tiles[(int(found.group(1)) - 1, int(found.group(2)) - 1)] = cells
        else:   # <global-img>, or the only image when the processor does not split
            global_grid = cells
    grids = []
    if tiles:
        rows, cols = max(r for r, _ in tiles) + 1, max(c for _, c in tiles) + 1
        if len(tiles) != rows * cols:
            raise UnsupportedModelError(f'{family}: tiles {sorted(tiles)} do not fill a {rows} x {cols} grid')
        side = next(iter(tiles.values())).n_x
        fine = torch.empty(rows * side, cols * side, dtype=torch.int64)
        for (r, c), tile in tiles.items():
            fine[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile.positions
        grids.append(TokenGrid(fine))
    if global_grid is not None:
        grids.append(global_grid)
    if not grids:
        raise UnsupportedModelError(f'{family}: the processor put no image tokens in the page sequence')
    return PageGeometry(family, width, height, len(ids), tuple(grids))


GEOMETRY: Dict[str, Callable[..., PageGeometry]] = {
    'colpali': colpali_geometry,
    'colqwen2': lambda p, w, h: colqwen_geometry(p, w, h, 'colqwen2'),
    'colqwen2_5': lambda p, w, h: colqwen_geometry(p, w, h, 'colqwen2_5'),
    'colidefics3': lambda p, w, h: idefics3_geometry(p, w, h, 'colidefics3'),
}


def page_geometry(processor: Any, family: str, width: int, height: int) -> PageGeometry:
    """The patch geometry of a ``width x height`` page for ``family`` (see the module docstring)."""
    if family not in GEOMETRY:
        raise UnsupportedModelError(f'similarity maps are not available for the {family!r} family yet (known: '
                                    f'{", ".join(GEOMETRY)})')
    return GEOMETRY[family](processor, int(width), int(height))


def query_tokens(processor: Any, query: str) -> Tuple[List[str], List[bool]]:
    """The query's tokens as the encoder sees them (prefix, text, augmentation tokens) and which of them are
    the query's own text: the tokens a query of the empty string also has at its start and end are the
    family's prompt (``<bos>``, ``Query:``, the padding tokens colpali-engine appends), the rest is text."""
    def ids_of(text: str) -> List[int]:
        batch = processor.process_queries([text])
        return batch['input_ids'][0][batch['attention_mask'][0].bool()].tolist()

    ids, template = ids_of(query), ids_of('')
    head = 0
    while head < min(len(ids), len(template)) and ids[head] == template[head]:
        head += 1
    tail = 0
    while tail < len(template) - head and tail < len(ids) - head and ids[-1 - tail] == template[-1 - tail]:
        tail += 1
    tokenizer = processor.tokenizer
    labels = [tokenizer.decode([i]) for i in ids]
    return labels, [head <= i < len(ids) - tail for i in range(len(ids))]
