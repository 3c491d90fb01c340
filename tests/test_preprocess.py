"""Preprocessing: token counts per mode and shape, and tensors against DeepSeek's algorithm."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from conftest import noise_image
from langchain_deepseek_ocr._errors import ConfigurationError
from langchain_deepseek_ocr._preprocess import (
    count_image_tokens,
    pixel_batch,
    prepare_image,
    select_grid,
)
from langchain_deepseek_ocr._tasks import ModelFamily, Resolution, resolution_spec

A4_144DPI = (1191, 1684)


@pytest.mark.parametrize(
    ("size", "mode", "tokens"),
    [
        # v1 native modes (newline and separator tokens included)
        (A4_144DPI, "tiny", 73),
        (A4_144DPI, "small", 111),
        (A4_144DPI, "base", 273),
        (A4_144DPI, "large", 421),
        ((300, 200), "tiny", 73),
        ((3000, 500), "large", 421),
        # v1 gundam, upstream's worked counts
        (A4_144DPI, "gundam", 903),
        ((1684, 1191), "gundam", 893),
        ((2000, 2000), "gundam", 693),
        ((1000, 3000), "gundam", 603),
        ((600, 500), "gundam", 273),
        ((640, 640), "gundam", 273),
        ((600, 800), "gundam", 903),  # upscaled onto a 2x3 grid
    ],
)
def test_v1_token_counts(size, mode, tokens):
    assert count_image_tokens(*size, resolution_spec("v1", mode)) == tokens


def test_v1_gundam_nine_tiles():
    assert count_image_tokens(2000, 2000, resolution_spec("v1", "gundam", max_tiles=9)) == 1203


@pytest.mark.parametrize(
    ("size", "mode", "tokens"),
    [
        ((700, 700), "gundam", 257),
        (A4_144DPI, "gundam", 1121),
        ((2000, 2000), "gundam", 833),
        ((1000, 3000), "gundam", 689),
        ((800, 600), "gundam", 1121),
        ((2000, 1000), "gundam", 545),
        ((3000, 800), "gundam", 833),
        ((1000, 4000), "gundam", 833),
        (A4_144DPI, "base", 257),
        (A4_144DPI, "small", 145),
    ],
)
def test_v2_token_counts(size, mode, tokens):
    assert count_image_tokens(*size, resolution_spec("v2", mode)) == tokens


def test_grid_tie_break_prefers_more_tiles_for_large_pages():
    spec = resolution_spec("v1", "gundam")
    # a square page ties between 1x1-free grids (2,2) only; aspect 2:1 ties (2,1) and (4,2)
    assert select_grid(2000, 2000, spec) == (2, 2)
    assert select_grid(1300, 650, spec) == (2, 1)
    assert select_grid(640, 640, spec) is None
    assert select_grid(641, 300, spec) is not None


# -- an independent statement of DeepSeek's algorithm (image_process.py), PIL step by step --


def _upstream_views(image, *, base_size, image_size, crop, max_num, threshold):
    def to_tensor(img):
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return ((arr - 0.5) / 0.5).transpose(2, 0, 1)

    w, h = image.size
    tiles = []
    grid = None
    if crop and not (w <= threshold and h <= threshold):
        ratios = sorted(
            {
                (i, j)
                for n in range(2, max_num + 1)
                for i in range(1, n + 1)
                for j in range(1, n + 1)
                if 2 <= i * j <= max_num
            },
            key=lambda x: x[0] * x[1],
        )
        best, best_diff = (1, 1), math.inf
        for r in ratios:
            diff = abs(w / h - r[0] / r[1])
            if diff < best_diff:
                best, best_diff = r, diff
            elif diff == best_diff and w * h > 0.5 * image_size * image_size * r[0] * r[1]:
                best = r
        grid = best
        resized = image.resize((image_size * best[0], image_size * best[1]))
        cols = best[0]
        for i in range(best[0] * best[1]):
            box = (
                (i % cols) * image_size,
                (i // cols) * image_size,
                (i % cols + 1) * image_size,
                (i // cols + 1) * image_size,
            )
            tiles.append(to_tensor(resized.crop(box)))
    if not crop and image_size <= 640:
        image = image.resize((image_size, image_size))
    side = base_size if crop else image_size
    glob = ImageOps.pad(image, (side, side), color=(127, 127, 127))
    return to_tensor(glob), (np.stack(tiles) if tiles else None), grid


@pytest.mark.parametrize(
    ("family", "mode", "size"),
    [
        ("v1", "gundam", (1191, 1684)),
        ("v1", "gundam", (1500, 700)),
        ("v1", "gundam", (500, 400)),
        ("v1", "tiny", (900, 500)),
        ("v1", "small", (300, 700)),
        ("v1", "base", (1000, 3000)),
        ("v1", "large", (1400, 900)),
        ("v2", "gundam", (1191, 1684)),
        ("v2", "gundam", (1000, 3000)),
        ("v2", "base", (1300, 800)),
        ("v2", "small", (900, 1200)),
    ],
)
def test_tensors_match_upstream_algorithm(family, mode, size):
    spec = resolution_spec(family, mode)
    image = noise_image(*size, seed=sum(size))
    ours = prepare_image(image, spec)
    threshold = 640 if family == "v1" else 768
    ref_global, ref_tiles, grid = _upstream_views(
        image,
        base_size=spec.base_size,
        image_size=spec.image_size,
        crop=spec.crop,
        max_num=spec.max_tiles,
        threshold=threshold,
    )
    assert ours.grid == grid
    np.testing.assert_allclose(ours.global_view, ref_global, atol=1e-6)
    if ref_tiles is None:
        assert ours.tiles is None
    else:
        assert ours.tiles.shape == ref_tiles.shape
        np.testing.assert_allclose(ours.tiles, ref_tiles, atol=1e-6)
    assert ours.num_image_tokens == count_image_tokens(*size, spec)


def test_v2_matches_transformers_native_processor():
    from transformers import DeepseekOcr2ImageProcessorPil

    processor = DeepseekOcr2ImageProcessorPil()
    spec = resolution_spec("v2", "gundam")
    for size in [(1191, 1684), (700, 700), (2000, 1000), (800, 600), (1240, 1754)]:
        image = noise_image(*size, seed=size[0])
        ref = processor(images=image, return_tensors="np")
        ours = prepare_image(image, spec)
        assert int(ref["num_local_patches"][0]) == ours.num_tiles
        np.testing.assert_allclose(ours.global_view, ref["pixel_values"][0], atol=1e-5)
        if ours.tiles is not None:
            np.testing.assert_allclose(ours.tiles, ref["pixel_values_local"], atol=1e-5)


def test_v2_native_processor_pads_one_pixel_off_where_upstream_rounds_half_to_even():
    """Recorded difference: for odd padding transformers floors the offset, PIL's
    ImageOps.pad (DeepSeek's code) rounds; we follow DeepSeek."""
    from transformers import DeepseekOcr2ImageProcessorPil

    image = noise_image(1000, 3000, seed=3)
    ref = DeepseekOcr2ImageProcessorPil()(images=image, return_tensors="np")["pixel_values"][0]
    ours = prepare_image(image, resolution_spec("v2", "gundam")).global_view
    shifted = np.roll(ref, 1, axis=2)
    assert np.abs(ours - ref).max() > 0.5
    np.testing.assert_allclose(ours[:, :, 343:682], shifted[:, :, 343:682], atol=1e-5)


def test_rgb_conversion_and_shapes():
    image = Image.new("L", (800, 1000), 255)
    prepared = prepare_image(image, resolution_spec("v1", "gundam"))
    assert prepared.global_view.shape == (3, 1024, 1024)
    assert prepared.tiles.shape == (prepared.num_tiles, 3, 640, 640)
    assert prepared.global_view.dtype == np.float32
    assert prepared.global_view.max() <= 1.0
    assert prepared.global_view.min() >= -1.0


# -- the fast path: uint8 pixels from PIL, tensors built in torch --------------------------


@pytest.mark.parametrize(
    ("family", "mode", "size"),
    [
        ("v1", "gundam", (1191, 1684)),
        ("v1", "gundam", (1684, 1191)),
        ("v1", "tiny", (900, 500)),
        ("v1", "base", (1024, 1024)),
        ("v1", "large", (1400, 900)),
        ("v2", "gundam", (1000, 3000)),
        ("v2", "small", (768, 300)),
        ("v2", "base", (3, 2000)),
    ],
)
def test_uint8_pixels_are_exactly_pils(family, mode, size):
    spec = resolution_spec(family, mode)
    image = noise_image(*size, seed=size[0] * 7 + size[1])
    ours = prepare_image(image, spec)
    assert ours.global_pixels.dtype == np.uint8
    side = spec.base_size if spec.crop else spec.image_size
    if not spec.crop and family == "v1" and spec.image_size <= 640:
        ref = image.resize((side, side), Image.Resampling.BICUBIC)
    else:
        ref = ImageOps.pad(image, (side, side), color=(127, 127, 127))
    np.testing.assert_array_equal(ours.global_pixels, np.asarray(ref))
    if ours.grid is None:
        assert ours.tile_pixels is None
    else:
        cols, rows = ours.grid
        canvas = image.resize((spec.image_size * cols, spec.image_size * rows))
        np.testing.assert_array_equal(ours.tile_pixels, np.asarray(canvas))


def _reference_batch(pages):
    glob = np.stack([p.global_view for p in pages])
    tiles = [p.tiles for p in pages if p.tiles is not None]
    return glob, (np.concatenate(tiles) if tiles else None)


def test_pixel_batch_equals_the_float_reference_exactly():
    import torch

    from langchain_deepseek_ocr._preprocess import pixel_batch

    spec = resolution_spec("v1", "gundam")
    sizes = [(1191, 1684), (600, 500), (2000, 1000), (500, 1500)]
    pages = [prepare_image(noise_image(*s, seed=i), spec) for i, s in enumerate(sizes)]
    batch = pixel_batch(pages, device="cpu", dtype=torch.float32)
    ref_glob, ref_tiles = _reference_batch(pages)
    np.testing.assert_array_equal(batch.pixel_values.numpy(), ref_glob)
    np.testing.assert_array_equal(batch.pixel_values_local.numpy(), ref_tiles)
    assert batch.num_local_patches == [6, 0, 2, 3]
    assert batch.patches_grid == [[2, 3], [1, 1], [2, 1], [1, 3]]
    # in the model's dtype: the float32 result cast, as the float pipeline did
    bf16 = pixel_batch(pages, device="cpu", dtype=torch.bfloat16)
    assert bf16.pixel_values.dtype == torch.bfloat16
    assert torch.equal(bf16.pixel_values, torch.from_numpy(ref_glob).to(torch.bfloat16))
    assert torch.equal(bf16.pixel_values_local, torch.from_numpy(ref_tiles).to(torch.bfloat16))


def test_device_path_layout_matches_the_reference():
    """The GPU path (uint8 staged, tiled and normalised in torch) run on the CPU."""
    import torch

    from langchain_deepseek_ocr._preprocess import _device_views

    spec = resolution_spec("v2", "gundam")
    pages = [prepare_image(noise_image(*s, seed=3), spec) for s in [(1191, 1684), (700, 700)]]
    tiled = [p for p in pages if p.tile_pixels is not None]
    glob, local = _device_views(
        torch,
        pages,
        tiled,
        side=1024,
        tile=768,
        total_tiles=6,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    ref_glob, ref_tiles = _reference_batch(pages)
    np.testing.assert_array_equal(glob.numpy(), ref_glob)
    np.testing.assert_array_equal(local.numpy(), ref_tiles)


def test_pixel_batch_without_tiles_and_bad_mixes():
    from langchain_deepseek_ocr._preprocess import pixel_batch

    base = resolution_spec("v1", "base")
    page = prepare_image(noise_image(300, 400), base)
    batch = pixel_batch([page, page])
    assert batch.pixel_values_local is None
    assert batch.num_local_patches == [0, 0]
    assert tuple(batch.pixel_values.shape) == (2, 3, 1024, 1024)
    tiny = prepare_image(noise_image(300, 400), resolution_spec("v1", "tiny"))
    with pytest.raises(ValueError, match="global-view size"):
        pixel_batch([page, tiny])
    with pytest.raises(ValueError, match="at least one"):
        pixel_batch([])


def test_prepared_pages_hold_uint8_not_float():
    spec = resolution_spec("v2", "gundam")
    prepared = prepare_image(noise_image(*A4_144DPI), spec)
    held = prepared.global_pixels.nbytes + prepared.tile_pixels.nbytes
    as_float = prepared.global_view.nbytes + prepared.tiles.nbytes
    assert held * 4 == as_float


# -- read_ahead ----------------------------------------------------------------------------


def test_read_ahead_keeps_order_and_bounds_the_lead():
    from langchain_deepseek_ocr._preprocess import read_ahead

    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    seen = []
    for item in read_ahead(source(), 3):
        # the producer holds at most one item beyond the 3 waiting ones
        assert len(produced) - len(seen) <= 3 + 1 + 1
        seen.append(item)
    assert seen == list(range(50))


def test_read_ahead_raises_errors_in_place_and_closes_early():
    from langchain_deepseek_ocr._preprocess import read_ahead

    def failing():
        yield 1
        yield 2
        raise KeyError("boom")

    got = []

    def drain():
        for item in read_ahead(failing(), 2):
            got.append(item)

    with pytest.raises(KeyError, match="boom"):
        drain()
    assert got == [1, 2]

    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    it = read_ahead(endless(), 2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # waits for the producer, which closes the source in its own thread
    assert closed == [True]
    with pytest.raises(ValueError, match="ahead"):
        read_ahead([], 0)


# -- resizing on the device ----------------------------------------------------------------


def _all_specs():
    for family in ModelFamily:
        for name in Resolution:
            try:
                yield resolution_spec(family, name)
            except ConfigurationError:
                continue


@pytest.mark.parametrize("spec", list(_all_specs()), ids=lambda s: f"{s.family}-{s.name}")
def test_deferred_resize_on_the_device_equals_pil(spec):
    """``defer_resize`` pages resized by torch give the very tensors PIL's resizes give."""
    rng = np.random.default_rng(7)
    shapes = [(596, 842), (300, 2000), (5, 900), (1024, 1024)]
    pages = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in shapes]
    on_cpu = [prepare_image(page, spec) for page in pages]
    deferred = [prepare_image(page, spec, defer_resize=True) for page in pages]
    assert all(d.global_pixels is None and d.page_pixels is not None for d in deferred)
    mixed = [d if i % 2 else c for i, (c, d) in enumerate(zip(on_cpu, deferred, strict=True))]
    want = pixel_batch(on_cpu)
    for batch in (deferred, mixed):
        got = pixel_batch(batch)
        assert torch.equal(got.pixel_values, want.pixel_values)
        if want.pixel_values_local is None:
            assert got.pixel_values_local is None
        else:
            assert torch.equal(got.pixel_values_local, want.pixel_values_local)
        assert got.num_local_patches == want.num_local_patches
        assert got.patches_grid == want.patches_grid
    # and the float32 reference views
    np.testing.assert_array_equal(deferred[0].global_view, on_cpu[0].global_view)
