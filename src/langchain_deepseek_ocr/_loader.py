"""``DeepSeekOCRLoader``: files, folders and glob patterns in, one Document per page out.

The page pipeline shared by the loader and the blob parsers lives here too: a stream of
files becomes a stream of pages (rendered lazily by :func:`iter_page_results`), the pages
are cut into chunks of the engine's batch size -- across file boundaries, so a folder of
single images is OCR'd in batches too -- each chunk is one ``generate`` call (or one
``agenerate`` call, several in flight), and the results become Documents in page order
(:mod:`langchain_deepseek_ocr._documents`).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob as _glob
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document

from langchain_deepseek_ocr._documents import (
    PAGES_DELIMITER,
    DocumentMode,
    error_to_document,
    result_to_documents,
    results_to_document,
)
from langchain_deepseek_ocr._engine import OCREngine, OCRRequest
from langchain_deepseek_ocr._errors import (
    ConfigurationError,
    DeepSeekOCRError,
    InputNotFoundError,
)
from langchain_deepseek_ocr._facade import DeepSeekOCR, engine_batch_size
from langchain_deepseek_ocr._inputs import InputLimits, PageImage, count_pages, iter_page_results
from langchain_deepseek_ocr._preprocess import prefetch_ahead
from langchain_deepseek_ocr._recovery import RecoveryPolicy
from langchain_deepseek_ocr._result import OCRResult
from langchain_deepseek_ocr._tasks import (
    OCRTask,
    Resolution,
    build_prompt,
    parse_resolution,
    parse_task,
)

__all__ = ["SUPPORTED_SUFFIXES", "DeepSeekOCRLoader", "OnError"]

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip", "record"]
"""What a loader does with a file or page that fails: raise, skip (log), record (a Document)."""

SUPPORTED_SUFFIXES = frozenset(
    {".pdf", ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)
"""Extensions of the files picked up from folders and glob patterns (as the CLI does)."""

_MODES = ("page", "single", "elements")
_ON_ERROR = ("raise", "skip", "record")
_GLOB_CHARS = frozenset("*?[")


# --------------------------------------------------------------------------------------------
# Shared construction helpers
# --------------------------------------------------------------------------------------------


def make_ocr(
    engine: OCREngine | DeepSeekOCR | None,
    *,
    task: OCRTask | str | None = None,
    resolution: Resolution | str | None = None,
    limits: InputLimits | None = None,
    recovery: RecoveryPolicy | None = None,
    engine_kwargs: Mapping[str, Any] | None = None,
) -> DeepSeekOCR:
    """The :class:`DeepSeekOCR` a loader or parser runs (pages go through its recovery).

    ``engine`` may be an :class:`OCREngine`, a :class:`DeepSeekOCR` (its engine is shared
    and its defaults -- task, resolution, limits, recovery policy -- used unless overridden
    here), or ``None`` for the local :class:`TransformersEngine` built from
    ``engine_kwargs`` (``model=``, ``device=``...).
    """
    engine_kwargs = dict(engine_kwargs or {})
    if task is not None:
        task = parse_task(task)
        build_prompt(task)  # locate/custom need a ref/prompt a loader cannot give
    if resolution is not None:
        resolution = parse_resolution(resolution)
    if limits is not None and not isinstance(limits, InputLimits):
        msg = f"limits must be an InputLimits, got {type(limits).__name__}"
        raise ConfigurationError(msg)
    if recovery is not None and not isinstance(recovery, RecoveryPolicy):
        msg = f"recovery must be a RecoveryPolicy, got {type(recovery).__name__}"
        raise ConfigurationError(msg)
    if isinstance(engine, DeepSeekOCR):
        if engine_kwargs:
            msg = f"engine options {sorted(engine_kwargs)} given together with an engine"
            raise ConfigurationError(msg)
        return DeepSeekOCR(
            engine=engine.engine,
            task=task or engine.task,
            resolution=resolution or engine.resolution,
            max_new_tokens=engine.max_new_tokens,
            limits=limits or engine.limits,
            recovery=recovery or engine.recovery,
        )
    fields: dict[str, Any] = {
        "task": task,
        "resolution": resolution,
        "limits": limits,
        "recovery": recovery,
    }
    fields = {key: value for key, value in fields.items() if value is not None}
    return DeepSeekOCR(engine, **fields, **engine_kwargs)


def check_positive(name: str, value: int | None) -> None:
    """Raise :class:`ConfigurationError` unless ``value`` is None or a positive int."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be a positive int, got {value!r}"
        raise ConfigurationError(msg)


