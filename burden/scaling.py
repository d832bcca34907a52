"""The feature-extraction scale table: a trunk's output and cost over a range of input sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScaleRow:
    scale: float
    input: tuple[int, ...]  # [C, H, W]
    output_shape: Any  # the trunk's output shape, batch first; None when the size does not fit
    feature_bytes: int | None
    flops: int | None
    error: str | None  # why the network cannot take this size

    @property
    def fits(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ScaleTable:
    model: str
    batch: int
    trunk: str
    dtype: str
    convention: str
    rows: tuple[ScaleRow, ...]

    def to_dict(self) -> dict[str, Any]:
        from .render.json import scale_to_dict

        return scale_to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        import json

        return json.dumps(self.to_dict(), indent=indent)

    def table(self, fmt: str = "github") -> str:
        from .render.text import scale_table

        return scale_table(self, fmt=fmt)

    def _repr_html_(self) -> str:
        return self.table(fmt="html")
