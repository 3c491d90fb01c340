"""Tests for langchain_deepseek_ocr._inputs: every input is generated in tmp_path."""

from __future__ import annotations

import base64
import io
import os
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageFile

from langchain_deepseek_ocr._errors import (
    ConfigurationError,
    CorruptInputError,
    DeepSeekOCRError,
    InputNotFoundError,
    InputTooLargeError,
    PageOutOfRangeError,
    UnsupportedInputError,
)
from langchain_deepseek_ocr._inputs import (
    DEFAULT_LIMITS,
    InputLimits,
    PageImage,
    count_pages,
    iter_pages,
    load_image,
)
from langchain_deepseek_ocr.testing._hostile import bomb_png, encrypted_pdf, make_pdf

A4 = (595.276, 841.89)

# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def pdf_of(n: int) -> bytes:
    """N pages whose widths tell them apart: page i is (100 + 10 i) pt wide."""
    return make_pdf([(100 + 10 * i, 200) for i in range(n)])


def page_width(i: int) -> int:
    """The rendered width (144 dpi) of page i of ``pdf_of``."""
    return 2 * (100 + 10 * i)


def save(image: Image.Image, path: Path, fmt: str | None = None, **params) -> Path:
    image.save(path, format=fmt, **params)
    return path


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def assert_names(err: pytest.ExceptionInfo, source: str) -> None:
    assert source in str(err.value), f"{source!r} not in {str(err.value)!r}"
    assert err.value.source is not None


def assert_rgb(page: PageImage) -> None:
    assert isinstance(page, PageImage)
    assert page.image.mode == "RGB"
    assert page.size == page.image.size


# --------------------------------------------------------------------------------------------
# Image formats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    [
        ("PNG", ".png"),
        ("JPEG", ".jpg"),
        ("WEBP", ".webp"),
        ("GIF", ".gif"),
        ("BMP", ".bmp"),
        ("TIFF", ".tif"),
    ],
)
def test_image_formats_from_path(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = save(Image.new("RGB", (40, 30), (200, 30, 30)), tmp_path / f"img{suffix}", fmt)
    pages = list(iter_pages(path))
    assert len(pages) == 1
    page = pages[0]
    assert_rgb(page)
    assert page.size == (40, 30)
    assert page.page is None
    assert page.total_pages is None
    assert page.source == str(path)
    r, g, b = page.image.getpixel((20, 15))
    assert r > 150
    assert g < 90
    assert b < 90
    assert count_pages(path) == 1


def test_str_path_and_source_override(tmp_path: Path) -> None:
    path = save(Image.new("L", (8, 8), 128), tmp_path / "grey.png")
    page = load_image(str(path))
    assert page.source == str(path)
    assert page.image.getpixel((0, 0)) == (128, 128, 128)
    assert load_image(path, source="scan-1").source == "scan-1"


def test_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    save(Image.new("RGB", (5, 6)), tmp_path / "home.png")
    page = load_image("~/home.png")
    assert page.size == (5, 6)
    assert page.source == str(tmp_path / "home.png")


def test_format_detected_from_content_not_extension(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (12, 10), (0, 0, 255)), tmp_path / "really_a_jpeg.png", "JPEG")
    assert load_image(path).size == (12, 10)
    pdf_path = tmp_path / "doc.jpg"
    pdf_path.write_bytes(pdf_of(2))
    assert count_pages(pdf_path) == 2
    assert load_image(pdf_path, page=1).size == (page_width(1), 400)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 10, 10))  # a black square at the top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = save(image, tmp_path / "rotated.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    page = load_image(path)
    assert page.size == (20, 40)
    # after a 90° clockwise turn, the top-left corner is at the top-right
    assert sum(page.image.getpixel((17, 2))) < 150
    assert sum(page.image.getpixel((2, 2))) > 600


