"""Faults inside the local engine: a failing batch is split, nothing is lost or duplicated."""

import pytest
import torch

from conftest import noise_image
from langchain_deepseek_ocr import EngineOutput, GenerationError, OCRRequest, TransformersEngine
from langchain_deepseek_ocr._tasks import build_prompt


@pytest.fixture
def engine(tiny_v1_dir):
    return TransformersEngine(str(tiny_v1_dir), device="cpu", max_new_tokens=4, batch_size=8).load()


def _requests(n):
    return [
        OCRRequest(
            image=noise_image(500 + 10 * i, 400, seed=i), prompt=build_prompt("free"), page=i
        )
        for i in range(n)
    ]


def test_out_of_memory_in_a_batch_splits_it(engine, monkeypatch):
    reference = engine.generate(_requests(5))
    net = engine._loaded.model
    real = net.generate
    sizes = []

    def flaky(**kwargs):
        rows = kwargs["input_ids"].shape[0]
        sizes.append(rows)
        if rows > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(**kwargs)

    monkeypatch.setattr(net, "generate", flaky)
    out = engine.generate(_requests(5))
    assert sizes[0] == 5
    assert sizes[1:] == [1] * 5
    assert [o.token_ids for o in out] == [r.token_ids for r in reference]


def test_one_page_that_breaks_the_model_costs_only_itself(engine, monkeypatch):
    net = engine._loaded.model
    real = net.generate

    def breaks_on_wide_pages(**kwargs):
        if kwargs["pixel_values"].shape[0] == 1 and kwargs["input_ids"].shape[1] > 0:
            width = kwargs["attention_mask"].sum().item()
            if width == breaks_on_wide_pages.bad_width:
                raise RuntimeError("shape mismatch (injected)")
        if kwargs["pixel_values"].shape[0] > 1:
            raise RuntimeError("batch failed (injected)")
        return real(**kwargs)

    requests = _requests(4)
    requests[2] = OCRRequest(image=noise_image(1300, 700), prompt=build_prompt("free"), page=2)
    prepared = engine._plan(2, requests[2], engine._loaded)
    breaks_on_wide_pages.bad_width = len(prepared.ids)
    monkeypatch.setattr(net, "generate", breaks_on_wide_pages)
    out = engine.generate(requests)
    assert len(out) == 4
    kinds = [type(o) for o in out]
    assert kinds.count(EngineOutput) == 3
    assert isinstance(out[2], GenerationError)
    assert out[2].page == 2
    assert "shape mismatch" in str(out[2])
