"""LangChain tools over DeepSeek-OCR: read a page, find things on it, describe it.

Three :class:`~langchain_core.tools.BaseTool` subclasses share one :class:`DeepSeekOCR`
(one engine, one model in memory) and one :class:`ImageSourcePolicy`:

* :class:`DeepSeekOCRTool` -- an image or PDF page to markdown (``markdown``, ``ocr``, ``free``);
* :class:`DeepSeekOCRLocateTool` -- where something is, as pixel boxes (``locate``);
* :class:`DeepSeekOCRDescribeTool` -- a description of an image, or a parsed chart or figure
  (``describe``, ``figure``).

:class:`DeepSeekOCRToolkit` builds all three on one engine.

What the model sends and gets back:

* The ``image`` argument is a file path (under the policy's allowed folders), an http(s) URL
  (only when URLs are allowed) or a ``data:`` URI -- see :mod:`._sources` for the checks.
  Left empty, the tool reads the latest image (or PDF) attached to the conversation: the
  agent runtime injects the conversation state into the hidden ``runtime`` argument
  (LangGraph's ``ToolRuntime``; it is not part of the schema the model sees), so a model
  never has to copy base64 into a tool call.
* ``response_format="content_and_artifact"``: the content is what the model reads (the
  markdown; for locate a short listing of pixel boxes), with a warning line when the output
  looped or was cut off; the artifact is the full :class:`OCRResult` (blocks, boxes, token
  counts, flags), which reaches the caller on the ``ToolMessage`` and never the model.
* Every package error (bad input, refused path or URL, engine failure) becomes a
  :class:`~langchain_core.tools.ToolException` with the typed error's message. Tools default
  to ``handle_tool_error=True``, so an agent gets a ``ToolMessage(status="error")`` it can act
  on (fix the path, pick another page) instead of an exception that ends the run. Set
  ``handle_tool_error=False`` to have the ``ToolException`` raised. Other exceptions (bugs)
  always propagate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForToolRun,
)
from langchain_core.messages import BaseMessage
from langchain_core.tools import BaseTool, BaseToolkit, InjectedToolArg, ToolException
from pydantic import BaseModel, Field

from langchain_deepseek_ocr._errors import (
    ConfigurationError,
    DeepSeekOCRError,
    InputNotFoundError,
    UnsupportedInputError,
)
from langchain_deepseek_ocr._facade import DeepSeekOCR
from langchain_deepseek_ocr._result import OCRResult
from langchain_deepseek_ocr._sources import (
    ImageSourcePolicy,
    aresolve_image_argument,
    read_vetted_file,
    resolve_image_argument,
)

__all__ = [
    "DeepSeekOCRDescribeInput",
    "DeepSeekOCRDescribeTool",
    "DeepSeekOCRInput",
    "DeepSeekOCRLocateInput",
    "DeepSeekOCRLocateTool",
    "DeepSeekOCRTool",
    "DeepSeekOCRToolkit",
    "find_attached_image",
]

_MAX_LISTED_BOXES = 50
_ATTACHED = "the attached image"
_NO_IMAGE = (
    "No image to read: `image` was not given and no image is attached to the conversation. "
    "Pass `image` as a file path (or an http(s) URL or data: URI where allowed), or ask the "
    "user to attach the image."
)

# -- argument schemas (their descriptions are read by the calling model) -----------------------

_IMAGE_DESCRIPTION = (
    "The image or PDF to read: a file path (relative to the working folder, or absolute "
    "inside it), an http(s) URL (only if URLs are enabled), or a data: URI. Leave it out to "
    "use the latest image the user attached to the conversation."
)
_PAGE_DESCRIPTION = (
    "For a PDF or multi-page TIFF: the 0-based page number to read (0 = first page, -1 = "
    "last). Leave it out for the first page. Call the tool once per page."
)
_RUNTIME_DESCRIPTION = "Set by the agent runtime (the conversation state); never by the model."


class DeepSeekOCRInput(BaseModel):
    """Arguments of :class:`DeepSeekOCRTool`."""

    image: str | None = Field(default=None, description=_IMAGE_DESCRIPTION)
    page: int | None = Field(default=None, description=_PAGE_DESCRIPTION)
    task: Literal["markdown", "ocr", "free"] = Field(
        default="markdown",
        description=(
            "markdown (default): the document as markdown, keeping headings, lists, tables "
            "(as HTML) and formulas (as LaTeX) -- for scans, forms, receipts, screenshots. "
            "ocr: every piece of text in the image, e.g. a photo, a sign or a label. "
            "free: plain text only, without layout."
        ),
    )
    runtime: Annotated[Any, InjectedToolArg] = Field(
        default=None, exclude=True, description=_RUNTIME_DESCRIPTION
    )


class DeepSeekOCRLocateInput(BaseModel):
    """Arguments of :class:`DeepSeekOCRLocateTool`."""

    target: str = Field(
        min_length=1,
        max_length=500,
        description=(
            "What to find, in a few words, e.g. 'the signature', 'the total amount', "
            "'the red car', or a word or phrase printed in the image."
        ),
    )
    image: str | None = Field(default=None, description=_IMAGE_DESCRIPTION)
    page: int | None = Field(default=None, description=_PAGE_DESCRIPTION)
    runtime: Annotated[Any, InjectedToolArg] = Field(
        default=None, exclude=True, description=_RUNTIME_DESCRIPTION
    )


class DeepSeekOCRDescribeInput(BaseModel):
    """Arguments of :class:`DeepSeekOCRDescribeTool`."""

    image: str | None = Field(default=None, description=_IMAGE_DESCRIPTION)
    page: int | None = Field(default=None, description=_PAGE_DESCRIPTION)
    task: Literal["describe", "figure"] = Field(
        default="describe",
        description=(
            "describe (default): a detailed description of a photo, scene or picture. "
            "figure: parse a chart, plot or diagram into its text and data."
        ),
    )
    runtime: Annotated[Any, InjectedToolArg] = Field(
        default=None, exclude=True, description=_RUNTIME_DESCRIPTION
    )


# -- images attached to the conversation -------------------------------------------------------


def _messages_of(runtime: Any) -> list[Any]:
    """The conversation's messages, from a ToolRuntime, a state, or a list of messages."""
    if runtime is None:
        return []
    state = getattr(runtime, "state", runtime)
    if isinstance(state, Mapping):
        messages = state.get("messages")
    elif isinstance(state, (list, tuple)):
        messages = state
    else:
        messages = getattr(state, "messages", None)
    return list(messages) if isinstance(messages, (list, tuple)) else []


