r"""Tasks, prompts and resolution modes: the one table every other module reads.

DeepSeek-OCR is driven by a handful of fixed prompts (the model is "very sensitive to
variations in prompts"). Each prompt is the text that follows ``<image>\\n``; a server that
inserts the image placeholder itself receives exactly this text.

Resolution modes fix the size of the global view, the size of the tiles and whether the
page is tiled. They differ by model family: v1 has five, v2 three (its vision encoder has
learned query tables for 1024 and 768 views only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from langchain_deepseek_ocr._errors import ConfigurationError

__all__ = [
    "IMAGE_TOKEN",
    "ModelFamily",
    "OCRTask",
    "Resolution",
    "ResolutionSpec",
    "build_prompt",
    "resolution_spec",
]

IMAGE_TOKEN = "<image>"


class ModelFamily(StrEnum):
    """The DeepSeek-OCR model family a checkpoint belongs to."""

    V1 = "v1"
    """``deepseek-ai/DeepSeek-OCR``: SAM ViT-B + CLIP-L, five resolution modes."""
    V2 = "v2"
    """DeepSeek-OCR-2: SAM ViT-B + a Qwen2-style encoder with learned queries."""


class OCRTask(StrEnum):
    """What the model is asked to do with a page."""

    MARKDOWN = "markdown"
    """The document as markdown, with a layout box per block (grounded)."""
    OCR = "ocr"
    """All text in the image, with a box per line or word (grounded)."""
    FREE = "free"
    """Plain OCR text without layout boxes."""
    FIGURE = "figure"
    """Parse a figure or chart (best on a crop of the figure)."""
    DESCRIBE = "describe"
    """A detailed description of the image."""
    LOCATE = "locate"
    """Find something named by ``ref`` and return its boxes."""
    CUSTOM = "custom"
    """A caller's own prompt (``prompt=``)."""

    @property
    def grounded(self) -> bool:
        """Whether the output of this task carries ``<|ref|>``/``<|det|>`` boxes."""
        return self in (OCRTask.MARKDOWN, OCRTask.OCR, OCRTask.LOCATE)


_PROMPTS: dict[OCRTask, str] = {
    OCRTask.MARKDOWN: "<|grounding|>Convert the document to markdown.",
    OCRTask.OCR: "<|grounding|>OCR this image.",
    OCRTask.FREE: "Free OCR.",
    OCRTask.FIGURE: "Parse the figure.",
    OCRTask.DESCRIBE: "Describe this image in detail.",
    OCRTask.LOCATE: "Locate <|ref|>{ref}<|/ref|> in the image.",
}


def build_prompt(task: OCRTask | str, *, ref: str | None = None, prompt: str | None = None) -> str:
    r"""The prompt text for a task (what follows ``<image>\\n``).

    Args:
        task: The task, as an :class:`OCRTask` or its value.
        ref: What to find; required by ``locate``.
        prompt: A caller's own prompt; required by ``custom`` and, when given with another
            task, it replaces that task's prompt.

    Returns:
        The prompt, without the ``<image>`` placeholder.

    Raises:
        ConfigurationError: unknown task, ``locate`` without ``ref``, ``custom`` without
            ``prompt``.
    """
    task = parse_task(task)
    if prompt is not None:
        text = prompt.strip()
        if text.startswith(IMAGE_TOKEN):
            text = text[len(IMAGE_TOKEN) :].lstrip("\n")
        if not text:
            raise ConfigurationError("the prompt is empty")
        return text
    if task is OCRTask.CUSTOM:
        raise ConfigurationError("task 'custom' needs prompt=...")
    if task is OCRTask.LOCATE:
        if ref is None or not ref.strip():
            raise ConfigurationError("task 'locate' needs ref=... (what to find in the image)")
        return _PROMPTS[task].format(ref=ref.strip())
    return _PROMPTS[task]


def parse_task(task: OCRTask | str) -> OCRTask:
    """Turn a task name into an :class:`OCRTask`, with a clear error for unknown names."""
    if isinstance(task, OCRTask):
        return task
    try:
        return OCRTask(str(task).lower())
    except ValueError:
        names = ", ".join(t.value for t in OCRTask)
        raise ConfigurationError(f"unknown task {task!r}; choose one of: {names}") from None


