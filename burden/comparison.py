"""Several models' estimates under the same settings: the reference table's shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .figures import Estimate


@dataclass(frozen=True)
class Comparison:
    estimates: tuple[Estimate, ...]

    def to_dict(self) -> dict[str, Any]:
        from .render.json import comparison_to_dict

        return comparison_to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        import json

        return json.dumps(self.to_dict(), indent=indent)

    def table(self, fmt: str = "github", columns: Sequence[str] | None = None) -> str:
        from .render.text import comparison_table

        return comparison_table(self, fmt=fmt, columns=columns)

    def _repr_html_(self) -> str:
        return self.table(fmt="html")
