"""A scripted engine: canned model outputs for unit tests and failure injection.

It implements the engine Protocol without a model, so tests of the layers above the engine
(facade, tools, loaders, CLI rendering, recovery policies) can decide exactly what the
"model" writes for each page -- a loop at one resolution, an error on one page, a real
DeepSeek-OCR output from the shared samples. It never replaces the real engine in tests of
the model path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Literal

from langchain_deepseek_ocr._engine import EngineOutput, EngineResult, OCRRequest, TokenCallback
from langchain_deepseek_ocr._errors import DeepSeekOCRError
from langchain_deepseek_ocr._ngram import NGramGuard
from langchain_deepseek_ocr._preprocess import count_image_tokens
from langchain_deepseek_ocr._tasks import (
    ModelFamily,
    Resolution,
    resolution_spec,
    resolutions_for,
)

__all__ = ["Script", "ScriptedEngine"]

Script = Callable[[OCRRequest], "str | tuple[str, Literal['stop', 'length']] | DeepSeekOCRError"]
"""Maps a request to the raw text (optionally with a finish reason), or an error."""


class ScriptedEngine:
    """An :class:`~langchain_deepseek_ocr.OCREngine` whose outputs come from a script.

    Args:
        script: A fixed raw output for every page, or a function of the request.
        family: The model family it pretends to be (decides resolutions and token counts).
        model: The model name it reports.
        batch_size: Pages per call it reports (the facade chunks documents by it).
        record_calls: Keep every call's requests in :attr:`calls` (with their page images;
            turn it off for long runs, such as memory benchmarks).
    """

    def __init__(
        self,
        script: str | Script,
        *,
        family: ModelFamily | str = ModelFamily.V1,
        model: str = "scripted",
        batch_size: int = 8,
        record_calls: bool = True,
    ):
        self.script = script if callable(script) else (lambda _r, _s=script: _s)
        self._family = ModelFamily(family)
        self._model = model
        self.batch_size = batch_size
        self.ngram_guard = NGramGuard()
        self.record_calls = record_calls
        self.calls: list[list[OCRRequest]] = []
        """The requests of every call, in order (when ``record_calls``)."""

    @property
    def model_name(self) -> str:
        """The reported model name."""
        return self._model

    @property
    def family(self) -> ModelFamily:
        """The family it pretends to be."""
        return self._family

    @property
    def default_resolution(self) -> Resolution:
        """Gundam, as the real engines."""
        return Resolution.GUNDAM

    def resolutions(self) -> tuple[Resolution, ...]:
        """The family's resolution modes."""
        return resolutions_for(self._family)

    def _one(self, request: OCRRequest) -> EngineResult:
        try:
            spec = resolution_spec(self._family, request.resolution or self.default_resolution)
        except DeepSeekOCRError as exc:
            return exc
        out = self.script(request)
        if isinstance(out, DeepSeekOCRError):
            return out
        raw, finish = out if isinstance(out, tuple) else (out, "stop")
        tokens = max(1, len(raw) // 3)
        return EngineOutput(
            raw=raw,
            finish_reason=finish,
            vision_tokens=count_image_tokens(*request.image.size, spec),
            prompt_tokens=count_image_tokens(*request.image.size, spec) + 12,
            output_tokens=tokens + (finish == "stop"),
            seconds=0.0,
            resolution=spec.name.value,
            model=self._model,
        )

    def generate(
        self, requests: Sequence[OCRRequest], *, on_token: TokenCallback | None = None
    ) -> list[EngineResult]:
        """Return the scripted output for each request."""
        if self.record_calls:
            self.calls.append(list(requests))
        start = time.perf_counter()
        results = [self._one(r) for r in requests]
        for index, result in enumerate(results):
            if isinstance(result, EngineOutput):
                result.seconds = time.perf_counter() - start
                if on_token and result.raw:
                    on_token(index, result.raw)
        return results

    async def agenerate(
        self, requests: Sequence[OCRRequest], *, on_token: TokenCallback | None = None
    ) -> list[EngineResult]:
        """Asynchronous :meth:`generate` (yields to the loop once)."""
        await asyncio.sleep(0)
        return self.generate(requests, on_token=on_token)

    def stream(self, request: OCRRequest) -> Iterator[str]:
        """The scripted text, in one piece."""
        result = self.generate([request])[0]
        if isinstance(result, DeepSeekOCRError):
            raise result
        yield result.raw

    async def astream(self, request: OCRRequest) -> AsyncIterator[str]:
        """Asynchronous :meth:`stream`."""
        for piece in self.stream(request):
            yield piece