def test_rgba_transparency_becomes_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 0, 0, 255), (0, 0, 5, 10))  # opaque black left half
    image.putpixel((9, 9), (0, 0, 0, 128))  # half-transparent black
    page = load_image(save(image, tmp_path / "alpha.png"))
    assert page.image.getpixel((8, 2)) == (255, 255, 255)
    assert page.image.getpixel((1, 1)) == (0, 0, 0)
    assert all(120 <= c <= 135 for c in page.image.getpixel((9, 9)))


def test_la_and_premultiplied_modes_become_white() -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    assert load_image(la).image.getpixel((0, 0)) == (255, 255, 255)
    la_pre = Image.new("La", (4, 4), (0, 0))
    assert load_image(la_pre).image.getpixel((0, 0)) == (255, 255, 255)
    rgba_pre = Image.new("RGBa", (4, 4), (0, 0, 0, 0))
    assert load_image(rgba_pre).image.getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_becomes_white(tmp_path: Path) -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    image.paste(1, (0, 0, 5, 10))
    path = save(image, tmp_path / "palette.png", transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P"
        assert "transparency" in check.info
    page = load_image(path)
    assert page.image.getpixel((8, 5)) == (255, 255, 255)  # transparent black → white
    assert page.image.getpixel((1, 5)) == (255, 0, 0)


def test_rgb_with_transparent_colour_key_becomes_white(tmp_path: Path) -> None:
    image = Image.new("RGB", (4, 4), (0, 0, 0))
    path = save(image, tmp_path / "trns.png", transparency=(0, 0, 0))
    assert load_image(path).image.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red ink mix
    image.paste((0, 0, 0, 0), (0, 0, 8, 16))  # no ink: white
    path = save(image, tmp_path / "cmyk.jpg", "JPEG", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    page = load_image(path)
    assert_rgb(page)
    r, g, b = page.image.getpixel((12, 8))
    assert r > 200
    assert g < 60
    assert b < 60
    assert min(page.image.getpixel((2, 8))) > 230


def test_16bit_png_with_small_range_is_stretched(tmp_path: Path) -> None:
    values = np.linspace(1000, 1100, 64 * 8).reshape(8, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    page = load_image(path)
    assert_rgb(page)
    array = np.asarray(page.image)
    assert array.max() == 255  # the top of the range is white, not near-black
    assert array.min() == 0
    assert len(np.unique(array[..., 0])) > 100  # a ramp, not two levels


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_high_depth_modes_scaled_by_range(mode: str) -> None:
    values = np.linspace(-5 if mode in {"I", "F"} else 5, 20, 40).reshape(4, 10)
    if mode == "F":
        image = Image.fromarray(values.astype(np.float32))
    elif mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    else:
        image = Image.fromarray(values.astype(np.uint16)).convert(mode)
    assert image.mode == mode
    array = np.asarray(load_image(image).image)
    assert array.min() == 0
    assert array.max() == 255


def test_float_image_with_nan_and_constant_images() -> None:
    values = np.array([[0.0, np.nan], [np.inf, 1.0]], dtype=np.float32)
    array = np.asarray(load_image(Image.fromarray(values)).image)[..., 0]
    assert array.tolist() == [[0, 255], [255, 255]]
    constant = Image.fromarray(np.full((3, 3), 777, np.uint16))
    assert np.asarray(load_image(constant).image).min() == 255


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "YCbCr", "RGBA", "LA", "PA", "HSV"])
def test_pil_modes_become_rgb(mode: str) -> None:
    page = load_image(Image.new(mode, (7, 5)))
    assert_rgb(page)
    assert page.size == (7, 5)
    assert page.source == "<PIL image>"


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), (255, 0, 0)), Image.new("RGB", (10, 10), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 2
    pages = list(iter_pages(path))
    assert len(pages) == 1
    assert pages[0].page is None
    r, _, b = pages[0].image.getpixel((5, 5))
    assert r > 200
    assert b < 50
    assert count_pages(path) == 1


def test_animated_webp_and_apng_give_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), (255, 0, 0)), Image.new("RGB", (10, 10), (0, 0, 255))]
    for name in ("anim.webp", "anim.png"):
        path = tmp_path / name
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, lossless=True)
        pages = list(iter_pages(path))
        assert len(pages) == 1
        assert pages[0].page is None
        assert pages[0].image.getpixel((5, 5))[0] > 200


