"""Shared fixtures: tiny random checkpoints in the real layouts, loaded through the public API."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "outputs.jsonl"


@pytest.fixture(scope="session")
def tiny_v1_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from langchain_deepseek_ocr.testing import build_tiny_v1

    return build_tiny_v1(tmp_path_factory.mktemp("tiny-v1"))


@pytest.fixture(scope="session")
def tiny_v2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from langchain_deepseek_ocr.testing import build_tiny_v2

    return build_tiny_v2(tmp_path_factory.mktemp("tiny-v2"))


@pytest.fixture(scope="session")
def v1_engine(tiny_v1_dir: Path):
    from langchain_deepseek_ocr import TransformersEngine

    return TransformersEngine(str(tiny_v1_dir), device="cpu", max_new_tokens=8).load()


@pytest.fixture(scope="session")
def v2_engine(tiny_v2_dir: Path):
    from langchain_deepseek_ocr import TransformersEngine

    return TransformersEngine(str(tiny_v2_dir), device="cpu", max_new_tokens=8).load()


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic RGB noise image (random pixels exercise every code path)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.fixture
def page_png(tmp_path: Path) -> Path:
    path = tmp_path / "page.png"
    noise_image(640, 820, seed=1).save(path)
    return path


@pytest.fixture
def three_page_pdf(tmp_path: Path) -> Path:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    for _ in range(3):
        doc.new_page(595.276, 841.89)
    path = tmp_path / "doc.pdf"
    doc.save(str(path))
    doc.close()
    return path
