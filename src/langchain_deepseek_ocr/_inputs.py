"""Turn whatever a user passes into RGB page images: the one entry point for inputs.

Everything the package OCRs goes through :func:`iter_pages` (or :func:`load_image`, which
takes one page of it). Accepted inputs:

* a path (``str`` or :class:`os.PathLike`; ``~`` is expanded) to a regular file;
* bytes-like content (``bytes``, ``bytearray``, ``memoryview``);
* a :class:`PIL.Image.Image`;
* a ``data:`` URI string (``data:image/png;base64,...``, ``data:application/pdf;base64,...``).

The format is detected from the content (magic bytes), never from a file name or a data URI's
media type: a PDF (``%PDF-`` in the first 1 KiB) is rasterised with pypdfium2, anything else
goes to Pillow (PNG, JPEG, WebP, GIF, BMP, TIFF, ...).

Conversion rules, so that every page is an 8-bit RGB image the model can read:

* EXIF orientation is applied (:func:`PIL.ImageOps.exif_transpose`), as upstream does.
* Transparency (RGBA, LA, PA, palette or grey/RGB with a ``transparency`` key) is composited
  over **white**, not black.
* CMYK, YCbCr, 1-bit, L and palette images are converted to RGB.
* 16-bit (``I;16*``), 32-bit (``I``) and float (``F``) images are stretched to 8 bits over
  their actual value range (min → 0, max → 255), so a 16-bit scan that only uses values
  1000-1200 is not rendered black; a constant image becomes white.
* Animated GIF / WebP / APNG (and MPO, ICO ...) give their first frame only, as a single
  image (``page=None``). Only TIFF is paged: a multi-frame TIFF gives one page per frame
  (``page=i``, ``total_pages=n``); a single-frame TIFF is a single image.
* PDFs are rendered like upstream (``run_dpsk_ocr_pdf.py``): ``scale = pdf_dpi / 72``
  (144 dpi by default, an A4 page is 1191×1684 px), on a white background, without alpha,
  with annotations and form fields drawn. A page that would exceed
  :attr:`InputLimits.max_pixels` at that dpi is rendered at the largest smaller scale that
  fits (its aspect ratio kept), and a warning is logged; it is not rejected.

Safety: inputs over :attr:`InputLimits.max_bytes` are refused before they are read; an image
whose header declares more than :attr:`InputLimits.max_pixels` pixels is refused before its
pixels are decoded (Pillow's own ``DecompressionBombError`` is caught too, so Pillow's global
``Image.MAX_IMAGE_PIXELS`` remains an upper bound); non-regular files (directories, FIFOs,
devices) are refused without being opened for reading in a blocking way. Pillow formats that
run external programs or cannot decode pixels (EPS, WMF, MPEG, and the BUFR/GRIB/HDF5 stubs)
are not tried. Note that if some other code sets Pillow's global
``ImageFile.LOAD_TRUNCATED_IMAGES = True``, Pillow pads truncated images instead of failing,
and this module cannot tell.

Thread safety: pdfium is not thread-safe, so every pypdfium2 call in this module is made
under one module-level lock; pages are rendered one at a time under it. Pillow decoding
runs outside the lock.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import os
import re
import stat
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias
from urllib.parse import unquote_to_bytes

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image, ImageOps, UnidentifiedImageError

from langchain_deepseek_ocr._errors import (
    ConfigurationError,
    CorruptInputError,
    DeepSeekOCRError,
    InputError,
    InputNotFoundError,
    InputTooLargeError,
    PageOutOfRangeError,
    UnsupportedInputError,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ImageInput",
    "InputLimits",
    "PageImage",
    "count_pages",
    "iter_page_results",
    "iter_pages",
    "load_image",
]

logger = logging.getLogger(__name__)

ImageInput: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image
"""What :func:`iter_pages` accepts: a path, a ``data:`` URI, bytes-like content, a PIL image."""

#: Serialises every call into pdfium, which is not thread-safe. Re-entrant so that a nested
#: helper can never deadlock the thread that already holds it.
_PDFIUM_LOCK = threading.RLock()

_WHITE = (255, 255, 255)
_HEAD_BYTES = 1024  # the PDF header may sit anywhere in the first 1 KiB
_MAX_SOURCE_CHARS = 200  # how much of a (possibly huge) str input an error message repeats

# Pillow formats never tried: EPS runs Ghostscript, WMF needs a Windows handler, MPEG only
# identifies, BUFR/GRIB/HDF5 are stubs that cannot decode pixels.
_PIL_DENIED_FORMATS = frozenset({"EPS", "WMF", "MPEG", "BUFR", "GRIB", "HDF5"})

# Magic numbers of common image formats: content that starts like one of these but that
# Pillow cannot open is a corrupt image, not an unsupported format.
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"BM", "BMP"),
)
_PAGED_FORMATS = frozenset({"TIFF"})
_HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCALE_CHUNK_ELEMENTS = 4_000_000  # rows per chunk when stretching 16-bit/float images


@dataclass(frozen=True, eq=False)
class PageImage:
    """One page (or image) ready for the model.

    Equality is identity (``eq=False``): comparing pixel buffers by accident would be slow.

    Attributes:
        image: The page as an 8-bit RGB image, EXIF orientation applied.
        source: Where it came from: the path as given (``~`` expanded), ``"<bytes>"``,
            ``"<PIL image>"`` or ``"<data URI>"`` (or the ``source`` passed by the caller).
        page: The 0-based page for PDFs and multi-frame TIFFs; ``None`` for a single image.
        total_pages: The number of pages of the document; ``None`` for a single image.
    """

    image: Image.Image
    source: str
    page: int | None = None
    total_pages: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        """The ``(width, height)`` of the image, in pixels."""
        return self.image.size


@dataclass(frozen=True)
class InputLimits:
    """Caps applied to every input, against oversized files and decompression bombs.

    Attributes:
        max_bytes: The largest input accepted, in bytes (file size, bytes-like length, or the
            decoded size of a data URI). Checked before anything is read.
        max_pixels: The most pixels one page image may have. An image whose header declares
            more is refused before its pixels are decoded (:class:`InputTooLargeError`). A PDF
            page that would be larger at :attr:`pdf_dpi` is rendered at a reduced scale that
            fits instead (aspect ratio kept; a warning is logged).
        max_pages: The most pages a PDF or multi-frame TIFF may have; a larger document is
            refused (:class:`InputTooLargeError`) before any page is rendered.
        pdf_dpi: The resolution PDFs are rendered at; upstream uses 144 (scale 2.0).
    """

    max_bytes: int = 256 * 1024 * 1024
    max_pixels: int = 100_000_000
    max_pages: int = 10_000
    pdf_dpi: float = 144.0

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_pages"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"InputLimits.{name} must be a positive integer, got {value!r}"
                )
        dpi = self.pdf_dpi
        if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0:
            raise ConfigurationError(f"InputLimits.pdf_dpi must be a positive number, got {dpi!r}")
        if not math.isfinite(dpi):
            raise ConfigurationError(f"InputLimits.pdf_dpi must be finite, got {dpi!r}")


DEFAULT_LIMITS = InputLimits()
"""The limits used when none are given."""


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def iter_pages(
    obj: ImageInput,
    *,
    pages: Sequence[int] | range | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
    source: str | None = None,
) -> Iterator[PageImage]:
    """Yield the pages of ``obj`` as RGB images, lazily, one decoded page at a time.

    A PDF is opened once, and each page is rendered only when the iterator reaches it; the
    document (and any file opened here) is closed when the iterator is exhausted, closed
    (``it.close()``; the object returned is a generator) or garbage-collected. A 200-page
    PDF therefore never holds more than one rendered page in memory here. A PIL image is one
    page: its current frame.

    Args:
        obj: A path (``str`` or path-like, ``~`` expanded), bytes-like content, a PIL image,
            or a ``data:`` URI string.
        pages: The 0-based pages to yield, in this order (duplicates allowed); negative
            numbers count from the end like Python indexing. ``None`` yields every page. A
            single image has exactly one page (``0`` / ``-1``).
        limits: Size caps and the PDF rendering resolution.
        source: The name to report in :attr:`PageImage.source` and in errors, instead of the
            one derived from ``obj``.

    Returns:
        An iterator of :class:`PageImage`.

    Raises:
        UnsupportedInputError: Immediately, for an object type that is not an input; on
            iteration, for content that is neither a PDF nor an image Pillow reads, or an
            encrypted PDF.
        ConfigurationError: Immediately, for a ``pages`` argument that is not a sequence of
            integers, or a ``limits`` that is not an :class:`InputLimits`.
        InputNotFoundError: On iteration, for a path that does not exist or is not a regular
            file (directory, FIFO, device), or cannot be read.
        InputTooLargeError: On iteration, for an input over ``limits``.
        CorruptInputError: On iteration, for an empty, truncated or undecodable input, or a
            PDF without pages.
        PageOutOfRangeError: On iteration, for a page the document does not have.
    """
    return _prepare(obj, pages, limits, source)


def iter_page_results(
    obj: ImageInput,
    *,
    pages: Sequence[int] | range | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
    source: str | None = None,
) -> Iterator[PageImage | InputError]:
    """Like :func:`iter_pages`, but a page that fails is yielded as its error, in its place.

    This is what batch jobs use: one corrupt or out-of-range page never costs the other
    pages. An input that cannot be opened at all yields exactly one error (with ``page``
    None), and the iteration ends there.
    """
    try:
        gen = _prepare(obj, pages, limits, source, tolerant=True)
    except InputError as exc:
        yield exc
        return
    try:
        yield from gen
    except InputError as exc:
        yield exc


def load_image(
    obj: ImageInput,
    *,
    page: int | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
    source: str | None = None,
) -> PageImage:
    """Load exactly one page of ``obj`` as an RGB image.

    Args:
        obj: Any input :func:`iter_pages` accepts.
        page: The 0-based page for a PDF or multi-frame TIFF (negative counts from the end);
            ``None`` means the first page. For a single image only ``None``, ``0`` and ``-1``
            are valid.
        limits: Size caps and the PDF rendering resolution.
        source: The name to report instead of the one derived from ``obj``.

    Returns:
        The page.

    Raises:
        DeepSeekOCRError: The same errors as :func:`iter_pages`, raised here directly.
    """
    if page is not None and (isinstance(page, bool) or not isinstance(page, int)):
        raise ConfigurationError(f"page must be an int or None, got {page!r}")
    generator = _prepare(obj, [0 if page is None else page], limits, source)
    try:
        return next(generator)
    finally:
        generator.close()


def count_pages(obj: ImageInput, *, limits: InputLimits = DEFAULT_LIMITS) -> int:
    """Count the pages of ``obj`` without rendering or decoding any of them.

    A PDF is opened and closed; a TIFF's frame directory is walked; any other image counts
    as one page. ``limits.max_bytes`` is enforced; ``max_pages`` and ``max_pixels`` are not
    (the true count is returned, even if :func:`iter_pages` would refuse the document).

    Args:
        obj: Any input :func:`iter_pages` accepts.
        limits: Size caps (only ``max_bytes`` applies here).

    Returns:
        The number of pages (at least 1).

    Raises:
        DeepSeekOCRError: The input errors of :func:`iter_pages`; a PDF with no pages raises
            :class:`CorruptInputError`.
    """
    name = _check_obj_type(obj, None)
    _check_limits_arg(limits)
    if isinstance(obj, Image.Image):
        return 1
    with _open_input(obj, name, limits) as opened:
        if opened.kind == "pdf":
            document = _open_pdf(opened, name)
            try:
                return _pdf_page_count(document, name)
            finally:
                _close_pdf(document)
        image = _pil_open(opened, name)
        try:
            return _frame_count(image, name)
        finally:
            image.close()


# --------------------------------------------------------------------------------------------
# Argument checks (eager, no I/O)
# --------------------------------------------------------------------------------------------


def _prepare(
    obj: object,
    pages: Sequence[int] | range | None,
    limits: object,
    source: str | None,
    *,
    tolerant: bool = False,
) -> Generator[Any, None, None]:
    """Check the arguments now (no I/O), and return the lazy page generator."""
    name = _check_obj_type(obj, source)
    page_list = _check_pages_arg(pages, name)
    _check_limits_arg(limits)
    assert isinstance(limits, InputLimits)
    return _generate(obj, page_list, limits, name, tolerant)


def _expand(raw: str) -> str:
    """Expand a leading ``~``; other paths (and unknown users) are kept exactly as given."""
    if not raw.startswith("~"):
        return raw
    try:
        return str(Path(raw).expanduser())
    except (RuntimeError, ValueError):
        return raw


def _short(text: str) -> str:
    """Shorten a string for an error message."""
    if len(text) <= _MAX_SOURCE_CHARS:
        return text
    return f"{text[: _MAX_SOURCE_CHARS - 1]}…"


def _check_obj_type(obj: object, source: str | None) -> str:
    """Check that ``obj`` is an input type and return the source name to report."""
    if isinstance(obj, Image.Image):
        default = "<PIL image>"
    elif isinstance(obj, str):
        default = "<data URI>" if _is_data_uri(obj) else _short(_expand(obj))
    elif isinstance(obj, os.PathLike):
        default = _short(_expand(os.fsdecode(os.fspath(obj))))
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        default = "<bytes>"
    else:
        kind = type(obj).__name__
        hint = ""
        if hasattr(obj, "read"):
            hint = " (for a file object, pass its content: f.read())"
        raise UnsupportedInputError(
            f"cannot read an input of type {kind}; pass a path, bytes, a PIL image or a "
            f"data: URI{hint}",
            source=source if source is not None else f"<{kind}>",
        )
    return default if source is None else source


def _check_pages_arg(pages: Sequence[int] | range | None, source: str) -> list[int] | None:
    """Validate ``pages`` (types only; ranges are checked once the page count is known)."""
    if pages is None:
        return None
    if isinstance(pages, (str, bytes)) or not isinstance(pages, (Sequence, range)):
        raise ConfigurationError(
            f"pages must be a sequence of ints (e.g. [0, 2] or range(3)) or None, "
            f"got {type(pages).__name__}",
            source=source,
        )
    out = []
    for p in pages:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
            raise ConfigurationError(f"pages must contain ints, got {p!r}", source=source)
        out.append(int(p))
    return out


def _check_limits_arg(limits: object) -> None:
    if not isinstance(limits, InputLimits):
        raise ConfigurationError(f"limits must be an InputLimits, got {type(limits).__name__}")


def _resolve_pages(
    pages: list[int] | None, total: int, source: str, tolerant: bool = False
) -> list[Any]:
    """Map requested pages (negative allowed) to 0-based indices; raise if out of range.

    With ``tolerant`` an out-of-range page becomes its error in the list instead.
    """
    if pages is None:
        return list(range(total))
    resolved: list[Any] = []
    for p in pages:
        if not -total <= p < total:
            noun = "page" if total == 1 else "pages"
            error = PageOutOfRangeError(
                f"page {p} is out of range: the document has {total} {noun} "
                f"(valid page numbers: 0..{total - 1}, or -{total}..-1 from the end)",
                source=source,
                page=p,
            )
            if not tolerant:
                raise error
            resolved.append(error)
            continue
        resolved.append(p + total if p < 0 else p)
    return resolved


# --------------------------------------------------------------------------------------------
# Opening inputs
# --------------------------------------------------------------------------------------------


def _is_data_uri(text: str) -> bool:
    return text[:5].lower() == "data:"


class _Opened:
    """An input resolved to a readable byte stream, with its sniffed kind.

    ``kind`` is ``"pdf"`` or ``"image"``; ``known_image`` names an image format recognised
    from magic bytes (``None`` if the content is left to Pillow to identify).
    """

    def __init__(self, stream: BinaryIO, data: bytes | None, is_file: bool) -> None:
        self.stream = stream
        self.data = data  # the whole content, when it came as bytes (pdfium loads it faster)
        self.is_file = is_file
        self.kind = "image"
        self.known_image: str | None = None
        self.head = b""

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stream.close()


def _open_input(obj: object, source: str, limits: InputLimits) -> _Opened:
    """Open a non-PIL input as a byte stream and sniff its format from its first bytes."""
    if isinstance(obj, str) and _is_data_uri(obj):
        data = _decode_data_uri(obj, source, limits)
        opened = _Opened(io.BytesIO(data), data, is_file=False)
    elif isinstance(obj, (str, os.PathLike)):
        opened = _open_path(obj, source, limits)
    else:
        assert isinstance(obj, (bytes, bytearray, memoryview))
        view = memoryview(obj)
        if view.nbytes > limits.max_bytes:
            raise InputTooLargeError(
                f"the input is {view.nbytes:,} bytes, over the limit of {limits.max_bytes:,} "
                "(InputLimits.max_bytes)",
                source=source,
            )
        data = obj if isinstance(obj, bytes) else view.tobytes()
        opened = _Opened(io.BytesIO(data), data, is_file=False)
    try:
        _sniff(opened, source)
    except BaseException:
        opened.close()
        raise
    return opened


def _open_path(obj: str | os.PathLike, source: str, limits: InputLimits) -> _Opened:
    """Open a path for reading, refusing anything that is not a regular file."""
    raw = obj if isinstance(obj, str) else os.fsdecode(os.fspath(obj))
    path = Path(_expand(raw))
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise InputNotFoundError(_not_found_message(raw), source=source) from exc
    except NotADirectoryError as exc:
        raise InputNotFoundError(
            "no such file (a parent of this path is not a directory)", source=source
        ) from exc
    except PermissionError as exc:
        raise InputNotFoundError(
            "permission denied while looking up this path", source=source
        ) from exc
    except OSError as exc:  # ENAMETOOLONG, ELOOP, ...
        raise InputNotFoundError(
            f"not a usable path ({exc.strerror or type(exc).__name__}){_content_hint(raw)}",
            source=source,
        ) from exc
    except ValueError as exc:  # an embedded NUL character
        raise InputNotFoundError(
            f"not a usable path ({exc}){_content_hint(raw)}", source=source
        ) from exc
    _check_regular(st, source)
    if st.st_size > limits.max_bytes:
        raise InputTooLargeError(
            f"the file is {st.st_size:,} bytes, over the limit of {limits.max_bytes:,} "
            "(InputLimits.max_bytes)",
            source=source,
        )
    # O_NONBLOCK: should the path have been swapped for a FIFO since stat(), open() must not
    # hang; fstat() below then refuses it. It has no effect on regular files.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise InputNotFoundError(_not_found_message(raw), source=source) from exc
    except PermissionError as exc:
        raise InputNotFoundError(
            "permission denied: the file cannot be opened for reading", source=source
        ) from exc
    except OSError as exc:
        raise InputNotFoundError(
            f"the file cannot be opened ({exc.strerror or type(exc).__name__})", source=source
        ) from exc
    try:
        st = os.fstat(fd)
        _check_regular(st, source)
        if st.st_size > limits.max_bytes:
            raise InputTooLargeError(
                f"the file is {st.st_size:,} bytes, over the limit of {limits.max_bytes:,} "
                "(InputLimits.max_bytes)",
                source=source,
            )
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return _Opened(stream, None, is_file=True)


def _check_regular(st: os.stat_result, source: str) -> None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        what = "a directory"
    elif stat.S_ISFIFO(mode):
        what = "a FIFO (named pipe)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device file"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    else:
        what = "not a regular file"
    raise InputNotFoundError(
        f"this path is {what}, not a regular file; pass the path of an image or PDF file",
        source=source,
    )


def _not_found_message(raw: str) -> str:
    if _URL_RE.match(raw.strip()):
        return (
            "no such file: this looks like a URL, and URLs are not fetched here; download "
            "the file and pass its path or its bytes"
        )
    return f"no such file or directory{_content_hint(raw)}"


def _content_hint(raw: str) -> str:
    if len(raw) > 1024:
        return (
            " (a str is read as a path or a data: URI; to pass file content, pass bytes or a "
            "'data:<type>;base64,...' URI)"
        )
    return ""


def _decode_data_uri(uri: str, source: str, limits: InputLimits) -> bytes:
    """Decode a ``data:`` URI strictly (RFC 2397); its media type is not trusted."""
    header, comma, payload = uri.partition(",")
    if not comma:
        raise CorruptInputError(
            "malformed data: URI: there is no ',' between the header and the data "
            "(expected 'data:<media type>;base64,<data>')",
            source=source,
        )
    params = [p.strip().lower() for p in header[5:].split(";")]
    is_base64 = len(params) > 1 and params[-1] == "base64"
    # base64 decodes to 3/4 of its length; percent-decoding only shrinks
    estimate = (len(payload) * 3) // 4 if is_base64 else len(payload)
    if estimate > limits.max_bytes:
        raise InputTooLargeError(
            f"the data URI holds about {estimate:,} bytes, over the limit of "
            f"{limits.max_bytes:,} (InputLimits.max_bytes)",
            source=source,
        )
    if is_base64:
        compact = "".join(payload.split())  # line-wrapped base64 is common; nothing else is
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CorruptInputError(
                f"the data URI's base64 payload is invalid ({exc}); expected standard base64 "
                "(A-Z a-z 0-9 + /, '=' padding)",
                source=source,
            ) from exc
    else:
        try:
            data = unquote_to_bytes(payload)
        except (TypeError, ValueError) as exc:  # pragma: no cover - unquote is lenient
            raise CorruptInputError(
                f"the data URI payload is invalid ({exc})", source=source
            ) from exc
    if len(data) > limits.max_bytes:
        raise InputTooLargeError(
            f"the data URI holds {len(data):,} bytes, over the limit of {limits.max_bytes:,} "
            "(InputLimits.max_bytes)",
            source=source,
        )
    return data


def _sniff(opened: _Opened, source: str) -> None:
    """Read the first bytes, refuse empty inputs, and classify as ``pdf`` or ``image``."""
    try:
        head = opened.stream.read(_HEAD_BYTES)
        opened.stream.seek(0)
    except OSError as exc:
        raise InputNotFoundError(f"the file cannot be read: {exc}", source=source) from exc
    if not head:
        what = "empty file" if opened.is_file else "empty input"
        raise CorruptInputError(f"{what} (0 bytes): there is no image or PDF in it", source=source)
    opened.head = head
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            opened.known_image = name
            return
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        opened.known_image = "WebP"
        return
    if b"%PDF-" in head:
        opened.kind = "pdf"


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


def _generate(
    obj: object, pages: list[int] | None, limits: InputLimits, source: str, tolerant: bool
) -> Generator[Any, None, None]:
    if isinstance(obj, Image.Image):  # one page: its current frame
        indices = _resolve_pages(pages, 1, source, tolerant)
        single = PageImage(_decode_frame(obj, source, None, limits), source, None, None)
        for index in indices:
            yield index if isinstance(index, InputError) else single
        return
    with _open_input(obj, source, limits) as opened:
        if opened.kind == "pdf":
            yield from _iter_pdf(opened, source, pages, limits, tolerant)
        else:
            yield from _iter_image(opened, source, pages, limits, tolerant)


# --------------------------------------------------------------------------------------------
# Images (Pillow)
# --------------------------------------------------------------------------------------------


def _pil_formats() -> list[str]:
    Image.init()
    return [f for f in Image.ID if f not in _PIL_DENIED_FORMATS]


def _pil_open(opened: _Opened, source: str) -> Image.Image:
    """Identify the image (header only, no pixel decoding)."""
    try:
        return Image.open(opened.stream, formats=_pil_formats())
    except Image.DecompressionBombError as exc:
        raise InputTooLargeError(
            f"the image is too large to decode safely ({exc}); Pillow's global "
            "Image.MAX_IMAGE_PIXELS also applies",
            source=source,
        ) from exc
    except UnidentifiedImageError as exc:
        if opened.known_image is not None:
            raise CorruptInputError(
                f"the content starts like a {opened.known_image} image, but its header cannot "
                "be decoded (truncated or corrupt file)",
                source=source,
            ) from exc
        raise UnsupportedInputError(_unsupported_message(opened, source), source=source) from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptInputError(
            f"the image header cannot be decoded ({type(exc).__name__}: {exc})", source=source
        ) from exc


def _unsupported_message(opened: _Opened, source: str) -> str:
    start = opened.head[:16]
    message = f"not a PDF or an image format this package reads (the content starts with {start!r})"
    if opened.is_file:
        ext = Path(source).suffix
        if ext:
            message += f"; the format is detected from the content, not from the '{ext}' extension"
    return message


def _frame_count(image: Image.Image, source: str) -> int:
    """The number of pages of an opened image: the frames of a TIFF, else 1."""
    if image.format not in _PAGED_FORMATS:
        return 1
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptInputError(
            f"the TIFF's frame directory cannot be read ({type(exc).__name__}: {exc})",
            source=source,
        ) from exc


def _iter_image(
    opened: _Opened, source: str, pages: list[int] | None, limits: InputLimits, tolerant: bool
) -> Iterator[Any]:
    image = _pil_open(opened, source)
    try:
        total = _frame_count(image, source)
        if total == 1:
            indices = _resolve_pages(pages, 1, source, tolerant)
            single = PageImage(_decode_frame(image, source, None, limits), source, None, None)
            for index in indices:
                yield index if isinstance(index, InputError) else single
            return
        if total > limits.max_pages:
            raise InputTooLargeError(
                f"the image has {total:,} frames, over the limit of {limits.max_pages:,} "
                "(InputLimits.max_pages)",
                source=source,
            )
        for index in _resolve_pages(pages, total, source, tolerant):
            if isinstance(index, InputError):
                yield index
                continue
            try:
                yield _read_frame(image, index, total, source, limits)
            except InputError as exc:
                if not tolerant:
                    raise
                yield exc
    finally:
        image.close()


def _read_frame(
    image: Image.Image, index: int, total: int, source: str, limits: InputLimits
) -> PageImage:
    try:
        image.seek(index)
    except Image.DecompressionBombError as exc:
        raise InputTooLargeError(str(exc), source=source, page=index) from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptInputError(
            f"frame {index} cannot be read ({type(exc).__name__}: {exc})",
            source=source,
            page=index,
        ) from exc
    return PageImage(_decode_frame(image, source, index, limits), source, index, total)


def _decode_frame(
    image: Image.Image, source: str, page: int | None, limits: InputLimits
) -> Image.Image:
    """Check the declared size, fully decode, orient and convert the current frame to RGB."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptInputError(
            f"the image has an empty size ({width}×{height})", source=source, page=page
        )
    if width * height > limits.max_pixels:
        raise InputTooLargeError(
            f"the image is {width:,}×{height:,} = {width * height:,} pixels, over the limit of "
            f"{limits.max_pixels:,} (InputLimits.max_pixels; this guards against "
            "decompression bombs)",
            source=source,
            page=page,
        )
    try:
        image.load()  # decode everything now, so truncation surfaces here and not later
    except Image.DecompressionBombError as exc:
        raise InputTooLargeError(str(exc), source=source, page=page) from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptInputError(
            f"the image data cannot be decoded, the file is probably truncated or corrupt "
            f"({type(exc).__name__}: {exc})",
            source=source,
            page=page,
        ) from exc
    oriented = _exif_transpose(image)
    try:
        return _to_rgb(oriented)
    except DeepSeekOCRError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise UnsupportedInputError(
            f"cannot convert an image of mode {image.mode!r} to RGB ({type(exc).__name__}: {exc})",
            source=source,
            page=page,
        ) from exc


