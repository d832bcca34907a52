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

from ..figures import EstimateFigures as Estimate, GenerateFigures, LayerFigures, ScaleFigures
from ..version import __version__
from .json import TRAINING_KEYS, generate_to_dict, latency_to_dict
from .phases import layer_kinds
from .text import COMPARISON_COLUMNS, DEFAULT_COMPARISON, size_label, training_step_words
from .units import BINARY_UNITS, FLOP_UNITS, fmt_bytes, fmt_count, fmt_flops, fmt_rate, fmt_seconds, fmt_shape

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
    env.filters.update(bytes=fmt_bytes, flops=fmt_flops, grouped=fmt_count, shape=fmt_shape, md=_markdown_cell,
                       step_words=training_step_words,
                       seconds=fmt_seconds)
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
            "type": r.type, "details": r.details, "shape": fmt_shape(r.output_shape),
            "numel": _numel(r.output_shape), "calls": _call_shapes(r), "shared": r.shared_params,
            "params": r.params, "param_bytes": r.param_bytes, "feature_bytes": r.feature_bytes, "flops": r.flops,
            "pct": _pct(r.flops, e.flops),
            "bar": _num(min(100.0, 100 * r.flops / e.flops)) if e.flops else "0",
            "time": _time_cell(e, r.name),
        })
    return rows


def _time_cell(e: Estimate, name: str) -> dict[str, Any] | None:
    t = e.latency.layer(name) if e.latency is not None else None
    if t is None:
        return None
    # the table sorts numbers as exact integers: picoseconds keep every time apart
    return {"seconds": round(t.predicted_seconds * 1e12), "text": fmt_seconds(t.predicted_seconds),
            "bound": t.bound or "-",
            "intensity": "-" if t.intensity is None else f"{t.intensity:.3g}"}


_MAX_CALL_SHAPES = 8  # per-call shapes listed in a cell; the rest are counted


def _call_shapes(r: LayerFigures) -> dict[str, Any] | None:
    """A module called more than once: how many calls, and each call's output shape (or one
    shape, when every call gave the same). None for a module called once."""
    shapes = [fmt_shape(s) for s in r.call_output_shapes]
    if len(shapes) < 2:
        return None
    same = len(set(shapes)) == 1
    listed = [] if same else shapes[1:_MAX_CALL_SHAPES]
    return {"count": len(shapes), "same": same, "later": listed, "more": 0 if same else len(shapes) - 1 - len(listed),
            "all": "; ".join(f"call {k + 1}: {x}" for k, x in enumerate(shapes))}


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


# The profile charts draw at most about this many bars: deeper modules are summed into their
# ancestor at the chart depth. Below this width (user units) a slot makes the chart scroll.
MAX_BARS = 60
_MIN_SLOT = 5.0
_LABEL_ROW = 13  # height of a row of span labels under a chart
_CHAR_W = 6.0  # an estimate of a label character's width at 10.5px


def _label_rows(items: Sequence[tuple[float, str]], lo: float, hi: float,
                rows: int = 3) -> list[tuple[float, int, str]]:
    """Place labels centred at ``x`` under an axis: each in the first row where it overlaps no
    label placed before it, kept inside [lo, hi]. Returns (x, row, anchor) per label; row -1 when
    it fits nowhere (the span's title still names it)."""
    placed: list[list[tuple[float, float]]] = [[] for _ in range(rows)]
    out = []
    for x, text in items:
        half = (_CHAR_W * len(text) + 6) / 2
        cx = min(max(x, lo + half), hi - half)
        for row in range(rows):
            if all(cx + half + 4 <= a or cx - half - 4 >= b for a, b in placed[row]):
                placed[row].append((cx - half, cx + half))
                out.append((cx, row, text))
                break
        else:
            out.append((cx, -1, text))
    return out


def _ancestor_at(e: Estimate, parents: list[int], i: int, depth: int) -> int:
    """``i`` itself when it is at ``depth`` or above; else its ancestor at ``depth`` (or the
    nearest above it, when no module at that depth ran)."""
    while e.layers[i].depth > depth and parents[i] >= 0 and e.layers[parents[i]].depth >= depth:
        i = parents[i]
    return i


