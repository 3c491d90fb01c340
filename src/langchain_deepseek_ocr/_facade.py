"""``DeepSeekOCR``: the one object users hold -- inputs in, typed results out, any engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field

from langchain_deepseek_ocr._engine import EngineOutput, OCREngine, OCRRequest
from langchain_deepseek_ocr._errors import ConfigurationError, DeepSeekOCRError
from langchain_deepseek_ocr._inputs import InputLimits, PageImage, iter_page_results, load_image
from langchain_deepseek_ocr._parse import parse_output
from langchain_deepseek_ocr._preprocess import prefetch_ahead
from langchain_deepseek_ocr._recovery import RecoveryPolicy, attempt_of, merge_attempt
from langchain_deepseek_ocr._result import OCRResult
from langchain_deepseek_ocr._tasks import (
    OCRTask,
    Resolution,
    build_prompt,
    parse_resolution,
    parse_task,
)

__all__ = ["DeepSeekOCR", "build_result"]

_CALL_OPTIONS = ("task", "ref", "resolution", "prompt", "page", "max_new_tokens")


def build_result(
    output: EngineOutput,
    request: OCRRequest,
    *,
    figure_links: Sequence[str] | Callable[[int], str] | None = None,
) -> OCRResult:
    """Combine an engine output with the parse of its text into an :class:`OCRResult`."""
    size = request.image.size
    parsed = parse_output(
        output.raw, size, finish_reason=output.finish_reason, figure_links=figure_links
    )
    return OCRResult(
        text=parsed.text,
        raw=output.raw,
        blocks=parsed.blocks,
        image_size=size,
        task=request.task.value,
        prompt=request.prompt,
        resolution=output.resolution,
        model=output.model,
        finish_reason=output.finish_reason,
        repetition=parsed.repetition,
        truncated=parsed.truncated,
        vision_tokens=output.vision_tokens,
        output_tokens=output.output_tokens,
        seconds=output.seconds,
        source=request.source,
        page=request.page,
    )


class DeepSeekOCR(RunnableSerializable[Any, OCRResult]):
    """DeepSeek-OCR as a LangChain Runnable: an image or page in, an ``OCRResult`` out.

    Inputs may be a path, bytes, a PIL image, a ``data:`` URI, or a dict
    ``{"image": ..., "task": ..., "ref": ..., "resolution": ..., "prompt": ..., "page": ...}``.
    Without ``engine`` it runs the local :class:`TransformersEngine` (keyword arguments
    other than this class's fields go to that engine).

    Setup:
        .. code-block:: bash

            pip install langchain-deepseek-ocr

    Instantiate:
        .. code-block:: python

            from langchain_deepseek_ocr import DeepSeekOCR

            ocr = DeepSeekOCR()                                  # deepseek-ai/DeepSeek-OCR, local
            ocr = DeepSeekOCR(model="/models/DeepSeek-OCR", device="cuda", batch_size=16)

    Invoke:
        .. code-block:: python

            result = ocr.ocr("scan.png")                         # markdown with layout
            result.text, result.blocks[0].label, result.blocks[0].pixel_boxes
            hits = ocr.ocr("photo.jpg", task="locate", ref="the hat")
            page3 = ocr.ocr("report.pdf", page=2, task="free")
            results = ocr.batch(["a.png", "b.png"], task="ocr")

    Async:
        .. code-block:: python

            result = await ocr.aocr("scan.png")
            results = await ocr.abatch(["a.png", "b.png"])

    Whole documents (lazily, page by page; a bad page yields its error, the rest go on):
        .. code-block:: python

            for item in ocr.ocr_document("book.pdf"):
                print(item.page, item.text if isinstance(item, OCRResult) else item)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(default=None, exclude=True)
    """The engine that runs the model (an :class:`OCREngine`); built on first use if None."""
    task: OCRTask = OCRTask.MARKDOWN
    """Default task when a call names none."""
    resolution: Resolution | None = None
    """Default resolution mode; ``None`` leaves it to the engine (gundam)."""
    max_new_tokens: int | None = None
    """Default token limit per page; ``None`` leaves it to the engine."""
    limits: InputLimits = Field(default_factory=InputLimits)
    """Caps on input size, pixels and pages, and the PDF rendering dpi."""
    recovery: RecoveryPolicy = Field(default_factory=RecoveryPolicy)
    """Retries of pages that loop or are cut off (on by default)."""

    def __init__(self, engine: OCREngine | None = None, **kwargs: Any):
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in type(self).model_fields}
        if engine is None:
            from langchain_deepseek_ocr._transformers_engine import TransformersEngine

            engine = TransformersEngine(**kwargs)
        elif kwargs:
            raise ConfigurationError(
                f"engine options {sorted(kwargs)} given together with an engine; "
                "set them on the engine instead"
            )
        if isinstance(engine, DeepSeekOCR):
            engine = engine.engine
        if not _is_engine(engine):
            raise ConfigurationError(f"{type(engine).__name__} does not implement OCREngine")
        super().__init__(engine=engine, **fields)

    # -- requests ------------------------------------------------------------------------

    def _request(self, page: PageImage, options: Mapping[str, Any]) -> OCRRequest:
        task = parse_task(options.get("task") or self.task)
        resolution = options.get("resolution") or self.resolution
        return OCRRequest(
            image=page.image,
            prompt=build_prompt(task, ref=options.get("ref"), prompt=options.get("prompt")),
            task=task,
            resolution=parse_resolution(resolution) if resolution else None,
            max_new_tokens=options.get("max_new_tokens") or self.max_new_tokens,
            source=page.source,
            page=page.page,
        )

    def _split_input(self, value: Any, defaults: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        options = {k: v for k, v in defaults.items() if v is not None}
        if isinstance(value, Mapping):
            unknown = set(value) - {"image", *_CALL_OPTIONS}
            if "image" not in value or unknown:
                raise ConfigurationError(
                    "a dict input needs 'image' and may have "
                    + ", ".join(_CALL_OPTIONS)
                    + (f"; unknown keys: {sorted(unknown)}" if unknown else "")
                )
            options.update({k: v for k, v in value.items() if k != "image" and v is not None})
            value = value["image"]
        return value, options

    def _load(self, image: Any, options: Mapping[str, Any]) -> PageImage:
        return load_image(image, page=options.get("page"), limits=self.limits)

    # -- running requests: one place, with recovery --------------------------------------

    def _convert(self, requests: Sequence[OCRRequest], outputs: Sequence[Any]) -> list[Any]:
        converted: list[Any] = []
        for request, output in zip(requests, outputs, strict=True):
            if isinstance(output, DeepSeekOCRError):
                if output.source is None:
                    output.source, output.page = request.source, request.page
                converted.append(output)
            else:
                result = build_result(cast("EngineOutput", output), request)
                attempt = attempt_of(request, result, self.engine)
                converted.append(result.model_copy(update={"attempts": [attempt]}))
        return converted

    def _retries(
        self, requests: list[OCRRequest], results: list[Any]
    ) -> list[tuple[int, OCRRequest]]:
        plan = []
        for index, result in enumerate(results):
            if self.recovery.needs_retry(result):
                retry = self.recovery.next_request(requests[index], self.engine)
                if retry is not None:
                    plan.append((index, retry))
        return plan

    def _apply(
        self,
        requests: list[OCRRequest],
        results: list[Any],
        plan: list[tuple[int, OCRRequest]],
        outputs: Sequence[Any],
    ) -> None:
        retried = [retry for _index, retry in plan]
        for (index, retry), new in zip(plan, self._convert(retried, outputs), strict=True):
            attempt = attempt_of(retry, new, self.engine)
            results[index] = merge_attempt(results[index], new, attempt)
            requests[index] = retry

    def _execute(self, requests: Sequence[OCRRequest]) -> list[OCRResult | DeepSeekOCRError]:
        """Run requests on the engine, retry the pages that loop, return results or errors."""
        requests = list(requests)
        if not requests:
            return []
        results = self._convert(requests, self.engine.generate(requests))
        for _ in range(self.recovery.max_retries if self.recovery.enabled else 0):
            plan = self._retries(requests, results)
            if not plan:
                break
            self._apply(requests, results, plan, self.engine.generate([r for _i, r in plan]))
        return results

    async def _aexecute(self, requests: Sequence[OCRRequest]) -> list[OCRResult | DeepSeekOCRError]:
        """Asynchronous :meth:`_execute`."""
        requests = list(requests)
        if not requests:
            return []
        results = self._convert(requests, await self.engine.agenerate(requests))
        for _ in range(self.recovery.max_retries if self.recovery.enabled else 0):
            plan = self._retries(requests, results)
            if not plan:
                break
            outputs = await self.engine.agenerate([r for _i, r in plan])
            self._apply(requests, results, plan, outputs)
        return results

    @staticmethod
    def _one(result: OCRResult | DeepSeekOCRError) -> OCRResult:
        if isinstance(result, DeepSeekOCRError):
            raise result
        return result

    # -- single page ---------------------------------------------------------------------

    def ocr(
        self,
        image: Any,
        task: OCRTask | str | None = None,
        *,
        ref: str | None = None,
        resolution: Resolution | str | None = None,
        prompt: str | None = None,
        page: int | None = None,
        max_new_tokens: int | None = None,
    ) -> OCRResult:
        """OCR one image or one PDF page.

        Args:
            image: A path, bytes, PIL image or ``data:`` URI (or a dict, see the class).
            task: ``markdown`` (default), ``ocr``, ``free``, ``figure``, ``describe``,
                ``locate`` or ``custom``.
            ref: What to find, for ``locate``.
            resolution: ``tiny``/``small``/``base``/``large``/``gundam`` (per model family).
            prompt: A prompt of your own (replaces the task's).
            page: 0-based page of a PDF or multi-frame image (default: the first).
            max_new_tokens: Token limit for this page.

        Raises:
            DeepSeekOCRError: a typed error naming the input (see ``_errors``).
        """
        value, options = self._split_input(image, locals_options(locals()))
        page_image = self._load(value, options)
        request = self._request(page_image, options)
        return self._one(self._execute([request])[0])

    async def aocr(
        self,
        image: Any,
        task: OCRTask | str | None = None,
        *,
        ref: str | None = None,
        resolution: Resolution | str | None = None,
        prompt: str | None = None,
        page: int | None = None,
        max_new_tokens: int | None = None,
    ) -> OCRResult:
        """Asynchronous :meth:`ocr`."""
        import asyncio

        value, options = self._split_input(image, locals_options(locals()))
        page_image = await asyncio.to_thread(self._load, value, options)
        request = self._request(page_image, options)
        return self._one((await self._aexecute([request]))[0])

    def stream_text(
        self, image: Any, task: OCRTask | str | None = None, **options: Any
    ) -> Iterator[str]:
        """Yield the raw text of one page as the model writes it (tags included)."""
        value, opts = self._split_input(image, {"task": task, **options})
        request = self._request(self._load(value, opts), opts)
        yield from self.engine.stream(request)

    async def astream_text(
        self, image: Any, task: OCRTask | str | None = None, **options: Any
    ) -> AsyncIterator[str]:
        """Asynchronous :meth:`stream_text`."""
        value, opts = self._split_input(image, {"task": task, **options})
        request = self._request(self._load(value, opts), opts)
        async for piece in self.engine.astream(request):
            yield piece

    # -- many pages ----------------------------------------------------------------------

    def _prepare_many(
        self, inputs: Sequence[Any], defaults: Mapping[str, Any]
    ) -> tuple[list[OCRRequest | None], list[Any]]:
        requests: list[OCRRequest | None] = []
        outcomes: list[Any] = []
        for value in inputs:
            try:
                image, options = self._split_input(value, defaults)
                requests.append(self._request(self._load(image, options), options))
                outcomes.append(None)
            except DeepSeekOCRError as exc:
                requests.append(None)
                outcomes.append(exc)
        return requests, outcomes

    @staticmethod
    def _merge(
        requests: list[OCRRequest | None], outcomes: list[Any], results: list[Any]
    ) -> list[OCRResult | DeepSeekOCRError]:
        it = iter(results)
        return [
            outcome if request is None else next(it)
            for request, outcome in zip(requests, outcomes, strict=True)
        ]

    def batch(  # type: ignore[override]
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[OCRResult]:
        """OCR many images in as few engine calls as the engine allows.

        Args:
            inputs: Images (or dicts, see the class).
            config: Runnable config (callbacks, tags); one for all inputs.
            return_exceptions: Put each failing input's typed error in its place instead of
                raising the first one; the other inputs are processed either way.
            **kwargs: Call options applied to every input: ``task``, ``ref``,
                ``resolution``, ``prompt``, ``page``, ``max_new_tokens``.

        Returns:
            One result per input, in order.
        """
        defaults = _call_options(kwargs)
        if not inputs:
            return []
        requests, outcomes = self._prepare_many(inputs, defaults)
        live = [r for r in requests if r is not None]
        results = self._execute(live)
        return _finish_many(self._merge(requests, outcomes, results), return_exceptions)

    async def abatch(  # type: ignore[override]
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[OCRResult]:
        """Asynchronous :meth:`batch`."""
        import asyncio

        defaults = _call_options(kwargs)
        if not inputs:
            return []
        requests, outcomes = await asyncio.to_thread(self._prepare_many, inputs, defaults)
        live = [r for r in requests if r is not None]
        results = await self._aexecute(live)
        return _finish_many(self._merge(requests, outcomes, results), return_exceptions)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> OCRResult:
        """Runnable entry point: see :meth:`ocr`."""
        return self._call_with_config(
            lambda value: self.ocr(value, **_call_options(kwargs)), input, config, run_type="tool"
        )

    async def ainvoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> OCRResult:
        options = _call_options(kwargs)

        async def run(value: Any) -> OCRResult:
            return await self.aocr(value, **options)

        return await self._acall_with_config(run, input, config, run_type="tool")

    def ocr_document(
        self,
        source: Any,
        *,
        pages: Iterable[int] | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> Iterator[OCRResult | DeepSeekOCRError]:
        """OCR every page of a document (PDF, multi-frame TIFF, or a single image), lazily.

        Pages are rendered as they are needed, ``chunk_size`` at a time (the engine's batch
        size by default), so a long PDF never sits in memory whole. A page that fails
        yields its typed error in its place; an input that cannot be opened yields one error.

        Args:
            source: A path, bytes or data URI of a PDF or image.
            pages: 0-based pages to read (default: all).
            chunk_size: Pages handed to the engine per call.
            **kwargs: Call options for every page (``task``, ``resolution``...).
        """
        for _page, result in self.iter_document(
            source, pages=pages, chunk_size=chunk_size, **kwargs
        ):
            yield result

    def iter_document(
        self,
        source: Any,
        *,
        pages: Iterable[int] | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> Iterator[tuple[PageImage | None, OCRResult | DeepSeekOCRError]]:
        """Like :meth:`ocr_document`, pairing each result with its page image.

        The page image is ``None`` for a page (or a whole input) that could not be read.

        Pages are read one chunk ahead in a background thread: while the engine works on
        chunk ``k``, the pages of chunk ``k + 1`` are rendered and (on an engine with a
        ``prefetch`` method, such as :class:`TransformersEngine`) preprocessed. At most
        one chunk waits, so memory does not grow with the document.
        """
        options = _call_options(kwargs)
        size = chunk_size or engine_batch_size(self.engine)
        page_list = list(pages) if pages is not None else None

        def entries() -> Iterator[tuple[PageImage, OCRRequest] | DeepSeekOCRError]:
            for item in iter_page_results(source, pages=page_list, limits=self.limits):
                if isinstance(item, DeepSeekOCRError):
                    yield item
                else:
                    yield item, self._request(item, options)

        def request_of(entry: Any) -> OCRRequest | None:
            return None if isinstance(entry, DeepSeekOCRError) else entry[1]

        chunk: list[tuple[PageImage, OCRRequest]] = []
        for entry in prefetch_ahead(entries(), self.engine, request_of, size):
            if isinstance(entry, DeepSeekOCRError):
                # keep the order: pages before the failing one are answered first
                yield from self._run_chunk(chunk)
                chunk = []
                yield None, entry
                continue
            chunk.append(entry)
            if len(chunk) >= size:
                yield from self._run_chunk(chunk)
                chunk = []
        yield from self._run_chunk(chunk)

    def _run_chunk(
        self, chunk: list[tuple[PageImage, OCRRequest]]
    ) -> Iterator[tuple[PageImage, OCRResult | DeepSeekOCRError]]:
        if not chunk:
            return
        results = self._execute([request for _page, request in chunk])
        for (page_image, _request), result in zip(chunk, results, strict=True):
            yield page_image, result


def engine_batch_size(engine: Any) -> int:
    """Pages per engine call: the engine's ``batch_size``, else 8."""
    return max(1, int(getattr(engine, "batch_size", 8) or 1))


_ENGINE_MEMBERS = (
    "model_name",
    "family",
    "default_resolution",
    "resolutions",
    "generate",
    "agenerate",
    "stream",
    "astream",
)


def _is_engine(obj: Any) -> bool:
    """Whether ``obj`` implements :class:`OCREngine`, without reading its properties.

    ``isinstance`` against a runtime-checkable Protocol evaluates every property, and the
    local engine's ``family`` loads the checkpoint -- construction must stay lazy.
    """
    kind = type(obj)
    return all(
        hasattr(kind, name) or name in getattr(obj, "__dict__", {}) for name in _ENGINE_MEMBERS
    )


def locals_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The call options among a method's locals."""
    return {k: values[k] for k in _CALL_OPTIONS if values.get(k) is not None}


def _call_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - set(_CALL_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {sorted(unknown)}; use {', '.join(_CALL_OPTIONS)}"
        )
    return {k: v for k, v in kwargs.items() if v is not None}


def _finish_many(merged: list[OCRResult | DeepSeekOCRError], return_exceptions: bool) -> list[Any]:
    if not return_exceptions:
        for item in merged:
            if isinstance(item, DeepSeekOCRError):
                raise item
    return merged
