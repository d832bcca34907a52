"""What the API returns: the plain figures, with the methods a notebook reaches for.

``Estimate``, ``Comparison`` and ``ScaleTable`` are the frozen records of ``burden.figures`` plus
views (text, JSON, HTML) and, for an estimate of a model burden can load by name, its scale
table. They sit above the renderers and the analysis, so nothing below imports them.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from . import analysis
from .boundary import guarded
from .errors import InputSpecError
from .figures import BenchFigures, ComparisonFigures, EstimateFigures, FitFigures, GenerateBenchFigures, GenerateFigures
from .figures import GenerateFitFigures, ScaleFigures
from .options import DEFAULT_SCALE_BASE, DEFAULT_SCALE_BATCH, DEFAULT_SCALES
from .render import html as html_view
from .render import json as json_view
from .render import text as text_view
from .render.units import fmt_bytes, fmt_count, fmt_flops


class _Json:
    """``to_json``: the record's ``to_dict``, as JSON (exact integers)."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


class _Summarised(_Json):
    """``print()`` shows the record's ``summary``."""

    def summary(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.summary()


class ScaleTable(_Json, ScaleFigures):
    """The feature-extraction table (``burden.scale``)."""

    def to_dict(self) -> dict[str, Any]:
        return json_view.scale_to_dict(self)

    def table(self, fmt: str = "github") -> str:
        return text_view.scale_table(self, fmt=fmt)

    def _repr_html_(self) -> str:
        return self.table(fmt="html")

    def __repr__(self) -> str:
        fits = sum(r.fits for r in self.rows)
        return (f"<ScaleTable {self.model}, trunk {self.trunk}, batch {self.batch}: {len(self.rows)} sizes, {fits} "
                f"fit; .table() shows it>")


class Estimate(_Summarised, EstimateFigures):
    """The burden of one model (``burden.estimate``): figures, and the ways to see them."""

    def to_dict(self) -> dict[str, Any]:
        return json_view.estimate_to_dict(self)

    def summary(self) -> str:
        return text_view.summary(self)

    def table(self, fmt: str = "github", depth: int | None = None, columns: list[str] | None = None,
              sort: str | None = None, top: int | None = None, leaves: bool = False) -> str:
        """The per-layer table (tabulate's ``fmt``): modules down to ``depth``, or with ``leaves``
        only those without submodules; ``sort`` by a column, ``top`` rows."""
        return text_view.layer_table(self, fmt=fmt, depth=depth, columns=columns, sort=sort, top=top, leaves=leaves)

    def layers_csv(self, depth: int | None = None, leaves: bool = False) -> str:
        """One CSV row per layer, exact integers."""
        return text_view.layer_csv(self, depth=depth, leaves=leaves)

    @guarded
    def scale(self, scales: Any = None, *, batch_size: int = DEFAULT_SCALE_BATCH,
              trunk: str | None = None) -> ScaleTable:
        """The feature-extraction scale table of the same model (see ``burden.scale``)."""
        if self.source is None:
            raise InputSpecError("this estimate was made from an nn.Module, which it does not keep; "
                                 "call burden.scale(model, ...) with the module")
        figures = analysis.scale_figures(self.source, scales or DEFAULT_SCALES, batch_size, trunk,
                                         DEFAULT_SCALE_BASE, 3, self.dtype, self.convention)
        return ScaleTable(**vars(figures))

    def to_html(self) -> str:
        """A self-contained HTML page: summary, per-layer table, profile charts, uncounted ops."""
        return html_view.estimate_page(self)

    def save_html(self, path: Any) -> None:
        html_view.write_text_atomic(path, self.to_html())

    def _repr_html_(self) -> str:
        return html_view.estimate_fragment(self)

    def __repr__(self) -> str:
        size = "x".join(str(d) for d in self.input)
        return (f"<Estimate {self.model} {size}, batch {self.batch}, {self.dtype}, {self.convention}: "
                f"{fmt_count(self.params)} params ({fmt_bytes(self.param_bytes)}), features "
                f"{fmt_bytes(self.feature_bytes)}, {fmt_flops(self.flops)}; print() or .table() for more>")


class Comparison(_Json, ComparisonFigures):
    """Several estimates under the same settings (``burden.compare``)."""

    def to_dict(self) -> dict[str, Any]:
        return json_view.comparison_to_dict(self)

    def table(self, fmt: str = "github", columns: Sequence[str] | None = None) -> str:
        return text_view.comparison_table(self, fmt=fmt, columns=columns)

    def _repr_html_(self) -> str:
        return self.table(fmt="html")

    def __repr__(self) -> str:
        names = ", ".join(e.model for e in self.estimates)
        return f"<Comparison of {len(self.estimates)} models ({names}); .table() shows it>"


class Fit(_Summarised, FitFigures):
    """The largest batch that fits a memory budget (``burden.fit``)."""

    def to_dict(self) -> dict[str, Any]:
        return json_view.fit_to_dict(self)

    def summary(self) -> str:
        return text_view.fit_summary(self)

    def __repr__(self) -> str:
        return (f"<Fit {self.model}, {self.mode}, budget {fmt_bytes(self.budget_bytes)}: batch {self.max_batch:,} "
                f"peaks at {fmt_bytes(self.peak_bytes)}; print() it for the breakdown>")


class Bench(_Summarised, BenchFigures):
    """Measured forward passes of a model beside its roofline bound (``burden.bench``)."""

    def to_dict(self) -> dict[str, Any]:
        return json_view.bench_to_dict(self)

    def summary(self) -> str:
        return text_view.bench_summary(self)

    def __repr__(self) -> str:
        eff = f", efficiency {self.efficiency:.2f}" if self.efficiency is not None else ""
        return (f"<Bench {self.model}, batch {self.batch} on {self.device}: {self.median_seconds * 1e3:.3g} ms median, "
                f"{self.samples_per_second:,.1f} samples/s{eff}; print() it for each module>")


class Generate(_Summarised, GenerateFigures):
    """A causal language model's ``generate()`` with its KV cache (``burden.generate``)."""

    def to_dict(self) -> dict[str, Any]:
        return json_view.generate_to_dict(self)

    def summary(self) -> str:
        return text_view.generate_summary(self)

    def layers(self, fmt: str = "github") -> str:
        """Each kind of layer (its path with the block numbers as ``*``) in each phase: its roofline
        time and whether it is compute- or memory-bound (with a device profile)."""
        return text_view.generate_layer_table(self, fmt=fmt)

    def to_html(self) -> str:
        """A self-contained HTML page of the generation."""
        return html_view.generate_page(self)

    def save_html(self, path: Any) -> None:
        html_view.write_text_atomic(path, self.to_html())

    def _repr_html_(self) -> str:
        return html_view.generate_fragment(self)

    def __repr__(self) -> str:
        speed = f", {self.tokens_per_second:,.1f} tokens/s" if self.tokens_per_second is not None else ""
        return (f"<Generate {self.model}, batch {self.batch}, {self.prompt:,} + {self.new_tokens:,} tokens, "
                f"{self.dtype}: KV cache {fmt_bytes(self.kv_cache_bytes)}, peak {fmt_bytes(self.peak_bytes)}{speed}; "
                f"print() it for more>")


class GenerateFit(_Summarised, GenerateFitFigures):
    """The largest batch or longest prompt whose generation fits (``burden.fit_generate``)."""

    def to_dict(self) -> dict[str, Any]:
        return json_view.generate_fit_to_dict(self)

    def summary(self) -> str:
        return text_view.generate_fit_summary(self)

    def __repr__(self) -> str:
        what = "batch" if self.search == "batch" else "prompt"
        return (f"<GenerateFit {self.model}, budget {fmt_bytes(self.budget_bytes)}: {what} {self.answer:,} peaks at "
                f"{fmt_bytes(self.peak_bytes)}; print() it for more>")


class GenerateBench(_Summarised, GenerateBenchFigures):
    """A real ``generate()`` timed beside its roofline (``burden.bench_generate``)."""

    def to_dict(self) -> dict[str, Any]:
        return json_view.generate_bench_to_dict(self)

    def summary(self) -> str:
        return text_view.generate_bench_summary(self)

    def __repr__(self) -> str:
        return (f"<GenerateBench {self.model}, batch {self.batch} on {self.device}: first token after "
                f"{self.time_to_first_token_seconds * 1e3:.3g} ms, {self.tokens_per_second:,.1f} tokens/s; print() it "
                f"for the roofline beside it>")


def as_estimate(figures: EstimateFigures) -> Estimate:
    return Estimate(**vars(figures))
