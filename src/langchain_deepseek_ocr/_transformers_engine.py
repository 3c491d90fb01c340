"""The local engine: DeepSeek-OCR on Hugging Face transformers (GPU, Apple MPS or CPU)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_deepseek_ocr._checkpoint import DEFAULT_MODEL, LoadedModel, load_model
from langchain_deepseek_ocr._engine import EngineOutput, EngineResult, OCRRequest, TokenCallback
from langchain_deepseek_ocr._errors import (
    ConfigurationError,
    DeepSeekOCRError,
    EngineTimeoutError,
    GenerationError,
)
from langchain_deepseek_ocr._ngram import NGramGuard, banned_tokens
from langchain_deepseek_ocr._parse import strip_special
from langchain_deepseek_ocr._preprocess import PreparedImage, prepare_image
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

_DEFAULT_GUARD = NGramGuard()


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


@dataclass
class _Item:
    index: int
    request: OCRRequest
    prepared: PreparedImage
    ids: list[int]
    max_new: int
    guard: NGramGuard | None


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


class TransformersEngine:
    """DeepSeek-OCR v1 or v2 running locally through transformers -- no remote code.

    The checkpoint is loaded on first use (or by :meth:`load`). Requests are grouped into
    batches of pages that share a resolution, left-padded, and decoded greedily with
    DeepSeek's windowed no-repeat n-gram guard.

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
    ):
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        if max_new_tokens < 1:
            raise ConfigurationError("max_new_tokens must be at least 1")
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
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._cancel = threading.Event()

    supports_ngram_guard = True
    """This engine applies the n-gram guard (per request too)."""

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
        """Stop the running ``generate`` call promptly; its pages end in EngineTimeoutError."""
        self._cancel.set()

    def _spec_for(self, resolution: Resolution | None, family: ModelFamily) -> ResolutionSpec:
        return resolution_spec(
            family, resolution or self.default_resolution, max_tiles=self.max_tiles
        )

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
        loaded = self._ensure_loaded()
        results: list[EngineResult | None] = [None] * len(requests)
        items: list[_Item] = []
        for index, request in enumerate(requests):
            try:
                items.append(self._prepare(index, request, loaded))
            except DeepSeekOCRError as exc:
                results[index] = exc
            except Exception as exc:
                results[index] = GenerationError(
                    f"cannot prepare the page: {type(exc).__name__}: {exc}",
                    source=request.source,
                    page=request.page,
                )
        with self._run_lock:
            self._cancel.clear()
            for batch in self._batches(items):
                for item, result in zip(
                    batch, self._run_batch(batch, loaded, on_token), strict=True
                ):
                    results[item.index] = result
        return [r for r in results if r is not None]

    async def agenerate(
        self,
        requests: Sequence[OCRRequest],
        *,
        on_token: TokenCallback | None = None,
    ) -> list[EngineResult]:
        """Asynchronous :meth:`generate`: the model runs in a worker thread.

        Cancelling the awaiting task stops generation promptly.
        """
        task = asyncio.ensure_future(asyncio.to_thread(self.generate, requests, on_token=on_token))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self.cancel()
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

        def work() -> None:
            try:
                box["result"] = self.generate([request], on_token=lambda _i, t: pieces.put(t))[0]
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
                self.cancel()
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

    # -- internals -----------------------------------------------------------------------

    def _prepare(self, index: int, request: OCRRequest, loaded: LoadedModel) -> _Item:
        spec = self._spec_for(request.resolution, loaded.family)
        prepared = prepare_image(request.image, spec)
        tok = loaded.tokenizer
        text = f"{IMAGE_TOKEN}\n{request.prompt}"
        before, after = text.split(IMAGE_TOKEN, 1)
        ids = [loaded.special.bos]
        ids += tok.encode(before, add_special_tokens=False).ids
        ids += [loaded.special.image] * prepared.num_image_tokens
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
        return _Item(index, request, prepared, ids, max_new, guard)

    def _batches(self, items: list[_Item]) -> Iterator[list[_Item]]:
        """Group pages that can share one ``generate`` call, longest prompts together."""
        groups: dict[tuple[Any, ...], list[_Item]] = {}
        for item in items:
            key = (item.prepared.spec, item.max_new, item.guard)
            groups.setdefault(key, []).append(item)
        for group in groups.values():
            group.sort(key=lambda it: len(it.ids), reverse=True)
            for start in range(0, len(group), self.batch_size):
                yield group[start : start + self.batch_size]

    def _run_batch(
        self, batch: list[_Item], loaded: LoadedModel, on_token: TokenCallback | None
    ) -> list[EngineResult]:
        try:
            return self._generate_batch(batch, loaded, on_token)
        except DeepSeekOCRError as exc:
            return [exc] * len(batch)
        except Exception as exc:
            if len(batch) > 1:
                # One page (or the batch's memory) failed: retry the pages on their own.
                _free_memory()
                out: list[EngineResult] = []
                for item in batch:
                    out.extend(self._run_batch([item], loaded, on_token))
                return out
            item = batch[0]
            return [
                GenerationError(
                    f"generation failed: {type(exc).__name__}: {exc}",
                    source=item.request.source,
                    page=item.request.page,
                )
            ]

    def _generate_batch(
        self, batch: list[_Item], loaded: LoadedModel, on_token: TokenCallback | None
    ) -> list[EngineResult]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        net = loaded.model
        device = net.device
        dtype = net.dtype
        special = loaded.special
        width = max(len(item.ids) for item in batch)
        input_ids = torch.full((len(batch), width), special.pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            n = len(item.ids)
            input_ids[row, width - n :] = torch.tensor(item.ids, dtype=torch.long)
            attention[row, width - n :] = 1
        pixel_values = torch.from_numpy(_stack([item.prepared.global_view for item in batch])).to(
            device=device, dtype=dtype
        )
        tiles = [item.prepared.tiles for item in batch if item.prepared.tiles is not None]
        kwargs: dict[str, Any] = {
            "input_ids": input_ids.to(device),
            "attention_mask": attention.to(device),
            "pixel_values": pixel_values,
            "num_local_patches": [item.prepared.num_tiles for item in batch],
        }
        if tiles:
            kwargs["pixel_values_local"] = torch.from_numpy(_concat(tiles)).to(
                device=device, dtype=dtype
            )
        if loaded.family is ModelFamily.V1:
            kwargs["patches_grid"] = [list(item.prepared.grid or (1, 1)) for item in batch]

        guard = batch[0].guard
        processors = LogitsProcessorList()
        if guard is not None:
            whitelist = frozenset(
                tid for t in guard.whitelist if (tid := loaded.tokenizer.token_to_id(t)) is not None
            )
            processors.append(_NGramProcessor(guard, width, whitelist))
        deadline = time.monotonic() + self.timeout if self.timeout else None
        control = _Control(deadline, self._cancel)
        streamer = _Streamer(loaded.tokenizer, [it.index for it in batch], on_token, special)
        max_new = batch[0].max_new
        start = time.perf_counter()
        with torch.inference_mode():
            out = net.generate(
                **kwargs,
                do_sample=False,
                max_new_tokens=max_new,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([_StopCriterion(control)]),
                eos_token_id=special.eos,
                pad_token_id=special.pad,
                bos_token_id=special.bos,
                streamer=streamer if on_token else None,
                use_cache=True,
            )
        seconds = time.perf_counter() - start
        generated = out[:, width:].tolist()
        results: list[EngineResult] = []
        for item, row in zip(batch, generated, strict=True):
            if control.stopped:
                results.append(
                    EngineTimeoutError(
                        "generation was cancelled"
                        if self._cancel.is_set()
                        else f"generation ran past the time limit ({self.timeout} s)",
                        source=item.request.source,
                        page=item.request.page,
                    )
                )
                continue
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
                    vision_tokens=item.prepared.num_image_tokens,
                    prompt_tokens=len(item.ids),
                    output_tokens=count,
                    seconds=seconds,
                    resolution=item.prepared.spec.name.value,
                    model=self._model_id,
                    token_ids=tokens,
                )
            )
        return results


