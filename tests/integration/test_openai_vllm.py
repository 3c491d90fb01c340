"""OpenAIEngine, the loader and a tool against a real vLLM OpenAI server (CPU build).

The server runs a tiny DeepSeek-OCR v1 with random (dummy) weights, so the text is
meaningless; what is checked is the whole client path on the real server: the request shape
is accepted (image as a data URI, the task prompt, ``skip_special_tokens: false``, the
n-gram guard in ``vllm_xargs`` -- also the tightened guard of a recovery retry), usage counts
land in the results, no token is lost between the server's ids and the text (so grounding
tags survive), and concurrent pages all come back once, in order.
"""

from __future__ import annotations

import pypdfium2 as pdfium
import pytest
from tokenizers import Tokenizer

from langchain_deepseek_ocr import (
    ConfigurationError,
    DeepSeekOCR,
    DeepSeekOCRLoader,
    DeepSeekOCRTool,
    NGramGuard,
    OCRRequest,
    OCRResult,
    OpenAIEngine,
    RecoveryPolicy,
    Resolution,
)
from langchain_deepseek_ocr._parse import strip_special
from langchain_deepseek_ocr._preprocess import count_image_tokens
from langchain_deepseek_ocr._tasks import build_prompt, resolution_spec
from langchain_deepseek_ocr.testing._vllm import VLLMServer

from .conftest import SERVED_MODEL

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

NO_RETRY = RecoveryPolicy(enabled=False)


def _noise(width, height, seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.fixture
def engine(vllm_v1_server: VLLMServer):
    with OpenAIEngine(
        vllm_v1_server.base_url,
        max_new_tokens=12,
        extra_body={"return_token_ids": True},
        max_concurrency=3,
    ) as eng:
        yield eng


def test_engine_on_the_real_server(engine: OpenAIEngine, vllm_v1_server: VLLMServer) -> None:
    assert engine.model_name == SERVED_MODEL  # found through /v1/models
    assert engine.server == "vllm"
    assert engine.resolutions() == (Resolution.GUNDAM,)
    image = _noise(320, 200)
    out = engine.generate([OCRRequest(image=image, prompt=build_prompt("markdown"))])[0]
    assert out.vision_tokens == count_image_tokens(320, 200, resolution_spec("v1", "gundam"))
    assert out.vision_tokens == 273
    tokenizer = Tokenizer.from_file(str(vllm_v1_server.model_dir / "tokenizer.json"))
    text_ids = tokenizer.encode("\n" + build_prompt("markdown"), add_special_tokens=False).ids
    assert out.prompt_tokens == 1 + 273 + len(text_ids)
    assert out.output_tokens == 12
    assert out.finish_reason == "length"
    # every generated token is in the text: nothing (no grounding tag) was skipped
    assert len(out.token_ids) == 12
    decoded = tokenizer.decode(out.token_ids, skip_special_tokens=False)
    assert out.raw == strip_special(decoded)


def test_a_resolution_the_server_does_not_run_is_a_clear_error(engine: OpenAIEngine) -> None:
    request = OCRRequest(image=_noise(300, 300), prompt="Free OCR.", resolution=Resolution.BASE)
    out = engine.generate([request])[0]
    assert isinstance(out, ConfigurationError)
    assert "gundam" in str(out)


def test_facade_batch_concurrency_and_the_tightened_guard(vllm_v1_server: VLLMServer) -> None:
    # recovery on: every page here is cut at the token limit, so each is retried once with
    # a tightened guard -- vLLM must accept the new vllm_xargs
    with OpenAIEngine(vllm_v1_server.base_url, max_new_tokens=8, max_concurrency=2) as eng:
        ocr = DeepSeekOCR(engine=eng)
        images = [_noise(300 + 20 * i, 200, seed=i) for i in range(3)]
        results = ocr.batch(images, task="free")
    assert [r.image_size for r in results] == [im.size for im in images]
    for result in results:
        assert isinstance(result, OCRResult)
        assert result.truncated
        assert len(result.attempts) == 2
        tighter = NGramGuard().tightened()
        assert result.attempts[1].ngram_size == tighter.ngram_size
        assert result.attempts[1].error is None


def test_loader_and_tool_on_the_real_server(vllm_v1_server: VLLMServer, tmp_path) -> None:
    doc = pdfium.PdfDocument.new()
    for _ in range(2):
        doc.new_page(200, 150)  # 400x300 px at 144 dpi: untiled, 273 vision tokens
    pdf = tmp_path / "two.pdf"
    doc.save(str(pdf))
    doc.close()
    _noise(300, 200).save(tmp_path / "page.png")
    with OpenAIEngine(vllm_v1_server.base_url, max_new_tokens=6) as eng:
        ocr = DeepSeekOCR(engine=eng, recovery=NO_RETRY)
        docs = DeepSeekOCRLoader(pdf, engine=ocr).load()
        assert [d.metadata["page"] for d in docs] == [0, 1]
        assert all(d.metadata["vision_tokens"] == 273 for d in docs)
        assert all(d.metadata["output_tokens"] == 6 for d in docs)
        tool = DeepSeekOCRTool(engine=ocr, allowed_roots=[tmp_path])
        message = tool.invoke(
            {"type": "tool_call", "id": "call-1", "name": tool.name, "args": {"image": "page.png"}}
        )
    assert message.artifact.vision_tokens == 273
    assert message.artifact.model == SERVED_MODEL
    assert message.status == "success"


def test_cli_with_server(vllm_v1_server: VLLMServer, tmp_path, capsys) -> None:
    import json

    from langchain_deepseek_ocr.cli import main

    _noise(320, 240).save(tmp_path / "scan.png")
    out = tmp_path / "out"
    args = [str(tmp_path / "scan.png"), "--server", vllm_v1_server.base_url, "--out", str(out)]
    assert main([*args, "--resolution", "base"]) == 2
    assert "fixed resolution" in capsys.readouterr().err
    assert main([*args, "--max-new-tokens", "4", "--json", "--no-progress"]) == 0
    page = json.loads((out / "scan.json").read_text())["pages"][0]
    assert page["vision_tokens"] == 273
    assert page["model"] == SERVED_MODEL
    assert (out / "scan.md").is_file()