def _content_of(message: Any) -> Any:
    if isinstance(message, BaseMessage):
        return message.content
    if isinstance(message, Mapping):
        return message.get("content")
    return None


def _data_uri(data: str, mime: Any) -> str:
    kind = mime if isinstance(mime, str) and mime and not set(mime) & set(",; ") else None
    return f"data:{kind or 'application/octet-stream'};base64,{data}"


def _is_document_mime(mime: Any) -> bool:
    return isinstance(mime, str) and (
        mime.lower().startswith("image/") or mime.lower() == "application/pdf"
    )


def _block_image(block: Mapping[str, Any]) -> str | None:
    """The image of one content block as a string (data URI, URL), or None if it has none.

    Raises:
        UnsupportedInputError: An image block that cannot be read here (a provider file id).
    """
    kind = block.get("type")
    if kind in ("image_url", "input_image"):  # OpenAI chat / responses formats
        url = block.get("image_url")
        url = url.get("url") if isinstance(url, Mapping) else url
        return url if isinstance(url, str) and url else None
    if kind == "file" and not _is_document_mime(block.get("mime_type")):
        return None
    if kind not in ("image", "file"):
        return None
    source = block.get("source")
    if isinstance(source, Mapping):  # Anthropic format
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return _data_uri(source["data"], source.get("media_type"))
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return source["url"]
    data = block.get("base64")
    if not isinstance(data, str) and block.get("source_type") == "base64":  # LangChain v0
        data = block.get("data")
    if isinstance(data, str) and data:
        return _data_uri(data, block.get("mime_type"))
    url = block.get("url")
    if isinstance(url, str) and url:
        return url
    if block.get("file_id") or (block.get("source_type") == "id" and block.get("id")):
        raise UnsupportedInputError(
            "the attached image is a provider file id, which cannot be read here; pass the "
            "image as a file path, URL or data: URI",
            source="<attached image>",
        )
    return None


