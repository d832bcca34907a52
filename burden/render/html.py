"""HTML views of figures: a self-contained report page per Estimate, a compact fragment for
Jupyter, and the index of several reports (with its Markdown twin).

The templates are Jinja2 files in ``templates/`` (``burden/templates`` inside a wheel), rendered
with autoescape on: every name that comes from a model (module paths, class names, model names,
op names) is escaped wherever it lands, SVG titles included. Geometry is computed here and
written with fixed decimals, so the same figures always give the same bytes. Nothing here counts.
"""

from __future__ import annotations

import functools
import html
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from types import SimpleNamespace

from ..figures import EstimateFigures as Estimate, LayerFigures, ScaleFigures
from ..version import __version__
from .text import COMPARISON_COLUMNS, DEFAULT_COMPARISON, size_label
from .units import BINARY_UNITS, FLOP_UNITS, fmt_bytes, fmt_count, fmt_flops, fmt_shape

if TYPE_CHECKING:
    import jinja2

_PACKAGE = Path(__file__).resolve().parent.parent  # .../burden
# Installed from a wheel, the templates are burden/templates; from a checkout or an editable
# install, the top-level templates/ next to the package.
TEMPLATE_DIRS = (_PACKAGE / "templates", _PACKAGE.parent / "templates")
PAGE_TEMPLATE = "estimate.html.j2"

# The layer table opens with modules down to this depth shown; the reader can expand the rest.
INITIAL_DEPTH = 2

# Chart geometry, in SVG user units (the charts scale to the page width).
_W, _H = 1000, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 74, 10, 12, 178  # plot area: x in [_LEFT, _W - _RIGHT], y in [_TOP, _BOTTOM]
_MAX_CURVE_POINTS = 1200



def template_dir() -> Path:
    """Where the templates are: the installed package's copy first, then the checkout's."""
    for candidate in TEMPLATE_DIRS:
        if (candidate / PAGE_TEMPLATE).is_file():
            return candidate
    raise FileNotFoundError("burden's HTML templates are missing; looked in "
                            + ", ".join(str(c) for c in TEMPLATE_DIRS))


@functools.lru_cache(maxsize=None)
def _environment(directory: str) -> "jinja2.Environment":
    import jinja2

    # HTML is autoescaped; Markdown is not HTML, and its cells are escaped by the md filter instead.
    # "grouped" (digits in groups of three), not "count": Jinja has a builtin of that name.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(directory), autoescape=_is_html, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters.update(bytes=fmt_bytes, flops=fmt_flops, grouped=fmt_count, shape=fmt_shape, md=_markdown_cell)
    return env


def _is_html(template_name: str | None) -> bool:
    return not (template_name or "").endswith(".md.j2")


def environment() -> "jinja2.Environment":
    return _environment(str(template_dir()))


def _render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(version=__version__, **context)


# --------------------------------------------------------------------------------------------
# numbers and shapes


def _num(value: float) -> str:
    """A coordinate with at most two decimals and no float noise: 12.5, 3, 0.25."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _numel(shape: Any) -> int:
    """Elements of an output shape (nested outputs summed); -1 when the module never ran."""
    if shape is None:
        return -1
    if isinstance(shape, dict):
        return sum(max(_numel(v), 0) for v in shape.values())
    if isinstance(shape, (list, tuple)):
        if all(isinstance(d, int) for d in shape):
            return math.prod(shape)
        return sum(max(_numel(s), 0) for s in shape)
    return 0


def _spaced_shape(shape: Any) -> str:
    return fmt_shape(shape).replace("x", " x ")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}" if whole else "-"


# --------------------------------------------------------------------------------------------
# the module tree


def _parents(layers: Sequence[LayerFigures]) -> list[int]:
    """Index of each module's parent in ``layers`` (-1 for the root, or when no ancestor ran)."""
    index = {r.name: i for i, r in enumerate(layers)}
    parents = []
    for r in layers:
        parent = -1
        if r.name:
            path = r.name
            while "." in path:
                path = path.rsplit(".", 1)[0]
                if path in index:
                    parent = index[path]
                    break
            else:
                parent = index.get("", -1)
        parents.append(parent)
    return parents


def _layer_rows(e: Estimate) -> list[dict[str, Any]]:
    parents = _parents(e.layers)
    has_children = [False] * len(e.layers)
    for p in parents:
        if p >= 0:
            has_children[p] = True
    rows = []
    for i, r in enumerate(e.layers):
        prefix, _, last = r.name.rpartition(".")
        rows.append({
            "i": i, "parent": parents[i], "depth": r.depth, "name": r.name, "has_children": has_children[i],
            "prefix": prefix + "." if prefix else "", "last": last if r.name else "(model)",
            "type": r.type, "shape": fmt_shape(r.output_shape), "numel": _numel(r.output_shape),
            "params": r.params, "param_bytes": r.param_bytes, "feature_bytes": r.feature_bytes, "flops": r.flops,
            "pct": _pct(r.flops, e.flops),
            "bar": _num(min(100.0, 100 * r.flops / e.flops)) if e.flops else "0",
        })
    return rows


