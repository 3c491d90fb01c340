"""The local engine: DeepSeek-OCR on Hugging Face transformers (GPU, Apple MPS or CPU).

How a ``generate`` call runs, so that the model never waits for the CPU:

1. *Plan* (cheap, no pixels): per request the resolution mode, the tile grid, the prompt's
   token ids (the ``<image>`` placeholders counted from the page size alone), the token
   limit and the n-gram guard.
2. *Batch*: pages are grouped by global-view size (the only thing that cannot differ inside
   one ``generate`` call; token limits and guards can, per row), sorted by vision tokens
   and prompt length so a batch holds pages of similar length (little left padding), and
   cut into full batches of ``batch_size``.
3. *Stage* in a worker thread, one batch ahead: the pages' pixels (``prepare_image``, in a
   small thread pool; PIL releases the GIL) and their upload to the device
   (``pixel_batch``: uint8 over the bus, normalised there; a side CUDA stream on GPUs).
   While batch ``k`` generates, batch ``k+1`` is being staged; at most two batches of
   pixels exist at once.
4. *Generate*: a batch with more than ``vision_batch`` views (global views + tiles) runs the
   vision tower in page-aligned micro-batches -- SAM materialises a ``heads x (HW)^2``
   attention bias per view, which made large batches slower than one page at a time on
   CPU -- and hands the features to ``generate`` as ``mm_encoder_outputs``; smaller
   batches pass their pixels as usual. Decoding is greedy, with per-row token limits and
   n-gram guards.

:meth:`TransformersEngine.prefetch` starts step 3's CPU part for requests a caller will
hand over next (the facade does this for the next chunk of a document).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, cast

from langchain_deepseek_ocr._checkpoint import (
    DEFAULT_MODEL,
    LoadedModel,
    load_model,
    special_tokens,
)
from langchain_deepseek_ocr._engine import EngineOutput, EngineResult, OCRRequest, TokenCallback
from langchain_deepseek_ocr._errors import (
    ConfigurationError,
    DeepSeekOCRError,
    EngineTimeoutError,
    GenerationError,
    ModelLoadError,
)
from langchain_deepseek_ocr._ngram import NGramGuard, banned_tokens
from langchain_deepseek_ocr._parse import strip_special
from langchain_deepseek_ocr._preprocess import (
    PixelBatch,
    PreparedImage,
    count_image_tokens,
    global_side,
    pixel_batch,
    prepare_image,
)
from langchain_deepseek_ocr._tasks import (
    IMAGE_TOKEN,
    ModelFamily,
    Resolution,
    ResolutionSpec,
    parse_resolution,
    resolution_spec,
    resolutions_for,
)

__all__ = ["TransformersEngine"]

logger = logging.getLogger(__name__)

_DEFAULT_GUARD = NGramGuard()

_ENGINE_GENERATE_KEYS = frozenset(
    {
        "input_ids",
        "attention_mask",
        "pixel_values",
        "pixel_values_local",
        "num_local_patches",
        "patches_grid",
        "mm_encoder_outputs",
        "max_new_tokens",
        "logits_processor",
        "stopping_criteria",
        "streamer",
        "eos_token_id",
        "pad_token_id",
        "bos_token_id",
        "use_cache",
        "do_sample",
    }
)
"""``generate`` arguments the engine sets itself (``generate_kwargs`` may not override them)."""

_PREFETCH_BATCHES = 2
"""Prefetched pages wait for their ``generate`` call, at most this many batches' worth
(oldest dropped first): a caller prefetches one chunk ahead, never a whole document."""


def _pick_device(device: str | None) -> str:
    import torch

    if device and device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _pick_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        try:
            value = getattr(torch, dtype.replace("torch.", ""))
        except AttributeError:
            raise ConfigurationError(f"unknown dtype {dtype!r}") from None
        if not isinstance(value, torch.dtype):
            raise ConfigurationError(f"unknown dtype {dtype!r}")
        return value
    return dtype


@dataclass(eq=False)
class _Item:
    """One request, planned: everything but the pixels."""

    index: int
    request: OCRRequest
    spec: ResolutionSpec
    num_image_tokens: int
    ids: list[int]
    max_new: int
    guard: NGramGuard | None
    prepared: PreparedImage | None = None


@dataclass(eq=False)
class _Staged:
    """A batch whose pixels are on the device (or the pages that failed to prepare)."""

    items: list[_Item]
    failed: list[tuple[_Item, DeepSeekOCRError]] = field(default_factory=list)
    pixels: PixelBatch | None = None


class _Control:
    """Cancellation and time limit shared by the stopping criterion of one batch."""

    def __init__(self, deadline: float | None, cancel: threading.Event | None):
        self.deadline = deadline
        self.cancel = cancel
        self.stopped = False

    def should_stop(self) -> bool:
        cancelled = self.cancel is not None and self.cancel.is_set()
        late = self.deadline is not None and time.monotonic() > self.deadline
        if cancelled or late:
            self.stopped = True
        return self.stopped


@dataclass(eq=False)
class _Call:
    """One ``generate`` call: its token callback and its own stop flag.

    Each call has its own flag, so cancelling one caller (an ``agenerate`` task, a stream
    closed early) never stops another caller's pages on the same engine.
    """

    on_token: TokenCallback | None = None
    stop: threading.Event = field(default_factory=threading.Event)


class TransformersEngine:
    """DeepSeek-OCR v1 or v2 running locally through transformers -- no remote code.

    The checkpoint is loaded on first use (or by :meth:`load`). Requests are grouped into
    batches of pages that share a global-view size, sorted by length, left-padded, and
    decoded greedily with DeepSeek's windowed no-repeat n-gram guard. Page preprocessing
    runs one batch ahead in worker threads, so the model does not wait for it.

    Setup:
        .. code-block:: bash

            pip install langchain-deepseek-ocr

    Instantiate:
        .. code-block:: python

            from langchain_deepseek_ocr import TransformersEngine

            engine = TransformersEngine(
                model="deepseek-ai/DeepSeek-OCR",  # or a local folder, or a v2 checkpoint
                device=None,          # cuda -> mps -> cpu
                batch_size=8,
                max_new_tokens=8192,
            )

    Invoke:
        .. code-block:: python

            from langchain_deepseek_ocr import DeepSeekOCR

            ocr = DeepSeekOCR(engine=engine)
            result = ocr.ocr("page.png")

    Args:
        model: Hub id or local folder of a DeepSeek-OCR checkpoint (v1 published layout,
            or v2 native). The family is detected from its config.json.
        device: ``cuda``, ``cuda:N``, ``mps``, ``cpu``; ``None`` picks cuda, then mps, then cpu.
        dtype: Torch dtype (or its name); ``None`` means bfloat16 on cuda, float32 elsewhere.
        batch_size: Most pages per ``generate`` call.
        max_new_tokens: Token limit per page (capped so prompt + output fit the context).
        ngram_guard: The no-repeat n-gram guard; ``None`` or ``False`` switches it off.
        resolution: Default resolution mode (``gundam`` when not given).
        max_tiles: Most tiles in gundam mode (v1 up to 9; upstream vLLM uses 6).
        attn_implementation: ``sdpa`` (default) or ``eager``.
        timeout: Seconds one ``generate`` batch may run before it is stopped (``None``: no limit).
        preprocess_workers: Threads that prepare pages (resize, pad) ahead of the model;
            ``0`` prepares them inline, one batch at a time, with no threads.
        vision_batch: Most views (global views + tiles) per vision-encoder call; pages are
            never split across calls. ``None``: 64 on CUDA, 8 elsewhere.
        resize_on_device: Resize pages on the model's device (byte-identical to PIL's
            bicubic resize) instead of on the CPU, so a GPU is not held back by a few CPU
            cores. ``None``: on CUDA devices only (on a CPU, PIL is the faster resizer).
        generate_kwargs: Extra keyword arguments for transformers' ``generate`` (e.g.
            ``{"min_new_tokens": 1000}`` for benchmarks); the ones the engine sets itself
            (inputs, limits, processors, special ids) cannot be overridden.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: Any = None,
        batch_size: int = 8,
        max_new_tokens: int = 8192,
        ngram_guard: NGramGuard | Literal[False] | None = _DEFAULT_GUARD,
        resolution: Resolution | str | None = None,
        max_tiles: int = 6,
        attn_implementation: str | None = None,
        timeout: float | None = None,
        preprocess_workers: int = 2,
        vision_batch: int | None = None,
        resize_on_device: bool | None = None,
        generate_kwargs: Mapping[str, Any] | None = None,
    ):
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        if max_new_tokens < 1:
            raise ConfigurationError("max_new_tokens must be at least 1")
        if preprocess_workers < 0:
            raise ConfigurationError("preprocess_workers must be 0 or more")
        if vision_batch is not None and vision_batch < 1:
            raise ConfigurationError("vision_batch must be at least 1")
        clash = sorted(set(generate_kwargs or ()) & _ENGINE_GENERATE_KEYS)
        if clash:
            raise ConfigurationError(
                f"generate_kwargs may not set {clash}: the engine sets them itself "
                "(use max_new_tokens=, ngram_guard=, timeout= instead)"
            )
        self._model_id = os.fspath(model)
        self._device_arg = device
        self._dtype_arg = dtype
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.ngram_guard: NGramGuard | None = ngram_guard or None
        self._resolution = parse_resolution(resolution) if resolution is not None else None
        self.max_tiles = max_tiles
        self.attn_implementation = attn_implementation
        self.timeout = timeout
        self.preprocess_workers = preprocess_workers
        self.vision_batch = vision_batch
        self.resize_on_device = resize_on_device
        self._warned_resize = False
        self.generate_kwargs: dict[str, Any] = dict(generate_kwargs or {})
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._calls: set[_Call] = set()  # running and waiting calls (cancel() stops them)
        self._calls_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._workers: ThreadPoolExecutor | None = None
        self._stager: ThreadPoolExecutor | None = None
        self._copy_stream: Any = None
        self._prefetched: OrderedDict[int, tuple[OCRRequest, Future[PreparedImage]]] = OrderedDict()

    supports_ngram_guard = True
    """This engine applies the n-gram guard (per request too)."""

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "in-memory",
        **options: Any,
    ) -> TransformersEngine:
        """An engine around a model already built in memory (benchmarks, custom loading).

        The model is used as it is, on its device and in its dtype: nothing is read from
        disk. It must be one of the classes :func:`~langchain_deepseek_ocr._checkpoint.load_model`
        builds (``UnlimitedOcrForConditionalGeneration`` for v1,
        ``DeepseekOcr2ForConditionalGeneration`` for v2).

        Args:
            model: The transformers model.
            tokenizer: Its ``tokenizers.Tokenizer`` (with ``<image>`` and the BOS/EOS/pad
                tokens; the ``<image>`` id must be the config's ``image_token_id``).
            name: The model name results report.
            **options: Other :class:`TransformersEngine` options (``batch_size``...);
                ``device`` and ``dtype`` are taken from the model.

        Raises:
            ModelLoadError: the model or tokenizer is not a DeepSeek-OCR pair.
        """
        for key in ("device", "dtype", "model"):
            if key in options:
                raise ConfigurationError(f"from_model takes {key} from the model; drop {key}=")
        loaded = _wrap_model(model, tokenizer, name)
        engine = cls(name, device=str(loaded.model.device), dtype=loaded.model.dtype, **options)
        if engine._resolution is not None:
            engine._spec_for(engine._resolution, loaded.family)  # validate early
        engine._loaded = loaded
        return engine

    # -- loading -------------------------------------------------------------------------

    def load(self) -> TransformersEngine:
        """Load the checkpoint now (otherwise it loads on first use).

        Raises:
            ModelLoadError: the checkpoint cannot be found or loaded.
        """
        self._ensure_loaded()
        return self

    @property
    def loaded(self) -> bool:
        """Whether the checkpoint is loaded."""
        return self._loaded is not None

    def _ensure_loaded(self) -> LoadedModel:
        if self._loaded is None:
            with self._load_lock:
                if self._loaded is None:
                    device = _pick_device(self._device_arg)
                    dtype = _pick_dtype(self._dtype_arg, device)
                    with _quiet_transformers():
                        loaded = load_model(
                            self._model_id,
                            device=device,
                            dtype=dtype,
                            attn_implementation=self.attn_implementation,
                        )
                    if self._resolution is not None:
                        self._spec_for(self._resolution, loaded.family)  # validate early
                    self._loaded = loaded
        return self._loaded

    def close(self) -> None:
        """Stop the preprocessing threads (they start again on the next call)."""
        with self._pool_lock:
            pools = (self._workers, self._stager)
            self._workers = self._stager = None
            self._prefetched.clear()
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    # -- the Protocol --------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The model (hub id or folder) this engine runs."""
        return self._model_id

    @property
    def family(self) -> ModelFamily:
        """The model family (loads the checkpoint's config if needed)."""
        return self._ensure_loaded().family

    @property
    def default_resolution(self) -> Resolution:
        """The resolution used when a request names none."""
        return self._resolution or Resolution.GUNDAM

    def resolutions(self) -> tuple[Resolution, ...]:
        """The resolution modes of the loaded model's family."""
        return resolutions_for(self.family)

    @property
    def device(self) -> str:
        """The torch device the model runs on."""
        return str(self._ensure_loaded().model.device)

    def cancel(self) -> None:
        """Stop the running (and waiting) ``generate`` calls promptly.

        Their pages end in :class:`EngineTimeoutError`; later calls are not affected.
        """
        with self._calls_lock:
            for call in self._calls:
                call.stop.set()

    def _spec_for(self, resolution: Resolution | None, family: ModelFamily) -> ResolutionSpec:
        return resolution_spec(
            family, resolution or self.default_resolution, max_tiles=self.max_tiles
        )

    def prefetch(self, requests: Sequence[OCRRequest]) -> None:
        """Start preparing these pages now, in the background, for a later :meth:`generate`.

        A caller that knows what comes next (the next chunk of a document) calls this before
        it blocks on the current call; when ``generate`` later receives the *same request
        objects*, their pixels are ready. Requests that cannot be planned are skipped here
        (``generate`` reports their errors). At most two batches of prepared pages wait;
        older ones are dropped (and prepared again if they come).
        """
        if self.preprocess_workers < 1 or not requests:
            return
        try:
            loaded = self._ensure_loaded()
        except DeepSeekOCRError:
            return  # generate() reports it
        pool = self._worker_pool()
        with self._pool_lock:
            for request in requests:
                key = id(request)
                if key in self._prefetched:
                    continue
                try:
                    spec = self._spec_for(request.resolution, loaded.family)
                except DeepSeekOCRError:
                    continue
                future = pool.submit(self._prepare_pixels, request.image, spec, loaded)
                self._prefetched[key] = (request, future)
                while len(self._prefetched) > max(8, _PREFETCH_BATCHES * self.batch_size):
                    _key, (_req, old) = self._prefetched.popitem(last=False)
                    old.cancel()

    def generate(
        self,
        requests: Sequence[OCRRequest],
        *,
        on_token: TokenCallback | None = None,
    ) -> list[EngineResult]:
        """Run OCR on a batch of pages.

        Args:
            requests: The pages.
            on_token: Called with ``(index, text)`` as each page's text grows.

        Returns:
            One :class:`EngineOutput` or typed error per request, in order.
        """
        return self._generate(requests, _Call(on_token))

    def _generate(self, requests: Sequence[OCRRequest], call: _Call) -> list[EngineResult]:
        loaded = self._ensure_loaded()
        results: list[EngineResult | None] = [None] * len(requests)
        items: list[_Item] = []
        for index, request in enumerate(requests):
            try:
                items.append(self._plan(index, request, loaded))
            except DeepSeekOCRError as exc:
                results[index] = exc
            except Exception as exc:
                results[index] = GenerationError(
                    f"cannot prepare the page: {type(exc).__name__}: {exc}",
                    source=request.source,
                    page=request.page,
                )
        with self._calls_lock:
            self._calls.add(call)
        try:
            with self._run_lock:
                for batch, staged in self._pipeline(list(self._batches(items)), loaded):
                    outputs = self._run_staged(batch, staged, loaded, call)
                    del staged  # the batch's device pixels go now, not with the next batch
                    for item, result in zip(batch, outputs, strict=True):
                        results[item.index] = result
                        item.prepared = None  # the page's pixels are no longer needed
        finally:
            with self._calls_lock:
                self._calls.discard(call)
        assert all(r is not None for r in results)  # every request was planned or failed
        return cast("list[EngineResult]", results)

    async def agenerate(
        self,
        requests: Sequence[OCRRequest],
        *,
        on_token: TokenCallback | None = None,
    ) -> list[EngineResult]:
        """Asynchronous :meth:`generate`: the model runs in a worker thread.

        Cancelling the awaiting task stops generation promptly.
        """
        call = _Call(on_token)
        task = asyncio.ensure_future(asyncio.to_thread(self._generate, requests, call))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            call.stop.set()  # this call only
            with contextlib.suppress(BaseException):
                await task
            raise

    def stream(self, request: OCRRequest) -> Iterator[str]:
        """Yield the text of one page as it is generated.

        Raises:
            DeepSeekOCRError: the page failed (raised once the stream ends).
        """
        pieces: queue.Queue[Any] = queue.Queue()
        done = object()
        box: dict[str, EngineResult] = {}

        call = _Call(lambda _i, t: pieces.put(t))

        def work() -> None:
            try:
                box["result"] = self._generate([request], call)[0]
            except BaseException as exc:
                box["result"] = GenerationError(f"{type(exc).__name__}: {exc}")
            finally:
                pieces.put(done)

        thread = threading.Thread(target=work, name="deepseek-ocr-stream", daemon=True)
        thread.start()
        try:
            while (piece := pieces.get()) is not done:
                yield piece
        finally:
            if thread.is_alive():
                call.stop.set()  # this stream only
            thread.join()
        result = box.get("result")
        if isinstance(result, DeepSeekOCRError):
            raise result

    async def astream(self, request: OCRRequest) -> AsyncIterator[str]:
        """Asynchronous :meth:`stream`."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def on_token(_i: int, text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        task = asyncio.ensure_future(self.agenerate([request], on_token=on_token))
        task.add_done_callback(lambda _t: loop.call_soon_threadsafe(pieces.put_nowait, done))
        try:
            while (piece := await pieces.get()) is not done:
                yield piece
        finally:
            if not task.done():
                task.cancel()
        result = (await task)[0]
        if isinstance(result, DeepSeekOCRError):
            raise result

    # -- planning and batching -----------------------------------------------------------

    def _plan(self, index: int, request: OCRRequest, loaded: LoadedModel) -> _Item:
        spec = self._spec_for(request.resolution, loaded.family)
        width, height = request.image.size
        if width < 1 or height < 1:
            raise ConfigurationError(
                f"the page is empty ({width}x{height} pixels)",
                source=request.source,
                page=request.page,
            )
        num_image_tokens = count_image_tokens(width, height, spec)
        tok = loaded.tokenizer
        text = f"{IMAGE_TOKEN}\n{request.prompt}"
        before, after = text.split(IMAGE_TOKEN, 1)
        ids = [loaded.special.bos]
        ids += tok.encode(before, add_special_tokens=False).ids
        ids += [loaded.special.image] * num_image_tokens
        ids += tok.encode(after, add_special_tokens=False).ids
        room = loaded.max_positions - len(ids)
        if room < 1:
            raise ConfigurationError(
                f"the prompt ({len(ids)} tokens) does not fit the model's context "
                f"({loaded.max_positions})",
                source=request.source,
                page=request.page,
            )
        max_new = min(request.max_new_tokens or self.max_new_tokens, room)
        if request.ngram_guard is False:
            guard = None
        elif request.ngram_guard is None:
            guard = self.ngram_guard
        else:
            guard = request.ngram_guard
        return _Item(index, request, spec, num_image_tokens, ids, max_new, guard)

    def _batches(self, items: list[_Item]) -> Iterator[list[_Item]]:
        """Full batches of pages that can share one ``generate`` call, similar lengths together.

        Only the global-view size must be shared (one ``pixel_values`` tensor); token limits
        and n-gram guards are applied per row, so they do not split batches. Inside a group,
        pages are sorted by vision tokens (the vision cost and most of the prompt), then
        prompt length, then token limit -- longest first -- and cut into ``batch_size``
        runs: every batch is full but the last of its group, and neighbours in a batch need
        little left padding.
        """
        groups: dict[int, list[_Item]] = {}
        for item in items:
            groups.setdefault(global_side(item.spec), []).append(item)
        for group in groups.values():
            group.sort(key=lambda it: (it.num_image_tokens, len(it.ids), it.max_new), reverse=True)
            for start in range(0, len(group), self.batch_size):
                yield group[start : start + self.batch_size]

    # -- staging: pixels prepared and uploaded one batch ahead -----------------------------

    def _worker_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(
                    max_workers=max(1, self.preprocess_workers),
                    thread_name_prefix="deepseek-ocr-prepare",
                )
            return self._workers

    def _stager_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._stager is None:
                self._stager = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="deepseek-ocr-stage"
                )
            return self._stager

    def _take_prefetched(self, item: _Item) -> Future[PreparedImage] | None:
        with self._pool_lock:
            entry = self._prefetched.pop(id(item.request), None)
        if entry is None or entry[0] is not item.request:
            return None
        return entry[1]

    def _pipeline(
        self, batches: list[list[_Item]], loaded: LoadedModel
    ) -> Iterator[tuple[list[_Item], _Staged | BaseException]]:
        """Yield each batch with its staged pixels, staging the next one meanwhile."""
        if self.preprocess_workers < 1:
            for batch in batches:
                try:
                    staged: _Staged | BaseException = self._stage(batch, loaded)
                except Exception as exc:
                    staged = exc.with_traceback(None)  # keep no frames (or their tensors)
                yield batch, staged
            return
        stager = self._stager_pool()
        pending: deque[tuple[list[_Item], Future[_Staged]]] = deque()
        upcoming = iter(batches)

        def submit_next() -> None:
            batch = next(upcoming, None)
            if batch is not None:
                pending.append((batch, stager.submit(self._stage, batch, loaded)))

        submit_next()
        try:
            while pending:
                batch, future = pending.popleft()
                try:
                    staged = future.result()
                except Exception as exc:
                    staged = exc.with_traceback(None)  # keep no frames (or their tensors)
                del future
                submit_next()  # stage batch k+1 while batch k generates
                yield batch, staged
                del staged  # hold no pixels while waiting for the next batch
        finally:
            for _batch, future in pending:
                future.cancel()

    def _stage(self, batch: list[_Item], loaded: LoadedModel) -> _Staged:
        """Prepare the pages of a batch (in parallel) and put their pixels on the device."""
        futures: list[Future[PreparedImage] | None] = [self._take_prefetched(it) for it in batch]
        if self.preprocess_workers > 1 and sum(f is None for f in futures) > 1:
            pool = self._worker_pool()  # one page per thread
            futures = [
                fut
                if fut is not None
                else pool.submit(self._prepare_pixels, it.request.image, it.spec, loaded)
                for it, fut in zip(batch, futures, strict=True)
            ]
        staged = _Staged(items=[])
        for item, future in zip(batch, futures, strict=True):
            try:
                if future is None:
                    item.prepared = self._prepare_pixels(item.request.image, item.spec, loaded)
                else:
                    item.prepared = future.result()
                if item.prepared.num_image_tokens != item.num_image_tokens:
                    raise RuntimeError("the prepared page changed size")
            except Exception as exc:
                staged.failed.append(
                    (
                        item,
                        GenerationError(
                            f"cannot prepare the page: {type(exc).__name__}: {exc}",
                            source=item.request.source,
                            page=item.request.page,
                        ),
                    )
                )
            else:
                staged.items.append(item)
        if staged.items:
            staged.pixels = self._upload(staged.items, loaded)
        return staged

    def _resizes_on_device(self, loaded: LoadedModel) -> bool:
        wanted = self.resize_on_device
        if wanted is None:
            wanted = str(loaded.model.device).startswith("cuda")
        if not wanted:
            return False
        from langchain_deepseek_ocr._resample import matches_installed_pillow

        if matches_installed_pillow():
            return True
        if not self._warned_resize:
            self._warned_resize = True
            logger.warning(
                "the device resize does not reproduce the installed Pillow's bicubic resize "
                "byte for byte; pages are resized on the CPU with Pillow instead"
            )
        return False

    def _prepare_pixels(self, image: Any, spec: ResolutionSpec, loaded: LoadedModel) -> Any:
        return prepare_image(image, spec, defer_resize=self._resizes_on_device(loaded))

    def _upload(self, items: list[_Item], loaded: LoadedModel) -> PixelBatch:
        import torch

        net = loaded.model
        device = torch.device(net.device)
        prepared = [it.prepared for it in items if it.prepared is not None]
        if device.type != "cuda":
            return pixel_batch(prepared, device=device, dtype=net.dtype)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device=device)
        with torch.cuda.stream(self._copy_stream):
            pixels = pixel_batch(prepared, device=device, dtype=net.dtype)
        self._copy_stream.synchronize()  # this (staging) thread waits, the model does not
        return pixels

    # -- generation ----------------------------------------------------------------------

    def _run_staged(
        self,
        batch: list[_Item],
        staged: _Staged | BaseException,
        loaded: LoadedModel,
        call: _Call,
    ) -> list[EngineResult]:
        """Results for ``batch`` (in its order) from its staged pixels."""
        if isinstance(staged, BaseException):
            if len(batch) > 1:  # e.g. out of memory while uploading: page by page
                _free_memory()
                return [r for item in batch for r in self._run_one(item, loaded, call)]
            return [_generation_error(batch[0], staged)]
        by_item: dict[int, EngineResult] = {id(it): err for it, err in staged.failed}
        if staged.items:
            outputs = self._run_batch(staged, loaded, call)
            for item, output in zip(staged.items, outputs, strict=True):
                by_item[id(item)] = output
        return [by_item[id(item)] for item in batch]

    def _run_one(self, item: _Item, loaded: LoadedModel, call: _Call) -> list[EngineResult]:
        try:
            staged = self._stage([item], loaded)
        except Exception as exc:
            return [_generation_error(item, exc)]
        return self._run_staged([item], staged, loaded, call)

    def _run_batch(self, staged: _Staged, loaded: LoadedModel, call: _Call) -> list[EngineResult]:
        batch = staged.items
        if call.stop.is_set():  # cancelled before this batch began: do not start it
            return [self._stopped_error(item, call) for item in batch]
        try:
            return self._generate_batch(batch, staged.pixels, loaded, call)
        except DeepSeekOCRError as exc:
            return [exc] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                return [_generation_error(batch[0], exc)]
        # One page (or the batch's memory) failed: retry the pages on their own -- outside
        # the except block, so the failed call's frames (inputs, KV cache) are freed first.
        staged.pixels = None
        _free_memory()
        return [r for item in batch for r in self._run_one(item, loaded, call)]

    def _stopped_error(self, item: _Item, call: _Call) -> EngineTimeoutError:
        return EngineTimeoutError(
            "generation was cancelled"
            if call.stop.is_set()
            else f"generation ran past the time limit ({self.timeout} s)",
            source=item.request.source,
            page=item.request.page,
        )

    def _vision_budget(self, device: Any) -> int:
        if self.vision_batch is not None:
            return self.vision_batch
        return 64 if str(device).startswith("cuda") else 8

    def _image_features(self, net: Any, pixels: PixelBatch, family: ModelFamily) -> list[Any]:
        """Run the vision tower page-aligned, at most ``vision_batch`` views per call."""
        budget = self._vision_budget(net.device)
        counts = pixels.num_local_patches
        features: list[Any] = []
        start = tile_start = 0
        while start < len(counts):
            end, views, tiles = start, 0, 0
            while end < len(counts) and (end == start or views + 1 + counts[end] <= budget):
                views += 1 + counts[end]
                tiles += counts[end]
                end += 1
            kwargs: dict[str, Any] = {
                "pixel_values": pixels.pixel_values[start:end],
                "num_local_patches": counts[start:end],
                "return_dict": True,
            }
            if tiles and pixels.pixel_values_local is not None:
                kwargs["pixel_values_local"] = pixels.pixel_values_local[
                    tile_start : tile_start + tiles
                ]
            if family is ModelFamily.V1:
                kwargs["patches_grid"] = pixels.patches_grid[start:end]
            features.extend(net.get_image_features(**kwargs).pooler_output)
            start, tile_start = end, tile_start + tiles
        return features

    def _generate_batch(
        self,
        batch: list[_Item],
        pixels: PixelBatch | None,
        loaded: LoadedModel,
        call: _Call,
    ) -> list[EngineResult]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        if pixels is None:
            raise GenerationError("the batch has no pixels")
        net = loaded.model
        device = net.device
        special = loaded.special
        width = max(len(item.ids) for item in batch)
        input_ids = torch.full((len(batch), width), special.pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            n = len(item.ids)
            input_ids[row, width - n :] = torch.tensor(item.ids, dtype=torch.long)
            attention[row, width - n :] = 1
        if device.type == "cuda":
            current = torch.cuda.current_stream(device)
            for tensor in pixels.tensors():  # made on the staging stream, used on this one
                tensor.record_stream(current)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids.to(device),
            "attention_mask": attention.to(device),
        }

        guards = [item.guard for item in batch]
        processors = LogitsProcessorList()
        if any(g is not None for g in guards):
            processors.append(_NGramProcessor(guards, width, loaded.tokenizer))
        deadline = time.monotonic() + self.timeout if self.timeout else None
        control = _Control(deadline, call.stop)
        on_token = call.on_token
        limits = [item.max_new for item in batch]
        criteria = StoppingCriteriaList([_StopCriterion(control)])
        if len(set(limits)) > 1:
            criteria.append(_RowLimits(width, limits, device))
        streamer = (
            _Streamer(loaded.tokenizer, [it.index for it in batch], on_token, special, limits)
            if on_token is not None
            else None
        )
        start = time.perf_counter()
        views = len(batch) + sum(pixels.num_local_patches)
        with torch.inference_mode():
            if views > self._vision_budget(device) and _takes_encoder_outputs(net):
                from transformers.modeling_outputs import BaseModelOutputWithPooling

                features = self._image_features(net, pixels, loaded.family)
                kwargs["mm_encoder_outputs"] = {
                    "image": BaseModelOutputWithPooling(pooler_output=features)
                }
            else:  # few views (or an older transformers): the vision tower in one call
                kwargs["pixel_values"] = pixels.pixel_values
                kwargs["num_local_patches"] = pixels.num_local_patches
                if pixels.pixel_values_local is not None:
                    kwargs["pixel_values_local"] = pixels.pixel_values_local
                if loaded.family is ModelFamily.V1:
                    kwargs["patches_grid"] = pixels.patches_grid
            out = net.generate(
                **kwargs,
                **self.generate_kwargs,
                do_sample=False,
                max_new_tokens=max(limits),
                logits_processor=processors,
                stopping_criteria=criteria,
                eos_token_id=special.eos,
                pad_token_id=special.pad,
                bos_token_id=special.bos,
                streamer=streamer,
                use_cache=True,
            )
        seconds = time.perf_counter() - start
        generated = out[:, width:].tolist()
        results: list[EngineResult] = []
        for item, row in zip(batch, generated, strict=True):
            if control.stopped:
                results.append(self._stopped_error(item, call))
                continue
            row = row[: item.max_new]
            if special.eos in row:
                cut = row.index(special.eos)
                tokens, finish, count = row[:cut], "stop", cut + 1
            else:
                tokens, finish, count = row, "length", len(row)
            raw = strip_special(loaded.tokenizer.decode(tokens, skip_special_tokens=False))
            results.append(
                EngineOutput(
                    raw=raw,
                    finish_reason=finish,  # type: ignore[arg-type]
                    vision_tokens=item.num_image_tokens,
                    prompt_tokens=len(item.ids),
                    output_tokens=count,
                    seconds=seconds,
                    resolution=item.spec.name.value,
                    model=self._model_id,
                    token_ids=tokens,
                )
            )
        return results


def _generation_error(item: _Item, exc: BaseException) -> DeepSeekOCRError:
    if isinstance(exc, DeepSeekOCRError):
        return exc
    return GenerationError(
        f"generation failed: {type(exc).__name__}: {exc}",
        source=item.request.source,
        page=item.request.page,
    )


def _takes_encoder_outputs(net: Any) -> bool:
    """Whether ``generate`` accepts pre-computed image features (transformers >= 5.2x)."""
    return _class_takes_encoder_outputs(type(net))


@lru_cache(maxsize=8)
def _class_takes_encoder_outputs(cls: type) -> bool:
    try:
        return "mm_encoder_outputs" in inspect.signature(cls.forward).parameters and hasattr(
            cls, "get_image_features"
        )
    except (TypeError, ValueError):
        return False


def _wrap_model(model: Any, tokenizer: Any, name: str) -> LoadedModel:
    """A :class:`LoadedModel` around an in-memory model and its ``tokenizers.Tokenizer``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type == "unlimited_ocr":
        family = ModelFamily.V1
    elif model_type == "deepseek_ocr2":
        family = ModelFamily.V2
    else:
        raise ModelLoadError(
            f"not a DeepSeek-OCR model (model_type={model_type!r}); expected unlimited_ocr (v1) "
            "or deepseek_ocr2 (v2)",
            source=name,
        )
    for method in ("encode", "decode", "token_to_id"):
        if not callable(getattr(tokenizer, method, None)):
            raise ModelLoadError(f"the tokenizer lacks {method}(); pass a tokenizers.Tokenizer")
    text_cfg = config.text_config
    special = special_tokens(tokenizer, lambda key: getattr(text_cfg, key, None), name)
    if special.image != int(config.image_token_id):
        raise ModelLoadError(
            f"the tokenizer's <image> id ({special.image}) is not the config's image_token_id "
            f"({config.image_token_id})",
            source=name,
        )
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        family=family,
        special=special,
        max_positions=int(getattr(text_cfg, "max_position_embeddings", 8192)),
    )


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load-time progress bars and info logs."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


