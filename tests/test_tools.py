"""The LangChain tools and toolkit, and the safe resolution of what an agent passes as an image.

Unit tests on the ScriptedEngine (real DeepSeek-OCR outputs from the shared samples). URL
tests only ever contact 127.0.0.1: refusals are decided before any connection (the resolver
is replaced), and downloads go to a local server reached under a test host name.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import ToolException
from langchain_core.utils.function_calling import convert_to_openai_tool
from PIL import Image
from pydantic import ValidationError

from conftest import SAMPLES, noise_image
from langchain_deepseek_ocr import (
    DeepSeekOCR,
    GenerationError,
    InputError,
    InputNotFoundError,
    InputTooLargeError,
    OCRResult,
    UnsupportedInputError,
)
from langchain_deepseek_ocr import _sources as sources
from langchain_deepseek_ocr._sources import (
    AccessDeniedError,
    ImageSourcePolicy,
    InputFetchError,
    afetch_url,
    fetch_url,
    read_vetted_file,
    resolve_image_argument,
    resolve_local_path,
)
from langchain_deepseek_ocr._tasks import build_prompt
from langchain_deepseek_ocr._tools import (
    DeepSeekOCRDescribeTool,
    DeepSeekOCRLocateTool,
    DeepSeekOCRTool,
    DeepSeekOCRToolkit,
    find_attached_image,
)
from langchain_deepseek_ocr.testing import ScriptedEngine

SAMPLE = {json.loads(line)["id"]: json.loads(line) for line in SAMPLES.open(encoding="utf-8")}
HAT = SAMPLE["seed-locate-hat"]["raw"]
TABLE = SAMPLE["seed-markdown-table"]["raw"]
LOOP = SAMPLE["v1-vllm-loop-same-text-moving-box"]["raw"]
FREE = SAMPLE["seed-free-ocr-santander"]["raw"]


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    noise_image(width, height, seed).save(buffer, "PNG")
    return buffer.getvalue()


def call(tool, args: dict[str, Any], call_id: str = "call_1") -> ToolMessage:
    return tool.invoke({"type": "tool_call", "id": call_id, "name": tool.name, "args": args})


def runtime_with(*messages: Any) -> ToolRuntime:
    return ToolRuntime(
        state={"messages": list(messages)},
        context=None,
        config={},
        stream_writer=lambda _chunk: None,
        tool_call_id="call_1",
        store=None,
    )


# --------------------------------------------------------------------------------------------
# A folder tree with hostile entries
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    home = tmp_path / "home"
    for folder in (root, outside, home / ".ssh", root / "sub", root / ".hidden"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    Image.new("RGB", (640, 480), "white").save(root / "photo.jpg")
    (root / "page.png").write_bytes(png_bytes(320, 240))
    (root / "sub" / "inner.png").write_bytes(png_bytes(32, 32, seed=3))
    (root / ".hidden" / "img.png").write_bytes(png_bytes())
    (root / "notes.png").write_text("this is text, not an image\n", encoding="utf-8")
    (outside / "secret.png").write_bytes(png_bytes(seed=9))
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN KEY-----\n", encoding="utf-8")
    (root / "link-out.png").symlink_to(outside / "secret.png")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "link-in.png").symlink_to(root / "page.png")
    (root / "dangling.png").symlink_to(tmp_path / "nowhere" / "gone.png")
    (root / "zero").symlink_to("/dev/zero")
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    os.mkfifo(root / "fifo")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(root / "sock"))
    yield {"root": root, "outside": outside, "home": home, "tmp": tmp_path}
    server.close()


@pytest.fixture
def policy(tree: dict[str, Path]) -> ImageSourcePolicy:
    return ImageSourcePolicy(allowed_roots=[tree["root"]])


def scripted(raw: Any = TABLE) -> ScriptedEngine:
    return ScriptedEngine(raw)


# --------------------------------------------------------------------------------------------
# Content and artifact
# --------------------------------------------------------------------------------------------


def test_markdown_content_and_artifact(tree: dict[str, Path]) -> None:
    engine = scripted(TABLE)
    tool = DeepSeekOCRTool(engine, allowed_roots=[tree["root"]])
    message = call(tool, {"image": "photo.jpg"})
    assert isinstance(message, ToolMessage)
    assert message.status == "success"
    assert message.tool_call_id == "call_1"
    assert message.name == "deepseek_ocr"
    result = message.artifact
    assert isinstance(result, OCRResult)
    assert message.content == result.text
    assert message.content.startswith("Nasdaq & AMEX")
    assert "<|ref|>" not in message.content
    assert "<table>" in message.content
    assert [b.label for b in result.blocks] == ["title", "text", "image", "text", "table"]
    assert result.raw == TABLE
    assert result.source == str(tree["root"] / "photo.jpg")
    assert result.image_size == (640, 480)
    assert result.vision_tokens == 273  # gundam on a page <= 640 px: the 1024 global view
    request = engine.calls[-1][0]
    assert request.prompt == build_prompt("markdown")


def test_plain_invoke_returns_the_content_only(tree: dict[str, Path]) -> None:
    tool = DeepSeekOCRTool(scripted(TABLE), allowed_roots=[tree["root"]])
    out = tool.invoke({"image": "photo.jpg"})
    assert isinstance(out, str)
    assert out.startswith("Nasdaq & AMEX")


@pytest.mark.parametrize(("task", "raw"), [("ocr", HAT), ("free", FREE)])
def test_other_read_tasks_use_their_prompts(tree: dict[str, Path], task: str, raw: str) -> None:
    engine = scripted(raw)
    tool = DeepSeekOCRTool(engine, allowed_roots=[tree["root"]])
    message = call(tool, {"image": "page.png", "task": task})
    assert engine.calls[-1][0].prompt == build_prompt(task)
    assert message.artifact.task == task
    if task == "free":
        assert "Banco Santander" in message.content
        assert "begin▁of▁sentence" not in message.content


def test_pdf_page_argument(tree: dict[str, Path], three_page_pdf: Path) -> None:
    shutil.copy(three_page_pdf, tree["root"] / "doc.pdf")
    engine = scripted("# Page")
    tool = DeepSeekOCRTool(engine, allowed_roots=[tree["root"]])
    message = call(tool, {"image": "doc.pdf", "page": 2})
    assert message.artifact.page == 2
    assert engine.calls[-1][0].page == 2
    assert engine.calls[-1][0].image.size == (1191, 1684)  # A4 at 144 dpi
    last = call(tool, {"image": "doc.pdf", "page": -1})
    assert last.artifact.page == 2
    missing = call(tool, {"image": "doc.pdf", "page": 7})
    assert missing.status == "error"
    assert missing.content.startswith("doc.pdf (page 7): page 7 is out of range")


def test_loop_and_truncation_are_flagged_in_the_content(tree: dict[str, Path]) -> None:
    tool = DeepSeekOCRTool(scripted(LOOP), allowed_roots=[tree["root"]])
    message = call(tool, {"image": "page.png"})
    assert message.artifact.repetition
    assert "[Warning: the model's output for page.png fell into a repetition loop" in (
        message.content
    )
    cut = DeepSeekOCRTool(scripted(("# Title\n\nThe quick", "length")), policy=tool.policy)
    message = call(cut, {"image": "page.png"})
    assert message.artifact.truncated
    assert message.content.startswith("# Title\n\nThe quick")
    assert message.content.endswith(
        "[Warning: the output for page.png was cut off (token limit reached); the end is missing.]"
    )


def test_empty_output_says_so(tree: dict[str, Path]) -> None:
    tool = DeepSeekOCRTool(scripted(""), allowed_roots=[tree["root"]])
    assert tool.invoke({"image": "page.png"}) == "(no text was found in page.png)"


def test_locate_lists_pixel_boxes(tree: dict[str, Path]) -> None:
    engine = scripted(HAT)
    tool = DeepSeekOCRLocateTool(engine, allowed_roots=[tree["root"]])
    message = call(tool, {"image": "photo.jpg", "target": "the hat"})
    assert message.content == (
        "1 match for 'the hat' in photo.jpg (640×480 px): [140, 38, 525, 357] "
        "(pixel boxes [left, top, right, bottom], origin at the top-left corner)."
    )
    assert engine.calls[-1][0].prompt == build_prompt("locate", ref="the hat")
    block = message.artifact.blocks[0]
    assert block.label == "the hat"
    assert block.boxes[0].as_list() == [220, 80, 820, 744]
    assert block.pixel_boxes == [(140, 38, 525, 357)]  # DeepSeek's int(v / 999 * size)


def test_locate_many_and_no_matches(tree: dict[str, Path]) -> None:
    two = (
        "<|ref|>the cup<|/ref|><|det|>[[0, 0, 499, 499], [500, 500, 999, 999]]<|/det|>\n"
        "<|ref|>the cup<|/ref|><|det|>[[100, 200, 300, 400]]<|/det|>"
    )
    tool = DeepSeekOCRLocateTool(scripted(two), allowed_roots=[tree["root"]])
    content = tool.invoke({"image": "photo.jpg", "target": "the cup"})
    assert content.startswith(
        "3 matches for 'the cup' in photo.jpg (640×480 px): [0, 0, 319, 239], "
        "[320, 240, 640, 480], [64, 96, 192, 192] (pixel boxes"
    )
    none = DeepSeekOCRLocateTool(scripted(""), policy=tool.policy)
    assert none.invoke({"image": "photo.jpg", "target": "a unicorn"}) == (
        "No match for 'a unicorn' in photo.jpg (640×480 px)."
    )
    boxes = str([[i, i, i + 5, i + 5] for i in range(60)])
    many = f"<|ref|>dot<|/ref|><|det|>{boxes}<|/det|>"
    lots = DeepSeekOCRLocateTool(scripted(many), policy=tool.policy)
    content = lots.invoke({"image": "photo.jpg", "target": "dot"})
    assert content.startswith("60 matches for 'dot'")
    assert ", … and 10 more (pixel boxes" in content


def test_describe_and_figure(tree: dict[str, Path]) -> None:
    engine = scripted("A white rectangle on a white background.")
    tool = DeepSeekOCRDescribeTool(engine, allowed_roots=[tree["root"]])
    message = call(tool, {"image": "photo.jpg"})
    assert message.content == "A white rectangle on a white background."
    assert engine.calls[-1][0].prompt == build_prompt("describe")
    call(tool, {"image": "photo.jpg", "task": "figure"})
    assert engine.calls[-1][0].prompt == build_prompt("figure")
    assert isinstance(message.artifact, OCRResult)


def test_schemas_written_for_the_model() -> None:
    engine = scripted()
    tools = DeepSeekOCRToolkit(engine).get_tools()
    expected = {
        "deepseek_ocr": {"image", "page", "task"},
        "deepseek_ocr_locate": {"target", "image", "page"},
        "deepseek_ocr_describe": {"image", "page", "task"},
    }
    for tool in tools:
        schema = tool.tool_call_schema.model_json_schema()
        assert set(schema["properties"]) == expected[tool.name]
        assert all(len(p["description"]) > 40 for p in schema["properties"].values())
        function = convert_to_openai_tool(tool)["function"]
        assert "runtime" not in function["parameters"]["properties"]
        assert function["description"] == tool.description
    locate = tools[1].tool_call_schema.model_json_schema()
    assert locate["required"] == ["target"]
    assert tools[0].tool_call_schema.model_json_schema()["properties"]["task"]["enum"] == [
        "markdown",
        "ocr",
        "free",
    ]


# --------------------------------------------------------------------------------------------
# Errors become ToolException
# --------------------------------------------------------------------------------------------


def test_engine_error_is_a_tool_error(tree: dict[str, Path]) -> None:
    engine = scripted(GenerationError("CUDA out of memory"))
    tool = DeepSeekOCRTool(engine, allowed_roots=[tree["root"]])
    message = call(tool, {"image": "page.png"})
    assert message.status == "error"
    assert message.content == "page.png: CUDA out of memory"
    strict = DeepSeekOCRTool(engine, policy=tool.policy, handle_tool_error=False)
    with pytest.raises(ToolException, match=r"page\.png: CUDA out of memory"):
        strict.invoke({"image": "page.png"})


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("notes.png", "notes.png: "),
        ("data:image/png;base64,!!!notbase64", "the data: URI: the data URI's base64 payload"),
        ("data:image/png;base64,", "the data: URI: empty input"),
    ],
)
def test_bad_content_is_a_tool_error(tree: dict[str, Path], image: str, fragment: str) -> None:
    engine = scripted()
    tool = DeepSeekOCRTool(engine, allowed_roots=[tree["root"]])
    message = call(tool, {"image": image})
    assert message.status == "error"
    assert message.content.startswith(fragment)
    assert engine.calls == []


def test_no_image_and_nothing_attached(tree: dict[str, Path]) -> None:
    tool = DeepSeekOCRTool(scripted(), allowed_roots=[tree["root"]])
    for args in ({}, {"image": ""}, {"image": "   "}):
        message = call(tool, args)
        assert message.status == "error"
        assert message.content.startswith("No image to read: `image` was not given")
    strict = DeepSeekOCRTool(scripted(), policy=tool.policy, handle_tool_error=False)
    with pytest.raises(ToolException, match="No image to read"):
        strict.invoke({})


def test_data_uri_argument(tree: dict[str, Path]) -> None:
    tool = DeepSeekOCRTool(scripted(TABLE), allowed_roots=[tree["root"]])
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(100, 50)).decode()
    message = call(tool, {"image": uri})
    assert message.status == "success"
    assert message.artifact.source == "<data URI>"
    assert message.artifact.image_size == (100, 50)


# --------------------------------------------------------------------------------------------
# Hostile paths: each refused with the right typed error, through the resolver and the tool
# --------------------------------------------------------------------------------------------

OUTSIDE = "outside the folders files may be read from"
HOSTILE_PATHS = [
    ("../outside/secret.png", AccessDeniedError, OUTSIDE),
    ("../../../../../../etc/passwd", AccessDeniedError, OUTSIDE),
    ("/etc/passwd", AccessDeniedError, OUTSIDE),
    ("/etc/no-such-file.png", AccessDeniedError, OUTSIDE),  # same answer: no existence oracle
    ("sub/../../outside/secret.png", AccessDeniedError, OUTSIDE),
    ("{tmp}/outside/secret.png", AccessDeniedError, OUTSIDE),
    ("link-out.png", AccessDeniedError, OUTSIDE),
    ("linkdir/secret.png", AccessDeniedError, OUTSIDE),
    ("dangling.png", AccessDeniedError, OUTSIDE),
    ("/dev/zero", AccessDeniedError, OUTSIDE),
    ("zero", AccessDeniedError, OUTSIDE),
    ("~/.ssh/id_rsa", AccessDeniedError, OUTSIDE),
    ("/proc/self/environ", AccessDeniedError, OUTSIDE),
    ("file:///etc/passwd", AccessDeniedError, OUTSIDE),
    ("file://evil.example/share/a.png", AccessDeniedError, "on another host"),
    (".hidden/img.png", AccessDeniedError, "hidden files and folders"),
    ("fifo", InputNotFoundError, "a FIFO (named pipe), not a regular file"),
    ("sock", InputNotFoundError, "a socket, not a regular file"),
    ("sub", InputNotFoundError, "a directory, not a regular file"),
    (".", InputNotFoundError, "a directory, not a regular file"),
    ("loop1", InputNotFoundError, "symlink loop"),
    ("missing.png", InputNotFoundError, "no such file under the allowed folders"),
    ("page.png\x00.txt", UnsupportedInputError, "NUL character"),
    ("http://example.com/a.png", AccessDeniedError, "URLs are not allowed here"),
    ("https://169.254.169.254/latest/meta-data/", AccessDeniedError, "URLs are not allowed"),
    ("ftp://example.com/a.png", AccessDeniedError, "URL scheme 'ftp' is not supported"),
    ("gopher://127.0.0.1:6379/_INFO", AccessDeniedError, "URL scheme 'gopher'"),
    ("javascript:alert(1)", AccessDeniedError, "URL scheme 'javascript'"),
    ("dict://127.0.0.1:11211/stats", AccessDeniedError, "URL scheme 'dict'"),
]


@pytest.mark.parametrize("case", HOSTILE_PATHS, ids=[repr(c[0]) for c in HOSTILE_PATHS])
def test_hostile_argument_refused(
    tree: dict[str, Path],
    policy: ImageSourcePolicy,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[str, type[InputError], str],
) -> None:
    argument, error, fragment = case
    argument = argument.format(tmp=tree["tmp"])
    lookups: list[str] = []
    monkeypatch.setattr(sources, "resolve_host", lambda host, _port: lookups.append(host) or [])
    with pytest.raises(error) as caught:
        resolve_image_argument(argument, policy)
    assert type(caught.value) is error
    assert fragment in caught.value.message
    engine = scripted()
    tool = DeepSeekOCRTool(engine, policy=policy)
    message = call(tool, {"image": argument})
    assert message.status == "error"
    assert fragment in message.content
    assert engine.calls == []
    assert lookups == []  # refused before any name was looked up


def test_paths_inside_the_root_are_read(tree: dict[str, Path], policy: ImageSourcePolicy) -> None:
    root = tree["root"]
    assert resolve_local_path("page.png", policy) == root / "page.png"
    assert resolve_local_path(str(root / "sub" / "inner.png"), policy) == root / "sub/inner.png"
    assert resolve_local_path("sub/../page.png", policy) == root / "page.png"
    assert resolve_local_path("link-in.png", policy) == root / "page.png"  # stays inside
    assert resolve_image_argument(f"file://{root}/page.png", policy) == root / "page.png"
    hidden = ImageSourcePolicy(allowed_roots=[root], allow_hidden=True)
    assert resolve_local_path(".hidden/img.png", hidden) == root / ".hidden/img.png"


def test_relative_paths_try_each_root(tree: dict[str, Path]) -> None:
    first = tree["tmp"] / "first"
    first.mkdir()
    two = ImageSourcePolicy(allowed_roots=[first, tree["root"] / "sub"])
    assert resolve_local_path("inner.png", two) == tree["root"] / "sub" / "inner.png"
    none = ImageSourcePolicy(allowed_roots=[])
    with pytest.raises(AccessDeniedError, match="no allowed folders"):
        resolve_local_path("page.png", none)


def test_policy_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    policy = ImageSourcePolicy()
    assert policy.allowed_roots == [tmp_path.resolve()]
    assert policy.allow_urls is False
    assert policy.allowed_content_types == ("image/*", "application/pdf")
    assert ImageSourcePolicy(allowed_roots=str(tmp_path)).allowed_roots == [tmp_path.resolve()]
    with pytest.raises(ValidationError):
        ImageSourcePolicy(allowed_networks=["not-a-network"])
    with pytest.raises(ValidationError):
        ImageSourcePolicy(max_url_bytes=0)


def test_read_vetted_file_closes_the_race(tree: dict[str, Path], policy: ImageSourcePolicy) -> None:
    root = tree["root"]
    path = resolve_local_path("page.png", policy)
    assert read_vetted_file(path, policy, max_bytes=10**6) == (root / "page.png").read_bytes()
    with pytest.raises(InputTooLargeError, match="over the limit of 10 "):
        read_vetted_file(path, policy, max_bytes=10)
    # the file is swapped for a symlink that leaves the root after the check
    swapped = resolve_local_path("sub/inner.png", policy)
    swapped.unlink()
    swapped.symlink_to(tree["outside"] / "secret.png")
    with pytest.raises(AccessDeniedError, match="changed while it was being opened"):
        read_vetted_file(swapped, policy, max_bytes=10**6)
    # a parent folder is swapped for a symlink out of the root
    (root / "deep").mkdir()
    (root / "deep" / "secret.png").write_bytes(b"inside")
    vetted = resolve_local_path("deep/secret.png", policy)
    shutil.rmtree(root / "deep")
    (root / "deep").symlink_to(tree["outside"], target_is_directory=True)
    with pytest.raises(AccessDeniedError, match=OUTSIDE):
        read_vetted_file(vetted, policy, max_bytes=10**6)
    # a FIFO swapped in: refused at once, never blocks
    (root / "page.png").unlink()
    os.mkfifo(root / "page.png")
    with pytest.raises(InputNotFoundError, match="FIFO"):
        read_vetted_file(path, policy, max_bytes=10**6)


# --------------------------------------------------------------------------------------------
# URLs: refusals decided before any connection (the resolver is replaced)
# --------------------------------------------------------------------------------------------

PUBLIC = "93.184.216.34"
DNS = {
    "metadata.google.internal": ["169.254.169.254"],
    "localhost": ["127.0.0.1", "::1"],
    "intranet.example": ["192.168.1.20"],
    "rebind.example": [PUBLIC, "10.0.0.7"],
    "sneaky.example": ["::ffff:10.1.2.3"],
}
PUBLIC_ONLY = "URLs may only point to public internet addresses"
HOSTILE_URLS = [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://metadata.google.internal/computeMetadata/v1/", "link-local"),
    ("http://127.0.0.1:8080/x.png", "loopback"),
    ("http://localhost/x.png", "loopback"),
    ("http://[::1]/x.png", "loopback"),
    ("http://[::ffff:127.0.0.1]/x.png", "loopback address (IPv4 127.0.0.1 inside an IPv6"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://sneaky.example/x.png", "private address (IPv4 10.1.2.3 inside an IPv6 address)"),
    ("http://10.0.0.1/x.png", "private"),
    ("http://172.16.5.4/x.png", "private"),
    ("http://192.168.0.1/x.png", "private"),
    ("http://intranet.example/scan.png", "private"),
    ("http://100.100.100.200/latest/meta-data", "not publicly routable"),  # Alibaba, 100.64/10
    ("http://0.0.0.0/x.png", "unspecified"),
    ("http://224.0.0.1/x.png", "multicast"),
    ("http://240.0.0.1/x.png", "reserved"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "private"),  # AWS IMDS over IPv6
    ("http://[fe80::1]/x.png", "link-local"),
    ("http://[2002:7f00:1::]/x.png", "loopback"),  # 6to4 around 127.0.0.1
    ("http://[64:ff9b::a9fe:a9fe]/x.png", "link-local"),  # NAT64 around 169.254.169.254
    ("http://rebind.example/x.png", "private"),  # one bad answer among good ones
]


def fake_resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host: str, _port: int) -> list[str]:
        calls.append(host)
        try:
            sources.ipaddress.ip_address(host)
        except ValueError:
            if host in table:
                return list(table[host])
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return [host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.fixture
def url_policy(tree: dict[str, Path]) -> ImageSourcePolicy:
    return ImageSourcePolicy(allowed_roots=[tree["root"]], allow_urls=True, url_timeout=5)


@pytest.mark.parametrize(("url", "fragment"), HOSTILE_URLS)
def test_hostile_url_refused(
    url_policy: ImageSourcePolicy, monkeypatch: pytest.MonkeyPatch, url: str, fragment: str
) -> None:
    resolver = fake_resolver(DNS)
    monkeypatch.setattr(sources, "resolve_host", resolver)
    monkeypatch.setattr(httpx.Client, "send", _no_connection)
    with pytest.raises(AccessDeniedError) as caught:
        resolve_image_argument(url, url_policy)
    assert fragment in caught.value.message
    assert PUBLIC_ONLY in caught.value.message
    assert len(resolver.calls) == 1
    engine = scripted()
    message = call(DeepSeekOCRTool(engine, policy=url_policy), {"image": url})
    assert message.status == "error"
    assert message.content.startswith(f"{url}: ")
    assert engine.calls == []


def _no_connection(*_args: Any, **_kwargs: Any) -> None:
    raise AssertionError("a refused URL must never be connected to")


@pytest.mark.parametrize(
    ("url", "error", "fragment"),
    [
        ("http://user:secret@example.com/a.png", AccessDeniedError, "credentials"),
        ("http://no-such-host.invalid/a.png", InputFetchError, "cannot be resolved"),
        ("http:///a.png", UnsupportedInputError, "URL"),
    ],
)
def test_bad_urls(
    url_policy: ImageSourcePolicy,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    error: type[InputError],
    fragment: str,
) -> None:
    monkeypatch.setattr(sources, "resolve_host", fake_resolver(DNS))
    monkeypatch.setattr(httpx.Client, "send", _no_connection)
    with pytest.raises(error, match=fragment):
        fetch_url(url, url_policy)


def test_allowed_networks_exempt_an_intranet(
    url_policy: ImageSourcePolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "resolve_host", fake_resolver(DNS))
    intranet = url_policy.model_copy(update={"allowed_networks": ("192.168.1.0/24",)})
    target = sources._parse_url("http://intranet.example/scan.png", intranet, "x")
    assert sources._vet_addresses(target, ["192.168.1.20"], intranet, "x") == "192.168.1.20"
    with pytest.raises(AccessDeniedError):
        sources._vet_addresses(target, ["192.168.2.20"], intranet, "x")
    loop = ImageSourcePolicy(allow_urls=True, allowed_networks=["127.0.0.0/8"])
    assert sources._vet_addresses(target, ["::ffff:127.0.0.1"], loop, "x") == "::ffff:127.0.0.1"


def test_https_requests_go_to_the_vetted_address_with_the_original_name() -> None:
    policy = ImageSourcePolicy(allow_urls=True)
    target = sources._parse_url("https://images.example.com:8443/a/b.png?x=1", policy, "x")
    with httpx.Client() as client:
        request = sources._request(client, target, PUBLIC)
        v6 = sources._request(client, target, "2606:2800:220:1::1")
    assert str(request.url) == f"https://{PUBLIC}:8443/a/b.png?x=1"
    assert request.headers["host"] == "images.example.com:8443"
    assert request.extensions["sni_hostname"] == "images.example.com"
    assert str(v6.url) == "https://[2606:2800:220:1::1]:8443/a/b.png?x=1"


# --------------------------------------------------------------------------------------------
# URLs against a local server (127.0.0.1 only)
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    png = png_bytes(120, 80, seed=5)
    hosts: list[str] = []  # noqa: RUF012 - shared record of Host headers

    def log_message(self, *_args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        type(self).hosts.append(self.headers.get("Host", ""))
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/img.png":
            self._send(200, self.png, "image/png; charset=binary")
        elif parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/page.html":
            self._send(200, b"<html>not an image</html>", "text/html")
        elif parts.path == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "5000000")
            self.end_headers()
        elif parts.path == "/stream":  # no Content-Length: the cap applies while reading
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"\0" * 1024)
        elif parts.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "10000")
            self.end_headers()
            try:
                for _ in range(400):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                pass
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def local(
    server: tuple[str, int], tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    resolver = fake_resolver({"images.test": ["127.0.0.1"], "internal.test": ["10.1.2.3"]})
    monkeypatch.setattr(sources, "resolve_host", resolver)
    _Handler.hosts.clear()
    policy = ImageSourcePolicy(
        allowed_roots=[tree["root"]],
        allow_urls=True,
        allowed_networks=["127.0.0.0/8"],  # the test server; nothing else private
        max_url_bytes=60_000,
        url_timeout=5,
    )
    return {"base": f"http://images.test:{server[1]}", "policy": policy, "resolver": resolver}


def test_download_through_the_pinned_address(local: dict[str, Any]) -> None:
    url = local["base"] + "/img.png"
    assert fetch_url(url, local["policy"]) == _Handler.png
    assert _Handler.hosts == [local["base"].removeprefix("http://")]  # the name, not the IP
    assert local["resolver"].calls == ["images.test"]


def test_dns_rebinding_cannot_move_the_connection(local: dict[str, Any], monkeypatch) -> None:
    answers = iter([["127.0.0.1"], ["10.0.0.1"], ["169.254.169.254"]])
    seen: list[str] = []

    def rebinding(host: str, _port: int) -> list[str]:
        seen.append(host)
        return next(answers)

    monkeypatch.setattr(sources, "resolve_host", rebinding)
    assert fetch_url(local["base"] + "/img.png", local["policy"]) == _Handler.png
    assert seen == ["images.test"]  # resolved once; the connection used that answer


def test_redirects_are_rechecked(local: dict[str, Any], server: tuple[str, int]) -> None:
    base, policy = local["base"], local["policy"]
    assert fetch_url(f"{base}/redirect?to=/img.png", policy) == _Handler.png
    for target, fragment in [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://internal.test/a.png", "private"),
        ("http://[::1]/a.png", "loopback"),
        ("file:///etc/passwd", "only http and https"),
        (f"http://user:pw@images.test:{server[1]}/img.png", "credentials"),
    ]:
        with pytest.raises(AccessDeniedError, match=fragment):
            fetch_url(f"{base}/redirect?to={target}", policy)
    with pytest.raises(InputFetchError, match=r"too many redirects \(more than 5\)"):
        fetch_url(f"{base}/loop", policy)
    none = policy.model_copy(update={"max_redirects": 0})
    with pytest.raises(InputFetchError, match="too many redirects"):
        fetch_url(f"{base}/redirect?to=/img.png", none)


@pytest.mark.parametrize(
    ("path", "error", "fragment"),
    [
        ("/missing.png", InputFetchError, "HTTP 404"),
        ("/page.html", UnsupportedInputError, "serves 'text/html', not an image or PDF"),
        ("/big", InputTooLargeError, "5,000,000 bytes, over the limit of 60,000"),
        ("/stream", InputTooLargeError, "over the limit of 60,000 bytes"),
    ],
)
def test_download_checks(
    local: dict[str, Any], path: str, error: type[InputError], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        fetch_url(local["base"] + path, local["policy"])


def test_download_time_is_bounded(local: dict[str, Any]) -> None:
    quick = local["policy"].model_copy(update={"url_timeout": 0.3})
    with pytest.raises(InputFetchError, match="timed out"):
        fetch_url(local["base"] + "/slow", quick)


def test_connection_refused(local: dict[str, Any]) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(InputFetchError, match="the download failed"):
        fetch_url(f"http://images.test:{port}/img.png", local["policy"])


async def test_async_download_and_refusals(local: dict[str, Any]) -> None:
    base, policy = local["base"], local["policy"]
    assert await afetch_url(base + "/img.png", policy) == _Handler.png
    with pytest.raises(AccessDeniedError, match="link-local"):
        await afetch_url(f"{base}/redirect?to=http://169.254.169.254/", policy)
    with pytest.raises(InputTooLargeError):
        await afetch_url(base + "/stream", policy)
    with pytest.raises(UnsupportedInputError):
        await afetch_url(base + "/page.html", policy)


def test_tools_read_urls_when_allowed(local: dict[str, Any]) -> None:
    url = local["base"] + "/img.png"
    tool = DeepSeekOCRTool(scripted(TABLE), policy=local["policy"])
    message = call(tool, {"image": url})
    assert message.status == "success"
    assert message.artifact.source == url
    assert message.artifact.image_size == (120, 80)
    refused = call(tool, {"image": f"{local['base']}/redirect?to=http://internal.test/"})
    assert refused.status == "error"
    assert "private address" in refused.content


async def test_tools_read_urls_asynchronously(local: dict[str, Any]) -> None:
    url = local["base"] + "/img.png"
    tool = DeepSeekOCRLocateTool(scripted(HAT), policy=local["policy"])
    message = await tool.ainvoke(
        {"type": "tool_call", "id": "1", "name": tool.name, "args": {"image": url, "target": "x"}}
    )
    assert message.content.startswith(f"1 match for 'x' in {url} (120×80 px): [26, 6, 98, 59]")


# --------------------------------------------------------------------------------------------
# The image the user attached (ToolRuntime)
# --------------------------------------------------------------------------------------------

B64 = base64.b64encode(png_bytes(40, 30, seed=7)).decode()
ATTACHED_BLOCKS = [
    ({"type": "image", "base64": B64, "mime_type": "image/png"}, f"data:image/png;base64,{B64}"),
    ({"type": "image", "url": "data:image/png;base64,AAAA"}, "data:image/png;base64,AAAA"),
    ({"type": "image", "url": "https://x.example/a.png"}, "https://x.example/a.png"),
    (
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AB"}},
        "data:image/jpeg;base64,AB",
    ),
    ({"type": "image_url", "image_url": "https://x.example/b.png"}, "https://x.example/b.png"),
    (
        {"type": "image", "source_type": "base64", "data": "QUJD", "mime_type": "image/png"},
        "data:image/png;base64,QUJD",
    ),
    (
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QQ"}},
        "data:image/png;base64,QQ",
    ),
    (
        {"type": "file", "base64": "JVBERi0=", "mime_type": "application/pdf"},
        "data:application/pdf;base64,JVBERi0=",
    ),
    (
        {"type": "image", "base64": "QQ", "mime_type": "image/png,evil"},
        "data:application/octet-stream;base64,QQ",
    ),
]


@pytest.mark.parametrize(("block", "expected"), ATTACHED_BLOCKS)
def test_attached_image_formats(block: dict[str, Any], expected: str) -> None:
    message = HumanMessage(content=[{"type": "text", "text": "read this"}, block])
    assert find_attached_image(runtime_with(message)) == expected


def test_latest_attachment_wins_and_others_are_ignored() -> None:
    first = HumanMessage(content=[{"type": "image", "url": "data:image/png;base64,AAAA"}])
    later = HumanMessage(
        content=[
            {"type": "image", "url": "data:image/png;base64,BBBB"},
            {"type": "file", "base64": "dGV4dA==", "mime_type": "text/plain"},
            {"type": "text", "text": "and this one"},
        ]
    )
    plain = AIMessage(content="Sure, reading it.")
    assert find_attached_image(runtime_with(first, later, plain)) == "data:image/png;base64,BBBB"
    assert find_attached_image(runtime_with(plain)) is None
    assert find_attached_image(None) is None
    assert find_attached_image({"messages": [later]}) == "data:image/png;base64,BBBB"
    as_dict = {"role": "user", "content": [{"type": "image", "url": "data:image/png;base64,C"}]}
    assert find_attached_image([as_dict]) == "data:image/png;base64,C"
    with pytest.raises(UnsupportedInputError, match="provider file id"):
        find_attached_image(runtime_with(HumanMessage(content=[{"type": "image", "file_id": "f"}])))


def test_tool_reads_the_attached_image(tree: dict[str, Path]) -> None:
    engine = scripted(TABLE)
    tool = DeepSeekOCRTool(engine, allowed_roots=[tree["root"]])
    attached = HumanMessage(
        content=[
            {"type": "text", "text": "What does this say?"},
            {"type": "image", "base64": B64, "mime_type": "image/png"},
        ]
    )
    message = call(tool, {"runtime": runtime_with(attached)})
    assert message.status == "success"
    assert message.artifact.source == "<attached image>"
    assert message.artifact.image_size == (40, 30)
    # an explicit image wins over the attachment
    explicit = call(tool, {"image": "photo.jpg", "runtime": runtime_with(attached)})
    assert explicit.artifact.image_size == (640, 480)
    # a wrong path while an image is attached: the error says how to read the attachment
    wrong = call(tool, {"image": "attached.png", "runtime": runtime_with(attached)})
    assert wrong.status == "error"
    assert wrong.content.endswith(
        "(an image is attached to the conversation: leave `image` out to read it)"
    )


def test_attached_urls_follow_the_policy(tree: dict[str, Path], monkeypatch) -> None:
    monkeypatch.setattr(sources, "resolve_host", fake_resolver(DNS))
    tool = DeepSeekOCRDescribeTool(scripted("x"), allowed_roots=[tree["root"]])
    for url, fragment in [
        ("http://169.254.169.254/latest/meta-data/iam", "URLs are not allowed here"),
        ("file:///etc/passwd", OUTSIDE),
    ]:
        attached = HumanMessage(content=[{"type": "image", "url": url}])
        message = call(tool, {"runtime": runtime_with(attached)})
        assert message.status == "error"
        assert message.content.startswith("the attached image: ")
        assert fragment in message.content
    with_urls = DeepSeekOCRDescribeTool(
        scripted("x"), policy=ImageSourcePolicy(allowed_roots=[tree["root"]], allow_urls=True)
    )
    attached = HumanMessage(content=[{"type": "image", "url": "http://metadata.google.internal/"}])
    message = call(with_urls, {"runtime": runtime_with(attached)})
    assert "link-local" in message.content
    file_id = HumanMessage(content=[{"type": "image", "file_id": "file-123"}])
    assert "provider file id" in call(tool, {"runtime": runtime_with(file_id)}).content


async def test_attached_image_async(tree: dict[str, Path]) -> None:
    tool = DeepSeekOCRLocateTool(scripted(HAT), allowed_roots=[tree["root"]])
    attached = HumanMessage(content=[{"type": "image", "base64": B64, "mime_type": "image/png"}])
    message = await tool.ainvoke(
        {
            "type": "tool_call",
            "id": "1",
            "name": tool.name,
            "args": {"target": "the hat", "runtime": runtime_with(attached)},
        }
    )
    assert message.content.startswith("1 match for 'the hat' in the attached image (40×30 px)")


# --------------------------------------------------------------------------------------------
# Async: the engine's own async path, no thread for the model call
# --------------------------------------------------------------------------------------------


class AsyncOnlyEngine(ScriptedEngine):
    """An engine whose synchronous path must not be used."""

    def generate(self, requests, *, on_token=None):
        raise AssertionError("the synchronous engine path was used")

    async def agenerate(self, requests, *, on_token=None):
        await asyncio.sleep(0)
        return ScriptedEngine.generate(self, requests, on_token=on_token)


async def test_arun_uses_the_async_engine(tree: dict[str, Path]) -> None:
    engine = AsyncOnlyEngine(TABLE)
    tools = DeepSeekOCRToolkit(engine, allowed_roots=[tree["root"]]).get_tools()
    args = [{"image": "page.png"}, {"image": "page.png", "target": "x"}, {"image": "page.png"}]
    messages = await asyncio.gather(
        *(t.ainvoke({"type": "tool_call", "id": str(i), "name": t.name, "args": a})
          for i, (t, a) in enumerate(zip(tools, args, strict=True)))
    )  # fmt: skip
    assert [m.status for m in messages] == ["success"] * 3
    assert len(engine.calls) == 3


async def test_async_errors(tree: dict[str, Path]) -> None:
    tool = DeepSeekOCRTool(scripted(GenerationError("boom")), allowed_roots=[tree["root"]])
    message = await tool.ainvoke(
        {"type": "tool_call", "id": "1", "name": tool.name, "args": {"image": "page.png"}}
    )
    assert (message.status, message.content) == ("error", "page.png: boom")
    denied = await tool.ainvoke(
        {"type": "tool_call", "id": "2", "name": tool.name, "args": {"image": "../outside"}}
    )
    assert OUTSIDE in denied.content
    none = await tool.ainvoke({"type": "tool_call", "id": "3", "name": tool.name, "args": {}})
    assert none.content.startswith("No image to read")


# --------------------------------------------------------------------------------------------
# The toolkit: one engine, one policy
# --------------------------------------------------------------------------------------------


def test_toolkit_shares_one_engine(tree: dict[str, Path]) -> None:
    engine = scripted(HAT)
    toolkit = DeepSeekOCRToolkit(engine, allowed_roots=[tree["root"]])
    tools = toolkit.get_tools()
    names = ["deepseek_ocr", "deepseek_ocr_locate", "deepseek_ocr_describe"]
    assert [t.name for t in tools] == names
    assert [type(t) for t in tools] == [
        DeepSeekOCRTool,
        DeepSeekOCRLocateTool,
        DeepSeekOCRDescribeTool,
    ]
    assert all(t.ocr is toolkit.ocr for t in tools)
    assert all(t.ocr.engine is engine for t in tools)
    assert all(t.policy is toolkit.policy for t in tools)
    assert all(t.response_format == "content_and_artifact" for t in tools)
    assert all(t.handle_tool_error is True for t in tools)
    for tool, args in zip(
        tools,
        [{"image": "page.png"}, {"image": "page.png", "target": "a"}, {"image": "page.png"}],
        strict=True,
    ):
        tool.invoke(args)
    assert len(engine.calls) == 3  # every call reached the one engine


def test_toolkit_and_tool_construction(
    tree: dict[str, Path], tmp_path: Path, tiny_v1_dir: Path
) -> None:
    engine = scripted()
    facade = DeepSeekOCR(engine, resolution="small")
    toolkit = DeepSeekOCRToolkit(facade, policy=ImageSourcePolicy(allowed_roots=[tree["root"]]))
    assert toolkit.ocr is facade
    assert all(t.ocr is facade for t in toolkit.get_tools())
    assert DeepSeekOCRTool(ocr=facade).ocr is facade
    assert DeepSeekOCRToolkit(engine, resolution="base").ocr.resolution.value == "base"
    assert DeepSeekOCRToolkit(engine, allow_urls=True).policy.allow_urls is True
    quiet = DeepSeekOCRToolkit(engine, handle_tool_error=False).get_tools()
    assert all(t.handle_tool_error is False for t in quiet)
    with pytest.raises(ValueError, match="set them on the DeepSeekOCR"):
        DeepSeekOCRToolkit(facade, resolution="base")
    with pytest.raises(ValueError, match="not both"):
        DeepSeekOCRToolkit(engine, policy=ImageSourcePolicy(), allowed_roots=[tmp_path])
    with pytest.raises(ValueError, match="not both"):
        DeepSeekOCRTool(engine, ocr=facade)
    # no engine: the local TransformersEngine, with the engine options given
    local = DeepSeekOCRToolkit(model=str(tiny_v1_dir), device="cpu", batch_size=2)
    assert type(local.ocr.engine).__name__ == "TransformersEngine"
    assert local.ocr.engine.model_name == str(tiny_v1_dir)
    assert local.ocr.engine.batch_size == 2
    assert all(t.ocr is local.ocr for t in local.get_tools())