def _groups(e: Estimate, units: list[int], parents: list[int], depth: int) -> list[tuple[int, list[int]]]:
    """The chart units summed by their module at ``depth``: (that module, its units), in order.
    A module's descendants are contiguous in the units (post-order), so each module is one group."""
    groups: list[tuple[int, list[int]]] = []
    for i in units:
        key = _ancestor_at(e, parents, i, depth)
        if groups and groups[-1][0] == key:
            groups[-1][1].append(i)
        else:
            groups.append((key, [i]))
    return groups


def default_chart_depth(e: Estimate) -> int:
    """The deepest module depth at which the profile charts have at most ``MAX_BARS`` bars (1 when
    even the top-level modules are more)."""
    units = chart_units(e)
    parents = _parents(e.layers)
    deepest = max((e.layers[i].depth for i in units), default=1)
    for depth in range(max(deepest, 1), 0, -1):
        if len(_groups(e, units, parents, depth)) <= MAX_BARS:
            return depth
    return 1


def _top(e: Estimate, parents: list[int], i: int) -> int:
    """The depth-1 module ``i`` belongs to; -1 for the model's own ops."""
    while parents[i] >= 0 and e.layers[parents[i]].depth >= 1:
        i = parents[i]
    return i if e.layers[i].depth >= 1 else -1


def _bands(e: Estimate, keys: list[int], parents: list[int], x0: float, width: float,
           right: float) -> tuple[list[dict[str, Any]], int]:
    """Shaded spans of the top-level modules (depth 1) the bars belong to, each labelled under the
    chart (in a second or third row where a narrow span's label would overlap its neighbour's).
    Returns the bands and the number of label rows used."""
    spans: list[list[int]] = []  # [module, first slot, last slot]
    for k, i in enumerate(keys):
        t = _top(e, parents, i)
        if spans and spans[-1][0] == t:
            spans[-1][2] = k
        else:
            spans.append([t, k, k])
    if len([s for s in spans if s[0] >= 0]) < 2:
        return [], 0
    bands = []
    for n, (t, first, last) in enumerate(spans):
        if t < 0:
            continue
        x = x0 + first * width
        w = (last - first + 1) * width
        bands.append({"x": _num(x), "w": _num(w), "cx": x + w / 2, "shade": n % 2 == 0, "name": e.layers[t].name})
    placed = _label_rows([(b["cx"], b["name"]) for b in bands], x0, right)
    for b, (cx, row, _) in zip(bands, placed):
        b.update(label=b["name"] if row >= 0 else "", lx=_num(cx), row=row, ly=_BOTTOM + 17 + max(row, 0) * _LABEL_ROW,
                 tick=row > 0, cx=_num(b["cx"]))
    rows = max((b["row"] for b in bands), default=0) + 1
    return bands, rows