def check_pages(pages: Sequence[int] | None) -> list[int] | None:
    """``pages`` as a list, or :class:`ConfigurationError` if it is not a sequence of ints."""
    if pages is None:
        return None
    if isinstance(pages, (str, bytes)) or not all(
        isinstance(p, int) and not isinstance(p, bool) for p in pages
    ):
        msg = f"pages must be a sequence of ints or None, got {pages!r}"
        raise ConfigurationError(msg)
    return list(pages)


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise :class:`ConfigurationError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        msg = f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        raise ConfigurationError(msg)


# --------------------------------------------------------------------------------------------
# The page pipeline
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class PipelineInput:
    """One file for the pipeline.

    Attributes:
        source: The name recorded in metadata and errors.
        obj: What :func:`iter_page_results` reads (a path or bytes).
        metadata: Extra metadata for its Documents (a blob's), placed under the OCR keys.
        error: A failure known before reading (a glob pattern that matched nothing).
    """

    source: str
    obj: Any = None
    metadata: Mapping[str, Any] | None = None
    error: DeepSeekOCRError | None = None


@dataclass(eq=False)
class _Item:
    """One entry of the page stream: a page to OCR, a failure, or the end of a file."""

    kind: Literal["page", "error", "end"]
    file: PipelineInput
    page: PageImage | None = None
    request: OCRRequest | None = None
    error: DeepSeekOCRError | None = None


_Outcome = OCRResult | DeepSeekOCRError | None


class _Progress:
    """A tqdm bar over pages whose total grows as files are opened; silent when off."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        self._lock = threading.Lock()  # the total grows in the reader thread
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, unit="page", desc="DeepSeek-OCR")

    def grow(self, pages: int) -> None:
        if self.bar is not None:
            with self._lock:
                self.bar.total += pages
                self.bar.refresh()

    def step(self) -> None:
        if self.bar is not None:
            with self._lock:
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _looks_like_pdf(obj: Any) -> bool:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        head = bytes(obj[:1024])
    else:
        with Path(os.fspath(obj)).expanduser().open("rb") as stream:
            head = stream.read(1024)
    return b"%PDF-" in head


class PagePipeline:
    """Files in, Documents out, page by page (see the module docstring).

    Args:
        ocr: What runs the pages (its engine, task, resolution and limits).
        mode: ``page``, ``single`` or ``elements``.
        pages: 0-based pages to read from each multi-page file (``None``: all).
        on_error: ``raise``, ``skip`` or ``record``.
        pages_delimiter: Between pages in ``single`` mode.
        show_progress: Show a tqdm bar over pages.
        max_concurrency: ``agenerate`` calls (chunks) in flight at once in :meth:`arun`.
        batch_size: Pages per engine call; ``None``: the engine's ``batch_size``.
    """

    def __init__(
        self,
        ocr: DeepSeekOCR,
        *,
        mode: DocumentMode = "page",
        pages: Sequence[int] | None = None,
        on_error: OnError = "raise",
        pages_delimiter: str = PAGES_DELIMITER,
        show_progress: bool = False,
        max_concurrency: int = 2,
        batch_size: int | None = None,
    ) -> None:
        self.ocr = ocr
        self._batch_size = batch_size
        self.mode = mode
        self.pages = pages
        self.on_error = on_error
        self.pages_delimiter = pages_delimiter
        self.show_progress = show_progress
        self.max_concurrency = max_concurrency

    @classmethod
    def from_options(
        cls,
        engine: OCREngine | DeepSeekOCR | None,
        *,
        mode: DocumentMode,
        task: OCRTask | str | None,
        resolution: Resolution | str | None,
        pages: Sequence[int] | None,
        on_error: OnError,
        limits: InputLimits | None,
        recovery: RecoveryPolicy | None,
        pages_delimiter: str,
        max_concurrency: int,
        batch_size: int | None,
        engine_kwargs: Mapping[str, Any],
        show_progress: bool = False,
    ) -> PagePipeline:
        """The pipeline behind a loader or parser, its options checked (one place for both)."""
        check_choice("mode", mode, _MODES)
        check_choice("on_error", on_error, _ON_ERROR)
        check_positive("max_concurrency", max_concurrency)
        check_positive("batch_size", batch_size)
        engine_kwargs = dict(engine_kwargs)
        if engine is None and batch_size is not None:
            engine_kwargs.setdefault("batch_size", batch_size)
        ocr = make_ocr(
            engine,
            task=task,
            resolution=resolution,
            limits=limits,
            recovery=recovery,
            engine_kwargs=engine_kwargs,
        )
        return cls(
            ocr,
            mode=mode,
            pages=check_pages(pages),
            on_error=on_error,
            pages_delimiter=pages_delimiter,
            show_progress=show_progress,
            max_concurrency=max_concurrency,
            batch_size=batch_size,
        )

    @property
    def batch_size(self) -> int:
        """Pages per engine call: the given one, else the engine's (8 when it has none)."""
        if self._batch_size is not None:
            return self._batch_size
        return engine_batch_size(self.ocr.engine)

    # -- the page stream -----------------------------------------------------------------

    def _pages_for(self, file: PipelineInput) -> list[int] | None:
        """``pages`` applies to multi-page files; a single image is always read once."""
        if self.pages is None:
            return None
        try:
            # a PDF always takes ``pages``; only other files are counted (no PDF parsed twice)
            single = (
                not _looks_like_pdf(file.obj) and count_pages(file.obj, limits=self.ocr.limits) == 1
            )
        except (DeepSeekOCRError, OSError, TypeError, ValueError):
            return list(self.pages)  # reading will report what is wrong with the file
        return None if single else list(self.pages)

    def _entries(self, files: Iterable[PipelineInput], progress: _Progress) -> Iterator[_Item]:
        for file in files:
            if file.error is not None:
                progress.grow(1)
                yield _Item("error", file, error=file.error)
                yield _Item("end", file)
                continue
            pages = self._pages_for(file)
            first = True
            for item in iter_page_results(
                file.obj, pages=pages, limits=self.ocr.limits, source=file.source
            ):
                if first:
                    first = False
                    if pages is not None:
                        progress.grow(len(pages))
                    elif isinstance(item, PageImage):
                        progress.grow(item.total_pages or 1)
                    else:
                        progress.grow(1)
                if isinstance(item, DeepSeekOCRError):
                    yield _Item("error", file, error=item)
                else:
                    request = self.ocr._request(item, {})
                    yield _Item("page", file, page=item, request=request)
            yield _Item("end", file)

    def _chunks(self, items: Iterator[_Item]) -> Iterator[list[_Item]]:
        """Chunks of at most ``batch_size`` pages, in stream order.

        An error or end of file that follows a full chunk is passed on alone, at once,
        instead of waiting for the next chunk's pages.
        """
        chunk: list[_Item] = []
        count = 0
        for item in items:
            if item.kind != "page" and not chunk:
                yield [item]
                continue
            chunk.append(item)
            if item.kind == "page":
                count += 1
                if count >= self.batch_size:
                    yield chunk
                    chunk, count = [], 0
        if chunk:
            yield chunk

    # -- running chunks ------------------------------------------------------------------

    @staticmethod
    def _requests(chunk: list[_Item]) -> list[OCRRequest]:
        return [item.request for item in chunk if item.request is not None]

    @staticmethod
    def _outcomes(chunk: list[_Item], results: Sequence[Any]) -> list[_Outcome]:
        it = iter(results)
        return [next(it) if item.request is not None else None for item in chunk]

    def _run(self, chunk: list[_Item]) -> list[_Outcome]:
        # the facade runs the engine and its recovery policy (retries of looping pages)
        return self._outcomes(chunk, self.ocr._execute(self._requests(chunk)))

    async def _arun(self, chunk: list[_Item]) -> list[_Outcome]:
        return self._outcomes(chunk, await self.ocr._aexecute(self._requests(chunk)))

    # -- Documents -----------------------------------------------------------------------

    def _failure(self, file: PipelineInput, error: DeepSeekOCRError) -> Iterator[Document]:
        if self.on_error == "raise" or isinstance(error, ConfigurationError):
            raise error
        source = error.source if error.source is not None else file.source
        where = source if error.page is None else f"{source} (page {error.page})"
        action = "skipped" if self.on_error == "skip" else "recorded"
        logger.warning(
            "DeepSeek-OCR: %s %s: %s: %s", action, where, type(error).__name__, error.message
        )
        if self.on_error == "record":
            yield error_to_document(error, source=file.source, metadata=file.metadata)

    def _documents(
        self,
        chunk: list[_Item],
        outcomes: list[_Outcome],
        progress: _Progress,
        state: dict[str, Any],
    ) -> Iterator[Document]:
        for item, outcome in zip(chunk, outcomes, strict=True):
            if item.kind == "end":
                pages: list[OCRResult] = state.pop("pages", [])
                total = state.pop("total", None)
                if pages:
                    yield results_to_document(
                        pages,
                        source=item.file.source,
                        total_pages=total,
                        pages_delimiter=self.pages_delimiter,
                        metadata=item.file.metadata,
                    )
                continue
            progress.step()
            if item.kind == "error":
                assert item.error is not None
                yield from self._failure(item.file, item.error)
                continue
            if isinstance(outcome, DeepSeekOCRError):
                yield from self._failure(item.file, outcome)
                continue
            assert isinstance(outcome, OCRResult)
            assert item.page is not None
            if self.mode == "single":
                state.setdefault("pages", []).append(outcome)
                state["total"] = item.page.total_pages or 1
                continue
            yield from result_to_documents(
                outcome,
                mode="elements" if self.mode == "elements" else "page",
                source=item.file.source,
                total_pages=item.page.total_pages,
                metadata=item.file.metadata,
            )

    # -- drivers -------------------------------------------------------------------------

    def run(self, files: Iterable[PipelineInput]) -> Iterator[Document]:
        """OCR ``files`` lazily: one engine call per chunk, Documents as chunks finish.

        The next chunk's pages are read (rendered, and prefetched by an engine that can) in
        a background thread while the engine works on the current chunk; at most one
        chunk's worth of pages waits, so memory does not grow with the input.
        """
        progress = _Progress(self.show_progress)
        items = self._entries(files, progress)
        ahead = prefetch_ahead(items, self.ocr.engine, lambda item: item.request, self.batch_size)
        chunks = self._chunks(ahead)
        state: dict[str, Any] = {}
        try:
            for chunk in chunks:
                yield from self._documents(chunk, self._run(chunk), progress, state)
                del chunk  # free its page images as soon as its Documents are out
        finally:
            chunks.close()
            ahead.close()  # stops the reader thread (which closes the page stream)
            progress.close()

    @staticmethod
    async def _render(chunks: Iterator[list[_Item]]) -> list[_Item] | None:
        """The next chunk, rendered in a worker thread (``None`` at the end).

        The chunk comes back through a list, not as the thread's result: asyncio's
        thread futures reference each other in a cycle, which would keep a result (and
        its page images) alive until the garbage collector happens to run.
        """
        box: list[list[_Item] | None] = []
        await asyncio.to_thread(lambda: box.append(next(chunks, None)))
        return box.pop()

    async def arun(self, files: Iterable[PipelineInput]) -> AsyncIterator[Document]:
        """OCR ``files`` asynchronously, in page order.

        Pages are rendered in a worker thread one chunk at a time (one thread hop per chunk,
        not per page); up to ``max_concurrency`` chunks are awaited on the engine's
        ``agenerate`` at once, so rendering, and the engine's work on several chunks,
        overlap. At most ``max_concurrency`` chunks of page images are held at once (the
        one being rendered included).
        """
        progress = _Progress(self.show_progress)
        items = self._entries(files, progress)
        chunks = self._chunks(items)
        state: dict[str, Any] = {}
        pending: deque[tuple[list[_Item], asyncio.Future[list[_Outcome]]]] = deque()
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.max_concurrency:
                    chunk = await self._render(chunks)
                    if chunk is None:
                        exhausted = True
                        break
                    pending.append((chunk, asyncio.ensure_future(self._arun(chunk))))
                if not pending:
                    break
                chunk, future = pending.popleft()
                outcomes = await future
                for document in self._documents(chunk, outcomes, progress, state):
                    yield document
                del chunk, future  # free its page images before the next chunk is rendered
        finally:
            for _chunk, future in pending:
                future.cancel()
            if pending:
                await asyncio.gather(*(f for _c, f in pending), return_exceptions=True)
            # a generator still running in a worker thread (cancelled mid-render) cannot be
            # closed here; it is closed when that thread finishes and drops it
            with contextlib.suppress(ValueError):
                chunks.close()
            with contextlib.suppress(ValueError):
                items.close()
            progress.close()


# --------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------


class DeepSeekOCRLoader(BaseLoader):
    r"""Load images and PDFs with DeepSeek-OCR: one Document per page, file or layout block.

    Paths may be files, folders (searched with ``glob``, recursively by default, for
    images and PDFs: ``.pdf .png .jpg .jpeg .webp .gif .bmp .tif .tiff``; hidden files
    skipped; sorted) or glob patterns (``"scans/**/*.pdf"``). A file named explicitly is
    always read, whatever its extension (formats are detected from content). A file listed
    twice is read once.

    Pages are rendered as they are needed and sent to the engine in chunks of its batch
    size (across files), so a 1,000-page PDF never sits in memory whole and the first
    Documents arrive after the first chunk.

    Setup:
        ```bash
        pip install langchain-deepseek-ocr
        ```

    Instantiate:
        ```python
        from langchain_deepseek_ocr import DeepSeekOCRLoader

        loader = DeepSeekOCRLoader(
            ["report.pdf", "scans/"],   # files, folders, glob patterns
            mode="page",                # or "single" (one per file), "elements" (per block)
            task="markdown",            # or "ocr", "free"
            on_error="record",          # or "raise" (default), "skip"
            show_progress=True,
            # engine=TransformersEngine(...) or a DeepSeekOCR; else model=/device=/batch_size=
        )
        ```

    Lazy load:
        ```python
        for doc in loader.lazy_load():
            print(doc.metadata["source"], doc.metadata["page"], doc.page_content[:60])

        # report.pdf 0 # Annual report ...
        ```

    Async load:
        ```python
        async for doc in loader.alazy_load():   # chunks in flight on engine.agenerate
            ...
        docs = await loader.aload()
        ```

    Metadata (``page`` mode): ``source``, ``page`` (0-based; a single image is page 0),
    ``total_pages``, ``task``, ``resolution``, ``model``, ``vision_tokens``,
    ``output_tokens``, ``compression_ratio``, ``repetition``, ``truncated``, ``attempts``
    (runs of the page: more than 1 after a recovery retry) -- scalars only, keys without a
    value left out (never ``None``). ``single`` mode joins a file's pages with
    ``pages_delimiter`` (``"\n\f"``), sums the token counts and ORs the flags;
    ``elements`` mode adds ``label``, ``block_index``, ``complete``, ``box_count`` and the
    pixel box ``x1``, ``y1``, ``x2``, ``y2``. See :mod:`langchain_deepseek_ocr._documents`.

    Errors (``on_error``): ``raise`` raises the typed :class:`DeepSeekOCRError` (it names
    the file and page); ``skip`` logs a warning naming the file, page and reason and goes
    on; ``record`` does the same and yields a Document with empty content and ``error``,
    ``error_type``, ``source``, ``page`` metadata in the failed page's place. Every good
    page arrives either way (in ``single`` mode a file's error Documents come before its
    joined Document, which holds the pages that worked). A :class:`ConfigurationError` (an
    option the engine cannot run) is always raised.

    Args:
        file_path: A path, folder or glob pattern, or a list of them.
        engine: An :class:`OCREngine`, or a :class:`DeepSeekOCR` (its engine is shared);
            ``None`` builds the local :class:`TransformersEngine` from ``engine_kwargs``.
        mode: ``page`` (default), ``single`` or ``elements``.
        task: ``markdown`` (default), ``ocr``, ``free``, ``figure`` or ``describe``.
        resolution: ``tiny``/``small``/``base``/``large``/``gundam``; ``None``: the engine's.
        pages: 0-based pages to read from each PDF or multi-frame TIFF (negative counts from
            the end); a single image is always read once. ``None``: every page.
        glob: The pattern folders are searched with (``"**/*"``: recursively).
        on_error: ``raise`` (default), ``skip`` or ``record``.
        show_progress: A tqdm progress bar over pages.
        limits: Input caps and PDF dpi (default: the engine facade's).
        recovery: How pages that loop or are cut off are retried (on by default; see
            :class:`RecoveryPolicy`); ``attempts`` in the metadata counts the runs.
        pages_delimiter: Between pages in ``single`` mode.
        max_concurrency: Engine calls (chunks of ``batch_size`` pages) in flight at once in
            :meth:`alazy_load`. Page images held at once: at most ``max_concurrency ×
            batch_size`` in :meth:`alazy_load`, ``batch_size`` in :meth:`lazy_load`.
        batch_size: Pages per engine call (a chunk); ``None``: the engine's ``batch_size``
            (a server engine's can be large: lower it here to bound memory). Without
            ``engine`` it is also the default engine's batch size.
        **engine_kwargs: Options of the default :class:`TransformersEngine` (``model``,
            ``device``, ``batch_size``, ``max_new_tokens``...), when ``engine`` is None.
    """

    def __init__(
        self,
        file_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        engine: OCREngine | DeepSeekOCR | None = None,
        mode: DocumentMode = "page",
        task: OCRTask | str | None = None,
        resolution: Resolution | str | None = None,
        pages: Sequence[int] | None = None,
        glob: str = "**/*",
        on_error: OnError = "raise",
        show_progress: bool = False,
        limits: InputLimits | None = None,
        recovery: RecoveryPolicy | None = None,
        pages_delimiter: str = PAGES_DELIMITER,
        max_concurrency: int = 2,
        batch_size: int | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if isinstance(file_path, (str, os.PathLike)):
            paths: list[str | os.PathLike[str]] = [file_path]
        else:
            paths = list(file_path)
            for path in paths:
                if not isinstance(path, (str, os.PathLike)):
                    msg = f"file_path must hold paths, got {type(path).__name__}"
                    raise ConfigurationError(msg)
        self.file_paths = paths
        self.glob = glob
        self._pipeline = PagePipeline.from_options(
            engine,
            mode=mode,
            task=task,
            resolution=resolution,
            pages=pages,
            on_error=on_error,
            limits=limits,
            recovery=recovery,
            pages_delimiter=pages_delimiter,
            max_concurrency=max_concurrency,
            batch_size=batch_size,
            engine_kwargs=engine_kwargs,
            show_progress=show_progress,
        )
        self.ocr = self._pipeline.ocr

    @property
    def mode(self) -> DocumentMode:
        """``page``, ``single`` or ``elements``."""
        return self._pipeline.mode

    @property
    def on_error(self) -> OnError:
        """``raise``, ``skip`` or ``record``."""
        return self._pipeline.on_error

    # -- files ---------------------------------------------------------------------------

    @staticmethod
    def _wanted(path: Path, root: Path | None = None) -> bool:
        parts = path.relative_to(root).parts if root is not None else (path.name,)
        return (
            path.suffix.lower() in SUPPORTED_SUFFIXES
            and not any(part.startswith(".") for part in parts)
            and path.is_file()
        )

    def _expand(self, raw: str | os.PathLike[str]) -> Iterator[PipelineInput]:
        text = os.fspath(raw)
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(f for f in path.glob(self.glob) if self._wanted(f, path))
            if not found:
                logger.warning("DeepSeek-OCR: no images or PDFs in %s (glob %r)", text, self.glob)
            for file in found:
                yield PipelineInput(source=str(file), obj=file)
            return
        if not path.exists() and _GLOB_CHARS & set(text):
            # Path.glob takes no absolute patterns; glob.glob takes both
            matches = sorted(Path(m) for m in _glob.glob(str(path), recursive=True))  # noqa: PTH207
            found = [m for m in matches if self._wanted(m)]
            if not found:
                error = InputNotFoundError("no image or PDF file matches this pattern", source=text)
                yield PipelineInput(source=text, error=error)
            for file in found:
                yield PipelineInput(source=str(file), obj=file)
            return
        yield PipelineInput(source=str(path) if text.startswith("~") else text, obj=path)

    def _files(self) -> Iterator[PipelineInput]:
        seen: set[str] = set()
        for raw in self.file_paths:
            for item in self._expand(raw):
                if item.obj is not None:
                    key = os.path.realpath(item.obj)
                    if key in seen:
                        continue
                    seen.add(key)
                yield item

    # -- loading -------------------------------------------------------------------------

    def lazy_load(self) -> Iterator[Document]:
        """Yield Documents as pages finish, one engine call per chunk of pages."""
        yield from self._pipeline.run(self._files())

    async def alazy_load(self) -> AsyncIterator[Document]:
        """Yield Documents in page order, with chunks in flight on ``engine.agenerate``."""
        async for document in self._pipeline.arun(self._files()):
            yield document