def _iter_blocks(content: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(content, (list, tuple)):
        for block in reversed(content):
            if isinstance(block, Mapping):
                yield block


def find_attached_image(runtime: Any) -> str | None:
    """The latest image (or PDF) attached to the conversation, as a data URI or URL.

    Looks through the messages of ``runtime.state`` (a LangGraph ``ToolRuntime``; a state
    mapping or a list of messages works too), newest first, for a content block holding an
    image: LangChain v1 ``{"type": "image", "base64" | "url": ...}``, ``{"type": "file"}``
    with an image or PDF ``mime_type``, the older ``{"type": "image_url", "image_url":
    {"url": ...}}``, LangChain v0 ``source_type`` blocks and Anthropic ``source`` blocks.

    Returns:
        A ``data:`` URI (for inline data) or the block's URL; None if there is no image.

    Raises:
        UnsupportedInputError: The latest image is a provider file id.
    """
    for message in reversed(_messages_of(runtime)):
        for block in _iter_blocks(_content_of(message)):
            image = _block_image(block)
            if image is not None:
                return image
    return None


# -- engine and policy construction ------------------------------------------------------------


def _facade(engine: Any, options: Mapping[str, Any]) -> DeepSeekOCR:
    """One :class:`DeepSeekOCR` from an engine, a facade, or nothing (the local default)."""
    if isinstance(engine, DeepSeekOCR):
        if options:
            raise ConfigurationError(
                f"options {sorted(options)} given together with a DeepSeekOCR; set them on "
                "the DeepSeekOCR instead"
            )
        return engine
    # None builds the local TransformersEngine, which loads its weights on first use.
    return DeepSeekOCR(engine, **options)


def _policy(
    policy: ImageSourcePolicy | None,
    allowed_roots: Any,
    allow_urls: bool | None,
) -> ImageSourcePolicy:
    if policy is not None:
        if allowed_roots is not None or allow_urls is not None:
            raise ConfigurationError("pass either policy= or allowed_roots=/allow_urls=, not both")
        return policy
    fields: dict[str, Any] = {}
    if allowed_roots is not None:
        fields["allowed_roots"] = allowed_roots
    if allow_urls is not None:
        fields["allow_urls"] = allow_urls
    return ImageSourcePolicy(**fields)


@dataclass(frozen=True)
class _Source:
    """A vetted image: what the facade reads, and how to name it."""

    value: bytes | str
    label: str  # OCRResult.source
    display: str  # how the content and error messages name it


def _display(text: str) -> str:
    if text[:5].lower() == "data:":
        return "the data: URI"
    return text if len(text) <= 200 else f"{text[:199]}…"


def _flags(result: OCRResult, display: str) -> str:
    notes = []
    if result.repetition:
        notes.append(
            f"[Warning: the model's output for {display} fell into a repetition loop; the "
            "text above may repeat itself and miss parts of the image.]"
        )
    if result.truncated:
        notes.append(
            f"[Warning: the output for {display} was cut off (token limit reached); the end "
            "is missing.]"
        )
    return "\n\n" + "\n".join(notes) if notes else ""


# -- the tools -------------------------------------------------------------------------------


class _DeepSeekOCRToolBase(BaseTool):
    """What the three tools share: the facade, the input policy, and the call path."""

    ocr: DeepSeekOCR
    """The DeepSeek-OCR facade (and through it the engine) the tool runs on."""
    policy: ImageSourcePolicy = Field(default_factory=ImageSourcePolicy)
    """What the ``image`` argument may point to (allowed folders, URLs)."""
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    """The content is for the model; the artifact is the full ``OCRResult``."""
    handle_tool_error: bool | str | Callable[[ToolException], str] | None = True
    """Errors become an error ``ToolMessage`` the agent can act on (``False``: raise)."""

    def __init__(
        self,
        engine: Any = None,
        *,
        policy: ImageSourcePolicy | None = None,
        allowed_roots: Any = None,
        allow_urls: bool | None = None,
        **kwargs: Any,
    ):
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in type(self).model_fields}
        if "ocr" in fields:
            if engine is not None or kwargs:
                raise ConfigurationError("pass either ocr= or engine=/engine options, not both")
            ocr = fields.pop("ocr")
        else:
            ocr = _facade(engine, kwargs)
        super().__init__(ocr=ocr, policy=_policy(policy, allowed_roots, allow_urls), **fields)

    # -- inputs --------------------------------------------------------------------------

    def _source(self, image: str | None, runtime: Any) -> _Source:
        try:
            text, display, label = self._pick(image, runtime)
            resolved = resolve_image_argument(text, self.policy)
            if isinstance(resolved, Path):
                data = read_vetted_file(
                    resolved, self.policy, max_bytes=self.ocr.limits.max_bytes, shown=text
                )
                return _Source(data, label or str(resolved), display)
            return self._wrap(resolved, text, display, label)
        except DeepSeekOCRError as exc:
            raise self._error(exc, _display_of(image), runtime) from exc

    async def _asource(self, image: str | None, runtime: Any) -> _Source:
        try:
            text, display, label = self._pick(image, runtime)
            resolved = await aresolve_image_argument(text, self.policy)
            if isinstance(resolved, Path):
                data = await asyncio.to_thread(
                    read_vetted_file,
                    resolved,
                    self.policy,
                    max_bytes=self.ocr.limits.max_bytes,
                    shown=text,
                )
                return _Source(data, label or str(resolved), display)
            return self._wrap(resolved, text, display, label)
        except DeepSeekOCRError as exc:
            raise self._error(exc, _display_of(image), runtime) from exc

    @staticmethod
    def _pick(image: str | None, runtime: Any) -> tuple[str, str, str | None]:
        """``(argument, display, label)``: the explicit image, else the attached one."""
        if isinstance(image, str) and image.strip():
            return image.strip(), _display(image.strip()), None
        attached = find_attached_image(runtime)
        if attached is None:
            raise ToolException(_NO_IMAGE)
        return attached, _ATTACHED, "<attached image>"

    @staticmethod
    def _wrap(resolved: bytes | str, text: str, display: str, label: str | None) -> _Source:
        if isinstance(resolved, bytes):  # downloaded
            return _Source(resolved, label or text, display)
        return _Source(resolved, label or "<data URI>", display)

    def _error(self, exc: DeepSeekOCRError, display: str, runtime: Any) -> ToolException:
        where = display if exc.page is None else f"{display} (page {exc.page})"
        message = f"{where}: {exc.message}"
        if isinstance(exc, InputNotFoundError) and display != _ATTACHED:
            try:
                attached = find_attached_image(runtime) is not None
            except DeepSeekOCRError:
                attached = False
            if attached:
                message += (
                    " (an image is attached to the conversation: leave `image` out to read it)"
                )
        return ToolException(message)

    # -- running -------------------------------------------------------------------------

    def _call(self, source: _Source, **options: Any) -> OCRResult:
        try:
            result = self.ocr.ocr(source.value, **options)
        except DeepSeekOCRError as exc:
            raise self._error(exc, source.display, None) from exc
        return result.model_copy(update={"source": source.label})

    async def _acall(self, source: _Source, **options: Any) -> OCRResult:
        try:
            result = await self.ocr.aocr(source.value, **options)
        except DeepSeekOCRError as exc:
            raise self._error(exc, source.display, None) from exc
        return result.model_copy(update={"source": source.label})