class _NGramProcessor:
    """transformers logits processor around :func:`banned_tokens`, per row, generated ids only.

    Each row has its own guard (or none): a retry with a tightened guard can share a batch
    with pages that use the default one.
    """

    def __init__(self, guards: Sequence[NGramGuard | None], prompt_width: int, tokenizer: Any):
        self.prompt_width = prompt_width
        self.rows: list[tuple[int, NGramGuard, frozenset[int]]] = []
        whitelists: dict[tuple[str, ...], frozenset[int]] = {}
        for row, guard in enumerate(guards):
            if guard is None:
                continue
            if guard.whitelist not in whitelists:
                whitelists[guard.whitelist] = frozenset(
                    tid for t in guard.whitelist if (tid := tokenizer.token_to_id(t)) is not None
                )
            self.rows.append((row, guard, whitelists[guard.whitelist]))
        self.smallest = min((g.ngram_size for _r, g, _w in self.rows), default=0)
        self.widest = max((g.window_size for _r, g, _w in self.rows), default=0)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        generated = input_ids.shape[1] - self.prompt_width
        if not self.rows or generated < self.smallest:
            return scores
        tail = input_ids[:, -min(generated, self.widest) :].tolist()
        rows: list[int] = []
        tokens: list[int] = []
        for row, guard, whitelist in self.rows:
            banned = banned_tokens(tail[row], guard.ngram_size, guard.window_size, whitelist)
            rows.extend([row] * len(banned))
            tokens.extend(banned)
        if tokens:  # one indexed write per step for the whole batch
            scores[rows, tokens] = -float("inf")
        return scores