@pytest.fixture
def tiff3(tmp_path: Path) -> Path:
    frames = [Image.new("RGB", (10 * (i + 1), 8), (40 * i, 0, 0)) for i in range(3)]
    path = tmp_path / "three.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def test_multiframe_tiff_pages(tiff3: Path) -> None:
    pages = list(iter_pages(tiff3))
    assert [p.size for p in pages] == [(10, 8), (20, 8), (30, 8)]
    assert [p.page for p in pages] == [0, 1, 2]
    assert {p.total_pages for p in pages} == {3}
    assert count_pages(tiff3) == 3
    selected = list(iter_pages(tiff3, pages=[2, 0, -2]))
    assert [(p.page, p.size[0]) for p in selected] == [(2, 30), (0, 10), (1, 20)]
    assert load_image(tiff3).page == 0
    assert load_image(tiff3, page=-1).size == (30, 8)


def test_multiframe_tiff_out_of_range(tiff3: Path) -> None:
    with pytest.raises(PageOutOfRangeError) as err:
        list(iter_pages(tiff3, pages=[3]))
    assert_names(err, tiff3.name)
    assert "3 pages" in str(err.value)
    assert err.value.page == 3


def test_multiframe_tiff_over_max_pages(tiff3: Path) -> None:
    with pytest.raises(InputTooLargeError) as err:
        list(iter_pages(tiff3, limits=InputLimits(max_pages=2)))
    assert_names(err, tiff3.name)


# --------------------------------------------------------------------------------------------
# In-memory inputs
# --------------------------------------------------------------------------------------------


def test_bytes_like_inputs() -> None:
    data = png_bytes(Image.new("RGB", (9, 4), (1, 2, 3)))
    for obj in (data, bytearray(data), memoryview(data)):
        page = load_image(obj)
        assert page.size == (9, 4)
        assert page.source == "<bytes>"
        assert page.image.getpixel((0, 0)) == (1, 2, 3)
    assert count_pages(memoryview(pdf_of(3))) == 3


def test_non_contiguous_memoryview() -> None:
    data = png_bytes(Image.new("RGB", (3, 3)))
    doubled = bytes(b for byte in data for b in (byte, 0))
    view = memoryview(doubled)[::2]
    assert not view.contiguous
    assert load_image(view).size == (3, 3)


def test_pil_image_input_is_not_modified() -> None:
    image = Image.new("RGBA", (6, 6), (0, 0, 0, 0))
    page = load_image(image)
    assert page.image is not image
    assert image.mode == "RGBA"
    assert page.image.getpixel((0, 0)) == (255, 255, 255)
    rgb = Image.new("RGB", (2, 2))
    assert load_image(rgb).image is not rgb
    assert count_pages(image) == 1


def test_data_uri_png_and_pdf() -> None:
    png = base64.b64encode(png_bytes(Image.new("RGB", (5, 7)))).decode()
    page = load_image(f"data:image/png;base64,{png}")
    assert page.size == (5, 7)
    assert page.source == "<data URI>"
    wrapped = "\n".join(png[i : i + 76] for i in range(0, len(png), 76))
    assert load_image(f"DATA:image/png;BASE64,{wrapped}").size == (5, 7)
    pdf = base64.b64encode(pdf_of(3)).decode()
    pages = list(iter_pages(f"data:application/pdf;base64,{pdf}", pages=[-1]))
    assert [(p.page, p.size) for p in pages] == [(2, (page_width(2), 400))]