def _display_of(image: str | None) -> str:
    """How an explicit ``image`` argument is named in messages (the attachment otherwise)."""
    if isinstance(image, str) and image.strip():
        return _display(image.strip())
    return _ATTACHED


class DeepSeekOCRTool(_DeepSeekOCRToolBase):
    """Read an image or a PDF page with DeepSeek-OCR: markdown for the model, OCRResult for you.

    The content the model reads is the page as markdown (tables as HTML, formulas as LaTeX),
    with a warning line if the output looped or was cut off; the artifact on the
    ``ToolMessage`` is the full `OCRResult` (layout blocks with pixel boxes, token counts,
    flags). Paths are read only under `allowed_roots`; URLs only with `allow_urls=True`;
    without `image` the tool reads the image attached to the conversation.

    Setup:
        Install the package; the model (`deepseek-ai/DeepSeek-OCR`) downloads on first use,
        or point `model=` at a local folder.

        ```bash
        pip install -U langchain-deepseek-ocr
        ```

    Instantiate:
        ```python
        from langchain_deepseek_ocr import DeepSeekOCRTool

        tool = DeepSeekOCRTool()  # local TransformersEngine, loaded on first call
        tool = DeepSeekOCRTool(model="/models/DeepSeek-OCR", device="cuda")
        tool = DeepSeekOCRTool(engine=my_engine, allowed_roots=["/data/scans"])
        ```

    Invoke directly with args:
        ```python
        tool.invoke({"image": "invoice.png"})
        ```

        ```python
        "# Invoice 2024-001 ..."  # the page as markdown
        ```

    Invoke with a tool call (what an agent does; the artifact rides along):
        ```python
        message = tool.invoke(
            {
                "type": "tool_call",
                "id": "call_1",
                "name": "deepseek_ocr",
                "args": {"image": "report.pdf", "page": 2},
            }
        )
        message.content  # the markdown
        message.artifact.blocks[0].pixel_boxes  # OCRResult
        ```

    Async:
        ```python
        message = await tool.ainvoke(tool_call)  # runs on the engine's async path
        ```

    In an agent (the user's attached image is read when `image` is left out):
        ```python
        from langchain.agents import create_agent
        from langchain_deepseek_ocr import DeepSeekOCRToolkit

        agent = create_agent(
            "openai:gpt-4.1", tools=DeepSeekOCRToolkit(allowed_roots=["scans"]).get_tools()
        )
        ```
    """

    name: str = "deepseek_ocr"
    description: str = (
        "Read a document image or a PDF page and return its content as markdown (headings, "
        "paragraphs, tables as HTML, formulas as LaTeX). Use it for scans, photos of "
        "documents, screenshots, receipts and forms. Leave `image` out to read the image the "
        "user attached. For a multi-page PDF, read one `page` per call."
    )
    args_schema: type[BaseModel] = DeepSeekOCRInput

    def _run(
        self,
        image: str | None = None,
        page: int | None = None,
        task: str = "markdown",
        runtime: Annotated[Any, InjectedToolArg] = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, OCRResult]:
        source = self._source(image, runtime)
        result = self._call(source, task=task, page=page)
        return _markdown_content(result, source.display), result

    async def _arun(
        self,
        image: str | None = None,
        page: int | None = None,
        task: str = "markdown",
        runtime: Annotated[Any, InjectedToolArg] = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, OCRResult]:
        source = await self._asource(image, runtime)
        result = await self._acall(source, task=task, page=page)
        return _markdown_content(result, source.display), result


