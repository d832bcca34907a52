"""Plain-text views of an Estimate: the short summary and the per-layer table (tabulate)."""

from __future__ import annotations

import shutil
import textwrap
from typing import Callable, Sequence

from .. import rulebook
from ..devices import DeviceProfile
from ..errors import InputSpecError
from ..figures import BenchFigures, ComparisonFigures as Comparison, EstimateFigures as Estimate, FitFigures
from ..figures import GenerateBenchFigures, GenerateFigures, GenerateFitFigures, GenerationPhase
from ..figures import CheckReport, LayerFigures, ShardedFigures, TrainingFigures
from ..figures import ScaleFigures as ScaleTable
from .phases import layer_kinds
from .units import fmt_bytes, fmt_count, fmt_flops, fmt_rate, fmt_seconds, fmt_shape



def _aligned(rows: Sequence[tuple[str, str]]) -> str:
    """Key-value lines, the values in one column."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def summary(e: Estimate) -> str:
    rows = [
        ("model", e.model),
        ("input", " x ".join(str(d) for d in e.input)),
        ("batch", str(e.batch)),
        ("dtype", e.dtype if e.amp is None else f"{e.dtype} weights, {e.amp} autocast (torch.autocast's CPU policy; "
                                                 f"features at their own sizes)"),
        ("convention", e.convention if e.memory_convention == "convnet-burden"
         else f"{e.convention} (memory: {e.memory_convention})"),
        ("params", fmt_count(e.params)),
        ("param memory", fmt_bytes(e.param_bytes)),
        ("feature memory", fmt_bytes(e.feature_bytes)),
        ("FLOPs", fmt_flops(e.flops)),
        ("bytes moved", f"{fmt_bytes(e.bytes_moved)} read and written by the ops"),
    ]
    if e.device != "meta":
        rows.insert(4, ("traced on", e.device))
    rows += [("note", note) for note in e.notes]
    if e.accounting:
        rows.append(("peaks counted", e.accounting))
    if e.peak_op is not None:
        where = e.peak_op.module or "the model's own forward"
        rows.append(("peak features", f"{fmt_bytes(e.peak_feature_bytes)} at {where} ({e.peak_op.op})"))
        rows.append(("input batch", f"{fmt_bytes(e.input_bytes)} (held through the pass)"))
        rows.append(("inference peak", f"{fmt_bytes(e.peak_bytes)} (parameters and buffers + input batch + "
                                       f"peak features)"))
        rows += reserved_rows(e.reserved_bytes, e.context_bytes)
    if e.uncounted_ops:
        rows.append(("uncounted ops", ", ".join(f"{u.op} x{u.calls}" for u in e.uncounted_ops)))
    rows += latency_rows(e)
    t = e.training
    if t is not None:
        rows += [
            ("training step", training_step_words(t)),
            ("backward from", t.loss),
            ("gradients", fmt_bytes(t.gradient_bytes)),
            ("optimizer state", f"{fmt_bytes(t.optimizer_bytes)} (as its own first step made it)"),
            ("saved activations", fmt_bytes(t.saved_activation_bytes)),
            ("phase peaks", f"forward {fmt_bytes(t.forward_peak_bytes)}, backward {fmt_bytes(t.backward_peak_bytes)}, "
                            f"optimizer step {fmt_bytes(t.optimizer_step_peak_bytes)}"),
            ("training peak", f"{fmt_bytes(t.training_peak_bytes)} in the {t.peak_phase}: "
                              + ", ".join(f"{what} {fmt_bytes(n)}" for what, n in t.peak_parts if n)),
            *reserved_rows(t.reserved_bytes, e.context_bytes),
            ("backward FLOPs", fmt_flops(t.backward_flops)),
            ("step FLOPs", f"{fmt_flops(t.forward_flops + t.backward_flops)} (forward in training mode "
                           f"+ backward{', every micro-batch' if t.grad_accum > 1 else ''}; the optimizer's "
                           f"arithmetic not counted)"),
        ]
        if t.checkpointed:
            rows += [("checkpointed", ", ".join(t.checkpointed)),
                     ("without it", f"{fmt_bytes(t.unchecked_peak_bytes)} training peak: checkpointing saves "
                                    f"{fmt_bytes(t.unchecked_peak_bytes - t.training_peak_bytes)}"),
                     ("recompute", f"{fmt_flops(t.recompute_flops)} (in the backward FLOPs), peak "
                                   f"{fmt_bytes(t.recompute_peak_bytes)} live while it runs")]
        if t.backward_uncounted_ops:
            rows.append(("uncounted backward", ", ".join(f"{u.op} x{u.calls}" for u in t.backward_uncounted_ops)))
        rows += sharding_rows(t.sharding)
    return _aligned(rows)


def sharding_rows(s: ShardedFigures | None) -> list[tuple[str, str]]:
    """The plan a rank was traced under, and what its collectives moved in the step."""
    if s is None:
        return []
    rows = [("sharded", f"{s.plan} (PyTorch's own parallel code, fake tensors and process group); the figures "
                        f"above are this rank's")]
    rows += [(f"  {c.kind}", f"{c.calls:,} calls: {fmt_bytes(c.sent_bytes)} sent from, {fmt_bytes(c.received_bytes)} "
                             f"received into its buffers; {fmt_bytes(c.wire_bytes)} on the wire (ring)")
             for c in s.collectives]
    if s.communication_seconds is not None:
        rows.append(("communication", f"{s.communication_seconds * 1e3:,.2f} ms per step at the profile's "
                                      f"interconnect (ring; not overlapped with compute)"))
    return rows


def reserved_rows(reserved: int, context: int) -> list[tuple[str, str]]:
    """On the CUDA target: what the caching allocator reserves, and the card it takes with the context."""
    if not reserved:
        return []
    return [("reserved", f"{fmt_bytes(reserved)} by the caching allocator (max_memory_reserved, simulated); with the "
                         f"{fmt_bytes(context)} CUDA context, {fmt_bytes(reserved + context)} of the card")]


def training_step_words(t: "TrainingFigures") -> str:
    """The step in words: the optimizer and its implementation, and the micro-batches."""
    impl = {"single": "single-tensor", "foreach": "foreach", "fused": "fused"}.get(t.optimizer_impl)
    accumulation = f"{t.grad_accum} micro-batches of gradient accumulation, then " if t.grad_accum > 1 else ""
    return (f"{accumulation}{t.optimizer}{f' ({impl})' if impl else ''} step, then zero_grad(set_to_none=True); "
            f"its state from the step before")


def latency_rows(e: Estimate) -> list[tuple[str, str]]:
    """The roofline prediction's lines of the summary (none without a device profile)."""
    lat = e.latency
    if lat is None:
        return []
    threads = f", {lat.threads} CPU threads" if lat.threads else ""
    cache = (f", {fmt_rate(lat.cache_bandwidth, 'B/s')} up to {fmt_bytes(lat.cache_bytes)} moved"
             if lat.cache_bytes else "")
    rows = [("device profile", lat.device),
            ("roofs", f"{fmt_rate(lat.peak_flops, 'FLOP/s')} {lat.dtype}{threads}; {fmt_rate(lat.bandwidth, 'B/s')} "
                      f"memory{cache}"),
            ("predicted time", f"{fmt_seconds(lat.predicted_seconds)} for batch {lat.batch} "
                               f"({lat.bound}-bound: {fmt_seconds(lat.compute_seconds)} in compute-bound ops, "
                               f"{fmt_seconds(lat.memory_seconds)} in memory-bound ones)"),
            ("throughput", f"{lat.samples_per_second:,.1f} samples/s at most"),
            ("real FLOPs", f"{fmt_flops(lat.flops)} (roofline convention), {lat.flops / lat.bytes_moved:.1f} "
                           f"FLOPs per byte moved" if lat.bytes_moved else fmt_flops(lat.flops)),
            ("what it is", "a roofline lower bound on time, not a promise: each op at the device's peak or "
                           "bandwidth, whichever binds; `burden bench` measures the real time")]
    if lat.uncounted_ops:
        rows.append(("no FLOP rule", ", ".join(f"{u.op} x{u.calls}" for u in lat.uncounted_ops)
                     + " (their bytes count)"))
    return rows


