"""DeepSeekOCRLoader, the Document helpers and the blob parsers.

Unit tests run a ScriptedEngine with real DeepSeek-OCR outputs (../shared/samples); one test
runs the tiny real model through both the sync and the async path.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore
from PIL import Image

import langchain_deepseek_ocr._loader as loader_module
from conftest import SAMPLES, noise_image
from langchain_deepseek_ocr import (
    ConfigurationError,
    CorruptInputError,
    DeepSeekOCR,
    GenerationError,
    InputNotFoundError,
    InputTooLargeError,
    OCRRequest,
    OCRResult,
    PageOutOfRangeError,
    RecoveryPolicy,
    UnsupportedInputError,
    parse_output,
)
from langchain_deepseek_ocr._documents import (
    PAGES_DELIMITER,
    error_to_document,
    result_to_documents,
    results_to_document,
)
from langchain_deepseek_ocr._facade import build_result
from langchain_deepseek_ocr._inputs import InputLimits
from langchain_deepseek_ocr._loader import DeepSeekOCRLoader
from langchain_deepseek_ocr._parsers import DeepSeekOCRParser
from langchain_deepseek_ocr._tasks import OCRTask
from langchain_deepseek_ocr.testing import ScriptedEngine

SAMPLE = {s["id"]: s for s in map(json.loads, SAMPLES.read_text(encoding="utf-8").splitlines())}
TABLE = SAMPLE["seed-markdown-table"]["raw"]
LOOP = SAMPLE["v1-vllm-loop-same-text-moving-box"]["raw"]
OCR_REFS = SAMPLE["v1-issue75-ocr-this-image-text-refs"]["raw"]
FREE = SAMPLE["seed-free-ocr-santander"]["raw"]
LOCATE = SAMPLE["seed-locate-hat"]["raw"]
SCALARS = (str, int, float, bool)

pytestmark = pytest.mark.filterwarnings("ignore:.*langchain-community.*:DeprecationWarning")


# --------------------------------------------------------------------------------------------
# helpers


def _png(path: Path, size=(320, 240), seed=0) -> Path:
    noise_image(*size, seed=seed).save(path)
    return path


def _pdf(path: Path, pages: int, size=(200.0, 300.0)) -> Path:
    doc = pdfium.PdfDocument.new()
    for _ in range(pages):
        doc.new_page(*size)
    doc.save(str(path))
    doc.close()
    return path


def _by_page(text_for: dict[tuple[str, int | None], str], default: str = TABLE):
    """A script that answers by (file name, page)."""

    def script(request: OCRRequest):
        return text_for.get((Path(request.source).name, request.page), default)

    return script


def _assert_scalar_metadata(docs: list[Document]) -> None:
    for doc in docs:
        for key, value in doc.metadata.items():
            assert isinstance(value, SCALARS), (key, value)
            assert value is not None


def _keys(doc: Document) -> tuple[str, int | None]:
    return Path(doc.metadata["source"]).name, doc.metadata.get("page")


PAGE_KEYS = {
    "source",
    "page",
    "total_pages",
    "task",
    "resolution",
    "model",
    "vision_tokens",
    "output_tokens",
    "compression_ratio",
    "repetition",
    "truncated",
    "attempts",
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Two images and a 3-page PDF."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    _png(folder / "a.png", seed=1)
    _png(folder / "b.png", size=(240, 320), seed=2)
    _pdf(folder / "doc.pdf", 3)
    return folder


# --------------------------------------------------------------------------------------------
# result_to_documents / results_to_document / error_to_document


def _result(raw: str, size=(626, 580), *, page=None, source="x.png", resolution="gundam"):
    request = OCRRequest(image=Image.new("RGB", size), prompt="p", source=source, page=page)
    engine = ScriptedEngine(raw)
    output = engine.generate([request])[0]
    output.resolution = resolution
    return build_result(output, request)


def test_page_document_from_a_real_output():
    result = _result(TABLE, page=2)
    (doc,) = result_to_documents(result, total_pages=5)
    assert doc.page_content == parse_output(TABLE, (626, 580)).text
    assert set(doc.metadata) == PAGE_KEYS
    assert doc.metadata["source"] == "x.png"
    assert doc.metadata["page"] == 2
    assert doc.metadata["total_pages"] == 5
    assert doc.metadata["task"] == "markdown"
    assert doc.metadata["resolution"] == "gundam"
    assert doc.metadata["model"] == "scripted"
    assert doc.metadata["compression_ratio"] == pytest.approx(result.compression_ratio)
    assert doc.metadata["repetition"] is False
    _assert_scalar_metadata([doc])


def test_single_image_is_page_zero_of_one_and_source_can_be_overridden():
    (doc,) = result_to_documents(_result(FREE), source="scan.png")
    assert doc.metadata["page"] == 0
    assert doc.metadata["total_pages"] == 1
    assert doc.metadata["source"] == "scan.png"


def test_unknown_values_are_left_out_not_none():
    result = _result(FREE).model_copy(update={"source": None, "resolution": None, "model": ""})
    (doc,) = result_to_documents(result, metadata={"origin": "blob", "junk": None})
    assert "source" not in doc.metadata
    assert "resolution" not in doc.metadata
    assert "model" not in doc.metadata
    assert "junk" not in doc.metadata
    assert doc.metadata["origin"] == "blob"
    assert None not in doc.metadata.values()


def test_elements_one_per_block_with_scalar_pixel_box():
    sample = SAMPLE["seed-markdown-table"]
    result = _result(sample["raw"], size=tuple(sample["image_size"]))
    docs = result_to_documents(result, mode="elements")
    assert [d.metadata["label"] for d in docs] == sample["expect"]["labels"]
    assert [d.metadata["block_index"] for d in docs] == list(range(len(docs)))
    for doc, block in zip(docs, result.blocks, strict=True):
        x1, y1, x2, y2 = block.pixel_boxes[0]
        assert (doc.metadata["x1"], doc.metadata["y1"]) == (x1, y1)
        assert (doc.metadata["x2"], doc.metadata["y2"]) == (x2, y2)
        assert doc.metadata["box_count"] == 1
        assert doc.metadata["complete"] is True
        assert doc.page_content == block.text
        assert set(doc.metadata) >= PAGE_KEYS
    # the title block: [[65, 142, 740, 255]] on a 626x580 image
    title = (docs[0].metadata[k] for k in ("x1", "y1", "x2", "y2"))
    assert tuple(title) == (int(65 / 999 * 626), int(142 / 999 * 580), 463, 148)
    assert docs[0].page_content == "Nasdaq & AMEX"
    assert docs[2].metadata["label"] == "image"
    assert docs[2].page_content == ""
    _assert_scalar_metadata(docs)


def test_elements_ocr_labels_are_the_text_and_ungrounded_pages_are_one_element():
    docs = result_to_documents(_result(OCR_REFS, size=(400, 300)), mode="elements")
    assert [d.page_content for d in docs] == SAMPLE["v1-issue75-ocr-this-image-text-refs"][
        "expect"
    ]["labels"]
    (free,) = result_to_documents(_result(FREE), mode="elements")
    assert free.page_content == parse_output(FREE).text
    assert free.metadata["block_index"] == 0
    assert "label" not in free.metadata
    assert "x1" not in free.metadata


def test_elements_several_boxes_become_the_enclosing_box():
    raw = "<|ref|>the hat<|/ref|><|det|>[[100, 100, 200, 200], [500, 50, 600, 150]]<|/det|>"
    (doc,) = result_to_documents(_result(raw, size=(999, 999)), mode="elements")
    assert doc.metadata["box_count"] == 2
    assert (doc.metadata["x1"], doc.metadata["y1"]) == (100, 50)
    assert (doc.metadata["x2"], doc.metadata["y2"]) == (600, 200)


def test_result_to_documents_rejects_single_mode():
    with pytest.raises(ValueError, match="results_to_document"):
        result_to_documents(_result(FREE), mode="single")  # type: ignore[arg-type]


def test_results_to_document_joins_pages_and_merges_metadata():
    pages = [
        _result(TABLE, page=0, source="d.pdf"),
        _result(LOOP, page=1, source="d.pdf", resolution="base"),
        _result(FREE, page=2, source="d.pdf"),
    ]
    doc = results_to_document(pages, total_pages=4)
    assert doc.page_content == PAGES_DELIMITER.join(p.text for p in pages)
    assert doc.page_content.split("\f")[1].strip() == pages[1].text
    md = doc.metadata
    assert "page" not in md
    assert md["source"] == "d.pdf"
    assert md["total_pages"] == 4
    assert md["resolution"] == "base,gundam"
    assert md["task"] == "markdown"
    assert md["vision_tokens"] == sum(p.vision_tokens for p in pages)
    assert md["output_tokens"] == sum(p.output_tokens for p in pages)
    assert md["compression_ratio"] == pytest.approx(md["output_tokens"] / md["vision_tokens"])
    assert md["repetition"] is True  # page 1 loops
    assert md["truncated"] is False
    _assert_scalar_metadata([doc])
    with pytest.raises(ValueError, match="at least one"):
        results_to_document([])


def test_error_to_document():
    error = PageOutOfRangeError("page 9 is out of range", source="d.pdf", page=9)
    doc = error_to_document(error)
    assert doc.page_content == ""
    assert doc.metadata == {
        "source": "d.pdf",
        "page": 9,
        "error": "page 9 is out of range",
        "error_type": "PageOutOfRangeError",
    }
    whole = error_to_document(CorruptInputError("truncated"), source="x.png")
    assert whole.metadata == {
        "source": "x.png",
        "error": "truncated",
        "error_type": "CorruptInputError",
    }


# --------------------------------------------------------------------------------------------
# modes and metadata through the loader


def test_page_mode_over_a_folder(corpus):
    engine = ScriptedEngine(TABLE, batch_size=8)
    docs = DeepSeekOCRLoader(corpus, engine=engine).load()
    assert [_keys(d) for d in docs] == [
        ("a.png", 0),
        ("b.png", 0),
        ("doc.pdf", 0),
        ("doc.pdf", 1),
        ("doc.pdf", 2),
    ]
    assert [d.metadata["total_pages"] for d in docs] == [1, 1, 3, 3, 3]
    assert all(set(d.metadata) == PAGE_KEYS for d in docs)
    assert docs[0].metadata["source"] == str(corpus / "a.png")
    assert docs[0].page_content == parse_output(TABLE).text
    # batched across files: one engine call for all five pages
    assert [len(call) for call in engine.calls] == [5]
    _assert_scalar_metadata(docs)


def test_single_mode_one_document_per_file(corpus):
    script = _by_page({("doc.pdf", 1): LOOP, ("doc.pdf", 2): FREE})
    docs = DeepSeekOCRLoader(corpus, engine=ScriptedEngine(script), mode="single").load()
    assert [Path(d.metadata["source"]).name for d in docs] == ["a.png", "b.png", "doc.pdf"]
    pdf = docs[2]
    texts = [parse_output(TABLE).text, parse_output(LOOP).text, parse_output(FREE).text]
    assert pdf.page_content == "\n\f".join(texts)
    assert pdf.metadata["total_pages"] == 3
    assert pdf.metadata["repetition"] is True
    assert docs[0].metadata["repetition"] is False
    assert "page" not in pdf.metadata
    _assert_scalar_metadata(docs)


def test_single_mode_custom_delimiter(corpus):
    docs = DeepSeekOCRLoader(
        corpus / "doc.pdf",
        engine=ScriptedEngine(FREE),
        mode="single",
        pages_delimiter="\n\n<--- Page Split --->\n\n",
    ).load()
    assert docs[0].page_content.count("<--- Page Split --->") == 2


def test_elements_mode(corpus):
    sample = SAMPLE["seed-markdown-table"]
    docs = DeepSeekOCRLoader(
        corpus / "a.png", engine=ScriptedEngine(sample["raw"]), mode="elements"
    ).load()
    assert [d.metadata["label"] for d in docs] == sample["expect"]["labels"]
    width, height = 320, 240
    for doc in docs:
        assert 0 <= doc.metadata["x1"] <= doc.metadata["x2"] <= width
        assert 0 <= doc.metadata["y1"] <= doc.metadata["y2"] <= height
    _assert_scalar_metadata(docs)


@pytest.mark.parametrize("mode", ["page", "single", "elements"])
def test_metadata_is_accepted_by_vector_stores(corpus, mode):
    from langchain_community.vectorstores.utils import filter_complex_metadata

    script = _by_page({("doc.pdf", 1): LOCATE, ("doc.pdf", 2): FREE})
    loader = DeepSeekOCRLoader(
        [corpus, corpus / "missing.png"],
        engine=ScriptedEngine(script),
        mode=mode,
        on_error="record",
    )
    docs = loader.load()
    assert any("error" in d.metadata for d in docs)
    _assert_scalar_metadata(docs)
    assert [d.metadata for d in filter_complex_metadata(docs)] == [d.metadata for d in docs]
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    ids = store.add_documents(docs)
    assert len(ids) == len(docs)
    assert store.get_by_ids(ids[:1])[0].metadata == docs[0].metadata


def test_task_resolution_and_an_ocr_facade_as_engine(corpus):
    engine = ScriptedEngine(FREE)
    facade = DeepSeekOCR(engine=engine, task="free", resolution="base")
    docs = DeepSeekOCRLoader(corpus / "a.png", engine=facade).load()
    assert docs[0].metadata["task"] == "free"
    assert docs[0].metadata["resolution"] == "base"
    assert engine.calls[0][0].prompt == "Free OCR."
    docs = DeepSeekOCRLoader(corpus / "a.png", engine=facade, task="ocr", resolution="small")
    (doc,) = docs.load()
    assert (doc.metadata["task"], doc.metadata["resolution"]) == ("ocr", "small")
    assert facade.task is OCRTask.FREE  # the caller's facade is not changed


def test_looping_pages_are_retried_through_the_facade_recovery(corpus):
    def script(request: OCRRequest):
        looping = Path(request.source).name == "doc.pdf" and request.page == 1
        if looping and request.resolution in (None, "gundam"):
            return LOOP
        return TABLE

    engine = ScriptedEngine(script)
    docs = DeepSeekOCRLoader(corpus / "doc.pdf", engine=engine).load()
    assert [d.metadata["attempts"] for d in docs] == [1, 2, 1]
    assert docs[1].metadata["resolution"] == "base"  # the retry was kept
    assert docs[1].metadata["repetition"] is False
    assert docs[1].page_content == parse_output(TABLE).text
    assert [len(call) for call in engine.calls] == [3, 1]

    (single,) = DeepSeekOCRLoader(corpus / "doc.pdf", engine=engine, mode="single").load()
    assert single.metadata["attempts"] == 4
    assert single.metadata["resolution"] == "base,gundam"

    off = RecoveryPolicy(enabled=False)
    docs = DeepSeekOCRLoader(corpus / "doc.pdf", engine=engine, recovery=off).load()
    assert [d.metadata["attempts"] for d in docs] == [1, 1, 1]
    assert docs[1].metadata["repetition"] is True  # flagged, never dropped
    facade = DeepSeekOCR(engine=engine, recovery=off)
    assert DeepSeekOCRLoader(corpus / "doc.pdf", engine=facade).load() == docs


async def test_async_recovery(corpus):
    def script(request: OCRRequest):
        return LOOP if request.page == 2 and request.resolution in (None, "gundam") else FREE

    loader = DeepSeekOCRLoader(corpus / "doc.pdf", engine=ScriptedEngine(script, batch_size=1))
    docs = [d async for d in loader.alazy_load()]
    assert [d.metadata["attempts"] for d in docs] == [1, 1, 2]
    assert docs[2].metadata["repetition"] is False


def test_limits_apply(corpus):
    loader = DeepSeekOCRLoader(
        corpus / "a.png",
        engine=ScriptedEngine(FREE),
        limits=InputLimits(max_pixels=1000),
        on_error="record",
    )
    (doc,) = loader.load()
    assert doc.metadata["error_type"] == InputTooLargeError.__name__


def test_bad_options_raise_configuration_errors(corpus):
    engine = ScriptedEngine(FREE)
    with pytest.raises(ConfigurationError, match="mode"):
        DeepSeekOCRLoader(corpus, engine=engine, mode="pages")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="on_error"):
        DeepSeekOCRLoader(corpus, engine=engine, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="task"):
        DeepSeekOCRLoader(corpus, engine=engine, task="poetry")
    with pytest.raises(ConfigurationError):
        DeepSeekOCRLoader(corpus, engine=engine, task="locate")  # needs a ref
    with pytest.raises(ConfigurationError, match="resolution"):
        DeepSeekOCRLoader(corpus, engine=engine, resolution="huge")
    with pytest.raises(ConfigurationError, match="pages"):
        DeepSeekOCRLoader(corpus, engine=engine, pages="1-3")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        DeepSeekOCRLoader(corpus, engine=engine, max_concurrency=0)
    with pytest.raises(ConfigurationError, match="recovery"):
        DeepSeekOCRLoader(corpus, engine=engine, recovery={"enabled": False})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="engine options"):
        DeepSeekOCRLoader(corpus, engine=DeepSeekOCR(engine=engine), device="cpu")


def test_without_an_engine_the_local_engine_is_built_from_keyword_options(tmp_path, tiny_v1_dir):
    from langchain_deepseek_ocr import TransformersEngine

    loader = DeepSeekOCRLoader(tmp_path, model=str(tiny_v1_dir), device="cpu", batch_size=3)
    assert isinstance(loader.ocr.engine, TransformersEngine)
    assert loader.ocr.recovery == RecoveryPolicy()
    assert loader.ocr.engine.model_name == str(tiny_v1_dir)
    assert loader.ocr.engine.batch_size == 3


def test_configuration_errors_from_the_engine_are_raised_even_when_skipping(corpus):
    engine = ScriptedEngine(FREE, family="v2")  # v2 has no "tiny" resolution
    loader = DeepSeekOCRLoader(corpus, engine=engine, resolution="tiny", on_error="skip")
    with pytest.raises(ConfigurationError, match="tiny"):
        loader.load()


# --------------------------------------------------------------------------------------------
# paths: folders, globs, files, duplicates, pages


def test_paths_folders_globs_and_duplicates(tmp_path, corpus):
    (corpus / "notes.txt").write_text("not an image")
    (corpus / ".hidden.png").write_bytes(b"\x89PNG")
    sub = corpus / "sub"
    sub.mkdir()
    _png(sub / "c.jpg", seed=3)
    engine = ScriptedEngine(FREE)

    names = [_keys(d) for d in DeepSeekOCRLoader(corpus, engine=engine).load()]
    assert names == [
        ("a.png", 0),
        ("b.png", 0),
        ("doc.pdf", 0),
        ("doc.pdf", 1),
        ("doc.pdf", 2),
        ("c.jpg", 0),
    ]
    flat = DeepSeekOCRLoader(corpus, engine=engine, glob="*.png").load()
    assert [_keys(d) for d in flat] == [("a.png", 0), ("b.png", 0)]
    pattern = DeepSeekOCRLoader(str(corpus / "**" / "*.jpg"), engine=engine).load()
    assert [_keys(d) for d in pattern] == [("c.jpg", 0)]
    twice = DeepSeekOCRLoader([corpus / "a.png", str(corpus / "a.png"), corpus], engine=engine)
    assert Counter(_keys(d) for d in twice.load())[("a.png", 0)] == 1
    # a file named explicitly is read whatever its extension (and fails on content here)
    with pytest.raises(UnsupportedInputError):
        DeepSeekOCRLoader(corpus / "notes.txt", engine=engine).load()


def test_missing_paths_and_empty_patterns_are_reported(tmp_path, caplog):
    engine = ScriptedEngine(FREE)
    with pytest.raises(InputNotFoundError):
        DeepSeekOCRLoader(tmp_path / "nope.png", engine=engine).load()
    with pytest.raises(InputNotFoundError, match="no image or PDF file matches"):
        DeepSeekOCRLoader(str(tmp_path / "*.png"), engine=engine).load()
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.WARNING, logger="langchain_deepseek_ocr"):
        assert DeepSeekOCRLoader(empty, engine=engine).load() == []
    assert "no images or PDFs" in caplog.text


def test_pages_select_pdf_pages_and_single_images_are_read_once(corpus):
    engine = ScriptedEngine(FREE)
    loader = DeepSeekOCRLoader(
        [corpus / "a.png", corpus / "doc.pdf"], engine=engine, pages=[2, 0, -1]
    )
    assert [_keys(d) for d in loader.load()] == [
        ("a.png", 0),
        ("doc.pdf", 2),
        ("doc.pdf", 0),
        ("doc.pdf", 2),
    ]


# --------------------------------------------------------------------------------------------
# laziness


def test_lazy_load_renders_and_runs_one_chunk_at_a_time(tmp_path, monkeypatch):
    pdf = _pdf(tmp_path / "long.pdf", 30)
    rendered: list[int] = []
    real = loader_module.iter_page_results

    def counting(*args, **kwargs):
        for item in real(*args, **kwargs):
            rendered.append(item.page)
            yield item

    monkeypatch.setattr(loader_module, "iter_page_results", counting)
    engine = ScriptedEngine(FREE, batch_size=4)
    docs = DeepSeekOCRLoader(pdf, engine=engine).lazy_load()

    first = next(docs)
    assert first.metadata["page"] == 0
    assert len(engine.calls) == 1
    assert len(rendered) == 4  # only the first chunk was rendered
    for _ in range(3):
        next(docs)
    assert (len(engine.calls), len(rendered)) == (1, 4)
    fifth = next(docs)
    assert fifth.metadata["page"] == 4
    assert (len(engine.calls), len(rendered)) == (2, 8)

    rest = list(docs)
    assert [d.metadata["page"] for d in [first, *rest]][-1] == 29
    assert len(rest) == 25
    assert [len(call) for call in engine.calls] == [4] * 7 + [2]
    assert [r.page for call in engine.calls for r in call] == list(range(30))


class ForgetfulEngine(ScriptedEngine):
    """A scripted engine that keeps no reference to the requests (and their images)."""

    def generate(self, requests, *, on_token=None):
        self.sizes = [*getattr(self, "sizes", []), len(requests)]
        return [self._one(r) for r in requests]


def test_lazy_load_never_holds_more_than_a_chunk_of_page_images(tmp_path, monkeypatch):
    import weakref

    pdf = _pdf(tmp_path / "long.pdf", 30)
    alive_max = 0
    refs: list[weakref.ref] = []
    real = loader_module.iter_page_results

    def tracking(*args, **kwargs):
        nonlocal alive_max
        for item in real(*args, **kwargs):
            refs.append(weakref.ref(item.image))
            alive_max = max(alive_max, sum(ref() is not None for ref in refs))
            yield item

    monkeypatch.setattr(loader_module, "iter_page_results", tracking)
    engine = ForgetfulEngine(FREE, batch_size=4)
    count = sum(1 for _doc in DeepSeekOCRLoader(pdf, engine=engine).lazy_load())
    assert count == 30
    assert len(refs) == 30
    assert engine.sizes == [4] * 7 + [2]
    # the chunk on the engine, the next chunk read ahead, and the page being rendered
    assert alive_max <= 4 + 4 + 1


@pytest.mark.parametrize("window", [1, 3])
async def test_alazy_load_holds_at_most_its_window_of_page_images(tmp_path, monkeypatch, window):
    import weakref

    pdf = _pdf(tmp_path / "long.pdf", 30)
    alive_max = 0
    refs: list[weakref.ref] = []
    real = loader_module.iter_page_results

    def tracking(*args, **kwargs):
        nonlocal alive_max
        for item in real(*args, **kwargs):
            refs.append(weakref.ref(item.image))
            alive_max = max(alive_max, sum(ref() is not None for ref in refs))
            yield item

    monkeypatch.setattr(loader_module, "iter_page_results", tracking)
    engine = ForgetfulEngine(FREE, batch_size=4)
    loader = DeepSeekOCRLoader(pdf, engine=engine, max_concurrency=window)
    pages = [doc.metadata["page"] async for doc in loader.alazy_load()]
    assert pages == list(range(30))
    assert alive_max <= window * 4


def test_batch_size_override(tmp_path):
    pdf = _pdf(tmp_path / "d.pdf", 5)
    engine = ScriptedEngine(FREE, batch_size=64)
    assert len(DeepSeekOCRLoader(pdf, engine=engine).load()) == 5
    assert [len(call) for call in engine.calls] == [5]
    engine.calls.clear()
    assert len(DeepSeekOCRLoader(pdf, engine=engine, batch_size=2).load()) == 5
    assert [len(call) for call in engine.calls] == [2, 2, 1]
    with pytest.raises(ConfigurationError, match="batch_size"):
        DeepSeekOCRLoader(pdf, engine=engine, batch_size=0)


def test_closing_the_lazy_iterator_stops_rendering(tmp_path, monkeypatch):
    pdf = _pdf(tmp_path / "long.pdf", 30)
    rendered: list[int] = []
    real = loader_module.iter_page_results

    def counting(*args, **kwargs):
        for item in real(*args, **kwargs):
            rendered.append(item.page)
            yield item

    monkeypatch.setattr(loader_module, "iter_page_results", counting)
    engine = ScriptedEngine(FREE, batch_size=4)
    docs = DeepSeekOCRLoader(pdf, engine=engine).lazy_load()
    next(docs)
    docs.close()
    # the first chunk, the chunk read ahead, the page being rendered -- and then no more
    assert len(rendered) <= 4 + 4 + 1
    assert not any(t.name == "deepseek-ocr-read-ahead" for t in threading.enumerate())
    assert len(engine.calls) == 1


def test_progress_bar_counts_pages(corpus, capsys):
    DeepSeekOCRLoader(corpus, engine=ScriptedEngine(FREE), show_progress=True).load()
    err = capsys.readouterr().err
    assert "5/5" in err
    assert "page" in err


# --------------------------------------------------------------------------------------------
# async


class GatedAsyncEngine(ScriptedEngine):
    """Async engine that records how many agenerate calls overlap.

    The first call waits until a second one has started, so a loader that awaits one
    chunk at a time fails (TimeoutError) instead of passing; later chunks finish before
    earlier ones, so the order of the output is the loader's doing.
    """

    def __init__(self, script, **kwargs):
        super().__init__(script, **kwargs)
        self.in_flight = 0
        self.max_in_flight = 0
        self.acalls: list[list[int | None]] = []
        self._second: asyncio.Event | None = None

    def generate(self, requests, *, on_token=None):
        raise AssertionError("alazy_load must use agenerate")

    async def agenerate(self, requests, *, on_token=None):
        if self._second is None:
            self._second = asyncio.Event()
        self.acalls.append([r.page for r in requests])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if len(self.acalls) == 1:
                await asyncio.wait_for(self._second.wait(), timeout=30)
            else:
                self._second.set()
            await asyncio.sleep(0)
            return [self._one(r) for r in requests]
        finally:
            self.in_flight -= 1


async def test_alazy_load_runs_chunks_concurrently_and_keeps_page_order(tmp_path):
    pdf = _pdf(tmp_path / "long.pdf", 10)
    engine = GatedAsyncEngine(lambda r: f"page {r.page}", batch_size=3)
    loader = DeepSeekOCRLoader(pdf, engine=engine, max_concurrency=3)
    docs = [doc async for doc in loader.alazy_load()]
    assert [d.metadata["page"] for d in docs] == list(range(10))
    assert [d.page_content for d in docs] == [f"page {i}" for i in range(10)]
    assert engine.max_in_flight > 1
    assert engine.max_in_flight <= 3
    assert [len(call) for call in engine.acalls] == [3, 3, 3, 1]


async def test_alazy_load_window_of_one_is_sequential(tmp_path):
    pdf = _pdf(tmp_path / "d.pdf", 4)
    engine = ScriptedEngine(FREE, batch_size=2)
    loader = DeepSeekOCRLoader(pdf, engine=engine, max_concurrency=1)
    docs = [doc async for doc in loader.alazy_load()]
    assert [d.metadata["page"] for d in docs] == [0, 1, 2, 3]


async def test_alazy_load_matches_lazy_load_in_every_mode(corpus):
    script = _by_page({("doc.pdf", 1): LOOP, ("b.png", None): FREE})
    for mode in ("page", "single", "elements"):
        sync_docs = DeepSeekOCRLoader(corpus, engine=ScriptedEngine(script), mode=mode).load()
        engine = ScriptedEngine(script, batch_size=2)
        async_docs = [
            d async for d in DeepSeekOCRLoader(corpus, engine=engine, mode=mode).alazy_load()
        ]
        assert async_docs == sync_docs
    assert await DeepSeekOCRLoader(corpus, engine=ScriptedEngine(script)).aload() == (
        DeepSeekOCRLoader(corpus, engine=ScriptedEngine(script)).load()
    )


async def test_breaking_out_of_alazy_load_cancels_work(tmp_path):
    pdf = _pdf(tmp_path / "long.pdf", 12)
    engine = ScriptedEngine(FREE, batch_size=2)
    stream = DeepSeekOCRLoader(pdf, engine=engine, max_concurrency=2).alazy_load()
    first = await anext(stream)
    await stream.aclose()
    assert first.metadata["page"] == 0
    assert len(engine.calls) <= 3  # the window, not the document


# --------------------------------------------------------------------------------------------
# on_error over a mixed corpus: every good page exactly once, every failure reported


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    _png(folder / "a.png", seed=1)
    _png(folder / "b.png", seed=2)
    buf = io.BytesIO()
    noise_image(64, 64, seed=3).save(buf, format="PNG")
    (folder / "corrupt.png").write_bytes(buf.getvalue()[:80])  # truncated
    (folder / "fake.png").write_text("this is text, not a PNG")
    _pdf(folder / "doc.pdf", 3)
    return folder


MIXED_GOOD = [("a.png", 0), ("b.png", 0), ("doc.pdf", 0), ("doc.pdf", 2)]
MIXED_FAILED = [
    ("corrupt.png", None, "CorruptInputError"),
    ("doc.pdf", 1, "GenerationError"),  # the engine fails on this page
    ("doc.pdf", 3, "PageOutOfRangeError"),
    ("fake.png", None, "UnsupportedInputError"),
]


def _mixed_engine(**kwargs) -> ScriptedEngine:
    def script(request: OCRRequest):
        if Path(request.source).name == "doc.pdf" and request.page == 1:
            return GenerationError("the model failed on this page")
        return TABLE

    return ScriptedEngine(script, **kwargs)


def _mixed_loader(folder: Path, on_error: str, **kwargs) -> DeepSeekOCRLoader:
    return DeepSeekOCRLoader(folder, pages=[0, 1, 2, 3], on_error=on_error, **kwargs)


def test_on_error_raise_raises_the_typed_error_after_the_good_pages(mixed):
    docs = _mixed_loader(mixed, "raise", engine=_mixed_engine()).lazy_load()
    got = []

    def consume():
        for doc in docs:
            got.append(_keys(doc))

    with pytest.raises(CorruptInputError) as info:
        consume()
    assert got == [("a.png", 0), ("b.png", 0)]
    assert info.value.source == str(mixed / "corrupt.png")


def test_on_error_skip_logs_each_failure_and_keeps_every_good_page(mixed, caplog):
    with caplog.at_level(logging.WARNING, logger="langchain_deepseek_ocr"):
        docs = _mixed_loader(mixed, "skip", engine=_mixed_engine(batch_size=3)).load()
    assert Counter(_keys(d) for d in docs) == Counter(MIXED_GOOD)
    assert all("error" not in d.metadata for d in docs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(MIXED_FAILED)
    for (name, page, error_type), message in zip(MIXED_FAILED, warnings, strict=True):
        assert "skipped" in message
        assert str(mixed / name) in message
        assert error_type in message
        assert (f"(page {page})" in message) == (page is not None)


def _check_recorded(mixed: Path, docs: list[Document]) -> None:
    good = [_keys(d) for d in docs if "error" not in d.metadata]
    failed = [
        (Path(d.metadata["source"]).name, d.metadata.get("page"), d.metadata["error_type"])
        for d in docs
        if "error" in d.metadata
    ]
    assert good == MIXED_GOOD
    assert sorted(failed, key=str) == sorted(MIXED_FAILED, key=str)
    for doc in docs:
        if "error" in doc.metadata:
            assert doc.page_content == ""
            assert doc.metadata["error"]
            assert doc.metadata["source"].startswith(str(mixed))
    # in stream order: pages in, documents out, one each
    assert [(Path(d.metadata["source"]).name, d.metadata.get("page")) for d in docs] == [
        ("a.png", 0),
        ("b.png", 0),
        ("corrupt.png", None),
        ("doc.pdf", 0),
        ("doc.pdf", 1),
        ("doc.pdf", 2),
        ("doc.pdf", 3),
        ("fake.png", None),
    ]
    _assert_scalar_metadata(docs)


def test_on_error_record_yields_an_error_document_in_place(mixed, caplog):
    with caplog.at_level(logging.WARNING, logger="langchain_deepseek_ocr"):
        docs = _mixed_loader(mixed, "record", engine=_mixed_engine(batch_size=2)).load()
    _check_recorded(mixed, docs)
    assert sum("recorded" in r.getMessage() for r in caplog.records) == len(MIXED_FAILED)


async def test_on_error_record_async(mixed):
    engine = _mixed_engine(batch_size=2)
    docs = [d async for d in _mixed_loader(mixed, "record", engine=engine).alazy_load()]
    _check_recorded(mixed, docs)


def test_on_error_in_single_mode(mixed):
    docs = _mixed_loader(mixed, "record", engine=_mixed_engine(), mode="single").load()
    joined = [d for d in docs if "error" not in d.metadata]
    assert [Path(d.metadata["source"]).name for d in joined] == ["a.png", "b.png", "doc.pdf"]
    pdf = joined[2]
    assert pdf.page_content.count("\f") == 1  # pages 0 and 2 made it
    assert pdf.metadata["total_pages"] == 3
    assert sum("error" in d.metadata for d in docs) == len(MIXED_FAILED)


# --------------------------------------------------------------------------------------------
# the tiny real model, sync and async


def test_tiny_model_sync_and_async_agree(v1_engine, corpus):
    # 8 new tokens: every page is cut off, so recovery would run each twice; not tested here
    off = RecoveryPolicy(enabled=False)
    loader = DeepSeekOCRLoader(corpus, engine=v1_engine, resolution="tiny", recovery=off)
    docs = loader.load()
    assert [_keys(d) for d in docs] == [
        ("a.png", 0),
        ("b.png", 0),
        ("doc.pdf", 0),
        ("doc.pdf", 1),
        ("doc.pdf", 2),
    ]
    assert all(d.metadata["model"] == v1_engine.model_name for d in docs)
    assert all(d.metadata["vision_tokens"] == 73 for d in docs)
    assert all(0 < d.metadata["output_tokens"] <= 8 for d in docs)
    assert asyncio.run(loader.aload()) == docs
    _assert_scalar_metadata(docs)


# --------------------------------------------------------------------------------------------
# blob parsers


def test_generic_loader_with_the_parser(corpus):
    from langchain_community.document_loaders.blob_loaders import FileSystemBlobLoader
    from langchain_community.document_loaders.generic import GenericLoader

    engine = ScriptedEngine(TABLE)
    loader = GenericLoader(
        FileSystemBlobLoader(corpus, glob="**/*", suffixes=[".png", ".pdf"]),
        DeepSeekOCRParser(engine=engine),
    )
    docs = loader.load()
    assert sorted(_keys(d) for d in docs) == sorted(
        [("a.png", 0), ("b.png", 0), ("doc.pdf", 0), ("doc.pdf", 1), ("doc.pdf", 2)]
    )
    assert all(set(d.metadata) == PAGE_KEYS for d in docs)
    assert {d.metadata["source"] for d in docs} == {
        str(corpus / n) for n in ("a.png", "b.png", "doc.pdf")
    }
    _assert_scalar_metadata(docs)


def test_parser_on_in_memory_blobs_keeps_blob_metadata(corpus):
    from langchain_core.document_loaders import Blob

    data = (corpus / "a.png").read_bytes()
    parser = DeepSeekOCRParser(engine=ScriptedEngine(FREE), mode="single")
    (doc,) = parser.parse(Blob.from_data(data, metadata={"source": "s3://bucket/a.png", "k": 1}))
    assert doc.metadata["source"] == "s3://bucket/a.png"
    assert doc.metadata["k"] == 1
    (anon,) = parser.parse(Blob.from_data(data))
    assert anon.metadata["source"] == "<bytes>"
    bad = DeepSeekOCRParser(engine=ScriptedEngine(FREE), on_error="record")
    (err,) = bad.parse(Blob.from_data(b"not an image", metadata={"source": "x.png"}))
    assert err.metadata["error_type"] == "UnsupportedInputError"
    assert err.metadata["source"] == "x.png"
    with pytest.raises(UnsupportedInputError):
        DeepSeekOCRParser(engine=ScriptedEngine(FREE)).parse(Blob.from_data(b"not an image"))


async def test_parser_alazy_parse(corpus):
    from langchain_core.document_loaders import Blob

    parser = DeepSeekOCRParser(engine=ScriptedEngine(lambda r: f"p{r.page}", batch_size=1))
    docs = [d async for d in parser.alazy_parse(Blob.from_path(corpus / "doc.pdf"))]
    assert [d.page_content for d in docs] == ["p0", "p1", "p2"]


def _pdf_with_embedded_image(path: Path, image_size=(200, 100)) -> Path:
    import pymupdf

    buf = io.BytesIO()
    noise_image(*image_size, seed=7).save(buf, format="PNG")
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=500)
    page.insert_text((50, 60), "Quarterly report")
    page.insert_image(pymupdf.Rect(50, 100, 250, 200), stream=buf.getvalue())
    doc.new_page(width=400, height=500).insert_text((50, 60), "No images here")
    doc.save(path)
    doc.close()
    return path


def test_pymupdf_loader_ocrs_embedded_images(tmp_path):
    from langchain_community.document_loaders import PyMuPDFLoader

    from langchain_deepseek_ocr._parsers import DeepSeekOCRImageBlobParser

    pdf = _pdf_with_embedded_image(tmp_path / "report.pdf")
    engine = ScriptedEngine(TABLE)
    parser = DeepSeekOCRImageBlobParser(engine=engine)
    docs = PyMuPDFLoader(str(pdf), extract_images=True, images_parser=parser).load()
    assert len(docs) == 2
    assert "Quarterly report" in docs[0].page_content
    assert parse_output(TABLE).text in docs[0].page_content
    assert parse_output(TABLE).text not in docs[1].page_content
    assert len(engine.calls) == 1
    (request,) = engine.calls[0]
    assert request.image.size == (200, 100)  # the embedded image itself, not the page
    assert request.image.mode == "RGB"


def test_image_blob_parser_contract():
    from langchain_community.document_loaders.parsers.images import BaseImageBlobParser
    from langchain_core.document_loaders import Blob

    from langchain_deepseek_ocr._parsers import DeepSeekOCRImageBlobParser

    parser = DeepSeekOCRImageBlobParser(engine=ScriptedEngine(FREE), task="free")
    assert isinstance(parser, BaseImageBlobParser)
    assert DeepSeekOCRImageBlobParser.__name__ == "DeepSeekOCRImageBlobParser"
    buf = io.BytesIO()
    noise_image(50, 40).save(buf, format="PNG")
    (doc,) = parser.lazy_parse(Blob.from_data(buf.getvalue(), mime_type="image/png"))
    assert doc.page_content == parse_output(FREE).text

    failing = DeepSeekOCRImageBlobParser(
        engine=ScriptedEngine(lambda r: GenerationError("boom")), on_error="skip"
    )
    assert failing._analyze_image(noise_image(50, 40)) == ""
    with pytest.raises(GenerationError):
        DeepSeekOCRImageBlobParser(
            engine=ScriptedEngine(lambda r: GenerationError("boom"))
        )._analyze_image(noise_image(50, 40))
    with pytest.raises(ConfigurationError):
        DeepSeekOCRImageBlobParser(engine=ScriptedEngine(FREE), on_error="record")


def test_image_blob_parser_without_langchain_community(monkeypatch):
    import langchain_deepseek_ocr._parsers as parsers

    monkeypatch.setitem(sys.modules, "langchain_community.document_loaders.parsers.images", None)
    stub = parsers._load_image_blob_parser()
    with pytest.raises(ImportError, match=r"langchain-deepseek-ocr\[community\]"):
        stub(engine=ScriptedEngine(FREE))


def test_modules_do_not_import_langchain_community():
    code = (
        "import sys\n"
        "import langchain_deepseek_ocr._documents, langchain_deepseek_ocr._loader\n"
        "import langchain_deepseek_ocr._parsers\n"
        "print(sorted(m for m in sys.modules if m.startswith('langchain_community')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "[]"


def test_result_documents_round_trip_through_ocr_results(corpus):
    """Documents carry what the OCRResult said (the helper is the only mapping)."""
    engine = ScriptedEngine(TABLE)
    results = list(DeepSeekOCR(engine=engine).ocr_document(corpus / "doc.pdf"))
    assert all(isinstance(r, OCRResult) for r in results)
    via_helper = [d for r in results for d in result_to_documents(r, total_pages=3)]
    via_loader = DeepSeekOCRLoader(corpus / "doc.pdf", engine=ScriptedEngine(TABLE)).load()
    assert via_helper == via_loader


def test_lazy_load_reads_the_next_chunk_while_the_engine_works(tmp_path):
    """Sync lazy_load: chunk k+1 is rendered and prefetched while chunk k is on the engine."""
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
            if requests[0].page == 0:
                waits.append(next_chunk_ready.wait(10))
            return super().generate(requests, **kwargs)

    path = tmp_path / "seven.pdf"
    path.write_bytes(make_pdf([(100 + i, 200) for i in range(7)]))
    engine = Prefetching("text", batch_size=3)
    docs = list(DeepSeekOCRLoader(str(path), engine=engine).lazy_load())
    assert waits == [True]  # pages 3-5 were read while pages 0-2 were on the engine
    assert [d.metadata["page"] for d in docs] == list(range(7))
    assert [[r.page for r in call] for call in engine.calls] == [[0, 1, 2], [3, 4, 5], [6]]
    assert sorted(seen) == list(range(7))
