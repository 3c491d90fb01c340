"""resize_bicubic must equal Pillow's BICUBIC Image.resize byte for byte."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from langchain_deepseek_ocr import _resample
from langchain_deepseek_ocr._resample import resize_bicubic

A4 = (1191, 1684)  # (width, height) of an A4 page rendered at 144 dpi

# ((in_w, in_h), (out_w, out_h))
SHAPES = [
    (A4, (724, 1024)),
    (A4, (1280, 1920)),
    (A4, (1024, 1024)),
    ((8000, 6), (640, 1)),
    ((8000, 6), (1, 1)),
    ((6, 8000), (1, 640)),
    ((1, 1), (640, 640)),
    ((1, 1), (3, 1)),
    ((1, 7), (5, 2)),
    ((2, 2), (1, 1)),
    ((3, 3), (640, 2)),
    ((640, 480), (64, 48)),
    ((640, 480), (80, 479)),
    ((640, 480), (1024, 1024)),
    ((640, 480), (640, 100)),  # same width, height shrinks
    ((640, 480), (640, 900)),  # same width, height grows
    ((640, 480), (333, 480)),  # same height, width shrinks
    ((640, 480), (1001, 480)),  # same height, width grows
    ((640, 480), (640, 480)),  # identity
    ((300, 200), (400, 50)),  # width up, height down: vertical pass first
    ((200, 200), (102, 4)),  # Pillow 13 pass-order boundary: 196 == 2 * 98 -> H first
    ((200, 200), (103, 4)),  # 196 > 2 * 97 -> V first
    ((200, 200), (150, 100)),  # 100 == 2 * 50 -> H first
    ((200, 200), (151, 100)),  # -> V first
    ((300, 200), (300, 50)),
    ((120, 500), (121, 97)),  # width up by one, height down
    ((97, 131), (97, 130)),
    ((97, 131), (96, 131)),
    ((97, 131), (98, 130)),  # tiny up / tiny down
    ((97, 131), (45, 263)),  # width down, height up
    ((97, 131), (311, 17)),  # width up, height down
    ((513, 257), (1024, 512)),
    ((1023, 1025), (1024, 1024)),
    ((1025, 1023), (1024, 1024)),
    ((1000, 10), (3, 1000)),
    ((10, 1000), (1000, 3)),
    ((17, 19), (1, 1)),
    ((17, 19), (1, 19)),
    ((17, 19), (17, 1)),
    ((255, 3), (7, 300)),
    ((800, 600), (101, 599)),
    ((800, 600), (801, 64)),
    ((37, 41), (333, 29)),
    ((2000, 15), (250, 15)),  # factor 8 down, one axis
    ((15, 2000), (15, 250)),
    ((50, 60), (49, 61)),
    ((64, 64), (640, 640)),  # factor 10 up
]


def _noise(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _text(w: int, h: int, seed: int) -> np.ndarray:
    """White page with black strokes: high contrast drives the filter into clipping."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    n = max(1, (w * h) // 400)
    for _ in range(n):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:  # horizontal stroke
            img[y : y + int(rng.integers(1, 4)), x : x + int(rng.integers(1, 40))] = 0
        else:  # vertical stroke
            img[y : y + int(rng.integers(1, 40)), x : x + int(rng.integers(1, 4))] = 0
    img[::97, :, 1] = 0  # a coloured rule: channels differ
    return img


_IMAGES = {"noise": _noise, "text": _text}


def _pil(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC))


def _check(arr: np.ndarray, size: tuple[int, int]) -> None:
    expected = torch.from_numpy(_pil(arr, size).copy())
    got = resize_bicubic(torch.from_numpy(arr), size)
    assert got.dtype == torch.uint8
    assert got.shape == expected.shape == (size[1], size[0], 3)
    if not torch.equal(got, expected):
        diff = (got.int() - expected.int()).abs()
        raise AssertionError(
            f"{arr.shape[1]}x{arr.shape[0]} -> {size}: {int((diff > 0).sum())} bytes "
            f"differ, max |diff| {int(diff.max())}"
        )


@pytest.mark.parametrize("kind", sorted(_IMAGES))
@pytest.mark.parametrize(
    ("src", "size"), SHAPES, ids=[f"{a[0]}x{a[1]}-{b[0]}x{b[1]}" for a, b in SHAPES]
)
def test_matches_pillow(kind: str, src: tuple[int, int], size: tuple[int, int]) -> None:
    arr = _IMAGES[kind](*src, seed=src[0] * 7 + src[1])
    _check(arr, size)


