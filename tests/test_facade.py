"""DeepSeekOCR: inputs of every kind, tasks, batches, documents -- on the tiny real models."""

import base64
import io
import json

import pytest

from conftest import SAMPLES, noise_image
from langchain_deepseek_ocr import (
    ConfigurationError,
    CorruptInputError,
    DeepSeekOCR,
    InputNotFoundError,
    OCRResult,
    PageOutOfRangeError,
    UnsupportedInputError,
)
from langchain_deepseek_ocr.testing import ScriptedEngine


@pytest.fixture(scope="module")
def ocr_v1(v1_engine):
    return DeepSeekOCR(engine=v1_engine)


def _png_bytes(size=(500, 400), seed=2):
    buf = io.BytesIO()
    noise_image(*size, seed=seed).save(buf, format="PNG")
    return buf.getvalue()


def test_every_input_kind_gives_the_same_result(ocr_v1, tmp_path):
    data = _png_bytes()
    path = tmp_path / "x.png"
    path.write_bytes(data)
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    from PIL import Image

    results = [
        ocr_v1.ocr(path),
        ocr_v1.ocr(str(path)),
        ocr_v1.ocr(data),
        ocr_v1.ocr(Image.open(io.BytesIO(data))),
        ocr_v1.ocr(uri),
    ]
    assert len({r.raw for r in results}) == 1
    first = results[0]
    assert isinstance(first, OCRResult)
    assert first.image_size == (500, 400)
    assert first.vision_tokens == 273
    assert first.task == "markdown"
    assert first.prompt == "<|grounding|>Convert the document to markdown."
    assert first.model == ocr_v1.engine.model_name
    assert first.source == str(path)
    assert first.compression_ratio == pytest.approx(first.output_tokens / 273)
    assert "<|ref|>" not in first.text


def test_tasks_and_options(ocr_v1, page_png):
    locate = ocr_v1.ocr(page_png, task="locate", ref="the hat")
    assert locate.prompt == "Locate <|ref|>the hat<|/ref|> in the image."
    assert locate.task == "locate"
    free = ocr_v1.ocr(page_png, task="free", resolution="small")
    assert (free.resolution, free.vision_tokens) == ("small", 111)
    custom = ocr_v1.ocr(page_png, prompt="Extract the text in the image.")
    assert custom.prompt == "Extract the text in the image."
    as_dict = ocr_v1.invoke({"image": page_png, "task": "free", "resolution": "small"})
    assert as_dict.raw == free.raw
    with pytest.raises(ConfigurationError, match="ref"):
        ocr_v1.ocr(page_png, task="locate")
    with pytest.raises(ConfigurationError, match="unknown keys"):
        ocr_v1.invoke({"image": page_png, "colour": "red"})