def profile_charts(e: Estimate, chart_depth: int | None = None) -> list[dict[str, Any]]:
    """Bar charts of parameter memory, feature memory and FLOPs along depth. One bar per module at
    ``chart_depth`` (default: ``default_chart_depth``), holding all of its submodules' figures; a
    module above that depth with figures of its own (a block's residual sum) gets its own bar. The
    bars of each chart add up to the model's total. Each bar has a slot of at least ``_MIN_SLOT``
    units: a chart with more bars than fit is wider than the page, and scrolls."""
    if chart_depth is None:
        chart_depth = default_chart_depth(e)
    if chart_depth < 1:
        raise ValueError(f"chart_depth must be 1 or more, got {chart_depth}")
    units = chart_units(e)
    parents = _parents(e.layers)
    has_children = set(p for p in parents if p >= 0)
    groups = _groups(e, units, parents, chart_depth)
    n = max(len(groups), 1)
    plot_w = max(_W - _LEFT - _RIGHT, n * _MIN_SLOT)
    chart_w = _LEFT + plot_w + _RIGHT
    width = plot_w / n
    gap = min(width * 0.22, 4.0) if width > 2.5 else 0.0
    bands, label_rows = _bands(e, [g[0] for g in groups], parents, _LEFT, width, _LEFT + plot_w)
    height = _BOTTOM + 24 + _LABEL_ROW * max(label_rows - 1, 0)
    charts = []
    for key, title, css, own, fmt, base, unit_names in _METRICS:
        values = [sum(own(e.layers[i]) for i in members) for _, members in groups]
        total = sum(values)
        top, ticks = _ticks(max(values, default=0), base, unit_names)
        bars = []
        for k, ((g, members), v) in enumerate(zip(groups, values)):
            if not v:
                continue
            r = e.layers[g]
            own_only = g in has_children and all(m == g for m in members)
            label = (r.name or "(model)") + (" (own ops)" if own_only else "")
            h = max((_BOTTOM - _TOP) * v / top, 0.6)
            bars.append({"x": _num(_LEFT + k * width + gap / 2), "y": _num(_BOTTOM - h),
                         "w": _num(max(width - gap, 0.3)), "h": _num(h), "v": v, "name": r.name,
                         "own": own_only, "title": f"{label} · {r.type}: {fmt(v)} ({_pct(v, total)}% of the total)"})
        charts.append({"key": key, "title": title, "css": css, "total": fmt(total), "bars": bars,
                       "axis": _axis(top, ticks), "bands": bands, "units": len(units), "slots": len(groups),
                       "width": _num(chart_w), "height": height, "right": _num(_LEFT + plot_w),
                       "wide": chart_w > _W, "depth": chart_depth})
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
                             "peak_bytes": peak, "peak_op": _peak_label(memory.peak_op), "marker": None,
                             "stages": [], "height": _BOTTOM + 24}
    stages = [(int(i), str(m)) for i, m in getattr(memory, "stages", ()) or () if 0 <= int(i) < n]
    if n > 1 and len(stages) > 1:  # the x axis marked by stage: the depth-1 module each run of ops is in
        bands = []
        for k, (start, module) in enumerate(stages):
            end = stages[k + 1][0] if k + 1 < len(stages) else n - 1
            x0, x1 = float(xy(start, 0)[0]), float(xy(end, 0)[0])
            bands.append({"x": _num(x0), "w": _num(max(x1 - x0, 0.5)), "cx": (x0 + x1) / 2, "name": module,
                          "first": start + 1, "last": max(end if k + 1 < len(stages) else n, start + 1),
                          "shade": k % 2 == 0, "edge": k > 0})
        named = [b for b in bands if b["name"]]
        for b, (cx, row, _) in zip(named, _label_rows([(b["cx"], b["name"]) for b in named], _LEFT, _W - _RIGHT)):
            b.update(label=b["name"] if row >= 0 else "", lx=_num(cx), ly=_BOTTOM + 17 + max(row, 0) * _LABEL_ROW,
                     row=row)
        for b in bands:
            b.setdefault("label", "")
            b["cx"] = _num(b["cx"])
        chart["stages"] = bands
        rows = max((b.get("row", 0) for b in bands), default=0) + 1
        chart["height"] = _BOTTOM + 24 + _LABEL_ROW * max(rows - 1, 0)
    if n:
        at = getattr(memory.peak_op, "index", None)
        if not isinstance(at, int) or not 0 <= at < n:
            at = curve.index(max(curve))
        px, py = xy(at, peak)
        right = float(px) < _LEFT + plot_w * 0.7
        chart["marker"] = {"x": px, "y": py, "index": at, "anchor": "start" if right else "end",
                           "tx": _num(float(px) + (8 if right else -8)), "ty": _num(max(float(py) - 6, _TOP + 10))}
    return chart