def test_enough_shape_pairs() -> None:
    assert len(SHAPES) >= 40
    assert len(set(SHAPES)) == len(SHAPES)


def test_clipping_is_exercised() -> None:
    # The text image must actually hit clip8 (bicubic overshoot below 0 / above 255).
    arr = _text(300, 200, seed=1)
    idx, w = _resample._coeffs(300, 1000)
    acc = (arr[:, idx, :].astype(np.int64) * w[None, :, :, None]).sum(axis=2) + (1 << 21)
    raw = acc >> 22
    assert raw.min() < 0
    assert raw.max() > 255
    _check(arr, (1000, 200))


def test_chunked_gather_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force the multi-tap chunked path with many small chunks.
    monkeypatch.setattr(_resample, "_LOOP_TAPS", 0)
    monkeypatch.setattr(_resample, "_CHUNK_ELEMS", 5000)
    for src, size in [((300, 200), (400, 50)), ((97, 131), (45, 263)), ((2000, 6), (160, 1))]:
        _check(_noise(*src, seed=3), size)
        _check(_text(*src, seed=4), size)


def test_single_channel_matches_mode_l() -> None:
    arr = _noise(97, 131, seed=5)[:, :, :1]
    expected = np.asarray(Image.fromarray(arr[:, :, 0]).resize((45, 263), Image.Resampling.BICUBIC))
    got = resize_bicubic(torch.from_numpy(arr), (45, 263))
    assert torch.equal(got[:, :, 0], torch.from_numpy(expected.copy()))


def test_identity_returns_copy_on_same_device() -> None:
    t = torch.from_numpy(_noise(20, 10, seed=6))
    out = resize_bicubic(t, (20, 10))
    assert torch.equal(out, t)
    assert out.data_ptr() != t.data_ptr()
    assert out.device == t.device


def test_accepts_non_contiguous_input() -> None:
    arr = _noise(60, 80, seed=7)
    t = torch.from_numpy(arr).permute(1, 0, 2)  # (80, 60, 3) transposed view
    assert not t.is_contiguous()
    expected = _pil(np.ascontiguousarray(arr.transpose(1, 0, 2)), (33, 71))
    assert torch.equal(resize_bicubic(t, (33, 71)), torch.from_numpy(expected.copy()))


