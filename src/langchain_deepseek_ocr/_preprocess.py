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

How the work is split, for speed (the pixels are bit-identical to DeepSeek's steps):

* :func:`prepare_image` (CPU, per page) does only what needs PIL: one bicubic resize for
  the global view and one for the whole tile canvas (the tiles are slices of it, never
  cropped or copied one by one). It returns **uint8** pixels, height x width x RGB, as PIL
  holds them: no float conversion, no transposition, a quarter of the bytes.
* :func:`pixel_batch` turns the pages of a batch into the model's input tensors *on the
  model's device*: one host-to-device copy of the uint8 pixels (pinned memory on CUDA),
  then the cut into tiles, the channel-first layout and the normalisation in torch
  (float32 arithmetic, then the model's dtype, exactly as the float path did).
* :func:`read_ahead` runs an iterator (page rendering, request building) in a background
  thread a bounded number of items ahead, so the CPU work of the next chunk of a document
  overlaps the model's work on the current one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from langchain_deepseek_ocr._tasks import ModelFamily, ResolutionSpec

__all__ = [
    "PAD_COLOR",
    "PixelBatch",
    "PreparedImage",
    "count_image_tokens",
    "global_side",
    "normalise_pixels",
    "pixel_batch",
    "prefetch_ahead",
    "prepare_image",
    "read_ahead",
    "select_grid",
]

PAD_COLOR = (127, 127, 127)
"""Padding colour of the global view: ``int(0.5 * 255)`` per channel, as upstream."""

_RESAMPLE = Image.Resampling.BICUBIC
_SCALE = 2.0 / 255.0
"""``ToTensor`` (/255) then ``Normalize(0.5, 0.5)`` is ``x * 2/255 - 1`` (in float32)."""

T = TypeVar("T")


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


def select_grid(
    width: int, height: int, spec: ResolutionSpec, *, always_tile: bool = False
) -> tuple[int, int] | None:
    """The ``(columns, rows)`` tile grid for a page, or ``None`` when it is not tiled.

    ``always_tile`` tiles small pages too (as Ollama's implementation does), with the same
    grid rule.
    """
    if not spec.crop:
        return None
    if not always_tile and width <= spec.image_size and height <= spec.image_size:
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


def global_side(spec: ResolutionSpec) -> int:
    """Side of the (square) global view of a resolution mode, in pixels."""
    return spec.base_size if spec.crop else spec.image_size


def count_image_tokens(
    width: int, height: int, spec: ResolutionSpec, *, always_tile: bool = False
) -> int:
    """How many ``<image>`` placeholders a ``width`` x ``height`` page needs in this mode.

    ``always_tile``: small pages are tiled too (see :func:`select_grid`).
    """
    grid = select_grid(width, height, spec, always_tile=always_tile)
    q = spec.queries(global_side(spec))
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


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """One page, resized and padded, as uint8 pixels ready to be sent to the model's device.

    Attributes:
        global_pixels: ``(S, S, 3)`` uint8: the global view, height x width x RGB (``None``
            when the resizes are left to the device, see ``page_pixels``).
        tile_pixels: ``(rows*T, cols*T, 3)`` uint8: the page stretched onto the tile grid
            (tile ``i`` is the slice at row ``i // cols``, column ``i % cols``), or ``None``
            when the page is not tiled (or the resizes are left to the device).
        grid: ``(columns, rows)`` of the tiles, or ``None``.
        num_image_tokens: The ``<image>`` placeholders the page needs.
        image_size: ``(width, height)`` of the original page.
        spec: The resolution mode used.
        page_pixels: ``(H, W, 3)`` uint8: the page itself, unresized, when
            :func:`prepare_image` left the resizes to the device (``defer_resize=True``);
            :func:`pixel_batch` then resizes it there, byte-identical to PIL.
    """

    global_pixels: np.ndarray | None
    tile_pixels: np.ndarray | None
    grid: tuple[int, int] | None
    num_image_tokens: int
    image_size: tuple[int, int]
    spec: ResolutionSpec
    page_pixels: np.ndarray | None = None

    def resized(self) -> PreparedImage:
        """This page with its global view and tile canvas made (on the CPU, if deferred)."""
        if self.page_pixels is None:
            return self
        import torch

        page = torch.from_numpy(self.page_pixels.copy())  # PIL's arrays are read-only
        glob, canvas = _views_on_device(self, page)
        return PreparedImage(
            global_pixels=glob.numpy(),
            tile_pixels=None if canvas is None else canvas.numpy(),
            grid=self.grid,
            num_image_tokens=self.num_image_tokens,
            image_size=self.image_size,
            spec=self.spec,
        )

    @property
    def num_tiles(self) -> int:
        """How many tiles the page was cut into (0 when untiled)."""
        return 0 if self.grid is None else self.grid[0] * self.grid[1]

    @property
    def global_view(self) -> np.ndarray:
        """``(3, S, S)`` float32, normalised to -1..1 (computed on each access)."""
        pixels = self.resized().global_pixels
        assert pixels is not None
        out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        return normalise_pixels(pixels.transpose(2, 0, 1), out)

    @property
    def tiles(self) -> np.ndarray | None:
        """``(k, 3, T, T)`` float32 normalised tiles, row-major, or ``None`` (computed)."""
        canvas = self.resized().tile_pixels
        if canvas is None or self.grid is None:
            return None
        cols, rows = self.grid
        size = self.spec.image_size
        out = np.empty((rows * cols, 3, size, size), dtype=np.float32)
        normalise_pixels(_tile_view(canvas, cols, rows, size), _grid_view(out, cols, rows))
        return out


def _views_on_device(page: PreparedImage, pixels: Any) -> tuple[Any, Any | None]:
    """The global view and tile canvas (uint8 tensors) of a deferred page from its pixels."""
    from langchain_deepseek_ocr._resample import resize_bicubic

    width, height = page.image_size
    glob = _global_on_device(pixels, _global_plan(width, height, page.spec))
    canvas = None
    if page.grid is not None:
        cols, rows = page.grid
        size = page.spec.image_size
        canvas = resize_bicubic(pixels, (size * cols, size * rows))
    return glob, canvas


def _tile_view(canvas: np.ndarray, cols: int, rows: int, size: int) -> np.ndarray:
    """``(rows*T, cols*T, 3)`` -> a ``(rows, cols, 3, T, T)`` view (no copy)."""
    return canvas.reshape(rows, size, cols, size, 3).transpose(0, 2, 4, 1, 3)


def _grid_view(out: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """``(rows*cols, 3, T, T)`` -> a ``(rows, cols, 3, T, T)`` view (no copy)."""
    return out.reshape(rows, cols, *out.shape[1:])


def normalise_pixels(pixels: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write ``pixels * 2/255 - 1`` (uint8 in, float32 arithmetic) into ``out`` and return it.

    ``pixels`` may be any strided view (a transposition is folded into the one copy). The
    arithmetic is ``ToTensor`` + ``Normalize(0.5, 0.5)`` in float32, as DeepSeek's code does.
    """
    out[...] = pixels
    out *= _SCALE
    out -= 1.0
    return out


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    """The size ``ImageOps.contain`` gives a ``width`` x ``height`` image in a square."""
    ratio = width / height
    if ratio > 1:
        new_height = round(height / width * side)
        return (side, new_height) if new_height != side else (side, side)
    if ratio < 1:
        new_width = round(width / height * side)
        return (new_width, side) if new_width != side else (side, side)
    return side, side


def _resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(image.resize(size, _RESAMPLE))


@dataclass(frozen=True)
class _GlobalPlan:
    """How the global view is made from a page.

    Resize the page to ``size`` (``None``: keep it as it is; ``(0, 0)``: nothing of it
    shows), then paste it at ``offset`` on a grey square of ``side``.
    """

    side: int
    size: tuple[int, int] | None
    offset: tuple[int, int]


def _global_plan(width: int, height: int, spec: ResolutionSpec) -> _GlobalPlan:
    """DeepSeek's global view for a ``width`` x ``height`` page: ``ImageOps.pad``, exactly."""
    side = global_side(spec)
    if not spec.crop and spec.family is ModelFamily.V1 and spec.image_size <= 640:
        # v1 tiny/small stretch the page onto the square (upstream's resize before pad)
        return _GlobalPlan(side, (side, side), (0, 0))
    if (width, height) == (side, side):
        return _GlobalPlan(side, None, (0, 0))
    fit_w, fit_h = _fit(width, height, side)
    if min(fit_w, fit_h) == 0:  # a sliver of a page: ImageOps.contain gives an empty image
        return _GlobalPlan(side, (0, 0), (0, 0))
    # ImageOps.pad centres with Python's round() (half to even), which we keep
    x = round((side - fit_w) * 0.5) if fit_w != side else 0
    y = round((side - fit_h) * 0.5) if fit_w == side and fit_h != side else 0
    return _GlobalPlan(side, (fit_w, fit_h), (x, y))


def _global_pixels(image: Image.Image, spec: ResolutionSpec) -> np.ndarray:
    """The global view as ``(S, S, 3)`` uint8 (PIL's resize, on the CPU)."""
    plan = _global_plan(image.width, image.height, spec)
    if plan.size is None:
        return np.asarray(image)
    if plan.size == (plan.side, plan.side):
        return _resize(image, plan.size)
    out = np.empty((plan.side, plan.side, 3), dtype=np.uint8)
    out[...] = PAD_COLOR
    if plan.size != (0, 0):
        (w, h), (x, y) = plan.size, plan.offset
        out[y : y + h, x : x + w] = _resize(image, plan.size)
    return out


def _global_on_device(page: Any, plan: _GlobalPlan) -> Any:
    """:func:`_global_pixels` for a uint8 ``(H, W, 3)`` tensor, resized where it lives."""
    import torch

    from langchain_deepseek_ocr._resample import resize_bicubic

    if plan.size is None:
        return page
    if plan.size == (plan.side, plan.side):
        return resize_bicubic(page, plan.size)
    out = torch.full((plan.side, plan.side, 3), PAD_COLOR[0], dtype=torch.uint8, device=page.device)
    if plan.size != (0, 0):
        (w, h), (x, y) = plan.size, plan.offset
        out[y : y + h, x : x + w] = resize_bicubic(page, plan.size)
    return out


def prepare_image(
    image: Image.Image, spec: ResolutionSpec, *, defer_resize: bool = False
) -> PreparedImage:
    """Preprocess one RGB page image for a resolution mode (the CPU part, uint8 out).

    Two PIL resizes at most (global view, tile canvas); everything else is done on the
    model's device by :func:`pixel_batch`. PIL releases the GIL while it resizes, so pages
    can be prepared on several threads at once (the engine does). With ``defer_resize`` the
    CPU does not even resize: the page's pixels are kept as they are and :func:`pixel_batch`
    resizes them on the device (:mod:`~langchain_deepseek_ocr._resample`, byte-identical to
    PIL) -- what the engine does on a GPU, where the CPU would otherwise be the bottleneck.

    Args:
        image: The page, mode ``RGB`` (see :mod:`langchain_deepseek_ocr._inputs`).
        spec: The resolution mode, from :func:`~langchain_deepseek_ocr._tasks.resolution_spec`.
        defer_resize: Leave the two resizes to :func:`pixel_batch` on the model's device.

    Returns:
        The global view, the tile canvas and the placeholder count.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    grid = select_grid(width, height, spec)
    if defer_resize:
        return PreparedImage(
            global_pixels=None,
            tile_pixels=None,
            grid=grid,
            num_image_tokens=count_image_tokens(width, height, spec),
            image_size=(width, height),
            spec=spec,
            page_pixels=np.asarray(image),
        )
    canvas = None
    if grid is not None:
        cols, rows = grid
        size = spec.image_size
        # resize once; the tiles are slices of this canvas (upstream crops them one by one)
        canvas = _resize(image, (size * cols, size * rows))
    return PreparedImage(
        global_pixels=_global_pixels(image, spec),
        tile_pixels=canvas,
        grid=grid,
        num_image_tokens=count_image_tokens(width, height, spec),
        image_size=(width, height),
        spec=spec,
    )


@dataclass
class PixelBatch:
    """The vision inputs of one batch, on the model's device.

    Attributes:
        pixel_values: ``(N, 3, S, S)`` global views, normalised, in the model's dtype.
        pixel_values_local: ``(K, 3, T, T)`` all tiles of the batch, page after page, or
            ``None`` when no page is tiled.
        num_local_patches: Tiles per page.
        patches_grid: ``[columns, rows]`` per page (``[1, 1]`` when untiled).
    """

    pixel_values: Any
    pixel_values_local: Any | None
    num_local_patches: list[int]
    patches_grid: list[list[int]]

    def tensors(self) -> list[Any]:
        """The tensors it holds."""
        out = [self.pixel_values]
        if self.pixel_values_local is not None:
            out.append(self.pixel_values_local)
        return out


def pixel_batch(
    images: Sequence[PreparedImage], *, device: Any = "cpu", dtype: Any = None
) -> PixelBatch:
    """Build the model's vision inputs for a batch of prepared pages, on ``device``.

    All pages must share the global-view size (and, when tiled, the tile size). On CUDA the
    uint8 pixels are staged in pinned memory and copied once (a quarter of the bytes of
    float32); the tiling, the channel-first layout and ``x * 2/255 - 1`` then run on the
    GPU. Elsewhere the same arithmetic runs on the CPU in one strided pass per view. The
    result equals the float32 reference (:attr:`PreparedImage.global_view` /
    :attr:`PreparedImage.tiles`) cast to ``dtype``.

    Args:
        images: The pages of the batch (at least one).
        device: The torch device of the model.
        dtype: The model's floating dtype (float32 when ``None``).

    Returns:
        The batch's :class:`PixelBatch`.
    """
    import torch

    if not images:
        raise ValueError("pixel_batch needs at least one page")
    device = torch.device(device)
    dtype = dtype or torch.float32
    side = global_side(images[0].spec)
    if any(global_side(p.spec) != side for p in images):
        raise ValueError("the pages of a batch must share the global-view size")
    tiled = [p for p in images if p.grid is not None]
    tile = tiled[0].spec.image_size if tiled else 0
    if any(p.spec.image_size != tile for p in tiled):
        raise ValueError("the tiled pages of a batch must share the tile size")
    total_tiles = sum(p.num_tiles for p in tiled)
    deferred = any(p.page_pixels is not None for p in images)
    if device.type == "cpu" and not deferred:
        glob = torch.empty((len(images), 3, side, side), dtype=torch.float32)
        glob_np = glob.numpy()
        for row, page in enumerate(images):
            glob_np[row] = page.global_pixels.transpose(2, 0, 1)
        local = None
        if tiled:
            local = torch.empty((total_tiles, 3, tile, tile), dtype=torch.float32)
            local_np = local.numpy()
            start = 0
            for page in tiled:
                cols, rows = page.grid  # type: ignore[misc]
                part = local_np[start : start + cols * rows]
                _grid_view(part, cols, rows)[...] = _tile_view(page.tile_pixels, cols, rows, tile)  # type: ignore[arg-type]
                start += cols * rows
        out = [glob] if local is None else [glob, local]
        for tensor in out:
            tensor.mul_(_SCALE).sub_(1.0)
        if dtype != torch.float32:
            out = [t.to(dtype) for t in out]
    else:
        out = _device_views(
            torch,
            images,
            tiled,
            side=side,
            tile=tile,
            total_tiles=total_tiles,
            device=device,
            dtype=dtype,
        )
    return PixelBatch(
        pixel_values=out[0],
        pixel_values_local=out[1] if tiled else None,
        num_local_patches=[p.num_tiles for p in images],
        patches_grid=[list(p.grid or (1, 1)) for p in images],
    )


def _device_views(
    torch: Any,
    images: Sequence[PreparedImage],
    tiled: Sequence[PreparedImage],
    *,
    side: int,
    tile: int,
    total_tiles: int,
    device: Any,
    dtype: Any,
) -> list[Any]:
    """uint8 to the device in one staged copy, then layout and normalisation there.

    A page prepared with ``defer_resize`` travels as its unresized pixels and is resized on
    the device; the others travel as their global view and tile canvas.
    """
    pin = device.type == "cuda"
    arrays: list[list[np.ndarray]] = []
    for page in images:
        if page.page_pixels is not None:
            arrays.append([page.page_pixels])
        else:
            assert page.global_pixels is not None
            parts = [page.global_pixels]
            if page.tile_pixels is not None:
                parts.append(page.tile_pixels)
            arrays.append(parts)
    total = sum(a.size for parts in arrays for a in parts)
    staging = torch.empty(total, dtype=torch.uint8, pin_memory=pin)
    flat = staging.numpy()
    offset = 0
    for parts in arrays:
        for array in parts:
            flat[offset : offset + array.size] = array.reshape(-1)
            offset += array.size
    on_device = staging.to(device, non_blocking=pin)
    views: list[tuple[Any, Any | None]] = []  # per page: global (S, S, 3), canvas or None
    offset = 0
    for page, parts in zip(images, arrays, strict=True):
        shaped = []
        for array in parts:
            shaped.append(on_device[offset : offset + array.size].view(array.shape))
            offset += array.size
        if page.page_pixels is not None:
            views.append(_views_on_device(page, shaped[0]))
        else:
            views.append((shaped[0], shaped[1] if len(shaped) > 1 else None))
    glob = torch.empty((len(images), 3, side, side), dtype=torch.float32, device=device)
    for row, (page_glob, _canvas) in enumerate(views):
        glob[row].copy_(page_glob.permute(2, 0, 1))
    out = [glob]
    if tiled:
        local = torch.empty((total_tiles, 3, tile, tile), dtype=torch.float32, device=device)
        start = 0
        for page, (_glob, canvas) in zip(images, views, strict=True):
            if page.grid is None or canvas is None:
                continue
            cols, rows = page.grid
            src = canvas.view(rows, tile, cols, tile, 3)
            dst = local[start : start + cols * rows].view(rows, cols, 3, tile, tile)
            dst.copy_(src.permute(0, 2, 4, 1, 3))
            start += cols * rows
        out.append(local)
    for tensor in out:
        tensor.mul_(_SCALE).sub_(1.0)
    if dtype != torch.float32:
        out = [t.to(dtype) for t in out]
    return out


_DONE = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch_ahead(
    items: Iterable[T], engine: Any, request_of: Callable[[T], Any], ahead: int
) -> Iterator[T]:
    """:func:`read_ahead`, handing each page's request to ``engine.prefetch`` as it is read.

    The document paths (``DeepSeekOCR.iter_document``, the loader) use it so the next chunk
    is rendered -- and, on an engine with a ``prefetch`` method, preprocessed -- while the
    engine works on the current one.

    Args:
        items: The page stream (pages and errors, in order).
        engine: The engine (``prefetch`` is optional).
        request_of: The item's :class:`~langchain_deepseek_ocr.OCRRequest`, or ``None`` for
            an item that is not a page (an error, an end of file).
        ahead: How many items may be read before they are consumed.
    """
    prefetch = getattr(engine, "prefetch", None)

    def prefetched() -> Iterator[T]:
        for item in items:
            request = request_of(item) if callable(prefetch) else None
            if request is not None:
                prefetch([request])  # type: ignore[misc]
            yield item

    return read_ahead(prefetched(), ahead)


def read_ahead(items: Iterable[T], ahead: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``ahead`` items in advance.

    The producer (e.g. PDF page rendering, request building, an engine's ``prefetch``) runs
    while the consumer works on earlier items; at most ``ahead`` produced items wait in
    between, so memory stays bounded however long the input is. Items come out in order;
    an exception raised by the producer is raised by the consumer at its place. Closing the
    returned generator (or dropping it) stops the producer and closes ``items`` in the
    producer's thread.

    Args:
        items: Any iterable; it is iterated (and closed) in the background thread only.
        ahead: How many items may be produced before they are consumed (>= 1).

    Returns:
        An iterator over the same items.
    """
    if ahead < 1:
        raise ValueError("ahead must be at least 1")
    slots: queue.Queue[Any] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put(item):
                    break
        except BaseException as exc:
            put(_Raised(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                # closing is best effort; the consumer has had everything it needs
                with contextlib.suppress(Exception):
                    close()
            put(_DONE)

    def consume() -> Iterator[T]:
        # the thread starts with the first next(): an iterator never used costs nothing
        thread = threading.Thread(target=produce, name="deepseek-ocr-read-ahead", daemon=True)
        thread.start()
        try:
            while True:
                value = slots.get()
                if value is _DONE:
                    return
                if isinstance(value, _Raised):
                    raise value.exc
                yield value
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    slots.get_nowait()
                except queue.Empty:
                    thread.join(0.05)

    return consume()
