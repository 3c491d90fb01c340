"""The scale-out engine: DeepSeek-OCR served by OpenAI-compatible servers (vLLM, SGLang, Ollama).

One :class:`OpenAIEngine` drives one or many servers over HTTP (httpx). Every page becomes
one ``POST {base}/v1/chat/completions`` whose user message holds the page as a ``data:``
URI ``image_url`` part and the task prompt as a text part; the server inserts the image
placeholder itself. Decoding is greedy (``temperature 0``) with ``skip_special_tokens:
false`` so the grounding tags survive, and on vLLM DeepSeek's no-repeat n-gram guard
travels per request in ``vllm_xargs``.

How the servers differ, and what the engine does about it:

============  ==========================================  =================================
server        geometry (fixed, one resolution only)       n-gram guard
============  ==========================================  =================================
vLLM          v1: 1024 global + 2-6 tiles of 640;         ``vllm_xargs`` (needs
              v2: 1024 global + 2-6 tiles of 768          ``--logits-processors ...``)
SGLang        as vLLM                                     only with
                                                          ``sglang_custom_logit_processor``
Ollama (v1)   1024 global + 2-9 tiles of 640, always      none (a warning is logged once)
              tiled, even small pages
============  ==========================================  =================================

Asking such a server for another resolution is a :class:`ConfigurationError` for that page,
never a silent mismatch.

Scheduling: requests go to the endpoint with the fewest outstanding requests; at most
``max_concurrency`` pages are in flight in total and ``max_concurrency_per_endpoint`` per
server. An endpoint that fails (connection error, reset, 5xx) is quarantined for
``quarantine_seconds`` and the page is retried on another one at once -- or, when none is
healthy, on the least busy one after an exponential backoff with jitter. A 429 pauses its
endpoint for ``Retry-After``. Every page ends in exactly one result, in order.

All I/O runs on one private event loop in a daemon thread: the synchronous methods work
from plain threads and from inside a running event loop, the asynchronous ones hand their
work to it (cancelling them cancels the HTTP requests), and the concurrency limits hold
across every caller.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import email.utils
import io
import json
import logging
import math
import os
import queue
import random
import ssl
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from PIL import Image
from pydantic import SecretStr

from langchain_deepseek_ocr._engine import EngineOutput, EngineResult, OCRRequest, TokenCallback
from langchain_deepseek_ocr._errors import (
    ConfigurationError,
    DeepSeekOCRError,
    EngineConnectionError,
    EngineStatusError,
    EngineTimeoutError,
    GenerationError,
)
from langchain_deepseek_ocr._ngram import NGramGuard
from langchain_deepseek_ocr._parse import BOS, EOS, PAD, strip_special
from langchain_deepseek_ocr._preprocess import count_image_tokens
from langchain_deepseek_ocr._tasks import (
    IMAGE_TOKEN,
    ModelFamily,
    Resolution,
    ResolutionSpec,
    resolution_spec,
)

__all__ = ["EndpointStatus", "OpenAIEngine"]

logger = logging.getLogger(__name__)

ServerKind = Literal["vllm", "sglang", "ollama"]

_DEFAULT_GUARD = NGramGuard()

_REAL_IDS: dict[str, int] = {"<td>": 128821, "</td>": 128822}
"""Token ids of the guard's whitelist texts in the DeepSeek-OCR tokenizer (v1 and v2 share it)."""

_CONTEXT = 8192
"""The models' context (``max_position_embeddings``) when the server does not report one."""

_MALFORMED_ATTEMPTS = 2
"""Most attempts for a page whose answers are malformed (200 but not a completion)."""

_BODY_SNIPPET = 500
_INLINE_ENCODE_PIXELS = 128 * 128
_OLLAMA_MAX_TILES = 9
_SERVERS = ("vllm", "sglang", "ollama", "auto")
_PROBE_TIMEOUT = 30.0
_LANE_SIZE = 4
"""Connections per httpx client. httpcore's pool scans every connection on every event, so
one pool of 128 connections costs ~6x the CPU per request of 32 pools of 4 (measured)."""


def _infer_family(model: str) -> ModelFamily:
    """v2 when the model id names OCR-2 (``DeepSeek-OCR-2``, ``deepseek-ocr2``...), else v1."""
    low = model.lower()
    return ModelFamily.V2 if any(m in low for m in ("ocr-2", "ocr2", "ocr_2")) else ModelFamily.V1


def _serves(served: Sequence[str], model: str) -> bool:
    """Whether ``model`` is among the served ids (Ollama's ``:latest`` tag is implied)."""
    if model in served:
        return True
    if ":" not in model:
        return f"{model}:latest" in served
    return model.endswith(":latest") and model[: -len(":latest")] in served


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Args:
        value: The header value, or ``None``.
        now: The current time (for tests); the system clock by default.

    Returns:
        The delay in seconds (never negative), or ``None`` when absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


async def _within(awaitable: Coroutine[Any, Any, Any], seconds: float) -> Any:
    """``awaitable`` under a time limit (no extra task, unlike ``wait_for``)."""
    async with asyncio.timeout(seconds):
        return await awaitable


def _snippet(text: str) -> str:
    return text if len(text) <= _BODY_SNIPPET else text[:_BODY_SNIPPET] + "..."


def _error_detail(body: str) -> str:
    """The ``message`` of an OpenAI-style error body, else the body's start."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        data = json.loads(body)
        error = data.get("error", data)
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return _snippet(message)
    return _snippet(body.strip()) or "(empty body)"


def _normalise_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url {url!r} must be an http:// or https:// URL")
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def _encode_image(image: Image.Image, fmt: str, quality: int) -> str:
    """The page as a ``data:`` URI (PNG at zlib level 1 -- lossless and quick -- or JPEG)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        image.save(buffer, "PNG", compress_level=1)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class _SpecialStripper:
    """Removes BOS/EOS/pad from streamed text, even when a delta splits one of them."""

    _SPECIALS = (BOS, EOS, PAD)

    def __init__(self) -> None:
        self.pending = ""

    def feed(self, text: str) -> str:
        """The text that can be shown now; a possible start of a special string waits."""
        text = strip_special(self.pending + text)
        hold = 0
        for special in self._SPECIALS:
            for k in range(min(len(special) - 1, len(text)), hold, -1):
                if text.endswith(special[:k]):
                    hold = k
                    break
        self.pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold] if hold else text

    def flush(self) -> str:
        """What is left at the end of the stream."""
        text, self.pending = strip_special(self.pending), ""
        return text


