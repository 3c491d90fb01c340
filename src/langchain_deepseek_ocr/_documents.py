r"""Results to LangChain ``Document``s: the one place where that mapping is decided.

Every loader, parser and chain helper of the package goes through these functions, so a
page reads the same whichever way it was loaded.

Modes:

* ``page`` -- one Document per page (or image): the page's clean markdown.
* ``single`` -- one Document per file: the pages' markdown joined with
  :data:`PAGES_DELIMITER` (``"\n\f"``, the delimiter of langchain-community's PDF loaders),
  see :func:`results_to_document`.
* ``elements`` -- one Document per layout block, with its label and pixel box.

Metadata (``page`` and ``single`` modes), every value a ``str``, ``int``, ``float`` or
``bool`` -- what vector stores accept (Chroma, ``filter_complex_metadata``...), never a
list, dict or ``None``:

============================  ==============================================================
``source``                    the file (path as given), or the name of the input
``page``                      0-based page; a single image is page ``0`` (absent in ``single``)
``total_pages``               pages of the document; ``1`` for a single image
``task``                      ``markdown``, ``ocr``, ``free`` ...
``resolution``                the resolution mode that ran (``gundam``, ``base`` ...)
``model``                     the model that ran (hub id or folder)
``vision_tokens``             image tokens the page cost
``output_tokens``             tokens generated
``compression_ratio``         ``output_tokens / vision_tokens`` (the DeepSeek-OCR paper's measure)
``repetition``                the output is a degenerate loop: do not trust it
``truncated``                 the output was cut off (token limit or mid box list)
``attempts``                  runs of the page: more than 1 when a loop or cut was retried
============================  ==============================================================

**No** ``None`` **values**: a key whose value is unknown is left out rather than set to
``None`` (Chroma rejects ``None``, and ``filter_complex_metadata`` would drop it anyway), so
``doc.metadata.get(key)`` is the way to read an optional key.

``elements`` mode adds ``label`` (the block's layout class, or for ``ocr``/``locate`` output
the recognised text), ``block_index`` (its index in ``OCRResult.blocks``), ``complete``
(False when the block was cut off), ``box_count`` and the block's pixel box as four scalar
keys ``x1``, ``y1``, ``x2``, ``y2`` (pixels of the page image, origin top left). A block with
several boxes (``locate`` with several matches, a figure in two parts) gets the box that
encloses them all, and ``box_count`` says how many there were; the individual boxes stay in
``OCRResult.blocks``. A block without boxes has no ``x1``..``y2`` keys. A page whose output
has no blocks at all (``free``, ``describe``: ungrounded tasks) becomes a single element with
the page text, ``block_index`` ``0`` and no ``label`` or box keys.

A failure becomes, where the caller asks to record it, a Document with empty
``page_content`` and ``error`` (the reason), ``error_type`` (the exception class name),
``source`` and ``page`` (absent when the whole file failed) -- see :func:`error_to_document`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from langchain_core.documents import Document

from langchain_deepseek_ocr._parse import LAYOUT_LABELS
from langchain_deepseek_ocr._result import LayoutBlock, OCRResult

__all__ = [
    "PAGES_DELIMITER",
    "DocumentMode",
    "error_to_document",
    "result_to_documents",
    "results_to_document",
]

DocumentMode = Literal["page", "single", "elements"]
"""How results become Documents: per page, per file, or per layout block."""

PAGES_DELIMITER = "\n\f"
"""What ``single`` mode puts between pages: a form feed on its own line.

It is the default of langchain-community's PDF loaders (``pages_delimiter``), so documents
from DeepSeek-OCR and from PyMuPDF/PyPDF split the same way; ``str.split("\\f")`` gives the
pages back.
"""


def _scalars(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is ``None`` (see the module docstring)."""
    return {key: value for key, value in metadata.items() if value is not None}