@pytest.mark.parametrize(
    "uri",
    [
        "data:image/png;base64,iVBORw0KGgo!!!",
        "data:image/png;base64,iVBORw0KGgoA",  # bad padding
        "data:image/png;base64,iVBORw0K\u00e9Ggo=",  # non-ASCII
        "data:image/png;base64",  # no comma
    ],
)
def test_data_uri_bad_base64(uri: str) -> None:
    with pytest.raises(CorruptInputError) as err:
        load_image(uri)
    assert_names(err, "<data URI>")


def test_data_uri_empty_and_too_large() -> None:
    with pytest.raises(CorruptInputError, match="empty") as err:
        load_image("data:image/png;base64,")
    assert_names(err, "<data URI>")
    payload = base64.b64encode(b"\0" * 4000).decode()
    with pytest.raises(InputTooLargeError) as err:
        load_image(f"data:image/png;base64,{payload}", limits=InputLimits(max_bytes=1000))
    assert_names(err, "<data URI>")


def test_data_uri_percent_encoded() -> None:
    from urllib.parse import quote_from_bytes

    data = png_bytes(Image.new("RGB", (3, 2)))
    assert load_image("data:image/png," + quote_from_bytes(data)).size == (3, 2)


# --------------------------------------------------------------------------------------------
# PDFs
# --------------------------------------------------------------------------------------------


def test_a4_at_144_dpi() -> None:
    page = load_image(make_pdf([A4]))
    assert_rgb(page)
    width, height = page.size
    assert abs(width - 1191) <= 1
    assert abs(height - 1684) <= 1
    assert page.page == 0
    assert page.total_pages == 1
    assert page.image.getpixel((10, 10)) == (255, 255, 255)  # white, no alpha


def test_pdf_dpi_is_configurable() -> None:
    page = load_image(make_pdf([(72, 144)]), limits=InputLimits(pdf_dpi=72))
    assert page.size == (72, 144)


def test_pdf_from_path_all_pages(tmp_path: Path) -> None:
    path = tmp_path / "five.pdf"
    path.write_bytes(pdf_of(5))
    pages = list(iter_pages(path))
    assert [p.page for p in pages] == [0, 1, 2, 3, 4]
    assert [p.size for p in pages] == [(page_width(i), 400) for i in range(5)]
    assert {p.total_pages for p in pages} == {5}
    assert {p.source for p in pages} == {str(path)}
    assert count_pages(path) == 5


@pytest.mark.parametrize("as_path", [True, False])
def test_pdf_reopened_every_few_pages_keeps_every_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_path: bool
) -> None:
    """Long PDFs are reopened every few pages (bounded memory): no page lost or repeated."""
    from langchain_deepseek_ocr import _inputs

    opened: list[int] = []
    real_open = _inputs._open_pdf

    def counting_open(*args, **kwargs):
        opened.append(1)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(_inputs, "_PDF_REOPEN_EVERY", 2)
    monkeypatch.setattr(_inputs, "_open_pdf", counting_open)
    data = pdf_of(5)
    source: object = data
    if as_path:
        source = tmp_path / "five.pdf"
        source.write_bytes(data)
    pages = list(iter_pages(source, pages=[0, 1, 2, 3, 4, 1]))
    assert [p.page for p in pages] == [0, 1, 2, 3, 4, 1]
    assert [p.size for p in pages] == [(page_width(i), 400) for i in (0, 1, 2, 3, 4, 1)]
    assert len(opened) == 4  # the first open, then after pages 2, 4 and 6


def test_pdf_page_selection() -> None:
    data = pdf_of(5)
    selected = list(iter_pages(data, pages=[4, -5, -1, 2, 2]))
    assert [p.page for p in selected] == [4, 0, 4, 2, 2]
    assert [p.size[0] for p in selected] == [page_width(i) for i in (4, 0, 4, 2, 2)]
    assert [p.page for p in iter_pages(data, pages=range(1, 5, 2))] == [1, 3]
    assert list(iter_pages(data, pages=[])) == []
    assert load_image(data).page == 0
    assert load_image(data, page=-2).page == 3