def _time(r: LayerFigures, e: Estimate) -> object:
    """The layer's roofline record, or None without a device profile."""
    return e.latency.layer(r.name) if e.latency is not None else None


# column key -> (header, value for display, value for sorting)
COLUMNS: dict[str, tuple[str, Callable[[LayerFigures, Estimate], str], Callable[[LayerFigures, Estimate], object]]] = {
    "name": ("name", lambda r, e: r.name or "(model)", lambda r, e: r.name),
    "type": ("type", lambda r, e: r.type, lambda r, e: r.type),
    "depth": ("depth", lambda r, e: str(r.depth), lambda r, e: r.depth),
    "details": ("details", lambda r, e: r.details, lambda r, e: r.details),
    "output_shape": ("output shape", lambda r, e: _call_shapes(r), lambda r, e: fmt_shape(r.output_shape)),
    "params": ("params", lambda r, e: _params(r), lambda r, e: r.params),
    "param_bytes": ("param mem", lambda r, e: fmt_bytes(r.param_bytes), lambda r, e: r.param_bytes),
    "feature_bytes": ("feature mem", lambda r, e: fmt_bytes(r.feature_bytes), lambda r, e: r.feature_bytes),
    "flops": ("FLOPs", lambda r, e: fmt_flops(r.flops), lambda r, e: r.flops),
    "flops_pct": ("% FLOPs", lambda r, e: f"{100 * r.flops / e.flops:.2f}" if e.flops else "-", lambda r, e: r.flops),
    "self_flops": ("own FLOPs", lambda r, e: fmt_flops(r.self_flops), lambda r, e: r.self_flops),
    "self_feature_bytes": ("own feature mem", lambda r, e: fmt_bytes(r.self_feature_bytes),
                           lambda r, e: r.self_feature_bytes),
    "bytes_moved": ("bytes moved", lambda r, e: fmt_bytes(r.bytes_moved), lambda r, e: r.bytes_moved),
    "predicted": ("predicted", lambda r, e: fmt_seconds(getattr(_time(r, e), "predicted_seconds", None)),
                  lambda r, e: getattr(_time(r, e), "predicted_seconds", 0.0)),
    "bound": ("bound", lambda r, e: getattr(_time(r, e), "bound", "") or "-",
              lambda r, e: getattr(_time(r, e), "bound", "")),
    "intensity": ("FLOPs/byte", lambda r, e: _intensity(_time(r, e)),
                  lambda r, e: getattr(_time(r, e), "intensity", None) or 0.0),
}
LATENCY_COLUMNS = ("predicted", "bound")


def _intensity(t: object) -> str:
    value = getattr(t, "intensity", None)
    return "-" if value is None else f"{value:.1f}"
DEFAULT_COLUMNS = ("name", "type", "details", "output_shape", "params", "param_bytes", "feature_bytes", "flops",
                   "flops_pct")


def _call_shapes(r: LayerFigures) -> str:
    """The output shape; for a module called more than once, each call's, or one shape and the count."""
    shapes = [fmt_shape(s) for s in r.call_output_shapes] or [fmt_shape(r.output_shape)]
    if len(shapes) == 1:
        return shapes[0]
    if len(set(shapes)) == 1:
        return f"{shapes[0]} (x{len(shapes)} calls)"
    return "; ".join(shapes)


def _params(r: LayerFigures) -> str:
    """The parameter count, marked where some of the layer's own parameters are tied to (and counted
    at) an earlier layer."""
    return f"{fmt_count(r.params)} (+{fmt_count(r.shared_params)} tied)" if r.shared_params else fmt_count(r.params)


def select_layers(e: Estimate, depth: int | None = None, sort: str | None = None,
                  top: int | None = None, leaves: bool = False) -> list[LayerFigures]:
    """The model's modules in execution order, down to ``depth`` (or only those without submodules,
    with ``leaves``), optionally sorted (largest first)."""
    if depth is not None and depth < 0:
        raise InputSpecError(f"depth must be 0 or more, got {depth}")
    parents = {r.name.rsplit(".", 1)[0] if "." in r.name else "" for r in e.layers if r.name}
    rows = [r for r in e.layers if r.depth > 0 and (depth is None or r.depth <= depth)
            and not (leaves and r.name in parents)]
    if sort is not None:
        if sort not in COLUMNS:
            raise InputSpecError(f"unknown sort column {sort!r}; choose one of {', '.join(COLUMNS)}")
        key = COLUMNS[sort][2]
        rows.sort(key=lambda r: key(r, e), reverse=sort not in ("name", "type", "output_shape", "bound"))
    if top is not None:
        if top <= 0:
            raise InputSpecError(f"top must be positive, got {top}")
        rows = rows[:top]
    return rows


def layer_table(e: Estimate, fmt: str = "github", depth: int | None = None,
                columns: Sequence[str] | None = None, sort: str | None = None, top: int | None = None,
                leaves: bool = False) -> str:
    keys = list(columns or DEFAULT_COLUMNS + (LATENCY_COLUMNS if e.latency is not None else ()))
    unknown = [k for k in keys if k not in COLUMNS]
    if unknown:
        raise InputSpecError(f"unknown column {unknown[0]!r}; choose from {', '.join(COLUMNS)}")
    rows = [[COLUMNS[k][1](r, e) for k in keys] for r in select_layers(e, depth, sort, top, leaves)]
    total = {"name": "total", "params": fmt_count(e.params), "param_bytes": fmt_bytes(e.param_bytes),
             "feature_bytes": fmt_bytes(e.feature_bytes), "flops": fmt_flops(e.flops), "flops_pct": "100.00",
             "bytes_moved": fmt_bytes(e.bytes_moved)}
    if e.latency is not None:
        total.update(predicted=fmt_seconds(e.latency.predicted_seconds), bound=e.latency.bound,
                     intensity=_intensity(e.latency.layer("")))
    rows.append([total.get(k, "") for k in keys])
    numeric = {"params", "param_bytes", "feature_bytes", "flops", "flops_pct", "self_flops", "self_feature_bytes",
               "bytes_moved", "predicted", "intensity"}
    align = ["right" if k in numeric else "left" for k in keys]
    return _tabulate(rows, [COLUMNS[k][0] for k in keys], fmt, align)


def _tabulate(rows: list[list[str]], headers: list[str], fmt: str, align: list[str]) -> str:
    from tabulate import tabulate, tabulate_formats

    if fmt not in tabulate_formats:
        raise InputSpecError(f"unknown table format {fmt!r}; choose one of {', '.join(tabulate_formats)}")
    return tabulate(rows, headers=headers, tablefmt=fmt, colalign=align, disable_numparse=True)


def size_label(shape: Sequence[int]) -> str:
    """The reference table's way: ``224 x 224`` for an image, the whole shape otherwise."""
    dims = list(shape)
    return " x ".join(str(d) for d in (dims[-2:] if len(dims) == 3 else dims)) or "-"


COMPARISON_COLUMNS: dict[str, tuple[str, Callable[[Estimate], str]]] = {
    "model": ("model", lambda e: e.model),
    "input": ("input size", lambda e: size_label(e.input)),
    "batch": ("batch", lambda e: str(e.batch)),
    "params": ("params", lambda e: fmt_count(e.params)),
    "param_bytes": ("param memory", lambda e: fmt_bytes(e.param_bytes)),
    "feature_bytes": ("feature memory", lambda e: fmt_bytes(e.feature_bytes)),
    "flops": ("FLOPs", lambda e: fmt_flops(e.flops)),
    "predicted": ("predicted time", lambda e: fmt_seconds(e.latency.predicted_seconds) if e.latency else "-"),
    "predicted_rate": ("samples/s at most", lambda e: f"{e.latency.samples_per_second:,.1f}" if e.latency else "-"),
}
DEFAULT_COMPARISON = ("model", "input", "params", "param_bytes", "feature_bytes", "flops")


def comparison_table(c: Comparison, fmt: str = "github", columns: Sequence[str] | None = None) -> str:
    with_latency = any(e.latency is not None for e in c.estimates)
    keys = list(columns or DEFAULT_COMPARISON + (("predicted", "predicted_rate") if with_latency else ()))
    unknown = [k for k in keys if k not in COMPARISON_COLUMNS]
    if unknown:
        raise InputSpecError(f"unknown column {unknown[0]!r}; choose from {', '.join(COMPARISON_COLUMNS)}")
    rows = [[COMPARISON_COLUMNS[k][1](e) for k in keys] for e in c.estimates]
    align = ["left" if k in ("model", "input") else "right" for k in keys]
    headers = [COMPARISON_COLUMNS[k][0] for k in keys]
    if c.benches:  # measured on this machine
        for row, b in zip(rows, c.benches):
            row += [fmt_seconds(b.median_seconds), f"{b.samples_per_second:,.1f}",
                    "-" if b.efficiency is None else f"{b.efficiency:.2f}"]
        headers += ["measured time", "measured samples/s", "efficiency"]
        align += ["right", "right", "right"]
    if c.fits:  # ranked by the largest batch that fits the budget
        budget = fmt_bytes(c.fits[0].budget_bytes)
        order = sorted(range(len(rows)), key=lambda i: -c.fits[i].max_batch)
        rows = [rows[i] + [f"{c.fits[i].max_batch:,}", fmt_bytes(c.fits[i].peak_bytes)] for i in order]
        headers += [f"batch in {budget}", "its peak"]
        align += ["right", "right"]
    return _tabulate(rows, headers, fmt, align)


