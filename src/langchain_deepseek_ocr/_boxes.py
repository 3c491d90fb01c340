"""Box maths: DeepSeek-OCR's 0-999 grid and pixel coordinates, in one place.

The model writes boxes as ``[x1, y1, x2, y2]`` integers on a 0-999 grid relative to the
original page (before padding or tiling). DeepSeek converts them with
``int(v / 999 * size)`` -- the divisor is 999, not 1000 -- and so does this module.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["GRID_MAX", "Box", "to_grid", "to_pixels"]

GRID_MAX = 999
"""The largest coordinate on the model's grid."""


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def to_pixels(value: int, size: int) -> int:
    """One grid coordinate (0-999) to a pixel coordinate on a side of ``size`` pixels."""
    return _clamp(int(_clamp(value, 0, GRID_MAX) / GRID_MAX * size), 0, size)


def to_grid(pixel: float, size: int) -> int:
    """One pixel coordinate to the nearest grid coordinate (the inverse of :func:`to_pixels`)."""
    if size <= 0:
        raise ValueError("size must be positive")
    return _clamp(round(pixel / size * GRID_MAX), 0, GRID_MAX)


class Box(BaseModel):
    """An axis-aligned box on the model's 0-999 grid.

    Values outside 0-999 (the model sometimes writes 1005) are clamped, and the corners
    are ordered so that ``x1 <= x2`` and ``y1 <= y2``.
    """

    model_config = ConfigDict(frozen=True)

    x1: int = Field(description="Left edge, 0-999.")
    y1: int = Field(description="Top edge, 0-999.")
    x2: int = Field(description="Right edge, 0-999.")
    y2: int = Field(description="Bottom edge, 0-999.")

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data):
        if isinstance(data, (list, tuple)):
            if len(data) != 4:
                raise ValueError("a box needs exactly four numbers")
            data = dict(zip(("x1", "y1", "x2", "y2"), data, strict=True))
        if isinstance(data, dict):
            vals = {k: _clamp(round(float(data[k])), 0, GRID_MAX) for k in ("x1", "y1", "x2", "y2")}
            x1, x2 = sorted((vals["x1"], vals["x2"]))
            y1, y2 = sorted((vals["y1"], vals["y2"]))
            return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
        return data

    def __init__(self, x1=None, y1=None, x2=None, y2=None, /, **data):
        if isinstance(x1, (list, tuple)):
            x1, y1, x2, y2 = x1
        if x1 is not None:
            data = {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
        super().__init__(**data)

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a ``width`` x ``height`` image, clamped to the image."""
        return (
            to_pixels(self.x1, width),
            to_pixels(self.y1, height),
            to_pixels(self.x2, width),
            to_pixels(self.y2, height),
        )

    def as_list(self) -> list[int]:
        """The box as ``[x1, y1, x2, y2]``."""
        return [self.x1, self.y1, self.x2, self.y2]

    @property
    def area(self) -> int:
        """Area on the grid."""
        return (self.x2 - self.x1) * (self.y2 - self.y1)
