"""TransformersEngine on tiny v1 and v2 checkpoints: every mode, batching, streaming, limits."""

import asyncio
import threading

import pytest
import torch

from conftest import noise_image
from langchain_deepseek_ocr import (
    ConfigurationError,
    EngineOutput,
    EngineTimeoutError,
    GenerationError,
    NGramGuard,
    OCREngine,
    OCRRequest,
    Resolution,
    TransformersEngine,
)
from langchain_deepseek_ocr._preprocess import count_image_tokens
from langchain_deepseek_ocr._tasks import build_prompt, resolution_spec

SHAPES = [(1191, 1684), (600, 500), (2000, 1000), (500, 1500)]


def _request(size, task="markdown", **kw):
    return OCRRequest(
        image=noise_image(*size, seed=size[0] + size[1]), prompt=build_prompt(task), **kw
    )


def test_engines_implement_the_protocol(v1_engine, v2_engine):
    assert isinstance(v1_engine, OCREngine)
    assert isinstance(v2_engine, OCREngine)
    assert v1_engine.family.value == "v1"
    assert v2_engine.family.value == "v2"


@pytest.mark.parametrize("mode", ["tiny", "small", "base", "large", "gundam"])
def test_v1_every_mode_runs_with_the_expected_token_count(v1_engine, mode):
    requests = [_request(size, resolution=Resolution(mode)) for size in SHAPES]
    outputs = v1_engine.generate(requests)
    for size, out in zip(SHAPES, outputs, strict=True):
        assert isinstance(out, EngineOutput), out
        assert out.vision_tokens == count_image_tokens(*size, resolution_spec("v1", mode))
        assert out.resolution == mode
        assert 1 <= out.output_tokens <= 8
        assert out.prompt_tokens > out.vision_tokens


def test_v1_counts_named_in_the_spec(v1_engine):
    a4 = (1191, 1684)
    expected = {"tiny": 73, "small": 111, "base": 273, "large": 421, "gundam": 903}
    outs = v1_engine.generate([_request(a4, resolution=Resolution(m)) for m in expected])
    assert [o.vision_tokens for o in outs] == list(expected.values())


@pytest.mark.parametrize("mode", ["small", "base", "gundam"])
def test_v2_every_mode_runs_with_the_expected_token_count(v2_engine, mode):
    outputs = v2_engine.generate([_request(size, resolution=Resolution(mode)) for size in SHAPES])
    for size, out in zip(SHAPES, outputs, strict=True):
        assert isinstance(out, EngineOutput), out
        assert out.vision_tokens == count_image_tokens(*size, resolution_spec("v2", mode))
    if mode == "gundam":
        assert outputs[0].vision_tokens == 1121


def test_v1_nine_tiles(tiny_v1_dir):
    engine = TransformersEngine(str(tiny_v1_dir), device="cpu", max_new_tokens=2, max_tiles=9)
    out = engine.generate([_request((2000, 2000))])[0]
    assert out.vision_tokens == 1203


def test_a_resolution_the_family_lacks_fails_only_that_page(v2_engine):
    outs = v2_engine.generate(
        [
            _request((600, 500)),
            _request((600, 500), resolution=Resolution.TINY),
            _request((800, 900)),
        ]
    )
    assert isinstance(outs[0], EngineOutput)
    assert isinstance(outs[1], ConfigurationError)
    assert "tiny" in str(outs[1])
    assert isinstance(outs[2], EngineOutput)