def layer_csv(e: Estimate, depth: int | None = None, leaves: bool = False) -> str:
    """One row per layer with exact integers (the JSON layer keys), for spreadsheets and papers."""
    import csv
    import io

    from .json import LAYER_KEYS

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LAYER_KEYS)
    for r in [next(x for x in e.layers if x.name == "")] + select_layers(e, depth, leaves=leaves):
        row = []
        for k in LAYER_KEYS:
            v = getattr(r, k)
            row.append(fmt_shape(v) if k == "output_shape" else "; ".join(fmt_shape(s) for s in v)
                       if k == "call_output_shapes" else v)
        writer.writerow(row)
    return buf.getvalue()


def summary_table(e: Estimate, fmt: str = "github") -> str:
    """The summary as a two-column table (Markdown and the other tabulate formats)."""
    rows = [line.split("  ", 1) for line in summary(e).splitlines()]
    return _tabulate([[k.strip(), v.strip()] for k, v in rows], ["figure", "value"], fmt, ["left", "left"])


def comparison_csv(c: Comparison) -> str:
    """CSV keeps exact integers: bytes and FLOPs, not rounded units."""
    import csv
    import io

    from .json import COMPARISON_KEYS

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fitted = ("budget_bytes", "max_batch", "fit_peak_bytes") if c.fits else ()
    timed = ("predicted_seconds",) if any(e.latency is not None for e in c.estimates) else ()
    measured = ("median_seconds", "samples_per_second", "efficiency") if c.benches else ()
    writer.writerow(COMPARISON_KEYS + ("convention",) + fitted + timed + measured)
    for i, e in enumerate(c.estimates):
        extra = [c.fits[i].budget_bytes, c.fits[i].max_batch, c.fits[i].peak_bytes] if c.fits else []
        extra += [e.latency.predicted_seconds if e.latency else None] if timed else []
        extra += [c.benches[i].median_seconds, c.benches[i].samples_per_second, c.benches[i].efficiency] if measured \
            else []
        writer.writerow(["x".join(map(str, v)) if isinstance(v := getattr(e, k), tuple) else v
                         for k in COMPARISON_KEYS] + [e.convention] + extra)
    return buf.getvalue()


def scale_table(t: ScaleTable, fmt: str = "github") -> str:
    rows = []
    for r in t.rows:
        if r.fits:
            rows.append([size_label(r.input), fmt_shape(r.output_shape[1:]).replace("x", " x "),
                         fmt_bytes(r.feature_bytes), fmt_flops(r.flops)])
        else:
            rows.append([size_label(r.input), "does not fit", "-", "-"])
    return _tabulate(rows, ["input size", f"{t.trunk} output", f"feature memory (batch {t.batch})",
                            f"FLOPs (batch {t.batch})"], fmt, ["left", "left", "right", "right"])


def check_report(r: CheckReport, max_differences: int = 20) -> str:
    lines = [f"model {r.model}, input {' x '.join(map(str, r.input))}, batch {r.batch}", ""]
    rows = []
    for c in r.checks:
        verdict = "-" if c.equals is None else ("equal" if c.agrees else "DIFFERENT")
        rows.append([c.convention, fmt_count(c.flops), c.equals or "(claims no tool)",
                     "-" if c.tool_flops is None else fmt_count(c.tool_flops), verdict])
    lines.append(_tabulate(rows, ["convention", "burden FLOPs", "claims to equal", "tool FLOPs", "verdict"],
                           "simple", ["left", "right", "left", "right", "left"]))
    lines.append("")
    lines.extend(f"{t.tool}: {fmt_count(t.total)} FLOPs in total" for t in r.tools)
    for c in r.checks:
        if c.differences:
            lines += ["", f"{c.convention}: {len(c.differences)} modules differ from {c.equals}"]
            rows = [[name or "(model)", fmt_count(ours), fmt_count(theirs), fmt_count(ours - theirs)]
                    for name, ours, theirs in c.differences[:max_differences]]
            lines.append(_tabulate(rows, ["module", "burden", "tool", "difference"], "simple",
                                   ["left", "right", "right", "right"]))
    lines += ["", "all claimed equalities hold" if r.ok else "a claimed equality does NOT hold"]
    return "\n".join(lines)


