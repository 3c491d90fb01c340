"""Hostile inputs: a generator of files and values an agent, a user or a broken disk may pass.

Every case says what must happen: a typed error (which class) or a correct result. The
tests feed the whole corpus through the facade, the tools and the loader alike.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pypdfium2 as pdfium
from PIL import Image

from langchain_deepseek_ocr._errors import (
    CorruptInputError,
    DeepSeekOCRError,
    InputNotFoundError,
    InputTooLargeError,
    UnsupportedInputError,
)

__all__ = [
    "HostileCase",
    "bomb_png",
    "encrypted_pdf",
    "hostile_inputs",
    "make_pdf",
    "png_chunk",
]


def make_pdf(sizes: list[tuple[float, float]]) -> bytes:
    """A PDF made with pypdfium2, one blank page per (width, height) in points."""
    document = pdfium.PdfDocument.new()
    for width, height in sizes:
        document.new_page(width, height)
    buffer = io.BytesIO()
    document.save(buffer)
    document.close()
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height 1-bit pixels, with almost no data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


_RC4_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: bytes, owner_password: bytes = b"owner") -> bytes:
    """A real one-page encrypted PDF: standard security handler, RC4 40-bit (V1, R2).

    pypdfium2 cannot write encrypted PDFs, so the file is assembled by hand following the
    PDF 1.4 spec (algorithms 3.2, 3.3, 3.4). It has no strings or streams, so nothing but the
    /O and /U entries needs encrypting; ``test_encrypted_pdf_builder_is_genuine`` checks that
    pdfium accepts it with the right passwords only.
    """
    file_id = bytes(range(16))
    permissions = -44
    owner_key = hashlib.md5((owner_password + _RC4_PAD)[:32]).digest()[:5]
    o_value = _rc4(owner_key, (user_password + _RC4_PAD)[:32])
    key_input = (user_password + _RC4_PAD)[:32] + o_value + struct.pack("<i", permissions)
    key = hashlib.md5(key_input + file_id).digest()[:5]
    u_value = _rc4(key, _RC4_PAD)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 300] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
        % (o_value.hex().encode(), u_value.hex().encode(), permissions),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    hex_id = file_id.hex().encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>] >>\n" % (
        len(objects) + 1,
        hex_id,
        hex_id,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


@dataclass(frozen=True)
class HostileCase:
    """One hostile input and what must become of it.

    Attributes:
        name: A short id (test ids use it).
        value: What is passed: a path, bytes, a str (data URI, URL...), a PIL image, or any
            object.
        error: The typed error it must end in, or ``None`` when it is a valid input that
            must give a correct result.
        size: For valid inputs, the expected ``(width, height)`` of the page image, if known.
        limits: Input limits to apply for this case (keyword arguments of ``InputLimits``).
    """

    name: str
    value: Any
    error: type[DeepSeekOCRError] | None
    size: tuple[int, int] | None = None
    limits: dict[str, Any] | None = None


def _png(image: Image.Image, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **params)
    return buf.getvalue()


def _encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 4, "LA": 2}[mode]
    arr = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if channels == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr, mode)


def _jpeg_bomb() -> bytes:
    """A JPEG whose SOF header claims 65000 x 65000 pixels."""
    data = bytearray(_encoded(_noise(16, 16), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65000, 65000)
    return bytes(data)


def _gif_bomb() -> bytes:
    """A GIF whose screen and image descriptors claim 65535 x 65535 pixels."""
    data = bytearray(_encoded(_noise(8, 8, "L"), "GIF"))
    struct.pack_into("<HH", data, 6, 65535, 65535)
    desc = data.find(b"\x2c", 13)
    struct.pack_into("<HH", data, desc + 5, 65535, 65535)
    return bytes(data)


def _data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode()


def hostile_inputs(folder: Path | str) -> list[HostileCase]:
    """Write the hostile corpus into ``folder`` and describe every case.

    Returns:
        At least 40 cases: corrupt, truncated, disguised, oversized and exotic inputs, each
        with the typed error or the correct result it must end in.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[HostileCase] = []

    def file(name: str, data: bytes) -> Path:
        path = root / name
        path.write_bytes(data)
        return path

    def add(name: str, value: Any, error: type[DeepSeekOCRError] | None, **kw: Any) -> None:
        cases.append(HostileCase(name, value, error, **kw))

    good_png = _png(_noise(300, 200))
    jpeg = _encoded(_noise(300, 200), "JPEG", quality=90)
    pdf3 = make_pdf([(595.276, 841.89)] * 3)

    # -- empty, disguised, truncated ------------------------------------------------------
    add("zero-byte-file", file("empty.png", b""), CorruptInputError)
    add("zero-bytes", b"", CorruptInputError)
    add(
        "text-named-png",
        file("notes.png", b"just some text, not an image\n" * 20),
        UnsupportedInputError,
    )
    add("html-bytes", b"<!doctype html><html><body>hi</body></html>", UnsupportedInputError)
    add(
        "svg-file",
        file("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
        UnsupportedInputError,
    )
    add("random-bytes", np.random.default_rng(1).bytes(4096), UnsupportedInputError)
    add("truncated-png", file("cut.png", good_png[: len(good_png) // 2]), CorruptInputError)
    add("truncated-jpeg", file("cut.jpg", jpeg[: len(jpeg) // 2]), CorruptInputError)
    add("png-header-only", good_png[:33], CorruptInputError)
    add("truncated-gif", _encoded(_noise(64, 64, "L"), "GIF")[:40], CorruptInputError)
    tiff = _encoded(_noise(200, 200), "TIFF")
    add("truncated-tiff", tiff[: len(tiff) // 3], CorruptInputError)
    # -- bombs and caps ------------------------------------------------------------------
    add("png-bomb-50k", file("bomb.png", bomb_png(50_000, 50_000)), InputTooLargeError)
    add("png-bomb-bytes", bomb_png(30_000, 40_000), InputTooLargeError)
    add("jpeg-bomb-65k", _jpeg_bomb(), InputTooLargeError)
    add("gif-bomb-65k", _gif_bomb(), InputTooLargeError)
    add("over-byte-cap", good_png, InputTooLargeError, limits={"max_bytes": 1000})
    add("over-pixel-cap", good_png, InputTooLargeError, limits={"max_pixels": 10_000})
    add("too-many-pages", pdf3, InputTooLargeError, limits={"max_pages": 2})
    # -- PDFs ------------------------------------------------------------------------------
    add("encrypted-pdf", file("secret.pdf", encrypted_pdf(b"user")), UnsupportedInputError)
    add("truncated-pdf", file("cut.pdf", pdf3[:200]), CorruptInputError)
    add("zero-page-pdf", make_pdf([]), CorruptInputError)
    add("pdf-magic-only", b"%PDF-1.7\n", CorruptInputError)
    add("giant-pdf-page", make_pdf([(14_400, 14_400)]), None)
    add("a4-pdf", file("a4.pdf", pdf3), None, size=(1191, 1684))
    # -- data URIs -------------------------------------------------------------------------
    add("data-uri-bad-base64", "data:image/png;base64,@@@not-base64@@@", CorruptInputError)
    add("data-uri-text", _data_uri("image/png", b"hello world"), UnsupportedInputError)
    add("data-uri-empty", "data:image/png;base64,", CorruptInputError)
    add("data-uri-png", _data_uri("image/png", good_png), None, size=(300, 200))
    add("data-uri-pdf", _data_uri("application/pdf", pdf3), None, size=(1191, 1684))
    # -- paths that are not files ------------------------------------------------------------
    sub = root / "a-folder"
    sub.mkdir(exist_ok=True)
    add("directory", sub, InputNotFoundError)
    add("missing-path", root / "no-such-file.png", InputNotFoundError)
    add("url-string", "https://example.com/scan.png", InputNotFoundError)
    add("device-file", Path("/dev/zero"), InputNotFoundError)
    if hasattr(os, "mkfifo"):
        fifo = root / "pipe.png"
        if not fifo.exists():
            os.mkfifo(fifo)
        add("fifo", fifo, InputNotFoundError)
    add("very-long-path", "x" * 5000 + ".png", InputNotFoundError)
    add("wrong-type-int", 12345, UnsupportedInputError)
    add("wrong-type-list", [good_png], UnsupportedInputError)
    # -- exotic but valid images: a correct result ------------------------------------------
    add("cmyk-jpeg", _encoded(_noise(120, 90, "CMYK"), "JPEG"), None, size=(120, 90))
    sixteen = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 7 + 1000)
    add("16-bit-png", _png(sixteen), None, size=(64, 48))
    pal = _noise(50, 40, "L").convert("P")
    pal.info["transparency"] = 0
    add("palette-transparency", _png(pal, transparency=0), None, size=(50, 40))
    add("rgba-png", _png(_noise(80, 60, "RGBA")), None, size=(80, 60))
    add("la-png", _png(_noise(80, 60, "LA")), None, size=(80, 60))
    add("1-bit-png", _png(_noise(90, 70, "L").convert("1")), None, size=(90, 70))
    frames = [_noise(40, 30, "L", seed=i).convert("P") for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    add("animated-gif", gif.getvalue(), None, size=(40, 30))
    tif = io.BytesIO()
    pages = [_noise(60 + i, 50) for i in range(3)]
    pages[0].save(tif, format="TIFF", save_all=True, append_images=pages[1:])
    add("multi-frame-tiff", tif.getvalue(), None, size=(60, 50))
    exif = Image.Exif()
    exif[0x0112] = 6
    add("exif-rotated-jpeg", _encoded(_noise(200, 100), "JPEG", exif=exif), None, size=(100, 200))
    add("one-pixel", _png(Image.new("RGB", (1, 1), "white")), None, size=(1, 1))
    add("very-wide", _png(_noise(8000, 6)), None, size=(8000, 6))
    add("very-tall", _png(_noise(6, 8000)), None, size=(6, 8000))
    add("webp", _encoded(_noise(70, 50), "WEBP"), None, size=(70, 50))
    add("bmp", _encoded(_noise(70, 50), "BMP"), None, size=(70, 50))
    add("pil-image-I16", sixteen, None, size=(64, 48))
    add("pil-image-zero-size", Image.new("RGB", (0, 0)), CorruptInputError)
    return cases