@pytest.mark.parametrize("engine_name", ["v1_engine", "v2_engine"])
def test_batched_equals_sequential(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    reqs = [_request(size) for size in SHAPES] + [_request((700, 700), task="free")]
    batched = engine.generate(reqs)
    single = [engine.generate([r])[0] for r in reqs]
    assert [b.token_ids for b in batched] == [s.token_ids for s in single]
    assert [b.raw for b in batched] == [s.raw for s in single]


def test_greedy_is_deterministic(v1_engine):
    req = _request((900, 1200))
    assert v1_engine.generate([req])[0].token_ids == v1_engine.generate([req])[0].token_ids


def test_streaming_gives_the_same_text(v1_engine, v2_engine):
    for engine in (v1_engine, v2_engine):
        req = _request((800, 600), max_new_tokens=24)
        pieces = list(engine.stream(req))
        assert "".join(pieces) == engine.generate([req])[0].raw
        seen: list[tuple[int, str]] = []
        engine.generate([req, req], on_token=lambda i, t, bag=seen: bag.append((i, t)))
        assert {i for i, _ in seen} <= {0, 1}


async def test_async_paths(v2_engine):
    req = _request((640, 640))
    out = (await v2_engine.agenerate([req]))[0]
    assert out.token_ids == v2_engine.generate([req])[0].token_ids
    pieces = [p async for p in v2_engine.astream(req)]
    assert "".join(pieces) == out.raw
    results = await asyncio.gather(*(v2_engine.agenerate([req]) for _ in range(3)))
    assert all(r[0].token_ids == out.token_ids for r in results)


def test_finish_reasons_length_and_stop(tiny_v1_dir):
    engine = TransformersEngine(str(tiny_v1_dir), device="cpu", max_new_tokens=5).load()
    req = _request((600, 500))
    out = engine.generate([req])[0]
    if out.finish_reason == "length":
        assert out.output_tokens == 5
    # Make end-of-sequence the only sensible next token: then the page stops at once.
    head = engine._loaded.model.lm_head.weight
    eos = engine._loaded.special.eos
    saved = head.detach().clone()
    stopped = []
    try:
        for sign in (1.0, -1.0):
            with torch.no_grad():
                head.zero_()
                head[eos] = sign * 50.0
            stopped.append(engine.generate([req])[0])
    finally:
        with torch.no_grad():
            head.copy_(saved)
    stops = [o for o in stopped if o.finish_reason == "stop"]
    assert stops, [o.token_ids for o in stopped]
    assert stops[0].output_tokens == 1
    assert stops[0].raw == ""


def test_max_new_tokens_is_capped_by_the_context(tmp_path):
    from langchain_deepseek_ocr.testing import build_tiny_v1

    folder = build_tiny_v1(tmp_path / "short", max_positions=300)
    engine = TransformersEngine(str(folder), device="cpu", max_new_tokens=1000)
    out = engine.generate([_request((600, 500), resolution=Resolution.TINY)])[0]
    assert out.prompt_tokens + out.output_tokens <= 300
    too_long = engine.generate([_request((1191, 1684))])[0]
    assert isinstance(too_long, ConfigurationError)
    assert "context" in str(too_long)


def _repeated_ngrams(ids, n, window):
    count = 0
    for end in range(n, len(ids) + 1):
        gram = tuple(ids[end - n : end])
        lo = max(0, end - window)
        earlier = {tuple(ids[i : i + n]) for i in range(lo, end - n)}
        count += gram in earlier
    return count


def test_ngram_guard_prevents_repeats(tiny_v1_dir):
    guard = NGramGuard(ngram_size=3, window_size=40, whitelist=())
    guarded = TransformersEngine(
        str(tiny_v1_dir), device="cpu", max_new_tokens=40, ngram_guard=guard
    )
    free = TransformersEngine(str(tiny_v1_dir), device="cpu", max_new_tokens=40, ngram_guard=False)
    reqs = [_request(size) for size in SHAPES]
    loose = [o.token_ids for o in free.generate(reqs)]
    tight = [o.token_ids for o in guarded.generate(reqs)]
    assert sum(_repeated_ngrams(ids, 3, 40) for ids in loose) > 0, "tiny model should loop"
    assert all(_repeated_ngrams(ids, 3, 40) == 0 for ids in tight)
    # a per-request guard overrides the engine's
    per_request = free.generate([_request(SHAPES[0], ngram_guard=guard)])[0]
    assert per_request.token_ids == tight[0]


def test_timeout_and_cancel(tiny_v1_dir):
    engine = TransformersEngine(str(tiny_v1_dir), device="cpu", max_new_tokens=3000, timeout=0.05)
    out = engine.generate([_request((600, 500))])[0]
    assert isinstance(out, EngineTimeoutError)
    assert "time limit" in str(out)

    engine = TransformersEngine(
        str(tiny_v1_dir), device="cpu", max_new_tokens=3000, ngram_guard=False
    )
    started = threading.Event()

    def on_token(_i, _t):
        if not started.is_set():
            started.set()
            engine.cancel()

    out = engine.generate([_request((600, 500))], on_token=on_token)[0]
    assert isinstance(out, EngineTimeoutError)
    assert "cancelled" in str(out)
    # the engine is usable again afterwards
    assert isinstance(engine.generate([_request((600, 500), max_new_tokens=3)])[0], EngineOutput)


def test_cancelling_one_caller_does_not_stop_another(tiny_v1_dir):
    """Two callers share an engine: an agenerate task cancelled while it waits for the model
    must not stop the call that is running, and ends in CancelledError itself."""
    engine = TransformersEngine(str(tiny_v1_dir), device="cpu", max_new_tokens=12)
    page = _request((600, 500))
    expected = engine.generate([page])[0]
    running = threading.Event()
    other_cancelled = threading.Event()

    def on_token(_i, _t):
        if not running.is_set():
            running.set()
            assert other_cancelled.wait(30)  # hold this call until the other is cancelled

    box: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: box.setdefault("out", engine.generate([page], on_token=on_token)[0])
    )
    worker.start()
    assert running.wait(30)

    async def cancel_a_waiting_call():
        task = asyncio.create_task(engine.agenerate([page]))
        await asyncio.sleep(0.2)  # it waits for the model, which the other call holds
        task.cancel()
        await asyncio.sleep(0.2)  # the cancellation reaches agenerate, which stops its call
        other_cancelled.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_a_waiting_call())
    worker.join(60)
    out = box["out"]
    assert isinstance(out, EngineOutput), out  # the running call was not stopped
    assert out.token_ids == expected.token_ids