class DeepSeekOCRLocateTool(_DeepSeekOCRToolBase):
    """Find something in an image with DeepSeek-OCR's grounding: matches as pixel boxes.

    The content the model reads is one line, e.g. ``1 match for 'the hat' in photo.jpg
    (640×480 px): [140, 38, 525, 357] ...``; boxes are ``[left, top, right, bottom]`` in
    pixels of the image, origin at its top-left corner. The artifact is the full
    `OCRResult` (each block's 0-999 grid boxes and pixel boxes).

    Setup:
        ```bash
        pip install -U langchain-deepseek-ocr
        ```

    Instantiate:
        ```python
        from langchain_deepseek_ocr import DeepSeekOCRLocateTool

        tool = DeepSeekOCRLocateTool(engine=my_engine, allowed_roots=["photos"])
        ```

    Invoke directly with args:
        ```python
        tool.invoke({"image": "photo.jpg", "target": "the hat"})
        ```

        ```python
        "1 match for 'the hat' in photo.jpg (626×580 px): [137, 46, 513, 431] (pixel boxes ...)"
        ```

    Invoke with a tool call:
        ```python
        message = tool.invoke(
            {
                "type": "tool_call",
                "id": "1",
                "name": "deepseek_ocr_locate",
                "args": {"image": "photo.jpg", "target": "the hat"},
            }
        )
        message.artifact.blocks[0].pixel_boxes  # [(137, 46, 513, 431)]
        ```

    Async:
        ```python
        message = await tool.ainvoke(tool_call)
        ```
    """

    name: str = "deepseek_ocr_locate"
    description: str = (
        "Find something in an image and return where it is, as pixel boxes [left, top, "
        "right, bottom] (origin at the top-left corner). Use it to locate objects, words, "
        "fields or regions, e.g. 'the signature' or 'the total amount'. Leave `image` out to "
        "search the image the user attached."
    )
    args_schema: type[BaseModel] = DeepSeekOCRLocateInput

    def _run(
        self,
        target: str,
        image: str | None = None,
        page: int | None = None,
        runtime: Annotated[Any, InjectedToolArg] = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, OCRResult]:
        source = self._source(image, runtime)
        result = self._call(source, task="locate", ref=target, page=page)
        return _locate_content(result, target, source.display), result

    async def _arun(
        self,
        target: str,
        image: str | None = None,
        page: int | None = None,
        runtime: Annotated[Any, InjectedToolArg] = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, OCRResult]:
        source = await self._asource(image, runtime)
        result = await self._acall(source, task="locate", ref=target, page=page)
        return _locate_content(result, target, source.display), result