def _stack(arrays: list[Any]) -> Any:
    import numpy as np

    return np.stack(arrays)


def _concat(arrays: list[Any]) -> Any:
    import numpy as np

    return np.concatenate(arrays, axis=0)


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
    """transformers logits processor around :func:`banned_tokens`, on generated ids only."""

    def __init__(self, guard: NGramGuard, prompt_width: int, whitelist: frozenset[int]):
        self.guard = guard
        self.prompt_width = prompt_width
        self.whitelist = whitelist

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        generated = input_ids.shape[1] - self.prompt_width
        if generated < self.guard.ngram_size:
            return scores
        tail = input_ids[:, -min(generated, self.guard.window_size) :].tolist()
        for row, ids in enumerate(tail):
            banned = banned_tokens(
                ids, self.guard.ngram_size, self.guard.window_size, self.whitelist
            )
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


class _StopCriterion:
    """Stops the whole batch on cancellation or time-out."""

    def __init__(self, control: _Control):
        self.control = control

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stop = self.control.should_stop()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _Streamer:
    """A transformers streamer that decodes each row incrementally and reports new text."""

    def __init__(
        self,
        tokenizer: Any,
        indices: list[int],
        on_token: TokenCallback | None,
        special: Any,
    ):
        self.tokenizer = tokenizer
        self.indices = indices
        self.on_token = on_token
        self.special = special
        self.ids: list[list[int]] = [[] for _ in indices]
        self.start: list[int] = [0 for _ in indices]
        self.sent: list[int] = [0 for _ in indices]
        self.finished = [False for _ in indices]
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        if self.on_token is None:
            return
        column = value.reshape(-1).tolist()
        for row, token in enumerate(column):
            if self.finished[row]:
                continue
            if token == self.special.eos:
                self.finished[row] = True
                continue
            ids = self.ids[row]
            ids.append(token)
            # Decode from the start of the current line only, so the cost stays per line.
            text = self.tokenizer.decode(ids[self.start[row] :], skip_special_tokens=False)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for more
                continue
            piece = text[self.sent[row] :]
            self.sent[row] = len(text)
            if text.endswith("\n"):
                self.start[row] = len(ids)
                self.sent[row] = 0
            if piece:
                self.on_token(self.indices[row], piece)

    def end(self) -> None:
        return None