def fit_chart(f: Any) -> dict[str, Any] | None:
    """Peak against batch size (``FitFigures``): the peaks burden traced or predicted around the
    answer, the line through them, the budget, and the largest batch under it."""
    if f is None or not f.around:
        return None
    points = sorted((p.batch, p.peak_bytes, p.traced, p.fits) for p in f.around)
    bmax = max(b for b, *_ in points)
    top, ticks = _ticks(max([v for _, v, *_ in points] + [f.budget_bytes]) * 1.05, 1024, BINARY_UNITS)
    span, plot_w = _BOTTOM - _TOP, _W - _LEFT - _RIGHT

    def x(b: float) -> float:
        return _LEFT + plot_w * b / bmax

    def y(v: float) -> float:
        return _BOTTOM - span * v / top

    dots = [{"x": _num(x(b)), "y": _num(y(v)), "batch": b, "peak": fmt_bytes(v), "traced": traced,
             "fits": fits} for b, v, traced, fits in points]
    line = " ".join(f"{'M' if k == 0 else 'L'}{d['x']} {d['y']}" for k, d in enumerate(dots))
    # the answer's neighbours are a pixel apart: label the answer, not them
    xticks = sorted({0, f.max_batch, bmax} | {b for b, *_ in points if abs(b - f.max_batch) > 1})
    return {"line": line, "dots": dots, "axis": _axis(top, ticks), "budget_y": _num(y(f.budget_bytes)),
            "budget": fmt_bytes(f.budget_bytes), "answer_x": _num(x(f.max_batch)) if f.max_batch else None,
            "xticks": [{"x": _num(x(b)), "label": f"{b:,}"} for b in xticks], "height": _BOTTOM + 30}


_RW, _RH = 1000, 420  # the roofline chart
_RLEFT, _RRIGHT, _RTOP, _RBOTTOM = 84, 24, 16, 370


def _decades(lo: float, hi: float) -> tuple[int, int]:
    return math.floor(math.log10(lo)), math.ceil(math.log10(hi))


def roofline_chart(e: Estimate) -> dict[str, Any] | None:
    """Each layer without submodules, at its arithmetic intensity (FLOPs per byte, x) and the
    FLOP/s it attains at its predicted time (y), under the device's roofs (log-log)."""
    lat = e.latency
    if lat is None:
        return None
    inner = set(_parents(e.layers))  # every module some other module sits in
    leaves = [t for i, t in enumerate(lat.layers) if i not in inner and t.name and t.flops and t.bytes_moved
              and t.predicted_seconds]
    if not leaves:
        return None
    ridge = lat.peak_flops / lat.bandwidth
    xs = [t.flops / t.bytes_moved for t in leaves] + [ridge]
    ys = [t.flops / t.predicted_seconds for t in leaves] + [lat.peak_flops]
    x0, x1 = _decades(min(xs) / 1.5, max(xs) * 1.5)
    y0, y1 = _decades(min(ys) / 1.5, lat.peak_flops * 1.5)
    plot_w, plot_h = _RW - _RLEFT - _RRIGHT, _RBOTTOM - _RTOP

    def x(v: float) -> float:
        return _RLEFT + plot_w * (math.log10(v) - x0) / (x1 - x0)

    def y(v: float) -> float:
        return _RBOTTOM - plot_h * (math.log10(v) - y0) / (y1 - y0)

    def roof(bandwidth: float) -> str:
        # the bandwidth slope up to where it meets the peak, then the peak
        knee = lat.peak_flops / bandwidth
        start = 10 ** x0
        if bandwidth * start > lat.peak_flops:
            return f"M{_num(x(start))} {_num(y(lat.peak_flops))} L{_num(x(10 ** x1))} {_num(y(lat.peak_flops))}"
        low = max(bandwidth * start, 10 ** y0)
        return (f"M{_num(x(low / bandwidth))} {_num(y(low))} L{_num(x(knee))} {_num(y(lat.peak_flops))} "
                f"L{_num(x(10 ** x1))} {_num(y(lat.peak_flops))}")

    points = [{"x": _num(x(t.flops / t.bytes_moved)), "y": _num(y(t.flops / t.predicted_seconds)), "name": t.name,
               "bound": t.bound, "intensity": f"{t.flops / t.bytes_moved:.3g}",
               "attained": fmt_rate(t.flops / t.predicted_seconds, "FLOP/s"),
               "time": fmt_seconds(t.predicted_seconds)} for t in leaves]
    return {
        "points": points, "memory_roof": roof(lat.bandwidth),
        "cache_roof": roof(lat.cache_bandwidth) if lat.cache_bytes and lat.cache_bandwidth > lat.bandwidth else None,
        "xticks": [{"x": _num(x(10.0 ** k)), "label": f"{10.0 ** k:g}"} for k in range(x0, x1 + 1)],
        "yticks": [{"y": _num(y(10.0 ** k)), "label": fmt_rate(10.0 ** k, "FLOP/s")} for k in range(y0, y1 + 1)],
        "peak_y": _num(y(lat.peak_flops)), "peak": fmt_rate(lat.peak_flops, "FLOP/s"),
        "bandwidth": fmt_rate(lat.bandwidth, "B/s"), "cache_bandwidth": fmt_rate(lat.cache_bandwidth, "B/s"),
        "cache_bytes": fmt_bytes(lat.cache_bytes), "ridge": f"{ridge:.3g}",
        "W": _RW, "H": _RH, "LEFT": _RLEFT, "RIGHT": _RW - _RRIGHT, "TOP": _RTOP, "BOTTOM": _RBOTTOM,
        "compute": sum(p["bound"] == "compute" for p in points), "memory": sum(p["bound"] == "memory" for p in points),
    }


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
    t = e.training
    if t is not None:
        parts += ["--mode", "training", "--optimizer", t.optimizer.lower()]
        if t.optimizer_impl and t.optimizer_impl != "single":
            parts += ["--optimizer-impl", t.optimizer_impl]
        if t.grad_accum > 1:
            parts += ["--grad-accum", str(t.grad_accum)]
    if e.latency is not None:
        parts += ["--device-profile", e.latency.profile]
    return " ".join(parts + ["--layers"])