class DeepSeekOCRDescribeTool(_DeepSeekOCRToolBase):
    """Describe an image, or parse a chart or figure, with DeepSeek-OCR.

    Task ``describe`` asks for a detailed description of the image; task ``figure`` asks the
    model to parse a chart, plot or diagram (best on an image of the figure alone). The
    content is the model's text; the artifact is the full `OCRResult`.

    Setup:
        ```bash
        pip install -U langchain-deepseek-ocr
        ```

    Instantiate:
        ```python
        from langchain_deepseek_ocr import DeepSeekOCRDescribeTool

        tool = DeepSeekOCRDescribeTool(engine=my_engine)
        ```

    Invoke directly with args:
        ```python
        tool.invoke({"image": "chart.png", "task": "figure"})
        ```

    Invoke with a tool call:
        ```python
        message = tool.invoke(
            {
                "type": "tool_call",
                "id": "1",
                "name": "deepseek_ocr_describe",
                "args": {"image": "photo.jpg"},
            }
        )
        ```

    Async:
        ```python
        message = await tool.ainvoke(tool_call)
        ```
    """

    name: str = "deepseek_ocr_describe"
    description: str = (
        "Describe an image in detail (task 'describe'), or parse a chart, plot or diagram "
        "into its text and data (task 'figure'). Use it for photos and figures rather than "
        "text documents. Leave `image` out to use the image the user attached."
    )
    args_schema: type[BaseModel] = DeepSeekOCRDescribeInput

    def _run(
        self,
        image: str | None = None,
        page: int | None = None,
        task: str = "describe",
        runtime: Annotated[Any, InjectedToolArg] = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, OCRResult]:
        source = self._source(image, runtime)
        result = self._call(source, task=task, page=page)
        return _describe_content(result, source.display), result

    async def _arun(
        self,
        image: str | None = None,
        page: int | None = None,
        task: str = "describe",
        runtime: Annotated[Any, InjectedToolArg] = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, OCRResult]:
        source = await self._asource(image, runtime)
        result = await self._acall(source, task=task, page=page)
        return _describe_content(result, source.display), result


# -- content for the model ---------------------------------------------------------------------


def _markdown_content(result: OCRResult, display: str) -> str:
    text = result.text.strip() or f"(no text was found in {display})"
    return text + _flags(result, display)


def _describe_content(result: OCRResult, display: str) -> str:
    text = result.text.strip() or f"(the model returned no description of {display})"
    return text + _flags(result, display)