def conventions_text(width: int | None = None) -> str:
    """Every convention and its rules, wrapped to ``width`` columns (default: the terminal's)."""
    width = max(60, width or shutil.get_terminal_size().columns)
    what_width = 28
    blocks = []

    def rules_table(rules: tuple[tuple[str, str], ...], headers: tuple[str, str] = ("op", "FLOPs")) -> str:
        rows = [[textwrap.fill(what, what_width), textwrap.fill(how, width - what_width - 2)] for what, how in rules]
        return _tabulate(rows, list(headers), "simple", ["left", "left"])

    for i, (name, words) in enumerate(rulebook.FLOPS.items()):
        head = textwrap.fill(f"{name}{' (default)' if i == 0 else ''}: {words.summary}", width)
        blocks.append(head + "\n" + rules_table(words.rules))
        if name == "convnet-burden":
            blocks.append(textwrap.fill(f"{name}, training (--mode training): the forward rules above, and these for "
                                        f"the ops autograd runs in backward", width) + "\n"
                          + rules_table(rulebook.BACKWARD))
    memory = [textwrap.fill(f"{n}: {summary}", width, initial_indent="  ", subsequent_indent="    ")
              for n, summary in rulebook.MEMORY.items()]
    blocks.append("memory conventions (--memory):\n" + "\n".join(memory))

    blocks.append(textwrap.fill("bytes moved (every estimate; the roofline's other half):", width) + "\n"
                  + rules_table(rulebook.TRAFFIC, ("what", "bytes")))
    blocks.append(textwrap.fill("predicted time (--device-profile; the FLOPs of the roofline convention above):",
                                width) + "\n" + rules_table(rulebook.LATENCY, ("what", "time")))
    return "\n\n".join(blocks)


def fit_summary(f: FitFigures) -> str:
    """The answer, what the peak holds, and the peaks around it."""
    impl = f" ({f.optimizer_impl})" if f.optimizer_impl else ""
    what = f"training step, optimizer {f.optimizer}{impl}" if f.mode == "training" else "inference"
    if f.grad_accum > 1:
        what += f", {f.grad_accum} micro-batches per step"
    rows = [("model", f.model), ("input", " x ".join(str(d) for d in f.input) or "as given"),
            ("dtype", f.dtype if f.amp is None else f"{f.dtype} weights, {f.amp} autocast"),
            ("mode", what + (f", checkpointing {', '.join(f.checkpointed)}" if f.checkpointed else "")),
            ("budget", fmt_bytes(f.budget_bytes)),
            ("largest batch", f"{f.max_batch:,}" if f.max_batch else "none: even batch 1 does not fit")]
    if f.max_batch and (f.grad_accum > 1 or "ZeRO" in f.accounting or f.sharding is not None):
        rows.append(("effective batch", f"{f.effective_batch:,} samples per optimizer step (the batch above is per "
                                        f"device and micro-batch)"))
    if f.max_batch:
        phase = f", in the {f.peak_phase}" if f.peak_phase else ""
        rows += [("peak", f"{fmt_bytes(f.peak_bytes)} at batch {f.max_batch:,} "
                          f"({f.peak_bytes / f.budget_bytes:.1%} of the budget{phase})"),
                 ("next", f"{fmt_bytes(f.next_peak_bytes)} at batch {f.max_batch + 1:,}: over the budget")]
        rows += [(f"  {part}", fmt_bytes(nbytes)) for part, nbytes in f.breakdown if nbytes]
        rows += reserved_rows(f.reserved_bytes, f.context_bytes)
    rows += [("note", note) for note in f.notes]
    if f.accounting:
        rows.append(("peaks counted", f.accounting))
    rows += sharding_rows(f.sharding)
    if f.max_batch:
        how = "the answer and the answer + 1 to confirm" if f.traces <= 3 else "then refined and confirmed"
        rows.append(("traces", f"{f.traces}: batch 1 to predict, {how}"))
    lines = _aligned(rows).splitlines()
    table = [[f"{p.batch:,}", fmt_bytes(p.peak_bytes), "yes" if p.fits else "no",
              "traced" if p.traced else "predicted"] for p in f.around]
    return "\n".join(lines) + "\n\n" + _tabulate(table, ["batch", "peak", "fits", "from"], "simple",
                                                  ["right", "right", "left", "left"])