@pytest.mark.parametrize("bad", [5, -6, 100])
def test_pdf_page_out_of_range(tmp_path: Path, bad: int) -> None:
    path = tmp_path / "five.pdf"
    path.write_bytes(pdf_of(5))
    with pytest.raises(PageOutOfRangeError) as err:
        list(iter_pages(path, pages=[0, bad]))
    assert_names(err, "five.pdf")
    message = str(err.value)
    assert str(bad) in message
    assert "5 pages" in message
    assert err.value.page == bad
    with pytest.raises(PageOutOfRangeError):
        load_image(path, page=bad)


def test_page_out_of_range_raised_before_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    renders = []
    original = pdfium.PdfPage.render
    monkeypatch.setattr(
        pdfium.PdfPage, "render", lambda self, **kw: renders.append(1) or original(self, **kw)
    )
    with pytest.raises(PageOutOfRangeError):
        list(iter_pages(pdf_of(3), pages=[0, 1, 7]))
    assert renders == []


def test_single_image_pages() -> None:
    data = png_bytes(Image.new("RGB", (4, 4)))
    assert len(list(iter_pages(data, pages=[0, -1]))) == 2
    with pytest.raises(PageOutOfRangeError) as err:
        load_image(data, page=1)
    assert_names(err, "<bytes>")
    assert "1 page" in str(err.value)


def test_zero_page_pdf(tmp_path: Path) -> None:
    path = tmp_path / "empty_doc.pdf"
    path.write_bytes(make_pdf([]))
    with pytest.raises(CorruptInputError, match="no pages") as err:
        list(iter_pages(path))
    assert_names(err, "empty_doc.pdf")
    with pytest.raises(CorruptInputError, match="no pages"):
        count_pages(path)


@pytest.mark.parametrize("keep", [10, 100, 0.5])
def test_truncated_pdf(tmp_path: Path, keep: float) -> None:
    data = pdf_of(5)
    cut = data[: int(len(data) * keep)] if isinstance(keep, float) else data[:keep]
    path = tmp_path / "cut.pdf"
    path.write_bytes(cut)
    with pytest.raises(CorruptInputError) as err:
        list(iter_pages(path))
    assert_names(err, "cut.pdf")
    with pytest.raises(CorruptInputError):
        count_pages(cut)


def test_encrypted_pdf_builder_is_genuine() -> None:
    data = encrypted_pdf(b"secret")
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(data)
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(data, password="wrong")
    for password in ("secret", "owner"):
        document = pdfium.PdfDocument(data, password=password)
        assert len(document) == 1
        document.close()


def test_encrypted_pdf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locked.pdf"
    path.write_bytes(encrypted_pdf(b"secret"))
    with pytest.raises(UnsupportedInputError, match="encrypted") as err:
        list(iter_pages(path))
    assert_names(err, "locked.pdf")
    with pytest.raises(UnsupportedInputError, match="encrypted"):
        count_pages(path)


def test_pdf_encrypted_with_owner_password_only_opens() -> None:
    page = load_image(encrypted_pdf(b""))  # empty user password: readable by anyone
    assert page.size == (400, 600)


def test_pdf_over_max_pages() -> None:
    with pytest.raises(InputTooLargeError, match="max_pages") as err:
        list(iter_pages(pdf_of(5), limits=InputLimits(max_pages=4)))
    assert_names(err, "<bytes>")
    assert count_pages(pdf_of(5), limits=InputLimits(max_pages=4)) == 5


def test_pdf_page_over_max_pixels_is_rendered_smaller(caplog: pytest.LogCaptureFixture) -> None:
    limits = InputLimits(max_pixels=100_000)
    with caplog.at_level("WARNING", logger="langchain_deepseek_ocr._inputs"):
        page = load_image(make_pdf([A4]), limits=limits)
    width, height = page.size
    assert width * height <= 100_000
    assert width * height > 90_000
    assert abs(width / height - A4[0] / A4[1]) < 0.01
    assert "dpi" in caplog.text