def test_bad_engine_options():
    with pytest.raises(ConfigurationError):
        TransformersEngine("x", batch_size=0)
    with pytest.raises(ConfigurationError):
        TransformersEngine("x", max_new_tokens=0)


# -- batching, prefetching and the pipeline ------------------------------------------------


def _planned(engine, requests):
    loaded = engine._ensure_loaded()
    return [engine._plan(i, r, loaded) for i, r in enumerate(requests)]


def test_batches_group_by_view_size_sort_by_vision_tokens_and_stay_full(tiny_v1_dir):
    engine = TransformersEngine(str(tiny_v1_dir), device="cpu", batch_size=3)
    sizes = [(600, 500), (1191, 1684), (2000, 1000), (500, 1500), (1191, 1684), (700, 700)]
    reqs = [_request(s) for s in sizes]
    # different token limits and guards share batches; base (1024 view) joins gundam
    reqs.append(_request((900, 900), resolution=Resolution.BASE, max_new_tokens=3))
    reqs.append(_request((900, 900), ngram_guard=False))
    reqs.append(_request((900, 900), resolution=Resolution.TINY))
    batches = list(engine._batches(_planned(engine, reqs)))
    assert [len(b) for b in batches] == [3, 3, 2, 1]  # full batches; tiny (512) apart
    flat = [it for b in batches[:3] for it in b]
    tokens = [it.num_image_tokens for it in flat]
    assert tokens == sorted(tokens, reverse=True)
    assert batches[-1][0].spec.name is Resolution.TINY