def test_errors_are_typed_and_name_the_input(ocr_v1, tmp_path):
    with pytest.raises(InputNotFoundError, match=r"missing\.png"):
        ocr_v1.ocr(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(_png_bytes()[:80])
    with pytest.raises(CorruptInputError) as info:
        ocr_v1.ocr(bad)
    assert info.value.source == str(bad)


def test_batch_keeps_good_inputs_when_one_is_bad(ocr_v1, tmp_path, page_png):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    inputs = [page_png, bad, _png_bytes(seed=5)]
    out = ocr_v1.batch(inputs, return_exceptions=True, task="free")
    assert isinstance(out[0], OCRResult)
    assert out[0].task == "free"
    assert out[1].source == str(bad)
    assert isinstance(out[2], OCRResult)
    with pytest.raises(UnsupportedInputError, match=r"bad\.png"):
        ocr_v1.batch(inputs)
    assert ocr_v1.batch([]) == []


async def test_async_entry_points(ocr_v1, page_png):
    sync = ocr_v1.ocr(page_png)
    assert (await ocr_v1.aocr(page_png)).raw == sync.raw
    assert (await ocr_v1.ainvoke(page_png)).raw == sync.raw
    batch = await ocr_v1.abatch([page_png, page_png])
    assert [r.raw for r in batch] == [sync.raw, sync.raw]
    pieces = [p async for p in ocr_v1.astream_text(page_png)]
    assert "".join(pieces) == sync.raw
    assert "".join(ocr_v1.stream_text(page_png)) == sync.raw


def test_documents_page_by_page(ocr_v1, three_page_pdf):
    results = list(ocr_v1.ocr_document(three_page_pdf))
    assert [r.page for r in results] == [0, 1, 2]
    assert all(r.image_size == (1191, 1684) for r in results)
    assert all(r.vision_tokens == 903 for r in results)
    some = list(ocr_v1.ocr_document(three_page_pdf, pages=[2, 0], task="free"))
    assert [r.page for r in some] == [2, 0]
    assert ocr_v1.ocr(three_page_pdf, page=1).page == 1
    out = list(ocr_v1.ocr_document(three_page_pdf, pages=[7]))
    assert len(out) == 1
    assert isinstance(out[0], PageOutOfRangeError)


def test_documents_are_read_one_chunk_ahead():
    """While the engine works on a chunk, the next chunk's pages are rendered and prefetched."""
    import threading

    from langchain_deepseek_ocr.testing._hostile import make_pdf

    seen: list[int] = []
    next_chunk_ready = threading.Event()
    waits: list[bool] = []

    class Prefetching(ScriptedEngine):
        def prefetch(self, requests):
            seen.extend(r.page for r in requests)
            if 5 in seen:
                next_chunk_ready.set()

        def generate(self, requests, **kwargs):
            if requests[0].page == 0:  # the first chunk waits for the second to be read
                waits.append(next_chunk_ready.wait(10))
            return super().generate(requests, **kwargs)

    engine = Prefetching("text", batch_size=3)
    pdf = make_pdf([(100 + i, 200) for i in range(7)])
    out = list(DeepSeekOCR(engine=engine).ocr_document(pdf))
    assert waits == [True]  # pages 3-5 were prefetched while pages 0-2 were being read
    assert [r.page for r in out] == list(range(7))
    assert [r.image_size[0] for r in out] == [2 * (100 + i) for i in range(7)]
    assert [[r.page for r in call] for call in engine.calls] == [[0, 1, 2], [3, 4, 5], [6]]
    assert sorted(seen) == list(range(7))  # each page prefetched once


def test_facade_builds_its_engine_from_options(tiny_v2_dir, page_png):
    ocr = DeepSeekOCR(model=str(tiny_v2_dir), device="cpu", max_new_tokens=4, task="free")
    result = ocr.ocr(page_png)
    assert result.task == "free"
    assert result.vision_tokens == 257 + 144 * 6  # 640x820 tiles on v2 (> 768 on one side)
    with pytest.raises(ConfigurationError, match="engine options"):
        DeepSeekOCR(engine=ocr.engine, device="cpu")


def test_results_from_real_outputs_carry_blocks_and_pixels(page_png):
    sample = json.loads(SAMPLES.read_text(encoding="utf-8").splitlines()[0])
    ocr = DeepSeekOCR(engine=ScriptedEngine(sample["raw"]))
    result = ocr.ocr(page_png)
    assert [b.label for b in result.blocks] == sample["expect"]["labels"]
    width, height = result.image_size
    first = result.blocks[0]
    assert first.pixel_boxes[0] == first.boxes[0].to_pixels(width, height)
    assert result.text.startswith("Nasdaq & AMEX")
    assert result.ok


def test_a_bad_page_costs_only_itself(ocr_v1, three_page_pdf):
    out = list(ocr_v1.ocr_document(three_page_pdf, pages=[0, 7, 2], task="free"))
    assert isinstance(out[0], OCRResult)
    assert out[0].page == 0
    assert isinstance(out[1], PageOutOfRangeError)
    assert out[1].page == 7
    assert out[1].source == str(three_page_pdf)
    assert isinstance(out[2], OCRResult)
    assert out[2].page == 2