def _summary(e: Estimate) -> dict[str, Any]:
    out = {"model": e.model, "input": list(e.input), "batch": e.batch, "dtype": e.dtype,
           "convention": e.convention, "memory_convention": getattr(e, "memory_convention", None),
           "params": e.params, "param_bytes": e.param_bytes, "feature_bytes": e.feature_bytes, "flops": e.flops,
           "peak_feature_bytes": e.peak_feature_bytes, "input_bytes": e.input_bytes, "peak_bytes": e.peak_bytes,
           "mode": e.mode,
           "bytes_moved": e.bytes_moved, "latency": latency_to_dict(e.latency)}
    t = e.training
    if t is not None:
        out["training"] = {**{k: getattr(t, k) for k in TRAINING_KEYS}, "input_bytes": t.input_bytes,
                           "forward_flops": t.forward_flops, "checkpointed": list(t.checkpointed)}
    return out


def _peak(e: Estimate) -> dict[str, Any] | None:
    """The inference peak in words: where live feature memory is highest."""
    if e.peak_op is None and not e.peak_bytes:
        return None
    where = None
    if e.peak_op is not None:
        where = {"op": e.peak_op.op, "module": e.peak_op.module or "(model)", "index": e.peak_op.index}
    return {"bytes": e.peak_bytes, "features": e.peak_feature_bytes, "where": where}


_MiB = 2 ** 20


def reference_figures(e: Estimate) -> dict[str, Any] | None:
    """The published figures for the model beside burden's, at the reference's rounding; None
    when there are none for this model (only registered names are looked up)."""
    from ..models import reference as ref

    figures = ref.reference_for(e.source)
    if figures is None:
        return None
    same = tuple(e.input) == ref.INPUT and e.batch == ref.BATCH and e.dtype == ref.DTYPE
    rows = []
    for what, exact, shown, published, unit in (
            ("Parameter memory", e.param_bytes, fmt_bytes(e.param_bytes), figures["param_mb"], "MB"),
            ("Feature memory", e.feature_bytes, fmt_bytes(e.feature_bytes), figures["feature_mb"], "MB"),
            ("FLOPs", e.flops, fmt_flops(e.flops), figures["gflops"], "GFLOPs")):
        rounded = round(exact / (1e9 if unit == "GFLOPs" else _MiB))
        rows.append({"what": what, "exact": exact, "burden": shown, "rounded": f"{rounded} {unit}",
                     "reference": f"{published} {unit}", "agree": rounded == published})
    return {"model": figures["model"], "rows": rows, "applies": same, "source": ref.SOURCE,
            "short": ref.SOURCE_SHORT, "input": " x ".join(str(d) for d in ref.INPUT[1:]), "batch": ref.BATCH,
            "dtype": ref.DTYPE,
            "cell": " / ".join(r["reference"] for r in rows)}


# --------------------------------------------------------------------------------------------
# public API


def estimate_page(e: Estimate, *, scale: "ScaleFigures | None" = None, memory: Any = None,
                  chart_depth: int | None = None, fit: Any = None) -> str:
    """The self-contained HTML report of one estimate: summary (with the inference peak, and the
    training step when there is one), counting rules, the published reference figures when the
    model has some, the optional feature-extraction scale table, profile charts (one bar per
    module at ``chart_depth``, default: the depth with at most ``MAX_BARS`` bars), the live-memory
    curve marked by stage, the searchable, collapsible and sortable per-layer table, and the
    uncounted ops. No network needed. Without ``memory``, the live-memory curve is the estimate's own.
    With ``fit`` (``FitFigures``), a "what fits" section charts the peak against the batch size
    with the budget line."""
    rows = _layer_rows(e)
    if memory is None and e.live_curve:
        memory = SimpleNamespace(peak_feature_bytes=e.peak_feature_bytes, peak_op=e.peak_op, curve=e.live_curve,
                                 stages=e.live_stages)
    charts = profile_charts(e, chart_depth)
    return _render(
        PAGE_TEMPLATE, e=e, input=" x ".join(str(d) for d in e.input), conv=_conventions(e),
        rows=rows, max_depth=max((r["depth"] for r in rows), default=0), initial_depth=INITIAL_DEPTH,
        charts=charts, chart_depth=charts[0]["depth"], scale=scale,
        scale_rows=_scale_rows(scale) if scale is not None else [], memory=memory_chart(memory),
        command=_command(e), summary=_summary(e), peak=_peak(e), reference=reference_figures(e), W=_W, H=_H,
        LEFT=_LEFT, RIGHT=_RIGHT, TOP=_TOP, BOTTOM=_BOTTOM, max_bars=MAX_BARS, fit=fit, fit_chart=fit_chart(fit),
        roofline=roofline_chart(e), latency=e.latency,
    )


def estimate_fragment(e: Estimate) -> str:
    """Compact HTML for Jupyter: the summary (inference peak, training step, notes) and the
    depth-1 layer table. No script."""
    rows = [r for r in _layer_rows(e) if r["depth"] == 1]
    return _render("fragment.html.j2", e=e, input=" x ".join(str(d) for d in e.input), rows=rows,
                   conv=_conventions(e), peak=_peak(e))


def _generation_context(g: GenerateFigures) -> dict[str, Any]:
    phases = [("prefill", g.prefill)] + ([("last decode step", g.decode)] if g.decode is not None else [])
    return {"g": g, "context": g.cached_tokens, "phases": phases, "kinds": layer_kinds(g),
            "reserved": max(p.reserved_bytes for _, p in phases) if g.context_bytes else 0}


def generate_command(g: GenerateFigures) -> str:
    """The command line that prints the same figures (for a model given by name or config)."""
    parts = ["burden generate", g.model, "--prompt", str(g.prompt), "--new-tokens", str(g.new_tokens)]
    if g.batch != 1:
        parts += ["--batch", str(g.batch)]
    parts += ["--dtype", g.dtype]
    if g.convention != "convnet-burden":
        parts += ["--convention", g.convention]
    if g.cache != "dynamic":
        parts += ["--cache", g.cache]
    if g.context_bytes:
        parts += ["--target", "cuda"]
    if g.prefill.latency is not None:
        parts += ["--device-profile", g.prefill.latency.profile]
    return " ".join(parts)


def generate_page(g: GenerateFigures) -> str:
    """The self-contained HTML report of a generation: the cache, each phase's peak, FLOPs and
    time, and each kind of layer's bound in each phase. No script, no network."""
    return _render("generate.html.j2", summary=generate_to_dict(g), command=generate_command(g),
                   **_generation_context(g))


def generate_fragment(g: GenerateFigures) -> str:
    """Compact HTML of a generation for Jupyter."""
    return _render("generate_fragment.html.j2", **_generation_context(g))