def _merge(extra: Mapping[str, Any] | None, ours: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` first, then our keys that have a value; ``None`` values dropped."""
    return _scalars({**(extra or {}), **_scalars(ours)})


def _page_metadata(
    result: OCRResult, source: str | None, total_pages: int | None
) -> dict[str, Any]:
    single_image = result.page is None
    if total_pages is None and single_image:
        total_pages = 1
    return {
        "source": source if source is not None else result.source,
        "page": 0 if single_image else result.page,
        "total_pages": total_pages,
        "task": result.task,
        "resolution": result.resolution,
        "model": result.model or None,
        "vision_tokens": result.vision_tokens,
        "output_tokens": result.output_tokens,
        "compression_ratio": result.compression_ratio,
        "repetition": result.repetition,
        "truncated": result.truncated,
        "attempts": max(1, len(result.attempts)),
    }


def _block_content(block: LayoutBlock) -> str:
    """The block's text; for ``ocr``/``locate`` blocks (label = recognised text), the label."""
    if block.text:
        return block.text
    return "" if block.label in LAYOUT_LABELS else block.label


def _block_metadata(block: LayoutBlock, index: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "label": block.label,
        "block_index": index,
        "complete": block.complete,
        "box_count": len(block.pixel_boxes or block.boxes),
    }
    if block.pixel_boxes:
        metadata["x1"] = min(box[0] for box in block.pixel_boxes)
        metadata["y1"] = min(box[1] for box in block.pixel_boxes)
        metadata["x2"] = max(box[2] for box in block.pixel_boxes)
        metadata["y2"] = max(box[3] for box in block.pixel_boxes)
    return metadata


def result_to_documents(
    result: OCRResult,
    *,
    mode: Literal["page", "elements"] = "page",
    source: str | None = None,
    total_pages: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[Document]:
    """Turn one page's result into Documents.

    Args:
        result: The page's :class:`OCRResult`.
        mode: ``page`` (one Document, the page's markdown) or ``elements`` (one Document
            per layout block).
        source: The source to record (default: ``result.source``).
        total_pages: The document's page count (default: unknown for a document page, ``1``
            for a single image).
        metadata: Extra metadata placed first (the OCR keys win on a clash), e.g. a blob's.

    Returns:
        The Documents, in reading order. ``page`` mode always gives exactly one.

    Raises:
        ValueError: an unknown ``mode`` (``single`` joins pages: use
            :func:`results_to_document`).
    """
    base = _merge(metadata, _page_metadata(result, source, total_pages))
    if mode == "page":
        return [Document(page_content=result.text, metadata=base)]
    if mode != "elements":
        msg = f"mode must be 'page' or 'elements' here, got {mode!r}"
        if mode == "single":
            msg += " (join pages with results_to_document)"
        raise ValueError(msg)
    if not result.blocks:
        return [Document(page_content=result.text, metadata={**base, "block_index": 0})]
    return [
        Document(
            page_content=_block_content(block),
            metadata={**base, **_block_metadata(block, index)},
        )
        for index, block in enumerate(result.blocks)
    ]


def _common(values: Iterable[Any]) -> Any:
    """One value if all agree, else the distinct values joined by commas (sorted)."""
    distinct = {value for value in values if value is not None}
    if not distinct:
        return None
    if len(distinct) == 1:
        return distinct.pop()
    return ",".join(sorted(str(value) for value in distinct))


def results_to_document(
    results: Iterable[OCRResult],
    *,
    source: str | None = None,
    total_pages: int | None = None,
    pages_delimiter: str = PAGES_DELIMITER,
    metadata: Mapping[str, Any] | None = None,
) -> Document:
    r"""Join the pages of one file into a single Document (``single`` mode).

    The page texts are joined with ``pages_delimiter`` in the order given. Metadata is
    merged so that it still describes the whole file, with scalar values only:

    * ``source`` -- the given one, else the pages' source;
    * ``total_pages`` -- the given one, else the number of results (``page`` is left out);
    * ``task``, ``resolution``, ``model`` -- the common value, or the distinct values joined
      by commas when pages differ (``"base,gundam"``);
    * ``vision_tokens``, ``output_tokens`` -- sums; ``compression_ratio`` -- their quotient;
    * ``repetition``, ``truncated`` -- true if any page is;
    * ``attempts`` -- the runs of all pages (the page count when nothing was retried).

    Args:
        results: The pages' results (at least one).
        source: The file the pages came from.
        total_pages: The document's page count.
        pages_delimiter: What goes between two pages (default ``"\n\f"``).
        metadata: Extra metadata placed first (the OCR keys win on a clash).

    Returns:
        One Document.

    Raises:
        ValueError: no results.
    """
    pages = list(results)
    if not pages:
        msg = "results_to_document needs at least one result"
        raise ValueError(msg)
    vision = sum(r.vision_tokens for r in pages)
    output = sum(r.output_tokens for r in pages)
    merged = {
        "source": source if source is not None else _common(r.source for r in pages),
        "total_pages": total_pages if total_pages is not None else len(pages),
        "task": _common(r.task for r in pages),
        "resolution": _common(r.resolution for r in pages),
        "model": _common(r.model or None for r in pages),
        "vision_tokens": vision,
        "output_tokens": output,
        "compression_ratio": output / vision if vision else 0.0,
        "repetition": any(r.repetition for r in pages),
        "truncated": any(r.truncated for r in pages),
        "attempts": sum(max(1, len(r.attempts)) for r in pages),
    }
    return Document(
        page_content=pages_delimiter.join(r.text for r in pages),
        metadata=_merge(metadata, merged),
    )


def error_to_document(
    error: BaseException,
    *,
    source: str | None = None,
    page: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Document:
    """A Document that records a failure: empty content, and what failed and why.

    Args:
        error: The exception (usually a :class:`DeepSeekOCRError`, which knows its
            ``source`` and ``page``).
        source: The source, when the error does not carry one.
        page: The 0-based page, when the error does not carry one.
        metadata: Extra metadata placed first (the error keys win on a clash).

    Returns:
        ``Document(page_content="", metadata={"source", "page", "error", "error_type"})``;
        ``page`` is absent when the whole file failed, ``source`` when nothing names it.
    """
    reason = getattr(error, "message", None) or str(error) or type(error).__name__
    err_source = getattr(error, "source", None)
    err_page = getattr(error, "page", None)
    recorded = {
        "source": err_source if err_source is not None else source,
        "page": err_page if err_page is not None else page,
        "error": reason,
        "error_type": type(error).__name__,
    }
    return Document(page_content="", metadata=_merge(metadata, recorded))