def chart_units(e: Estimate) -> list[int]:
    """The bars of the profile charts: indices into ``e.layers`` of every module with figures of
    its own (leaf layers, and a block's own ops such as its residual sum), in execution order: a
    block's own ops come after its submodules. Their own figures add up to the model's totals."""
    parents = _parents(e.layers)
    children: dict[int, list[int]] = {i: [] for i in range(-1, len(e.layers))}
    for i, p in enumerate(parents):
        children[p].append(i)
    order: list[int] = []
    stack: list[tuple[int, bool]] = [(i, False) for i in reversed(children[-1])]
    while stack:  # post-order without recursion: deep models stay safe
        i, done = stack.pop()
        if done:
            r = e.layers[i]
            if r.self_param_bytes or r.self_feature_bytes or r.self_flops:
                order.append(i)
            continue
        stack.append((i, True))
        stack.extend((c, False) for c in reversed(children[i]))
    return order


# --------------------------------------------------------------------------------------------
# charts


def _ticks(vmax: float, base: int, units: Sequence[str]) -> tuple[float, list[tuple[float, str]]]:
    """A rounded axis top and its labelled ticks, in the unit that suits ``vmax``."""
    if vmax <= 0:
        return 1.0, [(0.0, "0")]
    k = 0
    while k < len(units) - 1 and vmax >= base ** (k + 1):
        k += 1
    scaled = vmax / base ** k
    raw = scaled / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    count = math.ceil(scaled / step - 1e-9)
    ticks = []
    for j in range(count + 1):
        value = round(j * step, 10)
        ticks.append((value * base ** k, "0" if j == 0 else f"{value:g} {units[k]}"))
    return count * step * base ** k, ticks


def _axis(top: float, ticks: list[tuple[float, str]]) -> list[dict[str, str]]:
    span = _BOTTOM - _TOP
    return [{"y": _num(_BOTTOM - span * v / top), "label": label} for v, label in ticks]


_METRICS: tuple[tuple[str, str, str, Callable[[LayerFigures], int], Callable[[int], str], int, Sequence[str]], ...] = (
    ("param_bytes", "Parameter memory", "param", lambda r: r.self_param_bytes, fmt_bytes, 1024, BINARY_UNITS),
    ("feature_bytes", "Feature memory", "feature", lambda r: r.self_feature_bytes, fmt_bytes, 1024, BINARY_UNITS),
    ("flops", "FLOPs", "flops", lambda r: r.self_flops, fmt_flops, 1000, FLOP_UNITS),
)


def _bands(e: Estimate, units: list[int], parents: list[int], x0: float, width: float) -> list[dict[str, Any]]:
    """Shaded spans of the top-level modules (depth 1) the bars belong to, labelled where they fit."""
    def top(i: int) -> int:
        while parents[i] >= 0 and e.layers[parents[i]].depth >= 1:
            i = parents[i]
        return i if e.layers[i].depth >= 1 else -1

    spans: list[list[int]] = []  # [module, first unit, last unit]
    for k, i in enumerate(units):
        t = top(i)
        if spans and spans[-1][0] == t:
            spans[-1][2] = k
        else:
            spans.append([t, k, k])
    if len([s for s in spans if s[0] >= 0]) < 2:
        return []
    bands = []
    for n, (t, first, last) in enumerate(spans):
        if t < 0:
            continue
        x = x0 + first * width
        w = (last - first + 1) * width
        label = e.layers[t].name
        bands.append({"x": _num(x), "w": _num(w), "cx": _num(x + w / 2), "shade": n % 2 == 0,
                      "label": label if w >= 6.2 * len(label) + 8 else "", "name": label,
                      "edge": _num(x)})
    return bands