def _exif_transpose(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (always returns a new image); a broken EXIF block is ignored."""
    try:
        oriented = ImageOps.exif_transpose(image)
    except MemoryError:
        raise
    except Exception:
        logger.debug("ignoring an unreadable EXIF orientation", exc_info=True)
        return image.copy()
    return image.copy() if oriented is None else oriented


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency goes over white."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _HIGH_DEPTH_MODES or mode.startswith("I;16"):
        return _stretch_to_8bit(image).convert("RGB")
    if image.has_transparency_data:
        if mode == "La":  # premultiplied; Pillow only un-premultiplies it to LA
            image = image.convert("LA")
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _stretch_to_8bit(image: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float image to 8 bits over its actual value range."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"unexpected array shape {array.shape} for mode {image.mode}")
    finite = None
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.any():
            return Image.new("L", image.size, 255)
        low = float(np.min(array, where=finite, initial=np.inf))
        high = float(np.max(array, where=finite, initial=-np.inf))
    else:
        low, high = float(array.min()), float(array.max())
    if high <= low:  # a constant image: nothing to read on it, make it a blank (white) page
        return Image.new("L", image.size, 255)
    factor = 255.0 / (high - low)
    out = np.empty(array.shape, dtype=np.uint8)
    rows = max(1, _SCALE_CHUNK_ELEMENTS // max(1, array.shape[1]))
    for start in range(0, array.shape[0], rows):
        chunk = (array[start : start + rows].astype(np.float64) - low) * factor
        if finite is not None:
            chunk[~finite[start : start + rows]] = 255.0  # NaN / inf: no data, white
        np.clip(chunk, 0.0, 255.0, out=chunk)
        out[start : start + rows] = np.rint(chunk)
    return Image.fromarray(out)


# --------------------------------------------------------------------------------------------
# PDFs (pypdfium2)
# --------------------------------------------------------------------------------------------


_PAGELESS_MAX_BYTES = 1 << 20


def _pageless(opened: _Opened) -> bool:
    """Whether a small PDF that PDFium refused declares an empty page tree."""
    data = opened.data
    if data is None:
        try:
            opened.stream.seek(0)
            data = opened.stream.read(_PAGELESS_MAX_BYTES + 1)
        except OSError:
            return False
    if len(data) > _PAGELESS_MAX_BYTES:
        return False
    has_empty_tree = re.search(rb"/Type\s*/Pages\b", data) and re.search(rb"/Count\s+0\b", data)
    has_page = re.search(rb"/Type\s*/Page(?![a-zA-Z])", data)
    return bool(has_empty_tree and not has_page)


def _open_pdf(opened: _Opened, source: str) -> pdfium.PdfDocument:
    """Open a PDF with forms initialised; encrypted and corrupt documents raise typed errors."""
    pdf_input: object = opened.data if opened.data is not None else opened.stream
    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(pdf_input)
        except pdfium.PdfiumError as exc:
            code = getattr(exc, "err_code", None)
            # PDFium refuses a document of 0 pages; its error code is not reliable then
            # (it can be a stale one), so look at the document itself.
            if code in (pdfium_c.FPDF_ERR_SUCCESS, pdfium_c.FPDF_ERR_FORMAT) and _pageless(opened):
                raise CorruptInputError("the PDF has no pages", source=source) from exc
            if code == pdfium_c.FPDF_ERR_PASSWORD:
                raise UnsupportedInputError(
                    "the PDF is encrypted (password-protected), and passwords are not "
                    "supported; decrypt it first (e.g. qpdf --decrypt --password=... in.pdf "
                    "out.pdf)",
                    source=source,
                ) from exc
            if code == pdfium_c.FPDF_ERR_SECURITY:
                raise UnsupportedInputError(
                    "the PDF is encrypted with a security handler pdfium does not support; "
                    "decrypt it first",
                    source=source,
                ) from exc
            raise CorruptInputError(
                f"the PDF cannot be opened: it is truncated or corrupt ({exc})", source=source
            ) from exc
        except MemoryError:
            raise
        except Exception as exc:
            raise CorruptInputError(
                f"the PDF cannot be opened ({type(exc).__name__}: {exc})", source=source
            ) from exc
        try:
            document.init_forms()  # must precede page access for form fields to be drawn
        except MemoryError:
            document.close()
            raise
        except Exception:
            logger.debug("%s: cannot initialise PDF forms; rendering without them", source)
    return document


def _close_pdf(document: pdfium.PdfDocument) -> None:
    with _PDFIUM_LOCK:
        document.close()


def _pdf_page_count(document: pdfium.PdfDocument, source: str) -> int:
    with _PDFIUM_LOCK:
        total = len(document)
    if total < 1:
        raise CorruptInputError("the PDF has no pages", source=source)
    return total


_PDF_REOPEN_EVERY = 32
"""Pages rendered from one open PDFium document before it is reopened (bounded memory)."""


def _iter_pdf(
    opened: _Opened, source: str, pages: list[int] | None, limits: InputLimits, tolerant: bool
) -> Iterator[Any]:
    document = _open_pdf(opened, source)
    try:
        total = _pdf_page_count(document, source)
        if total > limits.max_pages:
            raise InputTooLargeError(
                f"the PDF has {total:,} pages, over the limit of {limits.max_pages:,} "
                "(InputLimits.max_pages); pass pages= to select some, or raise the limit",
                source=source,
            )
        rendered = 0
        for index in _resolve_pages(pages, total, source, tolerant):
            if isinstance(index, InputError):
                yield index
                continue
            try:
                image = _render_pdf_page(document, index, source, limits)
            except InputError as exc:
                if not tolerant:
                    raise
                yield exc
                continue
            rendered += 1
            if rendered % _PDF_REOPEN_EVERY == 0:
                # PDFium keeps per-page state (parsed objects, image streams) until the
                # document is closed: reopening it bounds memory on long documents.
                _close_pdf(document)
                document = _open_pdf(opened, source)
            yield PageImage(image, source, index, total)
    finally:
        _close_pdf(document)


def _fit_scale(width_pt: float, height_pt: float, limits: InputLimits) -> float:
    """The render scale: ``pdf_dpi / 72``, reduced if the bitmap would exceed max_pixels."""
    scale = limits.pdf_dpi / 72.0

    def pixels(s: float) -> int:
        return math.ceil(width_pt * s) * math.ceil(height_pt * s)  # as pypdfium2 sizes it

    if pixels(scale) <= limits.max_pixels:
        return scale
    scale = math.sqrt(limits.max_pixels / (width_pt * height_pt))
    while scale > 0 and pixels(scale) > limits.max_pixels:  # ceil() can overshoot a little
        scale *= 0.999
    return scale


def _render_pdf_page(
    document: pdfium.PdfDocument, index: int, source: str, limits: InputLimits
) -> Image.Image:
    """Render one page to an RGB image, on white, at ``limits.pdf_dpi`` (or less, see above)."""
    with _PDFIUM_LOCK:
        try:
            page = document[index]
        except MemoryError:
            raise
        except Exception as exc:
            raise CorruptInputError(
                f"the page cannot be loaded ({type(exc).__name__}: {exc})",
                source=source,
                page=index,
            ) from exc
        try:
            width_pt, height_pt = page.get_size()
            if not (width_pt > 0 and height_pt > 0):
                raise CorruptInputError(
                    f"the page has an empty size ({width_pt}×{height_pt} pt)",
                    source=source,
                    page=index,
                )
            scale = _fit_scale(width_pt, height_pt, limits)
            wanted = limits.pdf_dpi / 72.0
            if scale < wanted:
                logger.warning(
                    "%s (page %d): the page is %.0f×%.0f pt; at %g dpi it would exceed "
                    "max_pixels=%d, so it is rendered at %.1f dpi instead",
                    source,
                    index,
                    width_pt,
                    height_pt,
                    limits.pdf_dpi,
                    limits.max_pixels,
                    scale * 72.0,
                )
            bitmap = page.render(
                scale=scale,
                may_draw_forms=True,
                draw_annots=True,
                fill_color=(255, 255, 255, 255),
                rev_byteorder=True,
            )
            try:
                rendered = bitmap.to_pil()
                # copy out of pdfium's buffer before the bitmap is freed
                image = rendered.copy() if rendered.mode == "RGB" else rendered.convert("RGB")
            finally:
                bitmap.close()
        except DeepSeekOCRError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise CorruptInputError(
                f"the page cannot be rendered ({type(exc).__name__}: {exc})",
                source=source,
                page=index,
            ) from exc
        finally:
            page.close()
    return image