def _settings(estimates: Sequence[Estimate]) -> dict[str, Any]:
    """The settings the estimates share, to name them once above the table."""
    first = estimates[0] if estimates else None

    def shared(attr: str) -> Any:
        values = [getattr(e, attr, None) for e in estimates]
        return values[0] if values and all(v == values[0] for v in values) else None

    return {"input": (" x ".join(str(d) for d in first.input) if first and shared("input") else None),
            "batch": shared("batch"), "dtype": shared("dtype"), "convention": shared("convention"),
            "mode": shared("mode") if any(e.training is not None for e in estimates) else None}


# extra columns of the index, after the comparison table's: (key, header, value), shown when any
# estimate has the figure
_INDEX_EXTRAS: tuple[tuple[str, str, Callable[[Estimate], str | None]], ...] = (
    ("peak_bytes", "inference peak", lambda e: fmt_bytes(e.peak_bytes) if e.peak_op is not None else None),
    ("training_peak", "training peak",
     lambda e: f"{fmt_bytes(e.training.training_peak_bytes)}" if e.training is not None else None),
    ("optimizer", "optimizer", lambda e: e.training.optimizer if e.training is not None else None),
    ("step_flops", "step FLOPs",
     lambda e: fmt_flops(e.training.forward_flops + e.training.backward_flops) if e.training is not None else None),
    ("predicted", "predicted time",
     lambda e: f"{fmt_seconds(e.latency.predicted_seconds)} ({e.latency.profile})" if e.latency is not None else None),
)


def _index_table(estimates: Sequence[Estimate], pages: Sequence[str]) -> dict[str, Any]:
    """The index's columns (the comparison table's, the peaks, the published reference) and rows."""
    flops_max = max((e.flops for e in estimates), default=0)
    extras = [(k, h, f) for k, h, f in _INDEX_EXTRAS if any(f(e) is not None for e in estimates)]
    refs = [reference_figures(e) for e in estimates]
    refs = [r if r is not None and r["applies"] else None for r in refs]
    columns = list(DEFAULT_COMPARISON) + [k for k, _, _ in extras] + (["reference"] if any(refs) else [])
    headers = {k: COMPARISON_COLUMNS[k][0] for k in DEFAULT_COMPARISON}
    headers.update({k: h for k, h, _ in extras})
    headers["reference"] = "reference: param / feature / FLOPs"
    rows = []
    for e, page, ref in zip(estimates, pages, refs):
        cells = {k: COMPARISON_COLUMNS[k][1](e) for k in DEFAULT_COMPARISON}
        cells.update({k: f(e) or "-" for k, _, f in extras})
        cells["reference"] = ref["cell"] if ref else "-"
        rows.append({"page": page, "cells": cells, "e": e, "ref": ref,
                     "bar": _num(100 * e.flops / flops_max) if flops_max else "0"})
    source = next((r for r in refs if r), None)
    return {"rows": rows, "columns": columns, "headers": headers, "reference": source}