@dataclass(frozen=True)
class EndpointStatus:
    """A snapshot of one endpoint, from :meth:`OpenAIEngine.endpoint_status`.

    Attributes:
        url: The base URL.
        outstanding: Requests sent or waiting for a slot there now.
        quarantined: Taken out after a failure (used again when nothing else is healthy).
        paused: Told to wait by a 429 ``Retry-After``.
        successes: Answers received.
        failures: Failed attempts (connection errors, 5xx, 429, timeouts, bad bodies).
        served_models: What its ``/v1/models`` listed (empty until checked).
        disabled: Why it is no longer used (it does not serve the model), else ``None``.
    """

    url: str
    outstanding: int
    quarantined: bool
    paused: bool
    successes: int
    failures: int
    served_models: tuple[str, ...]
    disabled: str | None


class _Endpoint:
    """Mutable state of one server; touched only on the engine's loop."""

    def __init__(self, index: int, url: str):
        self.index = index
        self.url = url
        self.outstanding = 0
        self.quarantined_until = 0.0
        self.paused_until = 0.0
        self.checked = False
        self.disabled: str | None = None
        self.served: tuple[str, ...] = ()
        self.max_model_len: int | None = None
        self.successes = 0
        self.failures = 0

    def healthy(self, now: float) -> bool:
        return self.disabled is None and self.quarantined_until <= now and self.paused_until <= now


@dataclass
class _Listing:
    """What ``GET /v1/models`` said."""

    ids: tuple[str, ...]
    owners: dict[str, str]
    max_model_len: dict[str, int]


@dataclass
class _Answer:
    """One completion as read from the server."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    pieces: int
    token_ids: list[int] | None = None


class _AttemptError(Exception):
    """One failed attempt, classified for the retry policy.

    ``kind`` is one of ``connection``, ``timeout``, ``throttled``, ``server`` (5xx),
    ``status`` (another 4xx, not retried), ``malformed`` or ``misconfigured``.
    """

    RETRYABLE = frozenset(
        {"connection", "timeout", "throttled", "server", "malformed", "misconfigured"}
    )
    QUARANTINE = frozenset({"connection", "server"})

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.body = body
        self.retry_after = retry_after

    def to_error(self, request: OCRRequest, attempts: int) -> DeepSeekOCRError:
        where = {"source": request.source, "page": request.page}
        message = self.message + (f" (after {attempts} attempts)" if attempts > 1 else "")
        if self.kind == "connection":
            return EngineConnectionError(message, **where)
        if self.kind == "timeout" and self.status is None:
            return EngineTimeoutError(message, **where)
        if self.kind == "misconfigured":
            return ConfigurationError(message, **where)
        return EngineStatusError(message, status_code=self.status, body=self.body, **where)


class _Job:
    """A coroutine running on the engine's loop, observable and cancellable from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]):
        self.result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop = loop
        self._task: asyncio.Task[Any] | None = None
        try:
            loop.call_soon_threadsafe(self._start, coro)
        except RuntimeError:
            coro.close()
            raise ConfigurationError("the engine is closed") from None

    def _start(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if task.cancelled():
                self.result.cancel()
            elif (exc := task.exception()) is not None:
                self.result.set_exception(exc)
            else:
                self.result.set_result(task.result())
        self.done.set_result(None)

    def cancel(self) -> None:
        """Cancel the coroutine (scheduled after its start, so it is never missed)."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class _LoopThread:
    """A private asyncio event loop running in a daemon thread."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(asyncio.sleep(0))  # start jobs already handed over
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> _Job:
        return _Job(self.loop, coro)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)


class _State:
    """What lives on the engine's loop: the HTTP clients and the limits.

    Each endpoint's connections are spread over small clients ("lanes") of
    :data:`_LANE_SIZE` connections, created on first use; an attempt takes the least
    loaded lane, so no lane ever queues inside httpx. ``/v1/models`` goes through one
    separate control client.
    """

    def __init__(
        self,
        make_client: Callable[[int], httpx.AsyncClient],
        total: int,
        per_endpoint: int,
        endpoints: int,
    ):
        self.make_client = make_client
        self.control = make_client(max(2, endpoints))
        lanes = max(1, math.ceil(min(per_endpoint, total) / _LANE_SIZE))
        self.lanes: list[list[httpx.AsyncClient | None]] = [
            [None] * lanes for _ in range(endpoints)
        ]
        self.lane_load = [[0] * lanes for _ in range(endpoints)]
        self.total = asyncio.Semaphore(total)
        self.slots = [asyncio.Semaphore(per_endpoint) for _ in range(endpoints)]
        self.check_locks = [asyncio.Lock() for _ in range(endpoints)]
        self.setup_lock = asyncio.Lock()
        self.running: set[asyncio.Task[Any]] = set()

    def take_lane(self, endpoint: int) -> tuple[int, httpx.AsyncClient]:
        loads = self.lane_load[endpoint]
        lane = min(range(len(loads)), key=loads.__getitem__)
        loads[lane] += 1
        client = self.lanes[endpoint][lane]
        if client is None:
            client = self.lanes[endpoint][lane] = self.make_client(_LANE_SIZE)
        return lane, client

    def clients(self) -> list[httpx.AsyncClient]:
        return [self.control, *(c for lanes in self.lanes for c in lanes if c is not None)]

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients()), return_exceptions=True)


def _shutdown(runner: _LoopThread, holder: dict[str, Any]) -> None:
    """Close the HTTP clients on their loop, then stop the loop (also run at garbage collection)."""
    state = holder.pop("state", None)
    if threading.current_thread() is runner.thread:  # collected on its own loop: don't wait

        async def close_then_stop() -> None:
            if state is not None:
                await state.aclose()
            runner.loop.stop()

        runner.loop.create_task(close_then_stop())
        return
    if state is not None and not runner.loop.is_closed():
        with contextlib.suppress(Exception):
            runner.spawn(state.aclose()).done.result(timeout=10)
    runner.stop()


