"""Throughput of OpenAIEngine with DEFAULT settings against servers of known capacity.

Each fake OpenAI-compatible server (its own process, loopback) has ``--slots`` concurrent
slots and answers a chat request after ``--latency`` seconds of holding a slot; extra
requests queue, as in a vLLM batch that is full. Capacity is ``servers * slots / latency``
pages per second. The engine, built with its defaults, OCRs ``--pages`` small pages; the
script prints the pages per second reached, the capacity and their ratio (goal: >= 0.95),
and the client's CPU time per page.

    python bench/server_throughput.py [--pages 2048] [--slots 64] [--latency 0.5] [--servers 1]

The default latency (0.5 s; capacity 128 pages/s per server, above what one GPU does with
DeepSeek-OCR) keeps the measurement about scheduling: at ~1 ms of client CPU per request
(httpx), a 50 ms latency asks for 1,280 requests/s and measures the machine's CPU instead.
2,048 pages are whole waves of 64, so the best possible ratio is 1.0.

Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import time

_MODEL = "deepseek-ai/DeepSeek-OCR"


# -- the server (runs in a child process) ------------------------------------------------


async def _serve(slots: int, latency: float) -> None:
    gate = asyncio.Semaphore(slots)
    stats = {"requests": 0, "max_in_flight": 0, "in_flight": 0}
    models = json.dumps(
        {"object": "list", "data": [{"id": _MODEL, "object": "model", "owned_by": "vllm"}]}
    ).encode()
    answer = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "model": _MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "<|ref|>text<|/ref|>x"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 284, "completion_tokens": 8, "total_tokens": 292},
        }
    ).encode()

    def response(body: bytes) -> bytes:
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET /v1/models"):
                    writer.write(response(models))
                    continue
                stats["requests"] += 1
                async with gate:
                    stats["in_flight"] += 1
                    stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
                    await asyncio.sleep(latency)
                    stats["in_flight"] -= 1
                writer.write(response(answer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the parent closes stdin to stop us
    print(json.dumps(stats), flush=True)
    server.close()


# -- the client --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2048)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.slots, args.latency))
        return

    from PIL import Image

    from langchain_deepseek_ocr._engine import EngineOutput, OCRRequest
    from langchain_deepseek_ocr._openai_engine import OpenAIEngine
    from langchain_deepseek_ocr._tasks import build_prompt

    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                f"--slots={args.slots}",
                f"--latency={args.latency}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.servers)
    ]
    stats = []
    try:
        urls = [f"http://127.0.0.1:{int(child.stdout.readline())}" for child in children]
        engine = OpenAIEngine(urls, _MODEL)  # defaults throughout
        prompt = build_prompt("markdown")
        pages = [
            OCRRequest(image=Image.new("RGB", (32, 32), (i % 256, i // 256, 7)), prompt=prompt)
            for i in range(args.pages)
        ]
        engine.generate(pages[: args.slots * args.servers])  # warm-up: connections, check
        start, cpu = time.perf_counter(), time.process_time()
        results = engine.generate(pages)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        engine.close()
    finally:
        for child in children:
            child.stdin.close()
            stats.append(json.loads(child.stdout.readline() or "{}"))
            child.wait(10)

    failed = sum(not isinstance(r, EngineOutput) for r in results)
    rate = args.pages / seconds
    slots = args.slots * args.servers
    capacity = slots / args.latency
    best = args.pages / (math.ceil(args.pages / slots) * args.latency)
    print(f"# {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(
        f"servers: {args.servers} x {args.slots} slots x {args.latency * 1000:g} ms; "
        "engine: defaults "
        f"(max_concurrency={engine.max_concurrency}, "
        f"per endpoint {engine.max_concurrency_per_endpoint})"
    )
    print(f"pages:    {args.pages} in {seconds:.2f} s ({failed} failed)")
    print(f"reached:  {rate:.0f} pages/s")
    print(f"capacity: {capacity:.0f} pages/s  (best possible for whole waves: {best:.0f})")
    print(f"ratio:    {rate / capacity:.3f}  (goal >= 0.95)")
    print(f"client:   {cpu / args.pages * 1000:.2f} ms CPU per page")
    busy = [s.get("max_in_flight") for s in stats]
    print(f"servers:  most slots busy at once {busy} of {args.slots}")


if __name__ == "__main__":
    main()