def test_huge_pdf_page_is_capped() -> None:
    limits = InputLimits(max_pixels=2_000_000)
    page = load_image(make_pdf([(14400, 7200)]), limits=limits)  # the largest PDF page width
    width, height = page.size
    assert width * height <= 2_000_000
    assert abs(width - 2 * height) <= 2
    assert DEFAULT_LIMITS.max_pixels == 100_000_000


def test_pdf_laziness_one_page_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    data = pdf_of(50)
    renders: list[int] = []
    closes: list[int] = []
    original_render = pdfium.PdfPage.render
    original_close = pdfium.PdfDocument.close

    def render(self, **kwargs):
        renders.append(1)
        return original_render(self, **kwargs)

    def close(self):
        closes.append(1)
        return original_close(self)

    monkeypatch.setattr(pdfium.PdfPage, "render", render)
    monkeypatch.setattr(pdfium.PdfDocument, "close", close)

    iterator = iter_pages(data)
    assert renders == []  # nothing happens until iteration starts
    first = next(iterator)
    assert first.page == 0
    assert first.total_pages == 50
    assert len(renders) == 1
    second = next(iterator)
    assert second.page == 1
    assert len(renders) == 2
    assert closes == []  # the document stays open between pages
    iterator.close()  # type: ignore[attr-defined]
    assert closes == [1]  # closing the iterator early closes the document

    renders.clear()
    closes.clear()
    assert sum(1 for _ in iter_pages(data)) == 50
    assert len(renders) == 50
    # exhausting it closes it too (after one reopen at page 32: bounded memory)
    assert len(closes) == 2


def test_pdf_document_closed_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = pdf_of(2)
    closes: list[int] = []
    original_close = pdfium.PdfDocument.close
    monkeypatch.setattr(
        pdfium.PdfDocument, "close", lambda self: closes.append(1) or original_close(self)
    )
    with pytest.raises(PageOutOfRangeError):
        list(iter_pages(data, pages=[9]))
    assert closes == [1]