def _float_variant(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Plausible but wrong: same taps, float math, no uint8 rounding between passes."""
    out = arr.astype(np.float64)
    in_h, in_w = arr.shape[:2]
    if size[0] != in_w:
        idx, w = _resample._coeffs(in_w, size[0])
        wf = w.astype(np.float64) / (1 << 22)
        out = (out[:, idx, :] * wf[None, :, :, None]).sum(axis=2)
    if size[1] != in_h:
        idx, w = _resample._coeffs(in_h, size[1])
        wf = w.astype(np.float64) / (1 << 22)
        out = (out[idx] * wf[:, :, None, None]).sum(axis=1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_wrong_float_variant_differs() -> None:
    # Guards the test itself: a non-exact implementation must be caught.
    arr = _noise(300, 200, seed=8)
    size = (181, 150)
    assert not np.array_equal(_float_variant(arr, size), _pil(arr, size))


def test_torch_interpolate_is_not_byte_identical() -> None:
    # Why this module exists: torch's own antialiased bicubic is close, not equal.
    arr = _noise(300, 200, seed=10)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].double()
    y = torch.nn.functional.interpolate(
        x, size=(150, 181), mode="bicubic", antialias=True, align_corners=False
    )
    approx = y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
    expected = torch.from_numpy(_pil(arr, (181, 150)).copy())
    assert not torch.equal(approx, expected)
    # Same filter, but float math and no uint8 intermediate: close on average.
    assert (approx.int() - expected.int()).abs().double().mean() < 1.0


def test_wrong_pass_order_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    arr = _noise(300, 200, seed=9)
    monkeypatch.setattr(_resample, "_horizontal_first", lambda *a: True)
    always_h = resize_bicubic(torch.from_numpy(arr), (400, 50))
    assert not np.array_equal(always_h.numpy(), _pil(arr, (400, 50)))
    monkeypatch.setattr(_resample, "_horizontal_first", lambda *a: False)
    always_v = resize_bicubic(torch.from_numpy(arr), (150, 10))
    assert not np.array_equal(always_v.numpy(), _pil(arr, (150, 10)))


def test_pass_order_rule_by_pillow_version() -> None:
    hf = _resample._horizontal_first
    # Pillow 13: vertical first iff the height loses > 2x the pixels the width loses.
    assert hf(1191, 1684, 724, 1024, (13, 0))  # 660 <= 2 * 467
    assert not hf(1191, 1684, 1024, 1024, (13, 0))  # 660 > 2 * 167
    assert not hf(300, 200, 400, 50, (13, 0))
    assert hf(300, 200, 400, 250, (13, 0))  # height grows
    assert hf(200, 200, 150, 100, (13, 0))
    assert not hf(200, 200, 151, 100, (13, 0))
    # Pillow 12.2 / 12.3: only very tall images go vertical first (from Python).
    assert not hf(6, 8000, 1, 640, (12, 3))
    assert hf(1191, 1684, 1024, 1024, (12, 2))
    assert hf(6, 8000, 1, 9000, (12, 2))
    # Older Pillow: always horizontal first.
    assert hf(6, 8000, 1, 640, (12, 1))
    assert hf(300, 200, 400, 50, (10, 1))


def test_installed_pillow_version_is_detected() -> None:
    import PIL

    assert _resample._pillow_version() == tuple(int(p) for p in PIL.__version__.split(".")[:2])


@pytest.mark.parametrize(
    ("pixels", "size", "match"),
    [
        (torch.zeros((4, 4, 3), dtype=torch.float32), (2, 2), "uint8"),
        (torch.zeros((4, 4, 3), dtype=torch.int16), (2, 2), "uint8"),
        (torch.zeros((4, 4), dtype=torch.uint8), (2, 2), "3-D"),
        (torch.zeros((1, 4, 4, 3), dtype=torch.uint8), (2, 2), "3-D"),
        (torch.zeros((4, 4, 3), dtype=torch.uint8), (0, 2), "positive"),
        (torch.zeros((4, 4, 3), dtype=torch.uint8), (2, 0), "positive"),
        (torch.zeros((4, 4, 3), dtype=torch.uint8), (2, -1), "positive"),
        (torch.zeros((0, 4, 3), dtype=torch.uint8), (2, 2), "non-empty"),
        (torch.zeros((4, 4, 3), dtype=torch.uint8), (2,), "width, height"),
        (np.zeros((4, 4, 3), dtype=np.uint8), (2, 2), "torch.Tensor"),
    ],
)
def test_bad_input_raises_value_error(pixels: object, size: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resize_bicubic(pixels, size)  # type: ignore[arg-type]


def test_module_does_not_import_torch_at_import_time() -> None:
    path = Path(_resample.__file__)
    tree = ast.parse(path.read_text())
    for node in tree.body:  # top level only; TYPE_CHECKING block is an `if`
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] != "torch" for a in node.names)
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "torch"
    code = (
        "import sys, importlib.util; sys.modules['torch'] = None; "
        f"spec = importlib.util.spec_from_file_location('_r', {str(path)!r}); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "print(m.resize_bicubic.__name__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "resize_bicubic"


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (none in CI); bench/gpu.py runs the same check on one",
)
def test_cuda_matches_pillow() -> None:
    for (src, size), kind in zip(SHAPES[:12], ["noise", "text"] * 6, strict=True):
        arr = _IMAGES[kind](*src, seed=11)
        got = resize_bicubic(torch.from_numpy(arr).cuda(), size)
        assert got.device.type == "cuda"
        assert torch.equal(got.cpu(), torch.from_numpy(_pil(arr, size).copy()))


def test_the_probe_check_accepts_this_pillow_and_rejects_a_different_resampler(monkeypatch):
    """The engine resizes on the device only when the probes match the installed Pillow."""
    from langchain_deepseek_ocr import _resample

    _resample.matches_installed_pillow.cache_clear()
    assert _resample.matches_installed_pillow()
    # a Pillow whose pass order differs (as older and newer releases may) is caught
    _resample.matches_installed_pillow.cache_clear()
    monkeypatch.setattr(_resample, "_horizontal_first", lambda *_a, **_k: True)
    assert not _resample.matches_installed_pillow()
    _resample.matches_installed_pillow.cache_clear()