class OpenAIEngine:
    r"""DeepSeek-OCR on one or many OpenAI-compatible servers: vLLM, SGLang or Ollama.

    Pages are sent concurrently (least-outstanding-requests first over the endpoints),
    failing endpoints are quarantined and their pages retried elsewhere, 429 answers are
    honoured, and every page ends in exactly one result -- an :class:`EngineOutput` or its
    typed error -- in order.

    Setup:
        Start a server (one per GPU, or vLLM's data parallelism), e.g.:

        .. code-block:: bash

            pip install langchain-deepseek-ocr
            vllm serve deepseek-ai/DeepSeek-OCR --no-enable-prefix-caching \
              --mm-processor-cache-gb 0 --logits-processors \
              vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor
            export DEEPSEEK_OCR_API_KEY=...   # only if the server was started with --api-key

    Instantiate:
        .. code-block:: python

            from langchain_deepseek_ocr import OpenAIEngine

            engine = OpenAIEngine(
                ["http://gpu1:8000", "http://gpu2:8000"],   # or one URL
                model="deepseek-ai/DeepSeek-OCR",             # None: the one model served
                server="auto",                                # vllm | sglang | ollama | auto
                max_concurrency=None,                         # max(256, 128 per server)
                max_concurrency_per_endpoint=128,             # fills a vLLM batch
                timeout=600,
                max_retries=5,
            )

    Invoke:
        .. code-block:: python

            from langchain_deepseek_ocr import DeepSeekOCR

            ocr = DeepSeekOCR(engine=engine)
            result = ocr.ocr("page.png")
            for item in ocr.ocr_document("book.pdf"):   # pages stream through the servers
                ...

    Servers:
        * **vLLM** (v1 from 0.11.1, v2 from 0.16.0): one fixed geometry, gundam (v1: up to
          6 tiles of 640; v2: up to 6 tiles of 768). The n-gram guard is sent as
          ``vllm_xargs`` and needs the server flag ``--logits-processors
          vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor``.
        * **SGLang**: the same geometry; the prompt is sent as ``<image>\n{prompt}`` as its
          docs show. The guard is applied only when ``sglang_custom_logit_processor`` holds
          the serialised ``DeepseekOCRNoRepeatNGramLogitProcessor`` (server flag
          ``--enable-custom-logit-processor``); otherwise no guard is sent.
        * **Ollama** (``deepseek-ocr``, v1 only): always tiles, up to 9 tiles of 640, and has
          no n-gram guard (a warning is logged once). Only fields Ollama knows are sent.
        * ``auto`` reads the server from ``/v1/models`` (``owned_by``); without the health
          check it assumes vLLM.

    Retries:
        Connection errors, resets mid-body, 5xx, 408, 429 and time-outs are retried up to
        ``max_retries`` times with exponential backoff and jitter (a 429 waits for its
        ``Retry-After``, capped at ``timeout``). Other 4xx answers are final
        (:class:`EngineStatusError` with the status and the start of the body). A 200 whose
        body is not a completion (malformed JSON, no ``choices``) is retried once -- a proxy
        may have hiccuped, but a server that keeps answering so has a bug that retries
        would only hammer. A page that already streamed text is not retried (the text
        cannot be taken back); its error is final.

    Args:
        base_url: One server URL or a list (``http://host:8000``; a trailing ``/v1`` is
            accepted).
        model: The served model id; ``None`` uses the one model a server lists.
        api_key: Sent as ``Authorization: Bearer``; defaults to the environment variable
            ``DEEPSEEK_OCR_API_KEY``, then ``OPENAI_API_KEY``. Kept as a ``SecretStr``.
        server: ``vllm``, ``sglang``, ``ollama`` or ``auto``.
        family: ``v1`` or ``v2``; ``None`` infers it from the model id ("ocr-2"/"ocr2"
            means v2).
        max_concurrency: Most pages in flight in total (encoding, queued or sent);
            ``None``: ``max(256, max_concurrency_per_endpoint * len(base_url))``, so every
            server's batch can be full.
        max_concurrency_per_endpoint: Most requests in flight per server (128 fills a vLLM
            batch; upstream drives one GPU with up to 100).
        timeout: Seconds one attempt may take, from sending to the last byte.
        connect_timeout: Seconds to open a connection.
        max_retries: Extra attempts per page.
        backoff_base: First backoff delay, in seconds (doubled per retry).
        backoff_cap: Longest backoff delay, in seconds.
        max_new_tokens: Token limit per page (``max_tokens``), capped so the prompt and
            the output fit the model's context.
        ngram_guard: The default no-repeat guard; ``None`` or ``False`` switches it off.
        whitelist_token_ids: Token ids exempt from the guard, instead of mapping its
            whitelist texts (``<td>``, ``</td>`` -> 128821, 128822).
        sglang_custom_logit_processor: SGLang's serialised n-gram logit processor.
        image_format: ``PNG`` (lossless, the default) or ``JPEG``.
        jpeg_quality: JPEG quality.
        quarantine_seconds: How long a failing endpoint is taken out.
        health_check: ``GET /v1/models`` once per endpoint before first use; a model that
            is not served raises :class:`ConfigurationError` naming the served ids.
        headers: Extra HTTP headers for every request.
        extra_body: Extra JSON fields for every chat request (e.g. vLLM's
            ``{"return_token_ids": true}``, which fills ``EngineOutput.token_ids``).
        verify: TLS verification for ``https`` servers: ``True`` (certifi, or
            ``SSL_CERT_FILE``/``SSL_CERT_DIR``), ``False``, or an ``ssl.SSLContext``.
        batch_size: Pages the facade hands over per call (documents are chunked by it);
            ``max_concurrency`` by default. Each A4 page at 144 dpi holds ~6 MB decoded,
            so lower it (or ``chunk_size``) when memory is short.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str | None = None,
        *,
        api_key: str | SecretStr | None = None,
        server: Literal["vllm", "sglang", "ollama", "auto"] = "auto",
        family: ModelFamily | str | None = None,
        max_concurrency: int | None = None,
        max_concurrency_per_endpoint: int = 128,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        max_new_tokens: int = 8192,
        ngram_guard: NGramGuard | Literal[False] | None = _DEFAULT_GUARD,
        whitelist_token_ids: Sequence[int] | None = None,
        sglang_custom_logit_processor: str | None = None,
        image_format: Literal["PNG", "JPEG"] = "PNG",
        jpeg_quality: int = 95,
        quarantine_seconds: float = 30.0,
        health_check: bool = True,
        headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        verify: bool | ssl.SSLContext = True,
        batch_size: int | None = None,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ConfigurationError("base_url needs at least one server URL")
        normalised = [_normalise_url(u) for u in urls]
        if len(set(normalised)) != len(normalised):
            raise ConfigurationError(f"base_url lists a server twice: {normalised}")
        if server not in _SERVERS:
            raise ConfigurationError(f"unknown server {server!r}; choose one of: {_SERVERS}")
        if max_concurrency is None:
            max_concurrency = max(256, max_concurrency_per_endpoint * len(normalised))
        if max_concurrency < 1 or max_concurrency_per_endpoint < 1:
            raise ConfigurationError("max_concurrency and its per-endpoint limit must be >= 1")
        if batch_size is not None and batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        if timeout <= 0 or connect_timeout <= 0:
            raise ConfigurationError("timeout and connect_timeout must be positive")
        if max_retries < 0 or backoff_base < 0 or backoff_cap < 0 or quarantine_seconds < 0:
            raise ConfigurationError("max_retries, backoff and quarantine must not be negative")
        if max_new_tokens < 1:
            raise ConfigurationError("max_new_tokens must be at least 1")
        fmt = str(image_format).upper()
        if fmt not in ("PNG", "JPEG"):
            raise ConfigurationError(f"image_format must be PNG or JPEG, not {image_format!r}")

        self._endpoints = [_Endpoint(i, url) for i, url in enumerate(normalised)]
        self._model = model
        self._configured_server = server
        self._kind: ServerKind | None = None if server == "auto" else server
        try:
            self._family = ModelFamily(family) if family is not None else None
        except ValueError:
            raise ConfigurationError(f"unknown model family {family!r}; use v1 or v2") from None
        key = api_key
        if key is None:
            key = os.environ.get("DEEPSEEK_OCR_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if isinstance(key, str) and not key.strip():
            key = None
        self.api_key: SecretStr | None = (
            key if isinstance(key, SecretStr) or key is None else SecretStr(key)
        )
        self.max_concurrency = max_concurrency
        self.max_concurrency_per_endpoint = max_concurrency_per_endpoint
        self.batch_size = batch_size or max_concurrency
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.max_new_tokens = max_new_tokens
        self.ngram_guard: NGramGuard | None = ngram_guard or None
        self._whitelist_ids = list(whitelist_token_ids) if whitelist_token_ids else None
        if self.ngram_guard is not None:
            self._guard_ids(self.ngram_guard)  # unknown whitelist texts fail here
        self.sglang_custom_logit_processor = sglang_custom_logit_processor
        self.image_format = fmt
        self.jpeg_quality = jpeg_quality
        self.quarantine_seconds = float(quarantine_seconds)
        self.health_check = health_check
        self._headers = dict(headers or {})
        self.extra_body = dict(extra_body or {})
        self.verify = verify
        self._ready = False
        self._guard_note_logged = False
        self._runner: _LoopThread | None = None
        self._holder: dict[str, Any] = {}
        self._runner_lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None
        if self._kind is not None:
            self._note_guard()

    # -- identity ------------------------------------------------------------------------

    def __repr__(self) -> str:
        urls = [e.url for e in self._endpoints]
        return (
            f"{type(self).__name__}(base_url={urls!r}, model={self._model!r}, "
            f"server={self._kind or self._configured_server!r}, "
            f"max_concurrency={self.max_concurrency})"
        )

    @property
    def base_urls(self) -> list[str]:
        """The servers' base URLs."""
        return [e.url for e in self._endpoints]

    @property
    def model_name(self) -> str:
        """The served model id (asked from the server when ``model`` was not given)."""
        if self._model is None:
            self._resolve()
        return self._model or "unknown"

    @property
    def server(self) -> str:
        """``vllm``, ``sglang`` or ``ollama`` once known, else ``auto``."""
        return self._kind or self._configured_server

    @property
    def family(self) -> ModelFamily:
        """The model family: as given, else inferred from the model id."""
        if self._family is not None:
            return self._family
        return _infer_family(self.model_name)

    @property
    def default_resolution(self) -> Resolution:
        """Gundam: the one geometry these servers run."""
        return Resolution.GUNDAM

    def resolutions(self) -> tuple[Resolution, ...]:
        """Only gundam: vLLM, SGLang and Ollama serve one fixed geometry."""
        return (Resolution.GUNDAM,)

    @property
    def supports_ngram_guard(self) -> bool:
        """Whether the server applies the no-repeat guard (vLLM; SGLang when configured)."""
        if self._kind is None and self.health_check:
            self._resolve()
        return self._guard_applies(self._kind or "vllm")

    def endpoint_status(self) -> list[EndpointStatus]:
        """A snapshot of every endpoint (load, quarantine, counters)."""
        now = time.monotonic()
        return [
            EndpointStatus(
                url=e.url,
                outstanding=e.outstanding,
                quarantined=e.quarantined_until > now,
                paused=e.paused_until > now,
                successes=e.successes,
                failures=e.failures,
                served_models=e.served,
                disabled=e.disabled,
            )
            for e in self._endpoints
        ]

    # -- lifecycle -----------------------------------------------------------------------

    def _loop_thread(self) -> _LoopThread:
        with self._runner_lock:
            if self._runner is None:
                self._runner = _LoopThread(f"deepseek-ocr-http-{id(self):x}")
                self._finalizer = weakref.finalize(self, _shutdown, self._runner, self._holder)
            return self._runner

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> _Job:
        return self._loop_thread().spawn(coro)

    def _on_loop(self) -> bool:
        runner = self._runner
        return runner is not None and threading.current_thread() is runner.thread

    def close(self) -> None:
        """Close the connections and stop the engine's I/O thread (a later call restarts it)."""
        with self._runner_lock:
            runner, self._runner = self._runner, None
            finalizer, self._finalizer = self._finalizer, None
        if runner is not None and finalizer is not None:
            finalizer.detach()
            _shutdown(runner, self._holder)

    async def aclose(self) -> None:
        """Asynchronous :meth:`close`."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> OpenAIEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def cancel(self) -> None:
        """Stop every running call: its unfinished pages end in :class:`EngineTimeoutError`."""
        runner = self._runner
        state = self._holder.get("state")
        if runner is None or state is None:
            return

        def cancel_all() -> None:
            for task in list(state.running):
                task.cancel()

        with contextlib.suppress(RuntimeError):
            runner.loop.call_soon_threadsafe(cancel_all)

    def _resolve(self) -> None:
        """Ask the servers for the model and server kind now (blocking)."""
        if self._on_loop():
            return
        self._spawn(self._setup()).result.result()

    # -- the Protocol --------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[OCRRequest],
        *,
        on_token: TokenCallback | None = None,
    ) -> list[EngineResult]:
        """OCR a batch of pages on the servers (works inside a running event loop too).

        Args:
            requests: The pages.
            on_token: Called as ``on_token(index, text)``; the requests are then streamed
                and it gets every delta (once the full text if the server does not stream).
                It runs on the engine's I/O thread: keep it quick.

        Returns:
            One :class:`EngineOutput` or typed error per request, in order.

        Raises:
            ConfigurationError: the model is not served (the served ids are named).
        """
        if self._on_loop():
            raise ConfigurationError("generate() cannot be called from an on_token callback")
        job = self._spawn(self._run(list(requests), on_token))
        try:
            return job.result.result()
        except BaseException:
            if not job.result.done() or job.result.cancelled():
                job.cancel()
                job.done.result(timeout=30)
            raise

    async def agenerate(
        self,
        requests: Sequence[OCRRequest],
        *,
        on_token: TokenCallback | None = None,
    ) -> list[EngineResult]:
        """Asynchronous :meth:`generate`; cancelling it cancels the HTTP requests."""
        if self._on_loop():
            return await self._run(list(requests), on_token)
        job = self._spawn(self._run(list(requests), on_token))
        try:
            return await asyncio.shield(asyncio.wrap_future(job.result))
        except asyncio.CancelledError:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wrap_future(job.done)
            raise

    def stream(self, request: OCRRequest) -> Iterator[str]:
        """Yield the text of one page as the server generates it (SSE).

        Raises:
            DeepSeekOCRError: the page failed (raised once the stream ends).
        """
        pieces: queue.Queue[Any] = queue.Queue()
        done = object()
        job = self._spawn(self._run_stream(request, pieces.put))
        job.done.add_done_callback(lambda _f: pieces.put(done))
        try:
            while (piece := pieces.get()) is not done:
                yield piece
        finally:
            if not job.done.done():
                job.cancel()
                job.done.result(timeout=30)
        result = job.result.result()
        if isinstance(result, DeepSeekOCRError):
            raise result

    async def astream(self, request: OCRRequest) -> AsyncIterator[str]:
        """Asynchronous :meth:`stream`."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(pieces.put_nowait, item)

        job = self._spawn(self._run_stream(request, put))
        job.done.add_done_callback(lambda _f: put(done))
        try:
            while (piece := await pieces.get()) is not done:
                yield piece
        finally:
            if not job.done.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wrap_future(job.done)
        result = await asyncio.wrap_future(job.result)
        if isinstance(result, DeepSeekOCRError):
            raise result

    # -- on the loop: setup --------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        """One TLS context for every client (building one per client costs ~30 ms)."""
        if isinstance(self.verify, ssl.SSLContext):
            return self.verify
        if not any(e.url.startswith("https://") for e in self._endpoints):
            return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # never used; cheap to make
        if self.verify is False:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if os.environ.get("SSL_CERT_FILE"):
            return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        if os.environ.get("SSL_CERT_DIR"):
            return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
        import certifi

        return ssl.create_default_context(cafile=certifi.where())

    def _state(self) -> _State:
        state = self._holder.get("state")
        if state is None:
            headers = {"Content-Type": "application/json", **self._headers}
            if self.api_key is not None:
                headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
            timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout, pool=None)
            context = self._ssl_context()

            def make_client(connections: int) -> httpx.AsyncClient:
                limits = httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                )
                return httpx.AsyncClient(
                    headers=headers, timeout=timeout, limits=limits, verify=context
                )

            state = _State(
                make_client,
                self.max_concurrency,
                self.max_concurrency_per_endpoint,
                len(self._endpoints),
            )
            self._holder["state"] = state
        return state

    async def _setup(self) -> None:
        """First use: check every endpoint, learn the model and the server kind.

        An endpoint that cannot be reached is quarantined and checked later, before its
        first request. A model that a reachable endpoint does not serve raises.
        """
        if self._ready:
            return
        state = self._state()
        async with state.setup_lock:
            if self._ready:
                return
            if not (self.health_check or self._model is None or self._kind is None):
                self._ready = True
                return
            if not self.health_check and self._model is not None:
                self._set_kind("vllm", None)  # auto without a check: assume vLLM
                self._ready = True
                return
            now = time.monotonic()
            todo = [
                e
                for e in self._endpoints
                if not e.checked and e.disabled is None and e.quarantined_until <= now
            ]
            listings = await asyncio.gather(*(self._probe(e) for e in todo), return_exceptions=True)
            for endpoint, listing in zip(todo, listings, strict=True):
                if isinstance(listing, _AttemptError):
                    endpoint.failures += 1
                    self._quarantine(endpoint, listing.message)
                elif isinstance(listing, BaseException):
                    raise listing
                elif listing is not None:
                    self._apply_listing(endpoint, listing, strict=True)
            self._ready = self._model is not None

    async def _probe(self, endpoint: _Endpoint) -> _Listing | None:
        """``GET /v1/models``: the listing, or ``None`` when the server has none to give.

        Raises:
            _AttemptError: the server cannot be reached or failed (``connection``).
            ConfigurationError: the server refused the API key.
        """
        url = f"{endpoint.url}/v1/models"
        client = self._state().control
        try:
            response = await asyncio.wait_for(
                client.get(url), timeout=min(self.timeout, _PROBE_TIMEOUT)
            )
        except (TimeoutError, httpx.TransportError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise _AttemptError("connection", f"cannot reach {url} ({detail})") from None
        if response.status_code in (401, 403):
            raise ConfigurationError(
                f"{endpoint.url} refused the request ({response.status_code}): check api_key "
                f"(or DEEPSEEK_OCR_API_KEY); {_error_detail(response.text)}"
            )
        if response.status_code >= 500:
            raise _AttemptError("connection", f"{url} answered {response.status_code}")
        try:
            if response.status_code != 200:
                raise ValueError(f"status {response.status_code}")
            data = response.json()["data"]
            ids = tuple(str(m["id"]) for m in data)
            owners = {str(m["id"]): str(m.get("owned_by") or "") for m in data}
            lengths = {
                str(m["id"]): int(m["max_model_len"])
                for m in data
                if isinstance(m.get("max_model_len"), int)
            }
        except (ValueError, KeyError, TypeError) as exc:
            return self._unlisted(endpoint, f"{type(exc).__name__}: {exc}")
        return _Listing(ids, owners, lengths)

    def _unlisted(self, endpoint: _Endpoint, why: str) -> None:
        """An endpoint without a readable model list: accepted unchecked, if the model is known."""
        if self._model is None:
            raise ConfigurationError(
                f"model=None needs the served model list, but {endpoint.url}/v1/models "
                f"cannot be read ({why}); pass model=..."
            )
        logger.warning("cannot list the models of %s (%s); not checked", endpoint.url, why)
        endpoint.checked = True

    def _apply_listing(self, endpoint: _Endpoint, listing: _Listing, *, strict: bool) -> None:
        """Check the model against one endpoint's listing; learn model, kind and context."""
        endpoint.served = listing.ids
        if self._model is None:
            if len(listing.ids) != 1:
                raise ConfigurationError(
                    f"model=None, but {endpoint.url} serves {len(listing.ids)} models "
                    f"({', '.join(listing.ids) or 'none'}); pass model=..."
                )
            self._model = listing.ids[0]
        if not _serves(listing.ids, self._model):
            message = (
                f"model {self._model!r} is not served by {endpoint.url}; it serves: "
                f"{', '.join(listing.ids) or '(nothing)'}"
            )
            if strict:
                raise ConfigurationError(message)
            endpoint.disabled = message
            logger.error("%s; endpoint disabled", message)
            return
        served_id = next(
            (i for i in listing.ids if i in (self._model, f"{self._model}:latest")),
            self._model,
        )
        endpoint.max_model_len = listing.max_model_len.get(served_id)
        endpoint.checked = True
        self._set_kind(self._detect(listing, served_id), endpoint.url)

    @staticmethod
    def _detect(listing: _Listing, served_id: str) -> ServerKind:
        owner = listing.owners.get(served_id, "").lower()
        if owner in ("vllm", "sglang"):
            return owner  # type: ignore[return-value]
        if owner in ("library", "ollama") or ":" in served_id:
            return "ollama"
        return "vllm"

    def _set_kind(self, kind: ServerKind, url: str | None) -> None:
        if self._configured_server != "auto":
            return
        if self._kind is None:
            self._kind = kind
            logger.debug("server kind %s (from %s)", kind, url)
            self._note_guard()
        elif self._kind != kind:
            logger.warning(
                "%s looks like %s, but the engine drives %s servers", url, kind, self._kind
            )

    def _guard_applies(self, kind: str) -> bool:
        if kind == "ollama":
            return False
        if kind == "sglang":
            return self.sglang_custom_logit_processor is not None
        return True

    def _note_guard(self) -> None:
        """Say once that the server cannot apply the n-gram guard."""
        kind = self._kind
        if self._guard_note_logged or kind is None or self.ngram_guard is None:
            return
        if kind == "ollama":
            self._guard_note_logged = True
            logger.warning(
                "Ollama has no no-repeat n-gram guard: pages are decoded without it, so "
                "repetition loops are more likely (they are still detected and flagged)"
            )
        elif kind == "sglang" and self.sglang_custom_logit_processor is None:
            self._guard_note_logged = True
            logger.info(
                "SGLang: no n-gram guard is sent; pass sglang_custom_logit_processor= "
                "(and start the server with --enable-custom-logit-processor) to apply it"
            )

    # -- on the loop: requests -----------------------------------------------------------

    async def _run(
        self, requests: list[OCRRequest], on_token: TokenCallback | None
    ) -> list[EngineResult]:
        if not requests:
            return []
        await self._setup()
        state = self._state()
        if self._model is None:
            return [self._unreachable(r) for r in requests]
        tasks = []
        for index, request in enumerate(requests):
            emit = None if on_token is None else (lambda t, i=index: on_token(i, t))
            task = asyncio.ensure_future(self._one(request, emit))
            state.running.add(task)
            task.add_done_callback(state.running.discard)
            tasks.append(task)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return [
            self._outcome(request, outcome)
            for request, outcome in zip(requests, outcomes, strict=True)
        ]

    async def _run_stream(self, request: OCRRequest, emit: Callable[[str], None]) -> EngineResult:
        await self._setup()
        if self._model is None:
            return self._unreachable(request)
        state = self._state()
        task = asyncio.ensure_future(self._one(request, emit))
        state.running.add(task)
        task.add_done_callback(state.running.discard)
        outcome = (await asyncio.gather(task, return_exceptions=True))[0]
        return self._outcome(request, outcome)

    def _unreachable(self, request: OCRRequest) -> EngineConnectionError:
        return EngineConnectionError(
            f"no server could be reached to learn the served model ({', '.join(self.base_urls)})",
            source=request.source,
            page=request.page,
        )

    @staticmethod
    def _outcome(request: OCRRequest, outcome: Any) -> EngineResult:
        if isinstance(outcome, (EngineOutput, DeepSeekOCRError)):
            return outcome
        where = {"source": request.source, "page": request.page}
        if isinstance(outcome, asyncio.CancelledError):
            return EngineTimeoutError("the request was cancelled", **where)
        return GenerationError(f"unexpected error: {type(outcome).__name__}: {outcome}", **where)

    def _spec(self) -> ResolutionSpec:
        family = self._family or _infer_family(self._model or "")
        tiles = _OLLAMA_MAX_TILES if self._kind == "ollama" and family is ModelFamily.V1 else 6
        return resolution_spec(family, Resolution.GUNDAM, max_tiles=tiles)

    def _vision_tokens(self, width: int, height: int) -> int:
        spec = self._spec()
        # Ollama tiles every page, even small ones
        return count_image_tokens(width, height, spec, always_tile=self._kind == "ollama")

    def _guard_ids(self, guard: NGramGuard) -> list[int]:
        if self._whitelist_ids is not None:
            return list(self._whitelist_ids)
        missing = [t for t in guard.whitelist if t not in _REAL_IDS]
        if missing:
            raise ConfigurationError(
                f"no token id is known for the guard's whitelist {missing}; "
                "pass whitelist_token_ids=[...]"
            )
        return [_REAL_IDS[t] for t in guard.whitelist]

    def _check_request(self, request: OCRRequest) -> NGramGuard | None:
        """Refuse what the server cannot do; return the guard to send (if any)."""
        if request.resolution is not None and request.resolution is not Resolution.GUNDAM:
            spec = self._spec()
            raise ConfigurationError(
                f"{self._kind or 'the'} server runs {self._model} at one fixed resolution, "
                f"gundam (a {spec.base_size} global view plus up to {spec.max_tiles} tiles "
                f"of {spec.image_size}); resolution {request.resolution.value!r} cannot be "
                "served -- use TransformersEngine for other modes",
                source=request.source,
                page=request.page,
            )
        if request.ngram_guard is False:
            return None
        guard = request.ngram_guard or self.ngram_guard
        if guard is None or not self._guard_applies(self._kind or "vllm"):
            return None
        try:
            self._guard_ids(guard)
        except ConfigurationError as exc:
            exc.source, exc.page = request.source, request.page
            raise
        return guard

    def _max_tokens(self, request: OCRRequest, vision: int) -> int:
        known = [e.max_model_len for e in self._endpoints if e.max_model_len]
        context = min(known) if known else _CONTEXT
        # prompt = BOS + image placeholders + text; a character never makes more than a token
        room = context - vision - len(request.prompt) - 4
        if room < 1:
            raise ConfigurationError(
                f"the page's prompt (~{vision + len(request.prompt)} tokens) does not fit the "
                f"model's context ({context})",
                source=request.source,
                page=request.page,
            )
        return min(request.max_new_tokens or self.max_new_tokens, room)

    def _body(
        self, request: OCRRequest, uri: str, guard: NGramGuard | None, max_tokens: int, stream: bool
    ) -> bytes:
        kind = self._kind or "vllm"
        text = request.prompt
        if kind == "sglang" and IMAGE_TOKEN not in text:
            text = f"{IMAGE_TOKEN}\n{text}"
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": uri}},
                        {"type": "text", "text": text},
                    ],
                }
            ],
            "temperature": 0.0,
            "max_tokens": max_tokens,
        }
        if kind != "ollama":
            body["skip_special_tokens"] = False
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if guard is not None:
            params = {
                "ngram_size": guard.ngram_size,
                "window_size": guard.window_size,
                "whitelist_token_ids": self._guard_ids(guard),
            }
            if kind == "vllm":
                body["vllm_xargs"] = params
            elif kind == "sglang":
                body["custom_logit_processor"] = self.sglang_custom_logit_processor
                body["custom_params"] = params
        body.update(self.extra_body)
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    async def _encode(self, image: Image.Image) -> str:
        if image.width * image.height <= _INLINE_ENCODE_PIXELS:
            return _encode_image(image, self.image_format, self.jpeg_quality)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, _encode_image, image, self.image_format, self.jpeg_quality
        )

    async def _one(self, request: OCRRequest, emit: Callable[[str], None] | None) -> EngineResult:
        """One page, start to finish: validate, encode, send with retries."""
        where = {"source": request.source, "page": request.page}
        try:
            guard = self._check_request(request)
            vision = self._vision_tokens(*request.image.size)
            max_tokens = self._max_tokens(request, vision)
        except DeepSeekOCRError as exc:
            return exc
        async with self._state().total:
            try:
                uri = await self._encode(request.image)
            except Exception as exc:
                return GenerationError(
                    f"cannot encode the page: {type(exc).__name__}: {exc}", **where
                )
            body = self._body(request, uri, guard, max_tokens, stream=emit is not None)
            del uri
            return await self._send(request, body, vision, emit)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_cap, self.backoff_base * 2 ** max(0, attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)

    async def _send(
        self,
        request: OCRRequest,
        body: bytes,
        vision: int,
        emit: Callable[[str], None] | None,
    ) -> EngineResult:
        delivered = False

        def forward(piece: str) -> None:
            nonlocal delivered
            delivered = True
            if emit is not None:
                emit(piece)

        attempt = malformed = 0
        exclude: _Endpoint | None = None
        delay = 0.0
        start = time.perf_counter()
        while True:
            attempt += 1
            try:
                endpoint = await self._acquire(exclude, delay)
            except _AttemptError as exc:
                return exc.to_error(request, attempt - 1)
            try:
                answer = await _within(
                    self._attempt(endpoint, body, forward if emit is not None else None),
                    self.timeout,
                )
            except _AttemptError as exc:
                failure = exc
            except TimeoutError:
                failure = _AttemptError(
                    "timeout", f"{endpoint.url} gave no answer within {self.timeout:g} s"
                )
            except httpx.TransportError as exc:
                failure = self._transport_failure(endpoint, exc)
            except httpx.HTTPError as exc:  # e.g. a body that cannot be decoded
                failure = self._malformed(endpoint, f"{type(exc).__name__}: {exc}", "")
            else:
                endpoint.successes += 1
                endpoint.quarantined_until = 0.0
                return self._output(answer, vision, time.perf_counter() - start)
            finally:
                endpoint.outstanding -= 1
                self._state().slots[endpoint.index].release()

            self._failed(endpoint, failure, attempt)
            if failure.kind == "malformed":
                malformed += 1
            retry = (
                failure.kind in _AttemptError.RETRYABLE
                and attempt <= self.max_retries
                and not (failure.kind == "malformed" and malformed >= _MALFORMED_ATTEMPTS)
                and not delivered
            )
            if not retry:
                return failure.to_error(request, attempt)
            logger.debug("retrying page (%s): %s", failure.kind, failure.message)
            exclude = endpoint
            delay = 0.0 if failure.kind == "throttled" else self._backoff(attempt)

    def _transport_failure(self, endpoint: _Endpoint, exc: httpx.TransportError) -> _AttemptError:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return _AttemptError("timeout", f"{endpoint.url} timed out ({detail})")
        return _AttemptError("connection", f"cannot talk to {endpoint.url} ({detail})")

    def _quarantine(self, endpoint: _Endpoint, why: str) -> None:
        now = time.monotonic()
        if endpoint.quarantined_until <= now:
            logger.warning(
                "endpoint %s failed (%s); taken out for %g s",
                endpoint.url,
                why,
                self.quarantine_seconds,
            )
        endpoint.quarantined_until = now + self.quarantine_seconds

    def _failed(self, endpoint: _Endpoint, failure: _AttemptError, attempt: int) -> None:
        endpoint.failures += 1
        if failure.kind in _AttemptError.QUARANTINE:
            self._quarantine(endpoint, failure.message)
        elif failure.kind == "throttled":
            wait = failure.retry_after
            wait = self._backoff(attempt) if wait is None else min(wait, self.timeout)
            endpoint.paused_until = max(endpoint.paused_until, time.monotonic() + wait)

    def _pick(self, exclude: _Endpoint | None, delay: float) -> tuple[_Endpoint | None, float]:
        """The endpoint for the next attempt, or how long to wait before asking again.

        A healthy endpoint other than the one that just failed is used at once; otherwise
        the retry waits out its backoff, then takes the failed one again if healthy, else
        the least busy quarantined one. Paused endpoints (429) are never used early.
        """
        now = time.monotonic()
        live = [e for e in self._endpoints if e.disabled is None]
        if not live:
            reasons = "; ".join(e.disabled or "" for e in self._endpoints)
            raise _AttemptError("misconfigured", f"no endpoint serves the model: {reasons}")
        ready = [e for e in live if e.paused_until <= now]
        healthy = [e for e in ready if e.quarantined_until <= now]
        others = [e for e in healthy if e is not exclude]
        if others:
            return min(others, key=lambda e: e.outstanding), 0.0
        if delay > 0:
            return None, delay
        if healthy:
            return healthy[0], 0.0
        if ready:
            return min(ready, key=lambda e: e.outstanding), 0.0
        return None, max(0.001, min(e.paused_until for e in live) - now)

    async def _acquire(self, exclude: _Endpoint | None, delay: float) -> _Endpoint:
        """Pick an endpoint and take one of its slots (counted as outstanding meanwhile)."""
        slots = self._state().slots
        while True:
            endpoint, wait = self._pick(exclude, delay)
            if endpoint is None:
                await asyncio.sleep(wait)
                delay = 0.0
                continue
            endpoint.outstanding += 1
            try:
                await slots[endpoint.index].acquire()
            except BaseException:
                endpoint.outstanding -= 1
                raise
            now = time.monotonic()
            if endpoint.healthy(now):
                return endpoint
            elsewhere = any(e.healthy(now) for e in self._endpoints if e is not endpoint)
            if elsewhere or endpoint.paused_until > now or endpoint.disabled is not None:
                # it failed, or was paused by a 429, while we queued for it: pick again
                endpoint.outstanding -= 1
                slots[endpoint.index].release()
                exclude, delay = (endpoint if elsewhere else None), 0.0
                continue
            return endpoint  # quarantined, but nothing is healthy

    async def _check_lazily(self, endpoint: _Endpoint) -> None:
        """The health check of an endpoint that could not be reached at first use."""
        async with self._state().check_locks[endpoint.index]:
            if endpoint.checked or endpoint.disabled:
                return
            listing = await self._probe(endpoint)
            if listing is not None:
                self._apply_listing(endpoint, listing, strict=False)
            if endpoint.disabled:
                raise _AttemptError("misconfigured", endpoint.disabled)

    async def _attempt(
        self, endpoint: _Endpoint, body: bytes, emit: Callable[[str], None] | None
    ) -> _Answer:
        if self.health_check and not endpoint.checked:
            await self._check_lazily(endpoint)
        state = self._state()
        lane, client = state.take_lane(endpoint.index)
        try:
            return await self._exchange(client, endpoint, body, emit)
        finally:
            state.lane_load[endpoint.index][lane] -= 1

    async def _exchange(
        self,
        client: httpx.AsyncClient,
        endpoint: _Endpoint,
        body: bytes,
        emit: Callable[[str], None] | None,
    ) -> _Answer:
        url = f"{endpoint.url}/v1/chat/completions"
        if emit is None:
            response = await client.post(url, content=body)
            if response.status_code != 200:
                raise self._status_failure(endpoint, response)
            return self._parse_completion(endpoint, response.content)
        async with client.stream("POST", url, content=body) as response:
            if response.status_code != 200:
                await response.aread()
                raise self._status_failure(endpoint, response)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                answer = self._parse_completion(endpoint, await response.aread())
                piece = strip_special(answer.text)
                if piece:
                    emit(piece)
                return answer
            return await self._read_events(endpoint, response, emit)

    @staticmethod
    def _status_failure(endpoint: _Endpoint, response: httpx.Response) -> _AttemptError:
        status = response.status_code
        text = response.text
        message = f"{endpoint.url} answered {status}: {_error_detail(text)}"
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return _AttemptError(
                "throttled", message, status=status, body=_snippet(text), retry_after=retry_after
            )
        if status == 408:
            return _AttemptError("timeout", message, status=status, body=_snippet(text))
        if status >= 500:
            return _AttemptError("server", message, status=status, body=_snippet(text))
        return _AttemptError("status", message, status=status, body=_snippet(text))

    @staticmethod
    def _malformed(endpoint: _Endpoint, why: str, raw: bytes | str) -> _AttemptError:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return _AttemptError(
            "malformed",
            f"{endpoint.url} sent a malformed completion ({why})",
            status=200,
            body=_snippet(text),
        )

    def _parse_completion(self, endpoint: _Endpoint, raw: bytes) -> _Answer:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise self._malformed(endpoint, f"invalid JSON: {exc}", raw) from None
        if not isinstance(data, dict):
            raise self._malformed(endpoint, "not a JSON object", raw)
        if "error" in data and not data.get("choices"):
            raise self._malformed(endpoint, f"an error: {_error_detail(raw.decode())}", raw)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._malformed(endpoint, "no choices", raw)
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise self._malformed(endpoint, "no message", raw)
        content = _content_text(message.get("content"))
        if content is None:
            raise self._malformed(endpoint, "content is not text", raw)
        prompt_tokens, completion_tokens = _usage(data.get("usage"))
        ids = choices[0].get("token_ids")
        return _Answer(
            text=content,
            finish_reason=choices[0].get("finish_reason"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            pieces=1,
            token_ids=ids
            if isinstance(ids, list) and all(isinstance(i, int) for i in ids)
            else None,
        )

    async def _read_events(
        self, endpoint: _Endpoint, response: httpx.Response, emit: Callable[[str], None]
    ) -> _Answer:
        """Read an SSE stream of chat-completion chunks, forwarding content deltas."""
        parts: list[str] = []
        finish: str | None = None
        usage: tuple[int | None, int | None] = (None, None)
        finished = False
        data_lines: list[str] = []
        pieces = 0
        stripper = _SpecialStripper()

        def dispatch(payload: str) -> bool:
            nonlocal finish, usage, pieces
            if payload.strip() == "[DONE]":
                return True
            try:
                chunk = json.loads(payload)
            except ValueError as exc:
                raise self._malformed(endpoint, f"invalid JSON event: {exc}", payload) from None
            if not isinstance(chunk, dict):
                raise self._malformed(endpoint, "an event is not a JSON object", payload)
            if chunk.get("error"):
                raise _AttemptError(
                    "server",
                    f"{endpoint.url} failed mid-stream: {_error_detail(payload)}",
                    body=_snippet(payload),
                )
            if chunk.get("usage"):
                usage = _usage(chunk["usage"])
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                text = _content_text(delta.get("content")) if isinstance(delta, dict) else None
                if text:
                    parts.append(text)
                    pieces += 1
                    piece = stripper.feed(text)
                    if piece:
                        emit(piece)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
            return False

        async for line in response.aiter_lines():
            if not line:
                if data_lines and dispatch("\n".join(data_lines)):
                    finished = True
                    break
                data_lines = []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if field == "data":
                data_lines.append(value[1:] if value.startswith(" ") else value)
        else:
            if data_lines and dispatch("\n".join(data_lines)):
                finished = True
        if not finished and finish is None:
            raise _AttemptError("connection", f"{endpoint.url} ended the stream early")
        if rest := stripper.flush():
            emit(rest)
        return _Answer(
            text="".join(parts),
            finish_reason=finish,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            pieces=pieces,
        )

    def _output(self, answer: _Answer, vision: int, seconds: float) -> EngineOutput:
        raw = strip_special(answer.text)
        finish: Literal["stop", "length"] = "length" if answer.finish_reason == "length" else "stop"
        output_tokens = answer.completion_tokens
        if output_tokens is None:
            output_tokens = answer.pieces + (finish == "stop")
        return EngineOutput(
            raw=raw,
            finish_reason=finish,
            vision_tokens=vision,
            prompt_tokens=answer.prompt_tokens if answer.prompt_tokens is not None else vision,
            output_tokens=output_tokens,
            seconds=seconds,
            resolution=Resolution.GUNDAM.value,
            model=self._model or "unknown",
            token_ids=answer.token_ids or [],
        )


def _content_text(content: Any) -> str | None:
    """A message's content as text (a string, a list of text parts, or null -> "")."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    return None


def _usage(usage: Any) -> tuple[int | None, int | None]:
    if not isinstance(usage, dict):
        return None, None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )
