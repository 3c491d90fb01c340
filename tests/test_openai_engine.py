"""OpenAIEngine against a small local HTTP server that speaks vLLM's OpenAI shapes.

The server (asyncio, its own thread, 127.0.0.1 on a free port) records every request it
receives -- body, headers, arrival time on its own clock, the page decoded from the data
URI -- and can inject a fault per request: 429 with Retry-After, 5xx, a reset mid-body, a
hanging answer, malformed JSON, no choices, ``finish_reason: length``, a 400, a stream cut
in the middle. Tests assert on what the server saw (counts, order, in-flight maxima), never
on the wall time of the test.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import gc
import io
import json
import logging
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from langchain_deepseek_ocr import (
    ConfigurationError,
    DeepSeekOCR,
    EngineConnectionError,
    EngineOutput,
    EngineStatusError,
    EngineTimeoutError,
    ModelFamily,
    NGramGuard,
    OCREngine,
    OCRRequest,
    OCRResult,
    Resolution,
)
from langchain_deepseek_ocr._openai_engine import OpenAIEngine, parse_retry_after
from langchain_deepseek_ocr._preprocess import count_image_tokens
from langchain_deepseek_ocr._tasks import build_prompt, resolution_spec

pytestmark = pytest.mark.timeout(60)

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
MODEL = "tiny-dsocr"
PROMPT = build_prompt("markdown")
GROUNDED = "<|ref|>title<|/ref|><|det|>[[10, 20, 300, 40]]<|/det|>"


def page(i: int) -> Image.Image:
    """A small page whose first pixel encodes its number (the server reads it back)."""
    return Image.new("RGB", (48, 32), (i % 256, i // 256, 99))


def request(i: int, **kw: Any) -> OCRRequest:
    return OCRRequest(image=page(i), prompt=PROMPT, source=f"p{i}", **kw)


def reply_text(page_id: int | None) -> str:
    return f"{BOS}{GROUNDED}\n# Page {page_id}\n\n<table><tr><td>x</td></tr></table>{EOS}"


def clean_text(page_id: int | None) -> str:
    return reply_text(page_id).replace(BOS, "").replace(EOS, "")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


async def await_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


# -- the fake server ---------------------------------------------------------------------


class Tracker:
    """In-flight chat requests across several servers."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0

    def enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1


class Received:
    """One chat request as the server saw it."""

    def __init__(self, body: dict[str, Any], headers: dict[str, str], at: float):
        self.body = body
        self.headers = headers
        self.at = at
        self.image: Image.Image | None = None
        self.page: int | None = None
        content = body["messages"][0]["content"]
        url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
        head, _, data = url.partition(",")
        self.data_uri_head = head
        self.image = Image.open(io.BytesIO(base64.b64decode(data)))
        self.image.load()
        r, g, b = self.image.convert("RGB").getpixel((0, 0))[:3]
        self.page = r + 256 * g if b == 99 else None
        self.text = next(p["text"] for p in content if p["type"] == "text")


class FakeServer:
    """A tiny HTTP/1.1 server with vLLM's ``/v1/models`` and ``/v1/chat/completions``."""

    def __init__(
        self,
        *,
        models: tuple[str, ...] = (MODEL,),
        owned_by: str = "vllm",
        max_model_len: int | None = 8192,
        tracker: Tracker | None = None,
    ):
        self.models = models
        self.owned_by = owned_by
        self.max_model_len = max_model_len
        self.tracker = tracker or Tracker()
        self.chat: list[Received] = []
        self.model_gets: list[dict[str, str]] = []
        self.faults: collections.deque[str] = collections.deque()
        self.default_fault: str | None = None
        self.retry_after = "1"
        self.ignore_stream = False
        self.answered: collections.Counter[int | None] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.disconnects = 0
        self.gate_open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    # lifecycle
    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def close_gate(self) -> None:
        self.gate_open = False
        self.loop.call_soon_threadsafe(self._gate.clear)

    def open_gate(self) -> None:
        self.gate_open = True
        self.loop.call_soon_threadsafe(self._gate.set)

    # HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                line, *rest = head.decode("latin-1").split("\r\n")
                method, path, _ = line.split(" ", 2)
                headers = {}
                for item in rest:
                    if item:
                        key, _, value = item.partition(":")
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                if not await self._dispatch(method, path, headers, body, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        *,
        content_type: str = "application/json",
        extra: tuple[str, ...] = (),
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"content-type: {content_type}",
            f"content-length: {len(payload)}",
            *extra,
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    async def _dispatch(self, method, path, headers, body, reader, writer) -> bool:  # noqa: PLR0917
        if method == "GET" and path == "/v1/models":
            self.model_gets.append(headers)
            cards = [
                {
                    "id": m,
                    "object": "model",
                    "created": 1795978504,
                    "owned_by": self.owned_by,
                    "root": f"/models/{m}",
                    "parent": None,
                    **({"max_model_len": self.max_model_len} if self.max_model_len else {}),
                    "permission": [],
                }
                for m in self.models
            ]
            await self._send(writer, 200, json.dumps({"object": "list", "data": cards}).encode())
            return True
        if method != "POST" or path != "/v1/chat/completions":
            await self._send(writer, 404, b'{"detail":"Not Found"}')
            return True
        received = Received(json.loads(body), headers, time.monotonic())
        self.chat.append(received)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.tracker.enter()
        try:
            return await self._chat(received, reader, writer)
        finally:
            self.in_flight -= 1
            self.tracker.leave()

    async def _closed(self, reader: asyncio.StreamReader) -> None:
        """Returns when the client closes the connection (it sends nothing while waiting)."""
        while await reader.read(1024):
            pass

    async def _chat(self, received: Received, reader, writer) -> bool:
        fault = self.faults.popleft() if self.faults else self.default_fault
        if not self._gate.is_set():
            gate = asyncio.ensure_future(self._gate.wait())
            closed = asyncio.ensure_future(self._closed(reader))
            await asyncio.wait({gate, closed}, return_when=asyncio.FIRST_COMPLETED)
            gate.cancel()
            if closed.done():
                self.disconnects += 1
                return False
            closed.cancel()
        if fault == "hang":
            await self._closed(reader)
            self.disconnects += 1
            return False
        if fault in ("429", "429-no-header"):
            extra = ("retry-after: " + self.retry_after,) if fault == "429" else ()
            await self._send(writer, 429, b'{"error":{"message":"slow down"}}', extra=extra)
            return True
        if fault in ("500", "503"):
            await self._send(writer, int(fault), b'{"error":{"message":"overloaded"}}')
            return True
        if fault == "400":
            message = "`ngram_size` has to be a strictly positive integer, got -1."
            error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
            await self._send(writer, 400, json.dumps({"error": error}).encode())
            return True
        if fault == "reset":
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b'content-length: 4000\r\n\r\n{"id": "chatcmpl-1", "choi'
            )
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if fault == "malformed":
            await self._send(writer, 200, b'{"id": "chatcmpl-1", "choices": [')
            return True
        if fault == "nochoices":
            await self._send(writer, 200, b'{"id": "chatcmpl-1", "object": "chat.completion"}')
            return True
        finish = "length" if fault == "length" else "stop"
        text = reply_text(received.page)
        if received.body.get("stream") and not self.ignore_stream:
            return await self._stream(received, writer, text, finish, cut=fault == "stream-cut")
        self.answered[received.page] += 1
        await self._send(writer, 200, json.dumps(completion(received, text, finish)).encode())
        return True

    async def _stream(self, received, writer, text, finish, *, cut: bool) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )

        async def event(obj: Any) -> None:
            data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": MODEL}

        def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            return {**base, "choices": [choice]}

        await event(chunk({"role": "assistant", "content": ""}))
        for i, piece in enumerate(stream_pieces(text)):
            await event(chunk({"content": piece}))
            if cut and i == 6:
                writer.transport.abort()
                return False
        await event(chunk({}, finish))
        if (received.body.get("stream_options") or {}).get("include_usage"):
            await event({**base, "choices": [], "usage": usage()})
        await event("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        self.answered[received.page] += 1
        return True


def stream_pieces(text: str) -> list[str]:
    return [text[i : i + 7] for i in range(0, len(text), 7)]


def usage() -> dict[str, Any]:
    return {
        "prompt_tokens": 284,
        "total_tokens": 316,
        "completion_tokens": 32,
        "prompt_tokens_details": None,
    }


def completion(received: Received, text: str, finish: str) -> dict[str, Any]:
    """A chat completion in vLLM's shape (vllm-cpu.md section 5)."""
    message = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "reasoning": None,
    }
    return {
        "id": "chatcmpl-9e94931ebaa05f75",
        "object": "chat.completion",
        "created": 1795978504,
        "model": received.body["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
                "token_ids": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": "vllm-0.32.0-6bb38053",
        "usage": usage(),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def servers():
    made: list[FakeServer] = []

    def make(**kw: Any) -> FakeServer:
        made.append(FakeServer(**kw))
        return made[-1]

    yield make
    for server in made:
        server.open_gate()
        server.stop()


@pytest.fixture
def server(servers) -> FakeServer:
    return servers()


@pytest.fixture
def engines():
    made: list[OpenAIEngine] = []

    def make(base_url: Any, model: str | None = MODEL, **kw: Any) -> OpenAIEngine:
        kw = {"backoff_base": 0.01, "backoff_cap": 0.05, "timeout": 10.0, **kw}
        made.append(OpenAIEngine(base_url, model, **kw))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def ok(result: Any) -> EngineOutput:
    assert isinstance(result, EngineOutput), result
    return result


# -- request shape and parsing -----------------------------------------------------------


def test_engine_implements_the_protocol(server, engines):
    engine = engines(server.url)
    assert isinstance(engine, OCREngine)
    assert engine.family is ModelFamily.V1
    assert engine.default_resolution is Resolution.GUNDAM
    assert engine.resolutions() == (Resolution.GUNDAM,)
    assert engine.batch_size == engine.max_concurrency == 256
    assert engine.max_concurrency_per_endpoint == 128
    three = OpenAIEngine(["http://a:1", "http://b:1", "http://c:1"], MODEL)
    assert three.max_concurrency == 3 * 128  # every server's batch can be full
    assert OpenAIEngine("http://a:1", MODEL, batch_size=16).batch_size == 16


def test_request_shape(server, engines):
    engine = engines(server.url + "/v1/")  # a trailing /v1 is accepted
    ok(engine.generate([request(5)])[0])
    (got,) = server.chat
    body = got.body
    assert body["model"] == MODEL
    assert [m["role"] for m in body["messages"]] == ["user"]
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"]
    assert got.data_uri_head == "data:image/png;base64"
    assert got.image.size == (48, 32)
    assert np.array_equal(np.asarray(got.image.convert("RGB")), np.asarray(page(5)))
    assert got.text == PROMPT
    assert body["temperature"] == 0
    assert body["skip_special_tokens"] is False
    assert body["vllm_xargs"] == {
        "ngram_size": 30,
        "window_size": 90,
        "whitelist_token_ids": [128821, 128822],
    }
    vision = count_image_tokens(48, 32, resolution_spec("v1", "gundam"))
    assert body["max_tokens"] == min(8192, 8192 - vision - len(PROMPT) - 4)
    assert "stream" not in body
    assert got.headers["content-type"] == "application/json"
    assert "authorization" not in got.headers


def test_guard_per_request_and_overrides(server, engines):
    engine = engines(server.url)
    engine.generate(
        [
            request(0, ngram_guard=False),
            request(1, ngram_guard=NGramGuard(20, 50)),
            request(2, max_new_tokens=64),
        ]
    )
    by_page = {r.page: r.body for r in server.chat}
    assert "vllm_xargs" not in by_page[0]
    assert by_page[1]["vllm_xargs"]["ngram_size"] == 20
    assert by_page[1]["vllm_xargs"]["window_size"] == 50
    assert by_page[2]["max_tokens"] == 64

    engines(server.url, ngram_guard=None).generate([request(3)])
    assert "vllm_xargs" not in server.chat[-1].body
    engines(server.url, whitelist_token_ids=[7, 8]).generate([request(4)])
    assert server.chat[-1].body["vllm_xargs"]["whitelist_token_ids"] == [7, 8]

    with pytest.raises(ConfigurationError, match="whitelist"):
        engines(server.url, ngram_guard=NGramGuard(whitelist=("<tr>",)))
    engines(server.url, ngram_guard=NGramGuard(whitelist=("<tr>",)), whitelist_token_ids=[1])


def test_max_tokens_fit_the_served_context(servers, engines):
    server = servers(max_model_len=1000)
    engines(server.url).generate([request(0)])
    vision = count_image_tokens(48, 32, resolution_spec("v1", "gundam"))
    assert server.chat[0].body["max_tokens"] == 1000 - vision - len(PROMPT) - 4


def test_result_parsing(server, engines):
    out = ok(engines(server.url).generate([request(7)])[0])
    assert out.raw == clean_text(7)
    assert BOS not in out.raw
    assert EOS not in out.raw
    assert out.raw.startswith(GROUNDED)  # grounding tags survive
    assert "<td>x</td>" in out.raw
    assert out.finish_reason == "stop"
    assert out.prompt_tokens == 284
    assert out.output_tokens == 32
    assert out.vision_tokens == 273  # v1 gundam, untiled: 16 * 17 + 1
    assert out.resolution == "gundam"
    assert out.model == MODEL


def test_finish_reason_length(server, engines):
    server.faults.append("length")
    out = ok(engines(server.url).generate([request(0)])[0])
    assert out.finish_reason == "length"


def test_v2_family_is_inferred_from_the_model_id(servers, engines):
    server = servers(models=("deepseek-ai/DeepSeek-OCR-2",))
    engine = engines(server.url, "deepseek-ai/DeepSeek-OCR-2")
    assert engine.family is ModelFamily.V2
    out = ok(engine.generate([request(0)])[0])
    assert out.vision_tokens == 257  # v2 untiled: 16 * 16 + 1
    big = Image.new("RGB", (1191, 1684), "white")  # A4 at 144 dpi: 2x3 tiles of 768
    result = engine.generate([OCRRequest(image=big, prompt=PROMPT)])[0]
    assert ok(result).vision_tokens == 1121
    assert engines(server.url, "whatever", family="v2").family is ModelFamily.V2


def test_other_resolutions_are_refused_per_page(server, engines):
    engine = engines(server.url)
    results = engine.generate(
        [request(0, resolution=Resolution.SMALL), request(1, resolution=Resolution.GUNDAM)]
    )
    assert isinstance(results[0], ConfigurationError)
    assert "gundam" in str(results[0])
    assert "'small'" in str(results[0])
    assert results[0].source == "p0"
    ok(results[1])
    assert [r.page for r in server.chat] == [1]  # the refused page was never sent


# -- model check -------------------------------------------------------------------------


def test_unknown_model_names_the_served_ids(servers, engines):
    server = servers(models=(MODEL, "other-model"))
    engine = engines(server.url, "deepseek-ai/DeepSeek-OCR")
    with pytest.raises(ConfigurationError, match="tiny-dsocr, other-model"):
        engine.generate([request(0)])
    assert server.chat == []


def test_model_none_uses_the_only_served_model(server, servers, engines):
    engine = engines(server.url, None)
    assert engine.model_name == MODEL
    ok(engine.generate([request(0)])[0])
    assert server.chat[0].body["model"] == MODEL

    two = servers(models=("a", "b"))
    with pytest.raises(ConfigurationError, match="a, b"):
        engines(two.url, None).generate([request(0)])


def test_health_check_runs_once_per_endpoint(server, servers, engines):
    other = servers()
    engine = engines([server.url, other.url])
    for _ in range(3):
        engine.generate([request(0), request(1)])
    assert len(server.model_gets) == 1
    assert len(other.model_gets) == 1

    quiet = servers()
    engines(quiet.url, health_check=False).generate([request(0)])
    assert quiet.model_gets == []
    assert "vllm_xargs" in quiet.chat[0].body  # auto without a check means vLLM


# -- faults and retries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "attempts"),
    [
        (["503"], 2),
        (["500", "503", "500"], 4),
        (["reset"], 2),
        (["hang"], 2),
        (["malformed"], 2),
        (["nochoices"], 2),
        (["429-no-header"], 2),
    ],
)
def test_faults_are_retried(server, engines, faults, attempts):
    server.faults.extend(faults)
    engine = engines(server.url, timeout=1.0 if "hang" in faults else 10.0)
    out = ok(engine.generate([request(3)])[0])
    assert out.raw == clean_text(3)
    assert len(server.chat) == attempts
    assert server.answered[3] == 1


def test_retries_are_bounded(server, engines):
    server.default_fault = "503"
    result = engines(server.url, max_retries=2).generate([request(0)])[0]
    assert isinstance(result, EngineStatusError)
    assert result.status_code == 503
    assert "overloaded" in result.body
    assert (result.source, result.page) == ("p0", None)
    assert len(server.chat) == 3


def test_malformed_answers_are_retried_once_only(server, engines):
    server.default_fault = "malformed"
    result = engines(server.url, max_retries=5).generate([request(0)])[0]
    assert isinstance(result, EngineStatusError)
    assert result.status_code == 200
    assert "malformed" in str(result)
    assert len(server.chat) == 2


def test_a_400_is_not_retried(server, engines):
    server.faults.append("400")
    result = engines(server.url).generate([request(0)])[0]
    assert isinstance(result, EngineStatusError)
    assert result.status_code == 400
    assert "ngram_size" in str(result)
    assert "ngram_size" in result.body
    assert len(server.chat) == 1


def test_timeouts_close_the_connection_and_end_in_a_timeout_error(server, engines):
    server.default_fault = "hang"
    result = engines(server.url, timeout=1.0, max_retries=1).generate([request(0)])[0]
    assert isinstance(result, EngineTimeoutError)
    assert len(server.chat) == 2
    wait_until(lambda: server.disconnects == 2)


def test_retry_after_is_honoured(server, engines):
    server.faults.append("429")
    server.retry_after = "1"
    engine = engines(server.url, max_concurrency_per_endpoint=1)
    results = engine.generate([request(i) for i in range(3)])
    assert [ok(r).raw for r in results] == [clean_text(i) for i in range(3)]
    throttled, *later = server.chat
    assert len(later) == 3
    # the 429 paused the endpoint: nothing, not even pages queued for it, came sooner
    assert all(r.at - throttled.at >= 1.0 for r in later)  # the server's own clock


def test_parse_retry_after():
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=5)), now=now) == 5.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5)), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_unreachable_server(dead_url, engines):
    engine = engines(dead_url, max_retries=2)
    result = engine.generate([request(0)])[0]
    assert isinstance(result, EngineConnectionError)
    assert dead_url in str(result)
    assert engine.endpoint_status()[0].quarantined


def test_unreachable_server_and_unknown_model(dead_url, engines):
    result = engines(dead_url, None).generate([request(0)])[0]
    assert isinstance(result, EngineConnectionError)


# -- several endpoints -------------------------------------------------------------------


def test_failover_from_a_dead_endpoint(dead_url, server, engines):
    engine = engines([dead_url, server.url])
    results = engine.generate([request(i) for i in range(30)])
    assert [ok(r).raw for r in results] == [clean_text(i) for i in range(30)]
    assert server.answered == collections.Counter(range(30))
    dead, alive = engine.endpoint_status()
    assert dead.quarantined
    assert not alive.quarantined
    assert alive.successes == 30


def test_failover_from_an_endpoint_answering_503(servers, engines):
    bad, good = servers(), servers()
    bad.default_fault = "503"
    engine = engines([bad.url, good.url], max_concurrency_per_endpoint=4)
    results = engine.generate([request(i) for i in range(30)])
    assert [ok(r).raw for r in results] == [clean_text(i) for i in range(30)]
    assert good.answered == collections.Counter(range(30))  # every page once
    assert sum(bad.answered.values()) == 0
    assert 1 <= len(bad.chat) <= 4  # only the first wave reached it
    assert engine.endpoint_status()[0].quarantined

    seen = len(bad.chat)
    engine.generate([request(i) for i in range(30, 40)])
    assert len(bad.chat) == seen  # quarantined: no new traffic
    assert sum(good.answered.values()) == 40


def test_requests_are_spread_over_endpoints(servers, engines):
    tracker = Tracker()
    a, b = servers(tracker=tracker), servers(tracker=tracker)
    a.close_gate()
    b.close_gate()
    engine = engines([a.url, b.url], max_concurrency=6, max_concurrency_per_endpoint=4)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(engine.generate, [request(i) for i in range(30)])
        wait_until(lambda: tracker.in_flight == 6)
        assert a.in_flight == 3
        assert b.in_flight == 3  # least outstanding first
        a.open_gate()
        b.open_gate()
        results = future.result(30)
    assert [ok(r).raw for r in results] == [clean_text(i) for i in range(30)]
    assert tracker.max_in_flight == 6  # the total limit: respected and reached
    assert a.max_in_flight <= 4
    assert b.max_in_flight <= 4
    assert collections.Counter(a.answered) + collections.Counter(b.answered) == (
        collections.Counter(range(30))
    )


async def test_max_concurrency_is_respected_and_reached(server, engines):
    server.close_gate()
    engine = engines(server.url, max_concurrency=8)
    task = asyncio.ensure_future(engine.agenerate([request(i) for i in range(40)]))
    await await_until(lambda: server.in_flight == 8)
    server.open_gate()
    results = await task
    assert [ok(r).raw for r in results] == [clean_text(i) for i in range(40)]
    assert server.max_in_flight == 8
    assert server.answered == collections.Counter(range(40))