def generate_summary(g: GenerateFigures) -> str:
    """A generation: the weights, the cache, each phase's peak, FLOPs and time, and the run's peak."""
    steps = "the prefill makes the one new token" if g.decode is None else \
        f"a prefill, then {g.new_tokens - 1} decode steps"
    rows = [("model", g.model), ("batch", f"{g.batch} sequence{'s' if g.batch > 1 else ''}"),
            ("tokens", f"{g.prompt:,} of prompt + {g.new_tokens:,} new ({steps})"),
            ("dtype", g.dtype), ("convention", g.convention),
            ("params", fmt_count(g.params)), ("weights", fmt_bytes(g.param_bytes)),
            ("prompt", f"{fmt_bytes(g.input_bytes)} (ids and attention mask, held)"),
            ("KV cache", f"{fmt_bytes(g.kv_cache_bytes)} at the end, {g.cached_tokens:,} tokens of each sequence "
                         f"({fmt_bytes(g.kv_cache_bytes_per_token)} a token; {g.cache} cache)"),
            ("prefill", _phase_words(g.prefill, "")),
            ("last decode", _phase_words(g.decode, " per step") if g.decode is not None else "none: one new token"),
            ("peak", f"{fmt_bytes(g.peak_bytes)} (the higher of the two)")]
    phases = [p for p in (g.prefill, g.decode) if p is not None]
    if g.context_bytes and any(p.reserved_bytes for p in phases):
        reserved = max(p.reserved_bytes for p in phases)
        rows += reserved_rows(reserved, g.context_bytes)
    if g.time_to_first_token_seconds is not None:
        rows += [("time to first token", f"{fmt_seconds(g.time_to_first_token_seconds)} at least (the prefill's "
                                         f"roofline)"),
                 ("time per token", f"{fmt_seconds(g.seconds_per_output_token)} at least (the last step's)"),
                 ("throughput", f"{g.tokens_per_second:,.1f} tokens/s at most, over the batch")]
        for name, phase in (("prefill", g.prefill), ("decode", g.decode)):
            if phase is not None and phase.latency is not None:
                rows.append((f"{name} bound", _bounds(g, name)))
    if g.accounting:
        rows.append(("peaks counted", g.accounting))
    rows += [("note", note) for note in g.notes]
    return _aligned(rows)


def _phase_words(phase: GenerationPhase, each: str) -> str:
    return (f"peak {fmt_bytes(phase.peak_bytes)}, {fmt_flops(phase.flops)}{each}, "
            f"{fmt_bytes(phase.bytes_moved)} moved{each}")


def _bounds(g: GenerateFigures, phase: str) -> str:
    """Which kinds of layer are compute-bound in a phase, and the time of each bound."""
    latency = getattr(g, phase).latency
    compute = [k.kind.rsplit(".", 1)[-1] for k in layer_kinds(g)
               if getattr(k, phase) is not None and getattr(k, phase).bound == "compute"]
    kinds = list(dict.fromkeys(compute))
    named = ", ".join(kinds[:4]) + (f" and {len(kinds) - 4} more" if len(kinds) > 4 else "") if kinds else "no layer"
    return (f"{fmt_seconds(latency.compute_seconds)} compute-bound ({named}), "
            f"{fmt_seconds(latency.memory_seconds)} memory-bound; each layer: --layers or .layers()")


def generate_layer_table(g: GenerateFigures, fmt: str = "github") -> str:
    """Each kind of layer in each phase: roofline time and bound (``burden.render.phases``)."""
    kinds = layer_kinds(g)
    if not kinds:
        raise InputSpecError("the time of each layer needs a device profile (device_profile=, --device-profile)")

    def cells(time: object) -> list[str]:
        return [fmt_seconds(time.seconds), time.bound or "-"] if time is not None else ["", ""]

    rows = [[k.kind, fmt_count(k.modules), *cells(k.prefill), *cells(k.decode)] for k in kinds]
    return _tabulate(rows, ["layer", "modules", "prefill time", "prefill bound", "decode step time", "decode bound"],
                     fmt, ["left", "right", "right", "left", "right", "left"])


def generate_fit_summary(f: GenerateFitFigures) -> str:
    """What fits for serving: the answer, its peak and cache, and the next size's peak."""
    g = f.generation
    what = "largest batch" if f.search == "batch" else "longest prompt"
    rows = [("model", f.model), ("budget", fmt_bytes(f.budget_bytes))]
    if f.search == "batch":
        rows.append(("generation", f"prompts of {f.prompt:,} tokens, {f.new_tokens:,} new each"))
    else:
        rows.append(("generation", f"batch {f.batch}, {f.new_tokens:,} new tokens each"))
    if g is None:
        rows.append((what, "none: even 1 does not fit"))
    else:
        rows += [(what, f"{f.answer:,}" + (f" tokens (a context of {g.cached_tokens:,})" if f.search == "prompt"
                                           else "")),
                 ("peak", f"{fmt_bytes(f.peak_bytes)} ({f.peak_bytes / f.budget_bytes:.1%} of the budget)"),
                 ("KV cache", f"{fmt_bytes(g.kv_cache_bytes)} at the end"),
                 ("weights", fmt_bytes(g.param_bytes))]
        if f.context_bytes:
            rows += reserved_rows(f.reserved_bytes, f.context_bytes)
    if f.next_peak_bytes is not None:
        rows.append(("next", f"{fmt_bytes(f.next_peak_bytes)} at {f.answer + 1:,}: over the budget"))
    rows.append(("traces", f"{f.traces} generate() runs traced, the answer and the next size among them"))
    if f.accounting:
        rows.append(("peaks counted", f.accounting))
    rows += [("note", note) for note in f.notes]
    return _aligned(rows)