def _locate_content(result: OCRResult, target: str, display: str) -> str:
    size = result.image_size
    dims = f" ({size[0]}×{size[1]} px)" if size else ""
    boxes = [list(box) for block in result.blocks for box in block.pixel_boxes]
    unit = "pixel boxes [left, top, right, bottom], origin at the top-left corner"
    if not boxes:  # no image size: the boxes stay on the model's grid
        boxes = [box.as_list() for block in result.blocks for box in block.boxes]
        unit = "boxes [left, top, right, bottom] on a 0-999 grid over the image"
    if not boxes:
        return f"No match for {target!r} in {display}{dims}." + _flags(result, display)
    shown = ", ".join(str(box) for box in boxes[:_MAX_LISTED_BOXES])
    more = len(boxes) - _MAX_LISTED_BOXES
    if more > 0:
        shown += f", … and {more} more"
    noun = "match" if len(boxes) == 1 else "matches"
    line = f"{len(boxes)} {noun} for {target!r} in {display}{dims}: {shown} ({unit})."
    return line + _flags(result, display)


# -- the toolkit -------------------------------------------------------------------------------


class DeepSeekOCRToolkit(BaseToolkit):
    """The three DeepSeek-OCR tools on one shared engine and one input policy.

    `get_tools()` returns `DeepSeekOCRTool` (`deepseek_ocr`), `DeepSeekOCRLocateTool`
    (`deepseek_ocr_locate`) and `DeepSeekOCRDescribeTool` (`deepseek_ocr_describe`); they
    hold the same `DeepSeekOCR` facade, so the model is loaded once.

    Setup:
        ```bash
        pip install -U langchain-deepseek-ocr langchain
        ```

    Instantiate:
        ```python
        from langchain_deepseek_ocr import DeepSeekOCRToolkit

        toolkit = DeepSeekOCRToolkit(
            model="deepseek-ai/DeepSeek-OCR",  # or engine=..., a DeepSeekOCR or an OCREngine
            allowed_roots=["/data/scans"],  # default: the current directory
            allow_urls=False,  # http(s) images off by default
        )
        tools = toolkit.get_tools()
        ```

    Use in an agent:
        ```python
        from langchain.agents import create_agent

        agent = create_agent("openai:gpt-4.1", tools=toolkit.get_tools())
        state = agent.invoke({"messages": [("user", "What is the total on invoice.png?")]})
        tool_message = state["messages"][2]
        tool_message.artifact  # the OCRResult of the call
        ```

    Key init args:
        engine: An `OCREngine` or a `DeepSeekOCR`; default: the local `TransformersEngine`
            (other keyword arguments such as `model=`, `device=` go to it).
        allowed_roots: Folders local files may be read from.
        allow_urls: Download http(s) images (public addresses only).
        policy: A full `ImageSourcePolicy` instead of the two above.
        handle_tool_error: Passed to every tool (default True).
    """

    ocr: DeepSeekOCR
    """The facade every tool shares."""
    policy: ImageSourcePolicy
    """What the tools' ``image`` argument may point to."""
    handle_tool_error: bool | str | Callable[[ToolException], str] | None = True
    """How the tools report errors (see :class:`DeepSeekOCRTool`)."""

    def __init__(
        self,
        engine: Any = None,
        *,
        allowed_roots: Any = None,
        allow_urls: bool | None = None,
        policy: ImageSourcePolicy | None = None,
        handle_tool_error: bool | str | Callable[[ToolException], str] | None = True,
        **options: Any,
    ):
        super().__init__(
            ocr=_facade(engine, options),
            policy=_policy(policy, allowed_roots, allow_urls),
            handle_tool_error=handle_tool_error,
        )

    def get_tools(self) -> list[BaseTool]:
        """The read, locate and describe tools, sharing this toolkit's engine and policy."""
        shared = {"policy": self.policy, "handle_tool_error": self.handle_tool_error}
        return [
            DeepSeekOCRTool(self.ocr, **shared),
            DeepSeekOCRLocateTool(self.ocr, **shared),
            DeepSeekOCRDescribeTool(self.ocr, **shared),
        ]
