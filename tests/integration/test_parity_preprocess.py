"""Our page preprocessing equals vLLM's DeepSeek-OCR processor, tensor for tensor.

vLLM's ``DeepseekOCRProcessor.tokenize_with_images`` (adapted from DeepSeek's
``process/image_process.py``) is what vLLM's server runs on every image; it is run here in
the vLLM virtualenv (it needs torchvision and transformers <5.20) on the same PNG files,
with the settings vLLM uses: v1 gundam (1024 global view, 640 tiles, 2..6 crops) and v2
(1024 + 768 tiles). For every image the global view, every tile, the tile grid and the
number of ``<image>`` placeholders must match :func:`prepare_image`; the pixels must be the
same uint8 values (the float tensors differ only by float32 rounding of
``(x/255 - 0.5)/0.5`` versus ``x*2/255 - 1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from langchain_deepseek_ocr._preprocess import count_image_tokens, prepare_image
from langchain_deepseek_ocr._tasks import resolution_spec
from langchain_deepseek_ocr.testing._vllm import build_real_vocab_tokenizer, vllm_preprocess

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

IMAGE_ID = 128815
SHAPES = {
    "small": (320, 200),  # untiled
    "square-640": (640, 640),  # the v1 tile size: still untiled
    "just-over-640": (641, 640),  # v1 tiles (2x1), v2 does not
    "upscaled": (600, 800),  # v1: a 2x3 grid of 640 tiles, upscaled
    "square-768": (768, 768),  # the v2 tile size
    "a4": (1191, 1684),  # A4 at 144 dpi: 2x3
    "landscape-a4": (1684, 1191),  # 3x2
    "wide": (1600, 600),  # 3x1
    "tall": (600, 1600),  # 1x3
    "huge-square": (2000, 2000),  # 2x2 (the tie rule picks the larger grid)
    "strip": (1000, 3000),  # 1x3
    "odd": (1283, 517),  # odd sizes: rounding of the pad offsets
    "sliver": (1500, 37),  # a very thin page
}


def _image(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def images() -> dict[str, Image.Image]:
    return {name: _image(size, seed) for seed, (name, size) in enumerate(SHAPES.items())}


@pytest.fixture(scope="module")
def vllm_tensors(
    images: dict[str, Image.Image], vllm_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, dict[str, Any]]]:
    work = tmp_path_factory.mktemp("vllm-preprocess")
    build_real_vocab_tokenizer(work / "tokenizer")
    return vllm_preprocess(images, tokenizer_dir=work / "tokenizer", out_dir=work, venv=vllm_venv)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Invert ``Normalize(0.5, 0.5)(ToTensor(...))`` exactly: 255 levels, 2/255 apart."""
    return np.rint((x.astype(np.float64) + 1.0) * 127.5).astype(np.uint8)


@pytest.mark.parametrize("family", ["v1", "v2"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_preprocessing_matches_vllm(
    family: str, name: str, images: dict[str, Image.Image], vllm_tensors: dict[str, Any]
) -> None:
    ref = vllm_tensors[family][name]
    spec = resolution_spec(family)  # gundam, 2..6 tiles: what vLLM serves
    ours = prepare_image(images[name], spec)

    cols, rows = (int(v) for v in ref["grid"])
    assert (ours.grid or (1, 1)) == (cols, rows)
    assert ref["global"].shape == ours.global_view.shape == (3, 1024, 1024)
    np.testing.assert_allclose(ours.global_view, ref["global"], rtol=0, atol=1e-6)
    assert np.array_equal(_to_uint8(ref["global"]), ours.global_pixels.transpose(2, 0, 1))

    tiles = ours.tiles
    if tiles is None:
        assert ref["tiles"].shape[0] == 0
    else:
        assert (
            ref["tiles"].shape == tiles.shape == (cols * rows, 3, spec.image_size, spec.image_size)
        )
        np.testing.assert_allclose(tiles, ref["tiles"], rtol=0, atol=1e-6)
        assert np.array_equal(_to_uint8(ref["tiles"]), _to_uint8(tiles))

    placeholders = int((ref["input_ids"] == IMAGE_ID).sum())
    assert placeholders == ours.num_image_tokens == count_image_tokens(*images[name].size, spec)
    assert int(ref["input_ids"][0]) == 0  # BOS first, then the placeholders
    assert bool((ref["input_ids"][1 : 1 + placeholders] == IMAGE_ID).all())
