"""Drawing for people: layout boxes over a page, and figure crops.

Pixel boxes always come from :meth:`Box.to_pixels` (the only place box maths lives) and
the size of the image being drawn on, so a resized copy of the page is drawn correctly.
"""

from __future__ import annotations

import colorsys
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from langchain_deepseek_ocr._parse import figure_boxes
from langchain_deepseek_ocr._result import LayoutBlock

__all__ = ["draw_boxes", "label_color", "save_crops"]

FILL_ALPHA = 20
"""Opacity (0-255) of the fill drawn inside each box (upstream uses 20)."""
LABEL_MAX_CHARS = 40
"""Labels longer than this are cut and end with an ellipsis."""
JPEG_QUALITY = 95
"""Quality of saved crops."""


_PALETTE: dict[str, tuple[int, int, int]] = {
    "title": (214, 39, 40),
    "sub_title": (255, 127, 14),
    "text": (31, 119, 180),
    "image": (44, 160, 44),
    "image_caption": (23, 190, 207),
    "table": (148, 103, 189),
    "table_caption": (227, 119, 194),
    "table_footnote": (140, 86, 75),
    "equation": (188, 189, 34),
}


def label_color(label: str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for a label (the same in every run and process).

    The common layout labels have fixed, well-separated colours; any other label gets
    one derived from a CRC-32 of its text.

    Args:
        label: A block label.

    Returns:
        ``(r, g, b)``, each 0-255.
    """
    if label in _PALETTE:
        return _PALETTE[label]
    hue = (zlib.crc32(label.encode("utf-8")) % 360) / 360
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.85)
    return round(red * 255), round(green * 255), round(blue * 255)


def _pixel_boxes(block: LayoutBlock, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The block's boxes in pixels of an image of ``size``.

    Grid boxes are converted with :meth:`Box.to_pixels` for this size; the block's own
    ``pixel_boxes`` are used only when it has no grid boxes.
    """
    if block.boxes:
        return [box.to_pixels(*size) for box in block.boxes]
    return list(block.pixel_boxes)


def _short(label: str) -> str:
    label = " ".join(label.split())
    if len(label) > LABEL_MAX_CHARS:
        return label[: LABEL_MAX_CHARS - 1] + "…"
    return label


def _draw_label(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    xy: tuple[int, int],
    text: str,
    color: tuple[int, int, int],
) -> None:
    """Write ``text`` on a patch of ``color``; characters the font cannot encode become ?."""
    for candidate in (text, text.encode("ascii", "replace").decode("ascii")):
        try:
            left, top, right, bottom = draw.textbbox(xy, candidate, font=font)
            draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=color)
            draw.text(xy, candidate, fill=(255, 255, 255), font=font)
        except UnicodeEncodeError:  # the bitmap default font is latin-1 only
            continue
        return


def _font(scale: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font, 10 px per unit of ``scale`` when FreeType is available."""
    if scale > 1:
        try:
            return ImageFont.load_default(size=10 * scale)
        except (ImportError, OSError):  # no FreeType: the fixed-size bitmap font
            pass
    return ImageFont.load_default()


def draw_boxes(image: Image.Image, blocks: Sequence[LayoutBlock]) -> Image.Image:
    """Draw each block's boxes and label over a copy of the image.

    Each label gets a stable colour (:func:`label_color`); ``title`` boxes are drawn
    thicker; every box gets a translucent fill and its label (cut to
    :data:`LABEL_MAX_CHARS` characters) above it, as upstream's ``draw_bounding_boxes``
    does.

    Args:
        image: The page image (any mode); it is not modified.
        blocks: The blocks to draw; pixel boxes are computed from the grid boxes and this
            image's size.

    Returns:
        A new RGB image of the same size.
    """
    base = image.convert("RGBA")
    size = base.size
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    fill = ImageDraw.Draw(overlay)
    boxes = [(block, _pixel_boxes(block, size)) for block in blocks]
    for block, pixel_boxes in boxes:
        color = label_color(block.label)
        for rect in pixel_boxes:
            fill.rectangle(rect, fill=(*color, FILL_ALPHA))
    out = Image.alpha_composite(base, overlay).convert("RGB")

    draw = ImageDraw.Draw(out)
    scale = max(1, round(max(size) / 1000))  # thicker lines and larger labels on big pages
    font = _font(scale)
    for block, pixel_boxes in boxes:
        color = label_color(block.label)
        width = (4 if block.label == "title" else 2) * scale
        text = _short(block.label)
        for x1, y1, x2, y2 in pixel_boxes:
            draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
            if text:
                _draw_label(draw, font, (x1, max(0, y1 - 15 * scale)), text, color)
    return out


def _crop_rect(
    rect: tuple[int, int, int, int], size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Widen a pixel rectangle that rounded to nothing to one pixel; None if impossible."""
    width, height = size
    if width <= 0 or height <= 0:
        return None
    x1, y1, x2, y2 = rect
    if x2 <= x1:
        x1, x2 = min(x1, width - 1), min(x1, width - 1) + 1
    if y2 <= y1:
        y1, y2 = min(y1, height - 1), min(y1, height - 1) + 1
    return x1, y1, x2, y2


def save_crops(
    image: Image.Image,
    blocks: Sequence[LayoutBlock],
    out_dir: Path,
    prefix: str,
    *,
    labels: Iterable[str] = ("image",),
) -> list[Path]:
    """Crop figures out of the page and save them as JPEG files.

    Every box of every block whose label is in ``labels`` is one crop, numbered from 0 in
    reading order; a block with several boxes gives several crops, one per box. Boxes with
    no area on the grid are skipped and take no number; a box that rounds to less than a
    pixel is widened to one. This is the numbering of
    :func:`~langchain_deepseek_ocr._parse.figure_boxes`, so with the default ``labels``
    crop ``{prefix}_{i}.jpg`` is the figure that ``parse_output(..., figure_links=...)``
    links as number ``i``.

    Args:
        image: The page image the blocks were read from (or a resized copy of it).
        blocks: The page's blocks.
        out_dir: Folder for the crops; created if missing.
        prefix: File name prefix: crops are ``{prefix}_{i}.jpg``.
        labels: Labels of the blocks to crop.

    Returns:
        The paths written, in figure order.
    """
    out_dir = Path(out_dir)
    rgb = image.convert("RGB")
    paths: list[Path] = []
    for number, (_index, box) in enumerate(figure_boxes(blocks, labels)):
        rect = _crop_rect(box.to_pixels(*rgb.size), rgb.size)
        if rect is None:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{prefix}_{number}.jpg"
        rgb.crop(rect).save(path, "JPEG", quality=JPEG_QUALITY)
        paths.append(path)
    return paths