def profile_charts(e: Estimate) -> list[dict[str, Any]]:
    """Bar charts of parameter memory, feature memory and FLOPs along depth, one bar per chart unit."""
    units = chart_units(e)
    parents = _parents(e.layers)
    has_children = set(p for p in parents if p >= 0)
    n = max(len(units), 1)
    width = (_W - _LEFT - _RIGHT) / n
    gap = min(width * 0.18, 1.0) if width > 2.5 else 0.0
    bands = _bands(e, units, parents, _LEFT, width)
    charts = []
    for key, title, css, own, fmt, base, unit_names in _METRICS:
        values = [own(e.layers[i]) for i in units]
        total = sum(values)
        top, ticks = _ticks(max(values, default=0), base, unit_names)
        bars = []
        for k, (i, v) in enumerate(zip(units, values)):
            if not v:
                continue
            r = e.layers[i]
            h = max((_BOTTOM - _TOP) * v / top, 0.6)
            label = (r.name or "(model)") + (" (own ops)" if i in has_children else "")
            bars.append({"x": _num(_LEFT + k * width), "y": _num(_BOTTOM - h), "w": _num(max(width - gap, 0.3)),
                         "h": _num(h), "v": v,
                         "title": f"{label} · {r.type}: {fmt(v)} ({_pct(v, total)}% of the total)"})
        charts.append({"key": key, "title": title, "css": css, "total": fmt(total), "bars": bars,
                       "axis": _axis(top, ticks), "bands": bands, "units": len(units)})
    return charts


def _peak_label(peak_op: Any) -> str:
    """``peak_op`` as text: a string as it is, or an object with ``op`` (and ``module``)."""
    if peak_op is None:
        return ""
    op = getattr(peak_op, "op", None)
    if op is None:
        return str(peak_op)
    module = getattr(peak_op, "module", None)
    return str(op) if module is None else f"{op} in {module or '(model)'}"


def memory_chart(memory: Any) -> dict[str, Any] | None:
    """A line chart of live feature memory after each op, with the peak marked. ``memory`` is any
    object with ``curve`` (ints), ``peak_feature_bytes`` (int) and ``peak_op``: a string, or an
    object with ``op``, ``module`` and ``index`` (the op's position in the curve)."""
    if memory is None:
        return None
    curve = [int(v) for v in memory.curve]
    peak = int(memory.peak_feature_bytes)
    n = len(curve)
    top, ticks = _ticks(max(curve + [peak], default=0), 1024, BINARY_UNITS)
    span = _BOTTOM - _TOP
    plot_w = _W - _LEFT - _RIGHT

    def xy(i: int, v: int) -> tuple[str, str]:
        x = _LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)
        return _num(x), _num(_BOTTOM - span * v / top)

    if n > _MAX_CURVE_POINTS:  # keep each bucket's highest point, so no peak is shaved off
        points: list[tuple[int, int]] = []
        per = n / _MAX_CURVE_POINTS
        for b in range(_MAX_CURVE_POINTS):
            lo, hi = int(b * per), max(int((b + 1) * per), int(b * per) + 1)
            j = max(range(lo, min(hi, n)), key=lambda q: (curve[q], -q))
            points.append((j, curve[j]))
    else:
        points = list(enumerate(curve))
    coords = [xy(i, v) for i, v in points]
    line = " ".join(f"{'M' if k == 0 else 'L'}{x} {y}" for k, (x, y) in enumerate(coords))
    area = f"{line} L{coords[-1][0]} {_BOTTOM} L{coords[0][0]} {_BOTTOM} Z" if coords else ""
    chart: dict[str, Any] = {"line": line, "area": area, "axis": _axis(top, ticks), "ops": n, "peak": fmt_bytes(peak),
                             "peak_bytes": peak, "peak_op": _peak_label(memory.peak_op), "marker": None}
    if n:
        at = getattr(memory.peak_op, "index", None)
        if not isinstance(at, int) or not 0 <= at < n:
            at = curve.index(max(curve))
        px, py = xy(at, peak)
        right = float(px) < _LEFT + plot_w * 0.7
        chart["marker"] = {"x": px, "y": py, "index": at, "anchor": "start" if right else "end",
                           "tx": _num(float(px) + (8 if right else -8)), "ty": _num(max(float(py) - 6, _TOP + 10))}
    return chart


# --------------------------------------------------------------------------------------------
# tables


def _scale_rows(t: "ScaleFigures") -> list[dict[str, Any]]:
    rows = []
    for r in t.rows:
        row = {"scale": f"{r.scale:g}", "input": size_label(r.input), "fits": r.fits, "error": r.error}
        if r.fits:
            row.update(output=_spaced_shape(r.output_shape[1:]), feature_bytes=r.feature_bytes, flops=r.flops)
        rows.append(row)
    return rows


def _conventions(e: Estimate) -> dict[str, Any]:
    return {"name": e.convention, "summary": e.convention_summary, "rules": list(e.rules),
            "memory": {"name": e.memory_convention, "summary": e.memory_summary}}


def _command(e: Estimate) -> str | None:
    """The command line that prints the same figures, when the model is a name the CLI can load."""
    if not isinstance(e.source, str):
        return None
    parts = ["burden estimate", e.source, "--input", "x".join(str(d) for d in e.input)]
    if e.batch != 1:
        parts += ["--batch", str(e.batch)]
    if e.dtype != "float32":
        parts += ["--dtype", e.dtype]
    if e.convention != "convnet-burden":
        parts += ["--convention", e.convention]
    if e.memory_convention != "convnet-burden":  # every convention's own memory rules
        parts += ["--memory", e.memory_convention]
    return " ".join(parts + ["--layers"])