class _StopCriterion:
    """Stops the whole batch on cancellation or time-out."""

    def __init__(self, control: _Control):
        self.control = control

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stop = self.control.should_stop()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _RowLimits:
    """Finishes each row at its own token limit (the batch runs to the largest one)."""

    def __init__(self, prompt_width: int, limits: Sequence[int], device: Any):
        import torch

        self.prompt_width = prompt_width
        self.limits = torch.tensor(list(limits), dtype=torch.long, device=device)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return (input_ids.shape[1] - self.prompt_width) >= self.limits


class _Streamer:
    """A transformers streamer that decodes each row incrementally and reports new text."""

    def __init__(
        self,
        tokenizer: Any,
        indices: list[int],
        on_token: TokenCallback,
        special: Any,
        limits: Sequence[int],
    ):
        self.tokenizer = tokenizer
        self.indices = indices
        self.on_token = on_token
        self.special = special
        self.limits = list(limits)
        self.ids: list[list[int]] = [[] for _ in indices]
        self.start: list[int] = [0 for _ in indices]
        self.sent: list[int] = [0 for _ in indices]
        self.finished = [False for _ in indices]
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        column = value.reshape(-1).tolist()
        for row, token in enumerate(column):
            if self.finished[row]:
                continue
            if token == self.special.eos:
                self._finish(row)
                continue
            ids = self.ids[row]
            ids.append(token)
            if len(ids) >= self.limits[row]:  # the row's last token; padding follows
                self._finish(row)
                continue
            # Decode from the start of the current line only, so the cost stays per line.
            text = self.tokenizer.decode(ids[self.start[row] :], skip_special_tokens=False)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for more
                continue
            self._emit(row, text)

    def _emit(self, row: int, text: str) -> None:
        piece = text[self.sent[row] :]
        self.sent[row] = len(text)
        if text.endswith("\n"):
            self.start[row] = len(self.ids[row])
            self.sent[row] = 0
        if piece:
            self.on_token(self.indices[row], piece)

    def _finish(self, row: int) -> None:
        """The row ends: send what was held back (an unfinished UTF-8 sequence included)."""
        self.finished[row] = True
        ids = self.ids[row]
        if len(ids) > self.start[row]:
            self._emit(
                row, self.tokenizer.decode(ids[self.start[row] :], skip_special_tokens=False)
            )

    def end(self) -> None:
        for row, done in enumerate(self.finished):
            if not done:
                self._finish(row)