def generate_bench_summary(b: GenerateBenchFigures) -> str:
    """The measured time to first token and time per token, beside the roofline's."""
    p = b.predicted

    def beside(measured: float, predicted: float | None, efficiency: float | None) -> str:
        if predicted is None:
            return fmt_seconds(measured)
        return f"{fmt_seconds(measured)} (roofline {fmt_seconds(predicted)}, efficiency {efficiency:.2f})"

    rows = [("model", b.model), ("batch", str(b.batch)),
            ("tokens", f"{b.prompt:,} of prompt + {b.new_tokens:,} new"), ("dtype", b.dtype),
            ("device", b.device_name),
            ("time to first token", beside(b.time_to_first_token_seconds,
                                           p.time_to_first_token_seconds if p else None, b.prefill_efficiency)),
            ("time per token", beside(b.seconds_per_output_token, p.seconds_per_output_token if p else None,
                                      b.decode_efficiency) + " (measured: the mean step; roofline: the last)"),
            ("throughput", f"{b.tokens_per_second:,.1f} tokens/s over the batch"
                           + (f" (roofline {p.tokens_per_second:,.1f})" if p else ""))]
    if b.profile:
        rows.append(("profile", b.profile))
    rows += [("note", note) for note in b.notes]
    return _aligned(rows)


def bench_summary(b: BenchFigures) -> str:
    """The measured time, its spread and throughput, beside the roofline bound, in total and per
    top-level module."""
    rows = [("model", b.model), ("input", " x ".join(str(d) for d in b.input) or "as given"),
            ("batch", str(b.batch)), ("dtype", b.dtype), ("device", b.device_name),
            ("measured", f"{fmt_seconds(b.median_seconds)} median per forward pass (interquartile range "
                         f"{fmt_seconds(b.iqr_seconds)}; {fmt_seconds(b.min_seconds)} to {fmt_seconds(b.max_seconds)} "
                         f"over {b.runs} blocks of {b.calls_per_run})"),
            ("throughput", f"{b.samples_per_second:,.1f} samples/s")]
    if b.predicted_seconds is not None:
        rows += [("profile", b.profile or ""),
                 ("roofline bound", f"{fmt_seconds(b.predicted_seconds)}"),
                 ("efficiency", f"{b.efficiency:.2f} (bound / measured: the fraction of the roofline reached)")]
    rows += [("note", note) for note in b.notes]
    text = _aligned(rows)
    if not b.modules:
        return text
    table = [[m.name, m.type, fmt_seconds(m.median_seconds), fmt_seconds(m.predicted_seconds),
              "-" if m.efficiency is None else f"{m.efficiency:.2f}"] for m in b.modules]
    return text + "\n\n" + _tabulate(table, ["module", "type", "measured", "bound", "efficiency"], "simple",
                                       ["left", "left", "right", "right", "right"])


def profiles_text(profiles: Sequence[DeviceProfile]) -> str:
    """One row per profile and thread count: peaks per dtype, bandwidth, cache roof; then sources."""
    rows = []
    for p in profiles:
        for roof in p.roofs:
            peaks = ", ".join(f"{k} {fmt_rate(v, 'FLOP/s')}" for k, v in roof.peak_flops)
            cache = (f"{fmt_rate(roof.cache_bandwidth, 'B/s')} to {fmt_bytes(roof.cache_bytes)}" if roof.cache_bytes
                     else "-")
            rows.append([p.name, p.device, str(roof.threads or "-"), peaks, fmt_rate(roof.bandwidth, "B/s"), cache])
    table = _tabulate(rows, ["profile", "device", "threads", "peak", "memory", "cache roof"], "simple",
                      ["left", "left", "right", "left", "right", "left"])
    sources = sorted({f"{p.name}: {source}" + (f" ({p.measured})" if p.measured else "")
                      for p in profiles for _, source in p.sources})
    return table + "\n\nsources:\n" + "\n".join(f"  {line}" for line in sources)
