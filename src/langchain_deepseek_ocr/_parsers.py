"""Blob parsers: DeepSeek-OCR inside LangChain's blob pipelines.

* :class:`DeepSeekOCRParser` (``BaseBlobParser``, langchain-core) -- a Blob (an image or a
  PDF) in, one Document per page (or per file, or per layout block) out, so that
  ``GenericLoader(FileSystemBlobLoader("scans/"), DeepSeekOCRParser())`` works.
* ``DeepSeekOCRImageBlobParser`` (``BaseImageBlobParser``, langchain-community) -- OCRs the
  images embedded in a PDF for ``PyMuPDFLoader(..., extract_images=True,
  images_parser=DeepSeekOCRImageBlobParser())`` (and PyPDF, PyPDFium2, PDFMiner).
  langchain-community is an optional dependency (``pip install
  "langchain-deepseek-ocr[community]"``): this module never imports it at import time, the
  class is built on first access, and without langchain-community using it raises an
  ``ImportError`` that names the extra.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.document_loaders import BaseBlobParser, Blob
from langchain_core.documents import Document

from langchain_deepseek_ocr._documents import PAGES_DELIMITER, DocumentMode
from langchain_deepseek_ocr._engine import OCREngine
from langchain_deepseek_ocr._errors import ConfigurationError, DeepSeekOCRError
from langchain_deepseek_ocr._facade import DeepSeekOCR
from langchain_deepseek_ocr._inputs import InputLimits
from langchain_deepseek_ocr._loader import (
    OnError,
    PagePipeline,
    PipelineInput,
    check_choice,
    make_ocr,
)
from langchain_deepseek_ocr._recovery import RecoveryPolicy
from langchain_deepseek_ocr._tasks import OCRTask, Resolution

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["COMMUNITY_EXTRA_HINT", "DeepSeekOCRImageBlobParser", "DeepSeekOCRParser"]

logger = logging.getLogger(__name__)

COMMUNITY_EXTRA_HINT = (
    "DeepSeekOCRImageBlobParser needs langchain-community (BaseImageBlobParser); install it "
    'with: pip install "langchain-deepseek-ocr[community]"'
)
"""The message of the ImportError raised when langchain-community is missing."""


def _blob_input(blob: Blob) -> PipelineInput:
    """Read a blob from its path when it has no data in memory, else from its bytes."""
    source = blob.source
    if blob.data is None and blob.path is not None:
        return PipelineInput(
            source=source if source is not None else str(blob.path),
            obj=blob.path,
            metadata=dict(blob.metadata),
        )
    return PipelineInput(
        source=source if source is not None else "<bytes>",
        obj=blob.as_bytes(),
        metadata=dict(blob.metadata),
    )


class DeepSeekOCRParser(BaseBlobParser):
    r"""Parse image and PDF blobs with DeepSeek-OCR.

    The blob's content is detected from its bytes (not its mime type or name); PDFs are
    rendered page by page as they are needed and sent to the engine in chunks of its batch
    size. Metadata is the loader's (:class:`DeepSeekOCRLoader`), ``source`` taken from
    ``blob.source``, over the blob's own metadata.

    Setup:
        ```bash
        pip install "langchain-deepseek-ocr[community]"   # for GenericLoader
        ```

    Instantiate:
        ```python
        from langchain_community.document_loaders.blob_loaders import FileSystemBlobLoader
        from langchain_community.document_loaders.generic import GenericLoader
        from langchain_deepseek_ocr import DeepSeekOCRParser

        parser = DeepSeekOCRParser(mode="page", task="markdown", on_error="record")
        loader = GenericLoader(
            FileSystemBlobLoader("scans/", glob="**/*", suffixes=[".pdf", ".png", ".jpg"]),
            parser,
        )
        ```

    Lazy load:
        ```python
        for doc in loader.lazy_load():
            print(doc.metadata["source"], doc.metadata["page"], doc.page_content[:60])

        # or one blob directly
        from langchain_core.documents import Blob
        docs = parser.parse(Blob.from_path("scan.png"))
        ```

    Async:
        ```python
        async for doc in parser.alazy_parse(Blob.from_path("book.pdf")):
            ...
        ```

    Args:
        engine: An :class:`OCREngine`, or a :class:`DeepSeekOCR` (its engine is shared);
            ``None`` builds the local :class:`TransformersEngine` from ``engine_kwargs``.
        mode: ``page`` (default), ``single`` (one per blob, pages joined with
            ``pages_delimiter``) or ``elements`` (one per layout block).
        task: ``markdown`` (default), ``ocr``, ``free``, ``figure`` or ``describe``.
        resolution: The resolution mode; ``None``: the engine's.
        pages: 0-based pages of a PDF to read; a single image is always read once.
        on_error: ``raise`` (default), ``skip`` or ``record`` (see the loader).
        limits: Input caps and PDF dpi.
        recovery: How pages that loop or are cut off are retried (on by default).
        pages_delimiter: Between pages in ``single`` mode (``"\n\f"``).
        max_concurrency: Engine calls in flight at once in :meth:`alazy_parse`.
        batch_size: Pages per engine call; ``None``: the engine's ``batch_size``.
        **engine_kwargs: Options of the default engine (``model``, ``device``...).
    """

    def __init__(
        self,
        *,
        engine: OCREngine | DeepSeekOCR | None = None,
        mode: DocumentMode = "page",
        task: OCRTask | str | None = None,
        resolution: Resolution | str | None = None,
        pages: Sequence[int] | None = None,
        on_error: OnError = "raise",
        limits: InputLimits | None = None,
        recovery: RecoveryPolicy | None = None,
        pages_delimiter: str = PAGES_DELIMITER,
        max_concurrency: int = 2,
        batch_size: int | None = None,
        **engine_kwargs: Any,
    ) -> None:
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
        )
        self.ocr = self._pipeline.ocr

    @property
    def mode(self) -> DocumentMode:
        """``page``, ``single`` or ``elements``."""
        return self._pipeline.mode

    def lazy_parse(self, blob: Blob) -> Iterator[Document]:
        """Yield the blob's Documents as its pages finish."""
        yield from self._pipeline.run([_blob_input(blob)])

    async def alazy_parse(self, blob: Blob) -> AsyncIterator[Document]:
        """Asynchronous :meth:`lazy_parse` (chunks in flight on ``engine.agenerate``)."""
        async for document in self._pipeline.arun([_blob_input(blob)]):
            yield document