class Resolution(StrEnum):
    """Resolution modes (the names DeepSeek uses)."""

    TINY = "tiny"
    """v1: one 512 view, 64 vision tokens (73 placeholders)."""
    SMALL = "small"
    """v1: one 640 view, 100 tokens (111). v2: one 768 view, 145 tokens."""
    BASE = "base"
    """v1: one 1024 view, 256 tokens (273). v2: one 1024 view, 257 tokens."""
    LARGE = "large"
    """v1: one 1280 view, 400 tokens (421)."""
    GUNDAM = "gundam"
    """A 1024 global view plus 2-6 tiles (v1: 640 tiles, v2: 768 tiles); the default."""


@dataclass(frozen=True)
class ResolutionSpec:
    """The geometry of one resolution mode for one model family.

    Attributes:
        name: The mode.
        family: The model family.
        base_size: Side of the global view, in pixels.
        image_size: Side of a tile (and, untiled, of the global view for v1 tiny/small).
        crop: Whether pages larger than a tile are cut into tiles.
        min_tiles: Fewest tiles when tiling.
        max_tiles: Most tiles when tiling.
    """

    name: Resolution
    family: ModelFamily
    base_size: int
    image_size: int
    crop: bool
    min_tiles: int = 2
    max_tiles: int = 6

    @property
    def patch_size(self) -> int:
        """The SAM patch size (16) shared by both families."""
        return 16

    @property
    def downsample(self) -> int:
        """The 16x compression of SAM's neck is 4x per side."""
        return 4

    def queries(self, side: int) -> int:
        """Vision tokens per side of a square view of ``side`` pixels."""
        return math.ceil((side // self.patch_size) / self.downsample)


_V1 = {
    Resolution.TINY: (512, 512, False),
    Resolution.SMALL: (640, 640, False),
    Resolution.BASE: (1024, 1024, False),
    Resolution.LARGE: (1280, 1280, False),
    Resolution.GUNDAM: (1024, 640, True),
}
_V2 = {
    Resolution.SMALL: (768, 768, False),
    Resolution.BASE: (1024, 1024, False),
    Resolution.GUNDAM: (1024, 768, True),
}

MAX_TILES_LIMIT = 9
"""The most tiles DeepSeek's own HF code allows (upstream vLLM uses 6)."""


def parse_resolution(resolution: Resolution | str) -> Resolution:
    """Turn a resolution name into a :class:`Resolution`, with a clear error."""
    if isinstance(resolution, Resolution):
        return resolution
    try:
        return Resolution(str(resolution).lower())
    except ValueError:
        names = ", ".join(r.value for r in Resolution)
        raise ConfigurationError(
            f"unknown resolution {resolution!r}; choose one of: {names}"
        ) from None


def resolutions_for(family: ModelFamily) -> tuple[Resolution, ...]:
    """The resolution modes a model family supports."""
    return tuple(_V1 if family is ModelFamily.V1 else _V2)


def resolution_spec(
    family: ModelFamily | str,
    resolution: Resolution | str = Resolution.GUNDAM,
    *,
    max_tiles: int = 6,
    min_tiles: int = 2,
) -> ResolutionSpec:
    """The geometry of a resolution mode for a model family.

    Args:
        family: ``v1`` or ``v2``.
        resolution: The mode; ``gundam`` by default.
        max_tiles: Most tiles in gundam mode (2..9 for v1, 2..6 for v2).
        min_tiles: Fewest tiles in gundam mode.

    Raises:
        ConfigurationError: a mode the family does not have, or a bad tile range.
    """
    family = ModelFamily(family)
    name = parse_resolution(resolution)
    table = _V1 if family is ModelFamily.V1 else _V2
    if name not in table:
        have = ", ".join(r.value for r in table)
        raise ConfigurationError(
            f"resolution {name.value!r} does not exist for DeepSeek-OCR {family.value} "
            f"(it has: {have})"
        )
    limit = MAX_TILES_LIMIT if family is ModelFamily.V1 else 6
    if not 2 <= min_tiles <= max_tiles <= limit:
        raise ConfigurationError(
            f"tile range {min_tiles}..{max_tiles} is invalid for {family.value}; "
            f"need 2 <= min_tiles <= max_tiles <= {limit}"
        )
    base, size, crop = table[name]
    return ResolutionSpec(name, family, base, size, crop, min_tiles, max_tiles)