def test_mixed_limits_and_guards_in_one_batch_equal_sequential(tiny_v1_dir):
    engine = TransformersEngine(
        str(tiny_v1_dir), device="cpu", max_new_tokens=12, ngram_guard=NGramGuard(3, 12, ())
    ).load()
    reqs = [
        _request((1191, 1684), max_new_tokens=4),
        _request((1191, 1684)),
        _request((600, 500), ngram_guard=False),
        _request((2000, 1000), max_new_tokens=7, ngram_guard=NGramGuard(2, 20, ())),
        _request((900, 900), resolution=Resolution.BASE, max_new_tokens=2),
    ]
    assert len(list(engine._batches(_planned(engine, reqs)))) == 1
    seen: list[tuple[int, str]] = []
    batched = engine.generate(reqs, on_token=lambda i, t: seen.append((i, t)))
    single = [engine.generate([r])[0] for r in reqs]
    assert [b.token_ids for b in batched] == [s.token_ids for s in single]
    assert [b.finish_reason for b in batched] == [s.finish_reason for s in single]
    assert batched[0].output_tokens <= 4
    assert batched[4].output_tokens <= 2
    for index, out in enumerate(batched):  # streamed text stops at each row's own limit
        assert "".join(t for i, t in seen if i == index) == out.raw


def test_vision_micro_batches_and_workers_do_not_change_tokens(tiny_v2_dir, v2_engine):
    reqs = [_request(size) for size in SHAPES]
    expected = [o.token_ids for o in v2_engine.generate(reqs)]
    for options in (
        {"vision_batch": 1, "preprocess_workers": 0},
        {"vision_batch": 1000, "preprocess_workers": 1, "batch_size": 3},
        {"vision_batch": 7, "preprocess_workers": 3, "batch_size": 2},
    ):
        engine = TransformersEngine(str(tiny_v2_dir), device="cpu", max_new_tokens=8, **options)
        assert [o.token_ids for o in engine.generate(reqs)] == expected, options
        engine.close()


@pytest.mark.parametrize("family_dir", ["tiny_v1_dir", "tiny_v2_dir"])
def test_resizing_on_the_device_gives_the_same_tokens(family_dir, request, monkeypatch):
    """The GPU path (pages resized by torch where the model is) equals PIL's, token for token."""
    from langchain_deepseek_ocr import _resample

    folder = request.getfixturevalue(family_dir)
    reqs = [_request(size) for size in SHAPES[1:3]]  # one untiled, one tiled page
    on_cpu = TransformersEngine(str(folder), device="cpu", max_new_tokens=8)
    expected = [o.token_ids for o in on_cpu.generate(reqs)]
    calls: list[tuple[int, int]] = []
    real = _resample.resize_bicubic

    def counting(pixels, size):
        calls.append(size)
        return real(pixels, size)

    monkeypatch.setattr(_resample, "resize_bicubic", counting)
    on_device = TransformersEngine(
        str(folder), device="cpu", max_new_tokens=8, resize_on_device=True
    )
    assert [o.token_ids for o in on_device.generate(reqs)] == expected
    assert len(calls) >= len(reqs)  # the resizes really ran in torch
    for engine in (on_cpu, on_device):
        engine.close()


def test_prefetch_prepares_ahead_and_gives_the_same_output(v1_engine):
    reqs = [_request(size) for size in SHAPES]
    expected = [o.token_ids for o in v1_engine.generate(reqs)]
    v1_engine.prefetch(reqs)
    assert len(v1_engine._prefetched) == len(reqs)
    for request in reqs:
        v1_engine._prefetched[id(request)][1].result()  # prepared in the background
    assert [o.token_ids for o in v1_engine.generate(reqs)] == expected
    assert not v1_engine._prefetched  # consumed
    # a request the engine cannot plan is skipped by prefetch and reported by generate
    bad = _request((600, 500), resolution=Resolution.SMALL)
    v1_engine.prefetch([bad, *reqs[:1]])
    v1_engine._prefetched.clear()