def _summary(e: Estimate) -> dict[str, Any]:
    return {"model": e.model, "input": list(e.input), "batch": e.batch, "dtype": e.dtype,
            "convention": e.convention, "memory_convention": getattr(e, "memory_convention", None),
            "params": e.params, "param_bytes": e.param_bytes, "feature_bytes": e.feature_bytes, "flops": e.flops}


# --------------------------------------------------------------------------------------------
# public API


def estimate_page(e: Estimate, *, scale: "ScaleFigures | None" = None, memory: Any = None) -> str:
    """The self-contained HTML report of one estimate: summary, counting rules, the optional
    feature-extraction scale table, profile charts, the optional live-memory curve, the
    collapsible and sortable per-layer table, and the uncounted ops. No network needed.
    Without ``memory``, the live-memory curve is the estimate's own."""
    rows = _layer_rows(e)
    if memory is None and e.live_curve:
        memory = SimpleNamespace(peak_feature_bytes=e.peak_feature_bytes, peak_op=e.peak_op, curve=e.live_curve)
    return _render(
        PAGE_TEMPLATE, e=e, input=" x ".join(str(d) for d in e.input), conv=_conventions(e),
        rows=rows, max_depth=max((r["depth"] for r in rows), default=0), initial_depth=INITIAL_DEPTH,
        charts=profile_charts(e), scale=scale, scale_rows=_scale_rows(scale) if scale is not None else [],
        memory=memory_chart(memory), command=_command(e), summary=_summary(e), W=_W, H=_H, LEFT=_LEFT,
        RIGHT=_RIGHT, TOP=_TOP, BOTTOM=_BOTTOM,
    )


def estimate_fragment(e: Estimate) -> str:
    """Compact HTML for Jupyter: the summary and the depth-1 layer table. No script."""
    rows = [r for r in _layer_rows(e) if r["depth"] == 1]
    return _render("fragment.html.j2", e=e, input=" x ".join(str(d) for d in e.input), rows=rows,
                   conv=_conventions(e))


def _index_rows(estimates: Sequence[Estimate], pages: Sequence[str]) -> list[dict[str, Any]]:
    flops_max = max((e.flops for e in estimates), default=0)
    rows = []
    for e, page in zip(estimates, pages):
        cells = {k: COMPARISON_COLUMNS[k][1](e) for k in DEFAULT_COMPARISON}
        rows.append({"page": page, "cells": cells, "e": e,
                     "bar": _num(100 * e.flops / flops_max) if flops_max else "0"})
    return rows


def _settings(estimates: Sequence[Estimate]) -> dict[str, Any]:
    """The settings the estimates share, to name them once above the table."""
    first = estimates[0] if estimates else None

    def shared(attr: str) -> Any:
        values = [getattr(e, attr, None) for e in estimates]
        return values[0] if values and all(v == values[0] for v in values) else None

    return {"input": (" x ".join(str(d) for d in first.input) if first and shared("input") else None),
            "batch": shared("batch"), "dtype": shared("dtype"), "convention": shared("convention")}


def index_page(estimates: Sequence[Estimate], pages: Sequence[str], *, command: str | None = None) -> str:
    """The comparison table of several estimates, each model linking to its page (relative URL)."""
    if len(estimates) != len(pages):
        raise ValueError("one page per estimate")
    conv = _conventions(estimates[0]) if estimates else None
    return _render("index.html.j2", rows=_index_rows(estimates, pages), columns=DEFAULT_COMPARISON,
                   headers={k: COMPARISON_COLUMNS[k][0] for k in DEFAULT_COMPARISON}, settings=_settings(estimates),
                   conv=conv, command=command)


def index_markdown(estimates: Sequence[Estimate], pages: Sequence[str], *, command: str | None = None) -> str:
    """The same comparison table in Markdown, each model linking to its page."""
    if len(estimates) != len(pages):
        raise ValueError("one page per estimate")
    return _render("readme.md.j2", rows=_index_rows(estimates, pages), columns=DEFAULT_COMPARISON,
                   headers={k: COMPARISON_COLUMNS[k][0] for k in DEFAULT_COMPARISON}, settings=_settings(estimates),
                   command=command)


def _markdown_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell or link text: Markdown's own characters escaped, and
    HTML's as entities, since Markdown passes raw HTML through."""
    out = html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "[]`*":
        out = out.replace(ch, "\\" + ch)
    return out


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` all at once: a temporary file in the same folder, then
    ``os.replace``. An interrupted write leaves no half file, and an existing file is only ever
    replaced whole. Parent folders are created; the file gets the usual permissions (umask)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target