async def test_per_endpoint_limit(server, engines):
    server.close_gate()
    engine = engines(server.url, max_concurrency=50, max_concurrency_per_endpoint=5)
    task = asyncio.ensure_future(engine.agenerate([request(i) for i in range(20)]))
    await await_until(lambda: server.in_flight == 5)
    assert engine.endpoint_status()[0].outstanding == 20  # the rest wait for a slot
    server.open_gate()
    await task
    assert server.max_in_flight == 5


# -- cancellation ------------------------------------------------------------------------


async def test_cancelling_agenerate_cancels_the_requests(server, engines):
    server.close_gate()
    engine = engines(server.url, max_concurrency=4)
    task = asyncio.ensure_future(engine.agenerate([request(i) for i in range(10)]))
    await await_until(lambda: server.in_flight == 4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await await_until(lambda: server.disconnects == 4)
    assert server.in_flight == 0
    assert len(server.chat) == 4  # nothing sent after the cancellation
    assert engine.endpoint_status()[0].outstanding == 0
    server.open_gate()
    ok((await engine.agenerate([request(11)]))[0])  # still usable


def test_cancel_ends_running_pages_in_timeout_errors(server, engines):
    server.close_gate()
    engine = engines(server.url, max_concurrency=2)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(engine.generate, [request(i) for i in range(5)])
        wait_until(lambda: server.in_flight == 2)
        engine.cancel()
        results = future.result(10)
    assert all(isinstance(r, EngineTimeoutError) for r in results)
    assert [r.source for r in results] == [f"p{i}" for i in range(5)]


# -- sync / async / threads --------------------------------------------------------------


async def test_sync_generate_inside_a_running_loop(server, engines):
    engine = engines(server.url)
    results = engine.generate([request(0), request(1)])
    assert [ok(r).raw for r in results] == [clean_text(0), clean_text(1)]


def test_sync_generate_from_several_threads(server, engines):
    engine = engines(server.url, max_concurrency=4)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        batches = list(
            pool.map(lambda k: engine.generate([request(k * 10 + i) for i in range(5)]), range(4))
        )
    for k, results in enumerate(batches):
        assert [ok(r).raw for r in results] == [clean_text(k * 10 + i) for i in range(5)]
    assert server.max_in_flight <= 4


async def test_agenerate_and_astream_from_asyncio_run(server, engines):
    engine = engines(server.url)

    async def main() -> list[Any]:
        return await engine.agenerate([request(0)])

    loop_results = await asyncio.to_thread(asyncio.run, main())
    assert ok(loop_results[0]).raw == clean_text(0)
    assert ok((await engine.agenerate([request(1)]))[0]).raw == clean_text(1)


# -- streaming ---------------------------------------------------------------------------


def test_stream_yields_the_deltas(server, engines):
    engine = engines(server.url)
    pieces = list(engine.stream(request(4)))
    assert len(pieces) > 3
    assert "".join(pieces) == clean_text(4)
    body = server.chat[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_astream_yields_the_deltas(server, engines):
    engine = engines(server.url)
    pieces = [p async for p in engine.astream(request(4))]
    assert len(pieces) > 3
    assert "".join(pieces) == clean_text(4)


def test_stream_falls_back_to_one_piece(server, engines):
    server.ignore_stream = True
    assert list(engines(server.url).stream(request(2))) == [clean_text(2)]


def test_on_token_gets_every_delta(server, engines):
    got: dict[int, list[str]] = collections.defaultdict(list)
    results = engines(server.url).generate(
        [request(0), request(1)], on_token=lambda i, t: got[i].append(t)
    )
    for i in (0, 1):
        out = ok(results[i])
        assert len(got[i]) > 3
        assert "".join(got[i]) == out.raw == clean_text(i)
        assert out.output_tokens == 32
        assert out.prompt_tokens == 284


def test_stream_retries_before_the_first_piece_only(server, engines):
    server.faults.append("503")
    engine = engines(server.url)
    assert "".join(engine.stream(request(1))) == clean_text(1)
    assert len(server.chat) == 2

    server.faults.append("stream-cut")
    got: list[str] = []
    with pytest.raises(EngineConnectionError):
        got.extend(engine.stream(request(2)))
    assert got
    assert clean_text(2).startswith("".join(got))  # what came out, BOS stripped
    assert len(server.chat) == 3  # not retried: the text was already out


# -- servers other than vLLM ------------------------------------------------------------


def test_ollama(servers, engines, caplog):
    server = servers(models=("deepseek-ocr:latest",), owned_by="library", max_model_len=None)
    engine = engines(server.url, "deepseek-ocr")
    with caplog.at_level(logging.WARNING, logger="langchain_deepseek_ocr._openai_engine"):
        results = engine.generate([request(0)]) + engine.generate([request(1)])
    assert engine.server == "ollama"
    assert not engine.supports_ngram_guard
    warnings = [r for r in caplog.records if "n-gram guard" in r.getMessage()]
    assert len(warnings) == 1
    for received in server.chat:
        assert "vllm_xargs" not in received.body
        assert "skip_special_tokens" not in received.body
        assert received.text == PROMPT
    # Ollama always tiles (up to 9 tiles): a 48x32 page gets a 3x2 grid
    assert ok(results[0]).vision_tokens == 273 + (2 * 10) * (3 * 10 + 1)
    refused = engine.generate([request(2, resolution=Resolution.BASE)])[0]
    assert isinstance(refused, ConfigurationError)


def test_sglang(servers, engines):
    server = servers(owned_by="sglang")
    engine = engines(server.url)
    engine.generate([request(0)])
    body = server.chat[0].body
    assert engine.server == "sglang"
    assert not engine.supports_ngram_guard
    assert body["skip_special_tokens"] is False
    assert "vllm_xargs" not in body
    assert "custom_logit_processor" not in body
    assert server.chat[0].text == f"<image>\n{PROMPT}"

    guarded = engines(server.url, sglang_custom_logit_processor="SERIALISED")
    guarded.generate([request(1)])
    body = server.chat[1].body
    assert guarded.supports_ngram_guard
    assert body["custom_logit_processor"] == "SERIALISED"
    assert body["custom_params"] == {
        "ngram_size": 30,
        "window_size": 90,
        "whitelist_token_ids": [128821, 128822],
    }


def test_explicit_server_kind(server, engines):
    engine = engines(server.url, server="ollama")
    engine.generate([request(0)])
    assert "vllm_xargs" not in server.chat[0].body


# -- API key and configuration -----------------------------------------------------------


def test_api_key_is_sent_and_kept_secret(server, engines, monkeypatch):
    monkeypatch.delenv("DEEPSEEK_OCR_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    engine = engines(server.url, api_key="sk-secret-123")
    engine.generate([request(0)])
    assert server.chat[0].headers["authorization"] == "Bearer sk-secret-123"
    assert server.model_gets[0]["authorization"] == "Bearer sk-secret-123"
    assert isinstance(engine.api_key, SecretStr)
    assert "sk-secret-123" not in repr(engine)
    assert "sk-secret-123" not in str(engine.endpoint_status())

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert engines(server.url).api_key.get_secret_value() == "sk-openai"
    monkeypatch.setenv("DEEPSEEK_OCR_API_KEY", "sk-env")
    engines(server.url).generate([request(1)])
    assert server.chat[-1].headers["authorization"] == "Bearer sk-env"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("localhost:8000",), {}),
        ((["http://a:1", "http://a:1/"],), {}),
        (([],), {}),
        (("http://a:1",), {"server": "tgi"}),
        (("http://a:1",), {"max_concurrency": 0}),
        (("http://a:1",), {"family": "v3"}),
        (("http://a:1",), {"image_format": "GIF"}),
    ],
)
def test_bad_configuration(args, kwargs):
    with pytest.raises(ConfigurationError):
        OpenAIEngine(*args, **kwargs)


