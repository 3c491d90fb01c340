"""Tests of drawing boxes and saving figure crops."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from langchain_deepseek_ocr._boxes import Box
from langchain_deepseek_ocr._parse import parse_output
from langchain_deepseek_ocr._render import draw_boxes, label_color, save_crops
from langchain_deepseek_ocr._result import LayoutBlock

_RAW = (
    "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 150]]<|/det|>\n# Title\n\n"
    "<|ref|>image<|/ref|><|det|>[[100, 200, 500, 600]]<|/det|>\n"
    "<|ref|>image_caption<|/ref|><|det|>[[100, 610, 500, 640]]<|/det|>\nFigure 1\n\n"
    "<|ref|>image<|/ref|><|det|>[[550, 200, 950, 400], [550, 450, 950, 900]]<|/det|>\n"
    "<|ref|>text<|/ref|><|det|>[[100, 700, 500, 990]]<|/det|>\nSome text.\n"
)


def _page(size: tuple[int, int] = (400, 300), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, "white")


def test_label_color_is_stable_and_distinct() -> None:
    assert label_color("title") == label_color("title")
    assert label_color("title") != label_color("text")
    assert all(0 <= c <= 255 for c in label_color("一段接一段"))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_draw_boxes_returns_rgb_copy(mode: str) -> None:
    page = _page(mode=mode)
    before = page.copy()
    blocks = parse_output(_RAW, page.size).blocks
    out = draw_boxes(page, blocks)
    assert out.mode == "RGB"
    assert out.size == page.size
    assert out is not page
    assert page.tobytes() == before.tobytes()  # the input is not modified


def test_draw_boxes_changes_pixels_in_and_on_boxes() -> None:
    page = _page((1000, 1000))
    blocks = parse_output(_RAW, page.size).blocks
    out = draw_boxes(page, blocks)
    x1, y1, x2, y2 = blocks[4].pixel_boxes[0]  # the text block
    assert out.getpixel((x1, (y1 + y2) // 2)) == label_color("text")  # the outline
    inside = out.getpixel(((x1 + x2) // 2, (y1 + y2) // 2))
    assert inside != (255, 255, 255)  # the translucent fill
    assert min(inside) > 200  # ... is light
    assert out.getpixel((5, 995)) == (255, 255, 255)  # outside every box


def test_draw_boxes_title_is_thicker() -> None:
    page = _page((1000, 1000))
    blocks = [
        LayoutBlock(label="title", boxes=[Box(100, 100, 400, 400)]),
        LayoutBlock(label="text", boxes=[Box(500, 500, 900, 900)]),
    ]
    out = draw_boxes(page, blocks)

    def thickness(x: int, y: int, color: tuple[int, int, int]) -> int:
        return sum(out.getpixel((x + d, y)) == color for d in range(8))

    title_x, title_y = Box(100, 100, 400, 400).to_pixels(1000, 1000)[:2]
    text_x, text_y = Box(500, 500, 900, 900).to_pixels(1000, 1000)[:2]
    assert thickness(title_x, title_y + 150, label_color("title")) > thickness(
        text_x, text_y + 150, label_color("text")
    )


def test_draw_boxes_computes_pixel_boxes_from_grid() -> None:
    # No pixel_boxes on the block (parsed without image size): they come from the image.
    blocks = parse_output(_RAW).blocks
    assert all(not b.pixel_boxes for b in blocks)
    page = _page((500, 500))
    out = draw_boxes(page, blocks)
    x1, y1, _x2, y2 = Box(100, 700, 500, 990).to_pixels(500, 500)
    assert out.getpixel((x1, (y1 + y2) // 2)) == label_color("text")


def test_draw_boxes_on_a_resized_page() -> None:
    blocks = parse_output(_RAW, (2000, 2000)).blocks
    page = _page((500, 500))
    out = draw_boxes(page, blocks)
    x1, y1, _x2, y2 = Box(100, 700, 500, 990).to_pixels(500, 500)
    assert out.getpixel((x1, (y1 + y2) // 2)) == label_color("text")


def test_draw_boxes_long_and_cjk_labels() -> None:
    blocks = [
        LayoutBlock(label="一段接一段" * 20, boxes=[Box(100, 100, 900, 300)]),
        LayoutBlock(label="", boxes=[Box(100, 400, 900, 600)]),
        LayoutBlock(label="pixels only", pixel_boxes=[(10, 10, 50, 50)]),
    ]
    out = draw_boxes(_page(), blocks)
    assert out.getpixel((10, 30)) == label_color("pixels only")


def test_save_crops_count_sizes_and_order(tmp_path: Path) -> None:
    page = Image.new("RGB", (1000, 500), "white")
    out = parse_output(_RAW, page.size, figure_links=lambda i: f"crops/page_{i}.jpg")
    paths = save_crops(page, out.blocks, tmp_path / "crops", "page")
    assert [p.name for p in paths] == ["page_0.jpg", "page_1.jpg", "page_2.jpg"]
    assert all(p.is_file() for p in paths)
    expected = [
        Box(100, 200, 500, 600).to_pixels(1000, 500),
        Box(550, 200, 950, 400).to_pixels(1000, 500),
        Box(550, 450, 950, 900).to_pixels(1000, 500),
    ]
    for path, (x1, y1, x2, y2) in zip(paths, expected, strict=True):
        with Image.open(path) as crop:
            assert crop.format == "JPEG"
            assert crop.size == (x2 - x1, y2 - y1)
    # The links in the markdown name the same files, in the same order.
    assert out.text.count("![](") == 3
    positions = [out.text.index(f"![](crops/{path.name})") for path in paths]
    assert positions == sorted(positions)


def test_save_crops_content_matches_the_box(tmp_path: Path) -> None:
    page = Image.new("RGB", (999, 999), "white")
    page.paste((255, 0, 0), (100, 100, 300, 300))
    blocks = [LayoutBlock(label="image", boxes=[Box(100, 100, 300, 300)])]
    (path,) = save_crops(page, blocks, tmp_path, "fig")
    with Image.open(path) as crop:
        r, g, b = crop.convert("RGB").getpixel((100, 100))
    assert r > 200 > g
    assert b < 60


def test_save_crops_skips_degenerate_and_other_labels(tmp_path: Path) -> None:
    page = _page((50, 40), mode="RGBA")
    blocks = [
        LayoutBlock(label="image", boxes=[Box(10, 10, 10, 500)]),  # no width: skipped
        LayoutBlock(label="table", boxes=[Box(0, 0, 999, 999)]),  # not a figure label
        LayoutBlock(label="image", boxes=[Box(100, 100, 101, 101)]),  # < 1 px: widened
        LayoutBlock(label="image", boxes=[]),
    ]
    paths = save_crops(page, blocks, tmp_path, "p")
    assert [p.name for p in paths] == ["p_0.jpg"]
    with Image.open(paths[0]) as crop:
        assert crop.size == (1, 1)
    both = save_crops(page, blocks, tmp_path / "both", "p", labels=("image", "table"))
    assert [p.name for p in both] == ["p_0.jpg", "p_1.jpg"]
    with Image.open(both[0]) as crop:
        assert crop.size == (50, 40)


def test_save_crops_nothing_to_crop(tmp_path: Path) -> None:
    assert save_crops(_page(), [LayoutBlock(label="text", text="x")], tmp_path / "none", "p") == []
    assert not (tmp_path / "none").exists()
