"""A real vLLM OpenAI server (CPU build) serving tiny DeepSeek-OCR checkpoints.

The checkpoints have random (``--load-format dummy``) weights, so the text is meaningless;
what is checked is what the package relies on: the request shape DeepSeek-OCR needs is
accepted (``skip_special_tokens``, the per-request n-gram guard in ``vllm_xargs``), the
prompt is ``BOS <image>*N "\\n" text``, and N -- vLLM's own image-token count -- equals
this package's formula (:func:`count_image_tokens`) for untiled and tiled pages.

Each image request costs about 6 s (the vision towers are full size), a tiled one about
16 s: keep their number small.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from tokenizers import Tokenizer

from langchain_deepseek_ocr._checkpoint import _load_tokenizer, read_config
from langchain_deepseek_ocr._preprocess import count_image_tokens
from langchain_deepseek_ocr._tasks import resolution_spec
from langchain_deepseek_ocr.testing._vllm import (
    REAL_ADDED_TOKENS,
    REAL_VOCAB_SIZE,
    VLLMServer,
    build_vllm_checkpoint,
)

# A server start takes 1-3 minutes (more on a busy machine): beyond the default 600 s limit.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

PROMPT = "Free OCR."
IMAGE_ID = 128815
BOS_ID = 0
XARGS = {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}
SMALL = (320, 200)  # <= 640x640 (v1) / 768x768 (v2): one global view, no tiles
TILED = (1280, 800)  # a 3x2 tile grid in gundam mode


def png_data_uri(width: int, height: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat(
    server: VLLMServer,
    size: tuple[int, int],
    *,
    max_tokens: int,
    xargs: dict[str, Any] | None = None,
    **extra: Any,
) -> httpx.Response:
    """POST one image + ``Free OCR.`` the way the package's OpenAI engine does."""
    body = {
        "model": server.served_model_name,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": png_data_uri(*size)}},
                    {"type": "text", "text": PROMPT},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "skip_special_tokens": False,
        "vllm_xargs": XARGS if xargs is None else xargs,
        **extra,
    }
    began = time.monotonic()
    response = httpx.post(server.openai_base_url + "/chat/completions", json=body, timeout=300)
    print(f"\n[vllm] {size[0]}x{size[1]} request: {time.monotonic() - began:.2f} s")
    return response


def text_ids(model_dir: Path, text: str) -> list[int]:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return tok.encode(text, add_special_tokens=False).ids


def expected_prompt_tokens(server: VLLMServer, family: str, size: tuple[int, int]) -> int:
    images = count_image_tokens(*size, resolution_spec(family, "gundam"))
    return 1 + images + len(text_ids(server.model_dir, "\n" + PROMPT))


# ------------------------------------------------------------------------------ checkpoint


def test_real_vocab_checkpoint_tokenizer(tmp_path: Path) -> None:
    """The tokenizer the servers use: real ids, one token per byte, our engine reads it."""
    folder = build_vllm_checkpoint(tmp_path / "v1", "v1")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tok.get_vocab_size() == REAL_VOCAB_SIZE == 129280
    for tid, text, _ in REAL_ADDED_TOKENS:
        assert tok.token_to_id(text) == tid
    # the ids vLLM returned for this text when the recipe was first checked
    assert text_ids(folder, "\n" + PROMPT) == [201, 40, 84, 71, 71, 223, 49, 37, 52, 16]
    assert tok.decode([128821, 5000, 128822, 1], skip_special_tokens=True) == "<td> w5000</td>"
    _, special = _load_tokenizer(folder, read_config(folder))
    assert (special.bos, special.eos, special.pad, special.image) == (0, 1, 2, IMAGE_ID)


# ------------------------------------------------------------------------------ v1


@pytest.fixture(scope="module")
def small_v1(vllm_servers: Any) -> tuple[VLLMServer, httpx.Response]:
    """One small-image request with ``return_token_ids``, shared by several checks."""
    server = vllm_servers.get("v1")
    return server, chat(server, SMALL, max_tokens=16, return_token_ids=True)


def test_models_lists_the_served_id(vllm_v1_server: VLLMServer) -> None:
    response = httpx.get(vllm_v1_server.openai_base_url + "/models", timeout=30)
    assert response.status_code == 200
    models = {m["id"]: m for m in response.json()["data"]}
    assert "tiny-dsocr" in models
    assert models["tiny-dsocr"]["max_model_len"] == 8192


def test_small_image_usage(small_v1: tuple[VLLMServer, httpx.Response]) -> None:
    server, response = small_v1
    assert response.status_code == 200, response.text
    body = response.json()
    usage = body["usage"]
    assert count_image_tokens(*SMALL, resolution_spec("v1", "gundam")) == 273
    assert usage["prompt_tokens"] == 1 + 273 + len(text_ids(server.model_dir, "\n" + PROMPT))
    assert usage["completion_tokens"] == 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + 16
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"  # random weights do not emit EOS
    assert isinstance(choice["message"]["content"], str)
    assert choice["message"]["content"]


def test_small_image_prompt_ids(small_v1: tuple[VLLMServer, httpx.Response]) -> None:
    server, response = small_v1
    body = response.json()
    prompt_ids = body["prompt_token_ids"]
    assert prompt_ids.count(IMAGE_ID) == 273
    assert prompt_ids == [BOS_ID] + [IMAGE_ID] * 273 + text_ids(server.model_dir, "\n" + PROMPT)
    generated = body["choices"][0]["token_ids"]
    assert len(generated) == 16
    tok = Tokenizer.from_file(str(server.model_dir / "tokenizer.json"))
    # skip_special_tokens=false: the text is exactly the generated ids decoded in full
    assert body["choices"][0]["message"]["content"] == tok.decode(
        generated, skip_special_tokens=False
    )


def test_invalid_ngram_size_is_rejected(vllm_v1_server: VLLMServer) -> None:
    response = chat(vllm_v1_server, SMALL, max_tokens=4, xargs={**XARGS, "ngram_size": -1})
    assert response.status_code == 400, response.text
    assert "ngram_size" in response.json()["error"]["message"]


def test_tiled_image_token_count_matches_formula(vllm_v1_server: VLLMServer) -> None:
    response = chat(vllm_v1_server, TILED, max_tokens=1)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    expected = expected_prompt_tokens(vllm_v1_server, "v1", TILED)
    assert expected == 1 + 273 + 20 * 31 + 10  # 3x2 tiles of 10x10 queries + newlines
    assert usage["prompt_tokens"] == expected


# ------------------------------------------------------------------------------ v2
# Runs after every v1 test (see conftest): the v1 server is stopped before v2 starts.


def test_v2_small_and_tiled_token_counts(vllm_v2_server: VLLMServer) -> None:
    small = chat(vllm_v2_server, SMALL, max_tokens=4)
    assert small.status_code == 200, small.text
    assert count_image_tokens(*SMALL, resolution_spec("v2", "gundam")) == 257
    assert small.json()["usage"]["prompt_tokens"] == expected_prompt_tokens(
        vllm_v2_server, "v2", SMALL
    )
    assert small.json()["choices"][0]["finish_reason"] == "length"
    tiled = chat(vllm_v2_server, TILED, max_tokens=1)
    assert tiled.status_code == 200, tiled.text
    assert tiled.json()["usage"]["prompt_tokens"] == expected_prompt_tokens(
        vllm_v2_server, "v2", TILED
    )