def test_jpeg_images(server, engines):
    engines(server.url, image_format="JPEG").generate([request(0)])
    assert server.chat[0].data_uri_head == "data:image/jpeg;base64"


def test_a_dropped_engine_stops_its_thread(server):
    engine = OpenAIEngine(server.url, MODEL)
    ok(engine.generate([request(0)])[0])
    thread = engine._runner.thread
    ref = weakref.ref(engine)
    del engine
    gc.collect()
    assert ref() is None
    thread.join(10)
    assert not thread.is_alive()


def test_close_and_reuse(server, engines):
    engine = engines(server.url)
    ok(engine.generate([request(0)])[0])
    thread = engine._runner.thread
    engine.close()
    assert not thread.is_alive()
    ok(engine.generate([request(1)])[0])


# -- end to end through the facade -------------------------------------------------------


def test_facade_batch_and_document(server, engines, three_page_pdf):
    engine = engines(server.url)
    ocr = DeepSeekOCR(engine=engine)
    results = ocr.batch([page(0), page(1), page(2)])
    assert [r.raw for r in results] == [clean_text(i) for i in range(3)]
    assert results[0].blocks[0].label == "title"
    assert results[0].blocks[0].boxes[0].x1 == 10
    assert results[0].vision_tokens == 273
    assert results[0].output_tokens == 32
    assert server.answered == collections.Counter(range(3))

    before = len(server.chat)
    items = list(ocr.ocr_document(three_page_pdf))
    assert [type(r) for r in items] == [OCRResult] * 3
    assert [r.page for r in items] == [0, 1, 2]
    sent = server.chat[before:]
    assert len(sent) == 3  # every page arrived once
    assert len({r.image.size for r in sent}) == 1
    assert sent[0].image.size == items[0].image_size

    with pytest.raises(ConfigurationError):
        ocr.ocr(page(0), resolution="small")
