"""The result model: what one OCR call on one page returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from langchain_deepseek_ocr._boxes import Box

__all__ = ["Attempt", "FinishReason", "LayoutBlock", "OCRResult"]

FinishReason = Literal["stop", "length", "error"]


class LayoutBlock(BaseModel):
    """One grounded element of the output: a label, its boxes and the text that follows it.

    For ``markdown`` output the label is a layout class (``title``, ``text``, ``table``,
    ``image`` ...; an open set). For ``ocr`` and ``locate`` output the label is often the
    recognised or searched text itself.
    """

    model_config = ConfigDict(frozen=True)

    label: str = Field(description="What the model wrote inside <|ref|>...<|/ref|>.")
    boxes: list[Box] = Field(default_factory=list, description="Boxes on the 0-999 grid.")
    pixel_boxes: list[tuple[int, int, int, int]] = Field(
        default_factory=list,
        description="The boxes in pixels of the original image (empty if its size is unknown).",
    )
    text: str = Field(default="", description="The content that follows the block, tags removed.")
    complete: bool = Field(
        default=True, description="False when the block's box list was cut off (truncated output)."
    )


class Attempt(BaseModel):
    """One run of the model on a page: what was tried and how it came out."""

    model_config = ConfigDict(frozen=True)

    resolution: str | None = Field(default=None, description="Resolution mode of this run.")
    ngram_size: int | None = Field(default=None, description="n of the n-gram guard (None: off).")
    window_size: int | None = Field(default=None, description="Window of the n-gram guard.")
    finish_reason: FinishReason = Field(default="stop", description="How the run ended.")
    repetition: bool = Field(default=False, description="The run's output looped.")
    truncated: bool = Field(default=False, description="The run's output was cut off.")
    output_tokens: int = Field(default=0, description="Tokens the run generated.")
    error: str | None = Field(default=None, description="The error the run ended in, if any.")


class OCRResult(BaseModel):
    """The result of OCR on one page or image.

    ``text`` is clean markdown (grounding tags removed); ``raw`` is what the model wrote,
    tags included. ``repetition`` and ``truncated`` say whether the output can be trusted.
    """

    text: str = Field(description="Clean markdown: grounding tags removed.")
    raw: str = Field(description="The model output with special tags kept (BOS/EOS/pad removed).")
    blocks: list[LayoutBlock] = Field(default_factory=list, description="Grounded blocks in order.")
    image_size: tuple[int, int] | None = Field(
        default=None, description="(width, height) of the page image, in pixels."
    )
    task: str = Field(default="markdown", description="The task that produced this result.")
    prompt: str = Field(default="", description="The prompt sent after <image>.")
    resolution: str | None = Field(default=None, description="The resolution mode used.")
    model: str = Field(default="", description="The model (hub id or folder) that ran.")
    finish_reason: FinishReason = Field(
        default="stop", description="'stop' (end of sequence) or 'length' (hit the token limit)."
    )
    repetition: bool = Field(default=False, description="The output is a degenerate loop.")
    truncated: bool = Field(
        default=False, description="The output was cut off (token limit, or mid box list)."
    )
    vision_tokens: int = Field(
        default=0, description="Image placeholder tokens consumed (newline/separator included)."
    )
    output_tokens: int = Field(default=0, description="Tokens generated.")
    seconds: float = Field(default=0.0, description="Wall time of the engine call for this page.")
    source: str | None = Field(default=None, description="Where the page came from (path...).")
    page: int | None = Field(default=None, description="0-based page of a PDF, else None.")
    attempts: list[Attempt] = Field(
        default_factory=list,
        description="Every run made for this page, in order (more than one after a recovery).",
    )
    kept_attempt: int = Field(default=0, description="Index in `attempts` of the run kept.")

    @property
    def compression_ratio(self) -> float:
        """Output tokens per vision token (the DeepSeek-OCR paper's measure)."""
        return self.output_tokens / self.vision_tokens if self.vision_tokens else 0.0

    @property
    def ok(self) -> bool:
        """True when the output is neither a loop nor cut off."""
        return not (self.repetition or self.truncated)
