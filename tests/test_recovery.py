"""Recovery from loops: retry at another resolution / with a tighter guard, keep the best."""

import json

import pytest

from conftest import SAMPLES, noise_image
from langchain_deepseek_ocr import DeepSeekOCR, GenerationError, NGramGuard, OCRResult
from langchain_deepseek_ocr._recovery import RecoveryPolicy
from langchain_deepseek_ocr.testing import ScriptedEngine

GOOD = "<|ref|>title<|/ref|><|det|>[[65, 142, 740, 255]]<|/det|>\n# Quarterly report\n"
LOOP = "# 3.1.1" + ".1" * 600


def _sample(sample_id):
    for line in SAMPLES.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        if data["id"] == sample_id:
            return data["raw"]
    raise AssertionError(sample_id)


def _loops_at(*bad):
    def script(request):
        resolution = request.resolution.value if request.resolution else "gundam"
        return LOOP if resolution in bad else GOOD

    return script


def test_a_loop_at_gundam_is_recovered_at_base():
    engine = ScriptedEngine(_loops_at("gundam"))
    result = DeepSeekOCR(engine=engine).ocr(noise_image(900, 1200))
    assert result.ok
    assert result.text.startswith("# Quarterly report")
    assert result.resolution == "base"
    assert [a.resolution for a in result.attempts] == ["gundam", "base"]
    assert [a.repetition for a in result.attempts] == [True, False]
    assert result.kept_attempt == 1
    first, second = result.attempts
    assert (first.ngram_size, first.window_size) == (30, 90)
    tighter = NGramGuard().tightened()
    assert (second.ngram_size, second.window_size) == (tighter.ngram_size, tighter.window_size)
    retried = engine.calls[1][0]
    assert retried.ngram_guard == tighter


def test_a_page_that_keeps_looping_comes_back_flagged():
    engine = ScriptedEngine(_loops_at("gundam", "base", "small"))
    policy = RecoveryPolicy(max_retries=2)
    result = DeepSeekOCR(engine=engine, recovery=policy).ocr(noise_image(900, 1200))
    assert result.repetition
    assert not result.ok
    assert [a.resolution for a in result.attempts] == ["gundam", "base", "small"]
    assert result.kept_attempt == 0
    assert result.raw == LOOP  # the original output, flagged -- not silently replaced


def test_the_shared_loop_sample_triggers_a_retry():
    loop = _sample("v1-vllm-loop-same-text-moving-box")
    engine = ScriptedEngine(lambda r: loop if r.resolution is None else GOOD)
    result = DeepSeekOCR(engine=engine).ocr(noise_image(800, 1000))
    assert result.ok
    assert len(engine.calls) == 2


def test_good_pages_are_not_retried_and_batches_retry_only_bad_pages():
    calls = []

    def script(request):
        calls.append((request.page, request.resolution))
        if request.image.size == (700, 700) and request.resolution is None:
            return LOOP
        return GOOD

    engine = ScriptedEngine(script)
    ocr = DeepSeekOCR(engine=engine)
    results = ocr.batch([noise_image(600, 600), noise_image(700, 700), noise_image(640, 480)])
    assert all(r.ok for r in results)
    assert [len(r.attempts) for r in results] == [1, 2, 1]
    assert len(engine.calls) == 2
    assert len(engine.calls[1]) == 1


def test_truncated_pages_are_retried_and_the_better_kept():
    def script(request):
        if request.resolution is None:
            return ("<|ref|>text<|/ref|><|det|>[[1, 2, 3", "length")
        return GOOD

    result = DeepSeekOCR(engine=ScriptedEngine(script)).ocr(noise_image(900, 900))
    assert result.ok
    assert result.attempts[0].truncated
    off = DeepSeekOCR(engine=ScriptedEngine(script), recovery=RecoveryPolicy(enabled=False))
    assert off.ocr(noise_image(900, 900)).truncated


def test_a_retry_that_errors_keeps_the_first_result():
    def script(request):
        if request.resolution is None:
            return LOOP
        return GenerationError("out of memory")

    result = DeepSeekOCR(engine=ScriptedEngine(script)).ocr(noise_image(900, 900))
    assert result.repetition
    assert result.attempts[1].error is not None
    assert "out of memory" in result.attempts[1].error


def test_v2_steps_down_to_base_then_small():
    engine = ScriptedEngine(_loops_at("gundam", "base"), family="v2")
    result = DeepSeekOCR(engine=engine, recovery=RecoveryPolicy(max_retries=3)).ocr(
        noise_image(900, 1200)
    )
    assert [a.resolution for a in result.attempts] == ["gundam", "base", "small"]
    assert result.ok


async def test_async_paths_recover_too():
    engine = ScriptedEngine(_loops_at("gundam"))
    ocr = DeepSeekOCR(engine=engine)
    result = await ocr.aocr(noise_image(900, 1200))
    assert result.ok
    batch = await ocr.abatch([noise_image(900, 1200), noise_image(500, 500)])
    assert [len(r.attempts) for r in batch] == [2, 2]
    assert all(isinstance(r, OCRResult) and r.ok for r in batch)


def test_documents_recover_page_by_page(three_page_pdf):
    engine = ScriptedEngine(lambda r: LOOP if (r.page == 1 and r.resolution is None) else GOOD)
    pages = list(DeepSeekOCR(engine=engine).ocr_document(three_page_pdf))
    assert [len(p.attempts) for p in pages] == [1, 2, 1]
    assert all(p.ok for p in pages)


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_no_retry_when_nothing_can_change(family):
    class FixedEngine(ScriptedEngine):
        supports_ngram_guard = False

        def resolutions(self):
            return (self.default_resolution,)

    engine = FixedEngine(LOOP, family=family)
    result = DeepSeekOCR(engine=engine).ocr(noise_image(900, 900))
    assert result.repetition
    assert len(engine.calls) == 1