def test_a_page_that_fails_to_prepare_fails_alone(v1_engine):
    class Broken:
        size = (600, 500)
        width, height = size
        mode = "RGB"

        def resize(self, *_a, **_k):
            raise OSError("decoder died")

        def convert(self, _mode):
            return self

    reqs = [
        _request((600, 500)),
        OCRRequest(image=Broken(), prompt="Free OCR."),
        _request(SHAPES[0]),
    ]
    outs = v1_engine.generate(reqs)
    assert isinstance(outs[0], EngineOutput)
    assert isinstance(outs[1], GenerationError)
    assert "decoder died" in str(outs[1])
    assert isinstance(outs[2], EngineOutput)


def test_generate_kwargs_reach_generate(tiny_v1_dir):
    engine = TransformersEngine(
        str(tiny_v1_dir),
        device="cpu",
        max_new_tokens=6,
        generate_kwargs={"min_new_tokens": 6},
    )
    head_out = engine.generate([_request((600, 500)), _request((1191, 1684))])
    assert [o.output_tokens for o in head_out] == [6, 6]
    assert all(o.finish_reason == "length" for o in head_out)
    with pytest.raises(ConfigurationError, match="max_new_tokens"):
        TransformersEngine(str(tiny_v1_dir), generate_kwargs={"max_new_tokens": 3})
    with pytest.raises(ConfigurationError):
        TransformersEngine(str(tiny_v1_dir), preprocess_workers=-1)
    with pytest.raises(ConfigurationError):
        TransformersEngine(str(tiny_v1_dir), vision_batch=0)


def test_from_model_runs_an_in_memory_model(v1_engine, v2_engine):
    from langchain_deepseek_ocr import ModelLoadError

    for engine in (v1_engine, v2_engine):
        loaded = engine._loaded
        wrapped = TransformersEngine.from_model(
            loaded.model, loaded.tokenizer, name="memory", max_new_tokens=8
        )
        assert wrapped.family is engine.family
        assert wrapped.model_name == "memory"
        reqs = [_request(SHAPES[0]), _request(SHAPES[1])]
        assert [o.token_ids for o in wrapped.generate(reqs)] == [
            o.token_ids for o in engine.generate(reqs)
        ]
        assert wrapped.generate(reqs)[0].model == "memory"
    with pytest.raises(ModelLoadError):
        TransformersEngine.from_model(torch.nn.Linear(2, 2), v1_engine._loaded.tokenizer)
    with pytest.raises(ConfigurationError):
        TransformersEngine.from_model(
            v1_engine._loaded.model, v1_engine._loaded.tokenizer, device="cpu"
        )


def test_prefetch_keeps_at_most_two_batches(tiny_v1_dir):
    engine = TransformersEngine(str(tiny_v1_dir), device="cpu", batch_size=5).load()
    reqs = [_request((300 + i, 200)) for i in range(12)]
    engine.prefetch(reqs)
    assert len(engine._prefetched) == 10  # two batches of 5; the oldest were dropped
    assert id(reqs[0]) not in engine._prefetched
    assert id(reqs[-1]) in engine._prefetched
    engine.close()
    assert not engine._prefetched
    off = TransformersEngine(str(tiny_v1_dir), device="cpu", preprocess_workers=0).load()
    off.prefetch(reqs)
    assert not off._prefetched


def test_no_device_resize_when_it_would_not_match_pillow(tiny_v1_dir, monkeypatch, caplog):
    """A Pillow whose resampler the device resize does not reproduce: resize on the CPU."""
    from langchain_deepseek_ocr import _resample

    monkeypatch.setattr(_resample, "matches_installed_pillow", lambda: False)
    engine = TransformersEngine(
        str(tiny_v1_dir), device="cpu", max_new_tokens=2, resize_on_device=True
    ).load()
    with caplog.at_level("WARNING", logger="langchain_deepseek_ocr"):
        prepared = engine._prepare_pixels(
            noise_image(600, 500), engine._spec_for(None, engine.family), engine._loaded
        )
        engine._prepare_pixels(
            noise_image(600, 500), engine._spec_for(None, engine.family), engine._loaded
        )
    assert prepared.page_pixels is None
    assert prepared.global_pixels is not None
    assert sum("Pillow" in r.getMessage() for r in caplog.records) == 1  # warned once