# --------------------------------------------------------------------------------------------
# Images embedded in PDFs (langchain-community)
# --------------------------------------------------------------------------------------------


class _ImageBlobParserBase:
    r"""OCR the images embedded in PDFs, for langchain-community's PDF loaders.

    A ``BaseImageBlobParser``: the PDF parser hands it each embedded image (PyMuPDF and
    PyPDFium2 as a ``numpy.save``\d array, ``application/x-npy``; PyPDF as PNG bytes),
    ``BaseImageBlobParser.lazy_parse`` opens it as a PIL image and calls
    :meth:`_analyze_image`, whose text (the image's clean markdown) the PDF loader merges
    into the page text (``images_inner_format="text"``, the default, keeps it as it is;
    ``"markdown-img"`` and ``"html-img"`` wrap it in an image tag's alt text, which mangles
    markdown tables, so prefer ``"text"``). It needs langchain-community:
    ``pip install "langchain-deepseek-ocr[community]"``.

    Setup:
        ```bash
        pip install "langchain-deepseek-ocr[community]" pymupdf
        ```

    Instantiate:
        ```python
        from langchain_community.document_loaders import PyMuPDFLoader
        from langchain_deepseek_ocr import DeepSeekOCRImageBlobParser

        loader = PyMuPDFLoader(
            "report.pdf",
            extract_images=True,
            images_parser=DeepSeekOCRImageBlobParser(task="markdown"),
            images_inner_format="text",
        )
        ```

    Lazy load:
        ```python
        for doc in loader.lazy_load():   # page text with the images' OCR merged in
            print(doc.metadata["page"], doc.page_content[:80])
        ```

    Args:
        engine: An :class:`OCREngine`, or a :class:`DeepSeekOCR` (its engine is shared);
            ``None`` builds the local :class:`TransformersEngine` from ``engine_kwargs``.
        task: ``markdown`` (default), ``ocr``, ``free``, ``figure`` (charts) or ``describe``.
        resolution: The resolution mode; ``None``: the engine's.
        on_error: ``raise`` (default: the PDF load fails with the typed error) or ``skip``
            (log a warning and give the image no text).
        limits: Input caps.
        recovery: How images whose output loops or is cut off are retried.
        **engine_kwargs: Options of the default engine (``model``, ``device``...).
    """

    def __init__(
        self,
        *,
        engine: OCREngine | DeepSeekOCR | None = None,
        task: OCRTask | str | None = None,
        resolution: Resolution | str | None = None,
        on_error: str = "raise",
        limits: InputLimits | None = None,
        recovery: RecoveryPolicy | None = None,
        **engine_kwargs: Any,
    ) -> None:
        check_choice("on_error", on_error, ("raise", "skip"))
        super().__init__()
        self.ocr = make_ocr(
            engine,
            task=task,
            resolution=resolution,
            limits=limits,
            recovery=recovery,
            engine_kwargs=engine_kwargs,
        )
        self.on_error = on_error

    def _analyze_image(self, img: Image.Image) -> str:
        """OCR one embedded image; its clean markdown."""
        try:
            return self.ocr.ocr(img).text
        except DeepSeekOCRError as exc:
            if self.on_error == "raise" or isinstance(exc, ConfigurationError):
                raise
            logger.warning(
                "DeepSeek-OCR: skipped an embedded image (%s×%s): %s: %s",
                *img.size,
                type(exc).__name__,
                exc.message,
            )
            return ""


class _MissingCommunity:
    """Stands in for ``DeepSeekOCRImageBlobParser`` when langchain-community is missing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ImportError(COMMUNITY_EXTRA_HINT)


def _load_image_blob_parser() -> type:
    """Build ``DeepSeekOCRImageBlobParser`` on langchain-community's base class.

    Returns a stand-in whose construction raises an ``ImportError`` naming the extra when
    langchain-community cannot be imported.
    """
    try:
        from langchain_community.document_loaders.parsers.images import BaseImageBlobParser
    except ImportError:
        stub = type(
            "DeepSeekOCRImageBlobParser",
            (_MissingCommunity,),
            {"__doc__": _MissingCommunity.__doc__, "__module__": __name__},
        )
        stub.__qualname__ = "DeepSeekOCRImageBlobParser"
        return stub
    cls = type(
        "DeepSeekOCRImageBlobParser",
        (_ImageBlobParserBase, BaseImageBlobParser),
        {"__doc__": _ImageBlobParserBase.__doc__, "__module__": __name__},
    )
    cls.__qualname__ = "DeepSeekOCRImageBlobParser"
    return cls


_BUILD_LOCK = threading.Lock()

if TYPE_CHECKING:
    from langchain_community.document_loaders.parsers.images import BaseImageBlobParser

    class DeepSeekOCRImageBlobParser(_ImageBlobParserBase, BaseImageBlobParser):
        """See :class:`_ImageBlobParserBase` (built on first access at run time)."""

else:

    def __getattr__(name: str) -> Any:
        if name != "DeepSeekOCRImageBlobParser":
            msg = f"module {__name__!r} has no attribute {name!r}"
            raise AttributeError(msg)
        with _BUILD_LOCK:  # one class, whichever thread asks first
            if name in globals():
                return globals()[name]
            cls = _load_image_blob_parser()
            if issubclass(cls, _ImageBlobParserBase):  # cache the real class only
                globals()[name] = cls
            return cls
