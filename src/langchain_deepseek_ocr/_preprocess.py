"""Page preprocessing for both model families, mirroring DeepSeek's own algorithm.

One page becomes a *global view* (the page fitted into a square and centre-padded with
grey 127) and, in gundam mode, *tiles*: the page stretched onto a grid of
``image_size``-pixel squares whose aspect ratio is closest to the page's, then cut
row-major. Pixels are normalised with mean = std = 0.5 (range -1..1).

DeepSeek's rules, kept exactly:

* the grid is chosen among ``(cols, rows)`` with ``min_tiles <= cols*rows <= max_tiles``,
  sorted by tile count, minimising ``|w/h - cols/rows|``; on an exact tie the later grid
  wins when ``w*h > 0.5 * image_size**2 * cols * rows``;
* a page with both sides <= the tile size is not tiled (v1: 640, v2: 768);
* v1 tiny/small (untiled, <= 640) stretch the page to the square; larger views pad;
* resampling is PIL's bicubic.

Token layout -- how many ``<image>`` placeholders a page needs:

* v1: ``q*(q+1) + 1`` for the global view (a newline per row, then the view separator)
  plus ``(rows*t)*(cols*t + 1)`` for the stitched tile grid, with ``q``/``t`` the queries
  per side (``ceil(side/16/4)``);
* v2: ``q*q + 1`` plus ``t*t`` per tile (no newlines).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps

from langchain_deepseek_ocr._tasks import ModelFamily, ResolutionSpec

__all__ = [
    "PAD_COLOR",
    "PreparedImage",
    "count_image_tokens",
    "prepare_image",
    "select_grid",
]

PAD_COLOR = (127, 127, 127)
"""Padding colour of the global view: ``int(0.5 * 255)`` per channel, as upstream."""

_RESAMPLE = Image.Resampling.BICUBIC


@lru_cache(maxsize=16)
def _candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    grids = {
        (i, j)
        for n in range(min_tiles, max_tiles + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_tiles <= i * j <= max_tiles
    }
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def select_grid(width: int, height: int, spec: ResolutionSpec) -> tuple[int, int] | None:
    """The ``(columns, rows)`` tile grid for a page, or ``None`` when it is not tiled."""
    if not spec.crop or (width <= spec.image_size and height <= spec.image_size):
        return None
    aspect = width / height
    area = width * height
    best_diff = float("inf")
    best = (1, 1)
    for cols, rows in _candidate_grids(spec.min_tiles, spec.max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best_diff = diff
            best = (cols, rows)
        elif diff == best_diff and area > 0.5 * spec.image_size * spec.image_size * cols * rows:
            best = (cols, rows)
    return best


def count_image_tokens(width: int, height: int, spec: ResolutionSpec) -> int:
    """How many ``<image>`` placeholders a ``width`` x ``height`` page needs in this mode."""
    grid = select_grid(width, height, spec)
    global_side = spec.base_size if spec.crop else spec.image_size
    q = spec.queries(global_side)
    t = spec.queries(spec.image_size)
    if spec.family is ModelFamily.V1:
        total = q * (q + 1) + 1
        if grid is not None:
            cols, rows = grid
            total += (rows * t) * (cols * t + 1)
        return total
    total = q * q + 1
    if grid is not None:
        total += t * t * grid[0] * grid[1]
    return total


@dataclass(frozen=True)
class PreparedImage:
    """One page, ready for the vision tower.

    Attributes:
        global_view: ``(3, S, S)`` float32, normalised to -1..1.
        tiles: ``(k, 3, T, T)`` float32, or ``None`` when the page is not tiled.
        grid: ``(columns, rows)`` of the tiles, or ``None``.
        num_image_tokens: The ``<image>`` placeholders the page needs.
        image_size: ``(width, height)`` of the original page.
        spec: The resolution mode used.
    """

    global_view: np.ndarray
    tiles: np.ndarray | None
    grid: tuple[int, int] | None
    num_image_tokens: int
    image_size: tuple[int, int]
    spec: ResolutionSpec

    @property
    def num_tiles(self) -> int:
        """How many tiles the page was cut into (0 when untiled)."""
        return 0 if self.grid is None else self.grid[0] * self.grid[1]


def _normalise(image: Image.Image) -> np.ndarray:
    """``ToTensor`` + ``Normalize(0.5, 0.5)`` as one step: ``(3, H, W)`` float32."""
    arr = np.asarray(image, dtype=np.uint8)
    out = arr.astype(np.float32)
    out *= 2.0 / 255.0
    out -= 1.0
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _global_view(image: Image.Image, spec: ResolutionSpec) -> Image.Image:
    if spec.crop:
        side = spec.base_size
    else:
        side = spec.image_size
        if spec.family is ModelFamily.V1 and spec.image_size <= 640:
            image = image.resize((side, side), _RESAMPLE)
    if image.size == (side, side):
        return image
    return ImageOps.pad(image, (side, side), method=_RESAMPLE, color=PAD_COLOR)


def prepare_image(image: Image.Image, spec: ResolutionSpec) -> PreparedImage:
    """Preprocess one RGB page image for a resolution mode.

    Args:
        image: The page, mode ``RGB`` (see :mod:`langchain_deepseek_ocr._inputs`).
        spec: The resolution mode, from :func:`~langchain_deepseek_ocr._tasks.resolution_spec`.

    Returns:
        The global view, the tiles and the placeholder count.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    grid = select_grid(width, height, spec)
    global_arr = _normalise(_global_view(image, spec))
    tiles = None
    if grid is not None:
        cols, rows = grid
        size = spec.image_size
        canvas = _normalise(image.resize((size * cols, size * rows), _RESAMPLE))
        # (3, rows*S, cols*S) -> (rows*cols, 3, S, S), row-major like upstream's crops
        tiles = (
            canvas.reshape(3, rows, size, cols, size)
            .transpose(1, 3, 0, 2, 4)
            .reshape(rows * cols, 3, size, size)
        )
        tiles = np.ascontiguousarray(tiles)
    return PreparedImage(
        global_view=global_arr,
        tiles=tiles,
        grid=grid,
        num_image_tokens=count_image_tokens(width, height, spec),
        image_size=(width, height),
        spec=spec,
    )