# the index's chart of the models, in SVG user units
_SW, _SH = 1000, 430
_SL, _SR, _ST, _SB = 84, 30, 18, 370  # plot area: x in [_SL, _SW - _SR], y in [_ST, _SB]
_R_MAX, _R_MIN = 26.0, 4.0


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def models_chart(estimates: Sequence[Estimate], pages: Sequence[str]) -> dict[str, Any] | None:
    """The models as markers: FLOPs along x, parameter memory along y, marker area proportional to
    feature memory; each labelled with its name (placed where it overlaps no other label or
    marker) and linking to its page."""
    if not estimates:
        return None
    xtop, xticks = _ticks(max(e.flops for e in estimates), 1000, FLOP_UNITS)
    ytop, yticks = _ticks(max(e.param_bytes for e in estimates), 1024, BINARY_UNITS)
    fmax = max(max(e.feature_bytes for e in estimates), 1)
    pw, ph = _SW - _SL - _SR, _SB - _ST
    marks = []
    for e, page in zip(estimates, pages):
        x = _SL + pw * e.flops / xtop
        y = _SB - ph * e.param_bytes / ytop
        r = max(_R_MAX * math.sqrt(e.feature_bytes / fmax), _R_MIN)
        marks.append({"x": x, "y": y, "r": r, "e": e, "page": page})
    boxes = [(m["x"] - m["r"], m["y"] - m["r"], m["x"] + m["r"], m["y"] + m["r"]) for m in marks]
    placed: list[tuple[float, float, float, float]] = []
    order = sorted(range(len(marks)), key=lambda k: (marks[k]["x"], marks[k]["y"], k))
    for k in order:
        m = marks[k]
        w = 6.6 * len(m["e"].model) + 4
        x, y, r = m["x"], m["y"], m["r"]
        candidates = []
        for dy in (0, -1, 1, -2, 2, -3, 3):
            candidates += [(x + r + 6, y + 4 + dy * 15, "start"), (x - r - 6, y + 4 + dy * 15, "end")]
        candidates[2:2] = [(x, y - r - 7, "middle"), (x, y + r + 15, "middle")]
        best = None
        for tx, ty, anchor in candidates:
            left = tx if anchor == "start" else tx - w if anchor == "end" else tx - w / 2
            box = (left, ty - 11, left + w, ty + 3)
            inside = box[0] >= _SL - 4 and box[2] <= _SW - 2 and box[1] >= 0 and box[3] <= _SB - 2
            others = [b for j, b in enumerate(boxes) if j != k]
            if inside and not any(_overlaps(box, b) for b in placed + others):
                best = (tx, ty, anchor, box)
                break
        if best is None:
            tx, ty, anchor = candidates[0]
            best = (tx, ty, anchor, (tx, ty - 11, tx + w, ty + 3))
        placed.append(best[3])
        leader = best[2] == "start" and abs(best[1] - 4 - y) > r or best[2] == "end" and abs(best[1] - 4 - y) > r
        m.update(tx=_num(best[0]), ty=_num(best[1]), anchor=best[2], leader=leader,
                 lx=_num(best[0] - 2 if best[2] == "start" else best[0] + 2), ly=_num(best[1] - 4))
    out = []
    for m in marks:
        e = m["e"]
        out.append({"x": _num(m["x"]), "y": _num(m["y"]), "r": _num(m["r"]), "page": m["page"], "model": e.model,
                    "tx": m["tx"], "ty": m["ty"], "anchor": m["anchor"], "leader": m["leader"], "lx": m["lx"],
                    "ly": m["ly"], "flops": e.flops, "param_bytes": e.param_bytes, "feature_bytes": e.feature_bytes,
                    "title": f"{e.model}: {fmt_flops(e.flops)}, {fmt_bytes(e.param_bytes)} of parameters, "
                             f"{fmt_bytes(e.feature_bytes)} of features"})
    span = pw
    xaxis = [{"x": _num(_SL + span * v / xtop), "label": label} for v, label in xticks]
    yaxis = [{"y": _num(_SB - ph * v / ytop), "label": label} for v, label in yticks]
    return {"marks": out, "xaxis": xaxis, "yaxis": yaxis, "W": _SW, "H": _SH, "L": _SL, "R": _SW - _SR, "T": _ST,
            "B": _SB, "largest": fmt_bytes(max(e.feature_bytes for e in estimates)),
            "xtitle_y": _SB + 40, "ytitle_x": 16, "cx": _num(_SL + pw / 2), "cy": _num(_ST + ph / 2)}


def index_page(estimates: Sequence[Estimate], pages: Sequence[str], *, command: str | None = None) -> str:
    """The comparison table of several estimates, each model linking to its page (relative URL),
    with their peaks (and training step), the published reference figures where there are some,
    and a chart of the models: FLOPs against parameter memory, marker area = feature memory."""
    if len(estimates) != len(pages):
        raise ValueError("one page per estimate")
    conv = _conventions(estimates[0]) if estimates else None
    return _render("index.html.j2", table=_index_table(estimates, pages), settings=_settings(estimates),
                   conv=conv, command=command, chart=models_chart(estimates, pages))


def index_markdown(estimates: Sequence[Estimate], pages: Sequence[str], *, command: str | None = None) -> str:
    """The same comparison table in Markdown, each model linking to its page."""
    if len(estimates) != len(pages):
        raise ValueError("one page per estimate")
    return _render("readme.md.j2", table=_index_table(estimates, pages), settings=_settings(estimates),
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