def test_path_file_closed_after_iteration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file opened by path stays open while its pages are read and is closed after."""
    path = tmp_path / "five.pdf"
    path.write_bytes(pdf_of(5))
    streams: list[io.BufferedReader] = []
    real_fdopen = os.fdopen

    def recording_fdopen(*args, **kwargs):
        stream = real_fdopen(*args, **kwargs)
        streams.append(stream)
        return stream

    monkeypatch.setattr(os, "fdopen", recording_fdopen)  # how _inputs opens every path

    iterator = iter_pages(path)
    next(iterator)
    assert len(streams) == 1
    assert not streams[0].closed
    assert os.path.samestat(os.fstat(streams[0].fileno()), path.stat())
    iterator.close()  # type: ignore[attr-defined]
    assert streams[0].closed
    tiff = tmp_path / "t.tif"
    Image.new("RGB", (4, 4)).save(tiff, save_all=True, append_images=[Image.new("RGB", (4, 4))])
    assert len(list(iter_pages(tiff))) == 2
    assert len(streams) == 2
    assert streams[1].closed


def test_pdf_rendering_is_thread_safe() -> None:
    data = pdf_of(6)

    def widths(_: int) -> list[int]:
        return [p.size[0] for p in iter_pages(data)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(widths, range(12)))
    assert all(r == [page_width(i) for i in range(6)] for r in results)


def test_pdf_with_leading_junk_is_detected() -> None:
    data = b"\r\n" * 10 + pdf_of(1)
    assert count_pages(data) == 1


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, this is not a picture\n")
    with pytest.raises(UnsupportedInputError) as err:
        load_image(path)
    assert_names(err, "notes.png")
    assert ".png" in str(err.value)
    with pytest.raises(UnsupportedInputError):
        count_pages(path)


def test_unsupported_bytes() -> None:
    with pytest.raises(UnsupportedInputError) as err:
        load_image(b"just some text")
    assert_names(err, "<bytes>")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "zero.png"
    path.write_bytes(b"")
    with pytest.raises(CorruptInputError, match="empty file") as err:
        load_image(path)
    assert_names(err, "zero.png")
    with pytest.raises(CorruptInputError, match="empty") as err:
        load_image(b"")
    assert_names(err, "<bytes>")


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_images(tmp_path: Path, fmt: str, suffix: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptInputError) as err:
        load_image(path)
    assert_names(err, f"cut{suffix}")
    with pytest.raises(CorruptInputError) as err:
        load_image(data[: len(data) // 2])
    assert_names(err, "<bytes>")


def test_truncated_image_even_if_header_cut(tmp_path: Path) -> None:
    path = tmp_path / "head.png"
    path.write_bytes(png_bytes(Image.new("RGB", (4, 4)))[:12])
    with pytest.raises(CorruptInputError) as err:
        load_image(path)
    assert_names(err, "head.png")
    assert "PNG" in str(err.value)


def test_load_truncated_images_switch_is_a_known_limitation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # documents the limitation: with the global switch on, Pillow pads instead of failing
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = png_bytes(Image.fromarray(noise))
    page = load_image(data[: len(data) // 2])
    assert page.size == (64, 64)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="directory") as err:
        load_image(tmp_path)
    assert_names(err, str(tmp_path))


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pdf"
    with pytest.raises(InputNotFoundError) as err:
        load_image(missing)
    assert_names(err, "nope.pdf")
    with pytest.raises(InputNotFoundError):
        count_pages(str(missing))
    with pytest.raises(InputNotFoundError):
        load_image(missing / "child.png")


@pytest.mark.parametrize("url", ["https://example.com/scan.png", "s3://bucket/doc.pdf"])
def test_url_string(url: str) -> None:
    with pytest.raises(InputNotFoundError, match="URLs are not fetched") as err:
        load_image(url)
    assert_names(err, url)


def test_long_str_is_not_echoed_whole() -> None:
    text = "A" * 100_000
    with pytest.raises(InputNotFoundError) as err:
        load_image(text)
    assert len(str(err.value)) < 1000
    assert "data:" in str(err.value)


def test_nul_in_path() -> None:
    with pytest.raises(InputNotFoundError) as err:
        load_image("bad\0name.png")
    assert err.value.source is not None
    assert "bad" in str(err.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.timeout(20)
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    # pytest-timeout fails the test if opening the FIFO blocks
    with pytest.raises(InputNotFoundError, match="FIFO") as err:
        load_image(fifo)
    assert_names(err, "pipe.png")


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_device_file_is_refused() -> None:
    with pytest.raises(InputNotFoundError, match="device") as err:
        load_image("/dev/null")
    assert_names(err, "/dev/null")


@pytest.mark.skipif(
    sys.platform == "win32" or (hasattr(os, "geteuid") and os.geteuid() == 0),
    reason=(
        "a real chmod 0 cannot stop root (or work on Windows); "
        "test_permission_denied_on_open covers the same path there"
    ),
)
def test_unreadable_file(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (2, 2)), tmp_path / "secret.png")
    path.chmod(0)
    try:
        with pytest.raises(InputNotFoundError, match="permission") as err:
            load_image(path)
        assert_names(err, "secret.png")
    finally:
        path.chmod(0o600)


def test_permission_denied_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(Image.new("RGB", (2, 2)), tmp_path / "locked.png")
    real_open = os.open

    def fake_open(target, flags, *args, **kwargs):
        if os.fspath(target) == str(path):
            raise PermissionError(13, "Permission denied", str(target))
        return real_open(target, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    with pytest.raises(InputNotFoundError, match="permission") as err:
        load_image(path)
    assert_names(err, "locked.png")


def test_file_over_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.pdf"
    path.write_bytes(pdf_of(3))
    with pytest.raises(InputTooLargeError, match="max_bytes") as err:
        load_image(path, limits=InputLimits(max_bytes=100))
    assert_names(err, "big.pdf")
    with pytest.raises(InputTooLargeError):
        load_image(bytearray(pdf_of(3)), limits=InputLimits(max_bytes=100))


def test_decompression_bomb_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(50_000, 50_000))
    assert path.stat().st_size < 200

    def no_decoding(self):  # pragma: no cover - must not run
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(InputTooLargeError) as err:
        load_image(path)  # refused from the header: the patched decoder never runs
    assert_names(err, "bomb.png")
    with pytest.raises(InputTooLargeError):
        load_image(bomb_png(50_000, 50_000))


def test_image_over_max_pixels_below_pillow_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(InputTooLargeError, match="max_pixels") as err:
        load_image(bomb_png(3000, 3000), limits=InputLimits(max_pixels=1_000_000))
    assert_names(err, "<bytes>")
    assert "3,000×3,000" in str(err.value)


def test_pil_image_over_max_pixels() -> None:
    with pytest.raises(InputTooLargeError) as err:
        load_image(Image.new("1", (200, 200)), limits=InputLimits(max_pixels=1000))
    assert_names(err, "<PIL image>")


def test_unsupported_type() -> None:
    with pytest.raises(UnsupportedInputError) as err:
        iter_pages(12345)  # type: ignore[arg-type]
    assert "int" in str(err.value)
    with pytest.raises(UnsupportedInputError, match="read"):
        load_image(io.BytesIO(b"x"))  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    data = pdf_of(1)
    with pytest.raises(ConfigurationError):
        iter_pages(data, pages=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        iter_pages(data, pages=["0"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        iter_pages(data, pages=[True])
    with pytest.raises(ConfigurationError):
        iter_pages(data, limits={"max_bytes": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        load_image(data, page="1")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        InputLimits(max_pixels=0)
    with pytest.raises(ConfigurationError):
        InputLimits(pdf_dpi=float("nan"))


def test_errors_are_wrapped_and_picklable(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (9, 9, 9)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[:300])
    with pytest.raises(DeepSeekOCRError) as err:
        load_image(path)
    assert isinstance(err.value, CorruptInputError)
    assert err.value.__cause__ is not None  # the Pillow error is kept as the cause
    clone = pickle.loads(pickle.dumps(err.value))
    assert str(clone) == str(err.value)


def test_page_image_is_frozen() -> None:
    page = load_image(Image.new("RGB", (3, 2)))
    assert page.size == (3, 2)
    with pytest.raises(AttributeError):
        page.page = 3  # type: ignore[misc]
    same = page
    assert page == same
    assert page != load_image(Image.new("RGB", (3, 2)))  # identity, not pixel comparison
    assert len({page, same}) == 1


def test_interleaved_pdf_iterators_are_independent() -> None:
    first = iter_pages(pdf_of(3))
    second = iter_pages(pdf_of(4))
    assert next(first).total_pages == 3
    assert next(second).total_pages == 4
    assert [p.page for p in first] == [1, 2]
    assert [p.page for p in second] == [1, 2, 3]


def test_iter_page_results_yields_page_errors_in_place(tmp_path: Path) -> None:
    from langchain_deepseek_ocr._inputs import iter_page_results

    pdf = tmp_path / "five.pdf"
    pdf.write_bytes(pdf_of(5))
    items = list(iter_page_results(pdf, pages=[1, 9, -1]))
    assert [type(i).__name__ for i in items] == ["PageImage", "PageOutOfRangeError", "PageImage"]
    assert items[2].page == 4
    broken = tmp_path / "broken.png"
    broken.write_text("hello")
    only = list(iter_page_results(broken))
    assert len(only) == 1
    assert isinstance(only[0], UnsupportedInputError)
