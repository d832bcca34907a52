"""The report page in a real browser: headless Chromium loads a generated page, a test script
clicks the controls (sort, fold, depth) and writes what it sees into the DOM, and ``--dump-dom``
hands that back. The expected row orders and counts are worked out here from the Estimate.

Chromium is driven with nothing but its command line: ``--dump-dom`` (after scripts have run,
``--virtual-time-budget`` lets timers settle) and ``--screenshot``. The screenshots land in
``tests/artifacts/`` (ignored by git) to look at. Skips only when no Chromium binary exists.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import subprocess
import tempfile
from functools import cmp_to_key
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import burden
import burden.devices
from burden.api import scale
from burden.render.html import chart_units, estimate_page, index_page, write_text_atomic
from test_report import Cumulative, natural_compare, parse

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "/usr/bin/chromium")


def find_chromium() -> str | None:
    for name in filter(None, (os.environ.get("BURDEN_CHROMIUM"), *CANDIDATES)):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, "
                                                          "or set BURDEN_CHROMIUM)")

# Runs first, in <head>: collects any script error the page raises.
ERROR_CATCHER = """<script>window.__errors = [];
window.addEventListener("error", function (ev) { window.__errors.push(String(ev.message)); });</script>"""

# The end of every driver: what it saw, as JSON in a <pre> that --dump-dom hands back.
RECORD = r"""  var pre = document.createElement("pre");
  pre.id = "burden-test-results";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""

# Runs last, after the page's own script: clicks like a reader and records what is shown.
DRIVER = r"""<script>
(function () {
  var out = { errors: window.__errors, steps: {} };
  try {
    var table = document.getElementById("layer-table");
    var rows = function () { return Array.prototype.slice.call(table.tBodies[0].rows); };
    var shown = function () {
      return rows().filter(function (r) { return !r.hidden && r.getClientRects().length > 0; })
                   .map(function (r) { return r.cells[0].getAttribute("data-v"); });
    };
    var click = function (el) { el.dispatchEvent(new MouseEvent("click", { bubbles: true, cancelable: true })); };
    var header = function (text) {
      return Array.prototype.filter.call(table.tHead.rows[0].cells, function (th) {
        return th.textContent.trim() === text; })[0];
    };
    var depth = function (v) { return document.querySelector('button[data-show-depth="' + v + '"]'); };
    var toggle = function (name) {
      return rows().filter(function (r) { return r.cells[0].getAttribute("data-v") === name; })[0]
                   .querySelector("button.tg");
    };
    var step = function (name) { out.steps[name] = shown(); };

    out.rows = rows().length;
    out.bars = {};
    out.chart_widths = {};
    Array.prototype.forEach.call(document.querySelectorAll("svg.plot[data-metric]"), function (svg) {
      var metric = svg.getAttribute("data-metric");
      var bars = svg.querySelectorAll("rect.bar");
      out.bars[metric] = bars.length;
      out.chart_widths[metric] = svg.getBoundingClientRect().width;
      out.drawn_bars = (out.drawn_bars || 0) + Array.prototype.filter.call(bars, function (b) {
        var box = b.getBoundingClientRect(); return box.height > 0 && box.width > 0; }).length;
      out.min_bar_px = out.min_bar_px || {};
      out.min_bar_px[metric] = Math.min.apply(null, Array.prototype.map.call(bars, function (b) {
        return b.getBoundingClientRect().width; }).concat([1e9]));
    });
    var training = document.getElementById("training");
    out.training_rows = training ? training.querySelectorAll("tbody tr").length : 0;
    out.training_height = training ? training.getBoundingClientRect().height : 0;
    var curve = document.querySelector('svg[data-metric="live_memory"] path.curve');
    out.curve_width = curve ? curve.getBoundingClientRect().width : 0;
    out.table_width = table.getBoundingClientRect().width;
    out.controls_shown = !document.getElementById("layer-controls").hidden;
    out.images = document.images.length;
    out.scripts = document.scripts.length;
    out.pwned = typeof window.pwned !== "undefined";

    step("initial");
    out.count_label = document.getElementById("layer-count").textContent;
    click(depth("all")); step("all");
    click(header("FLOPs").querySelector("button")); step("flops_desc");
    out.flops_aria = header("FLOPs").getAttribute("aria-sort");
    click(header("FLOPs").querySelector("button")); step("flops_asc");
    out.flops_aria_2 = header("FLOPs").getAttribute("aria-sort");
    click(header("module").querySelector("button")); step("name_asc");
    click(header("params").querySelector("button")); step("params_desc");
    click(header("output shape").querySelector("button")); step("shape_desc");
    click(document.querySelector('button[data-order="exec"]')); step("exec");
    out.sorted_headers = table.querySelectorAll('th[aria-sort="ascending"], th[aria-sort="descending"]').length;
    if (out.steps.all.indexOf("layer1") >= 0) {
      click(toggle("layer1")); step("layer1_folded_from_all");
      click(toggle("layer1")); step("layer1_unfolded_from_all");
    }
    if (depth("1")) { click(depth("1")); step("depth1"); }
    if (out.steps.depth1.indexOf("layer1") >= 0) {
      click(toggle("layer1")); step("layer1_open");
      out.layer1_expanded = toggle("layer1").getAttribute("aria-expanded");
      click(header("feature mem").querySelector("button")); step("feature_desc_folded");
      click(toggle("layer1")); step("layer1_closed");
    }
    click(document.querySelector('button[data-order="exec"]'));
    click(toggle("")); step("root_closed");
    // the search box: typing filters rows by name, type or details, folded or not; clearing restores
    var search = document.getElementById("layer-search");
    var type = function (text) {
      search.value = text;
      search.dispatchEvent(new Event("input", { bubbles: true }));
    };
    type("se.up"); step("search_se_up"); out.search_label = document.getElementById("layer-count").textContent;
    type("  CONV2d   K1 "); step("search_conv_k1");
    type("maxpool"); step("search_maxpool");
    type("no such module"); step("search_none");
    type(""); step("search_cleared");
  } catch (err) {
    out.driver_error = String(err && err.stack || err);
  }
""" + RECORD


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home)
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={home}/profile",
               *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def driven(page: str, path: Path, driver: str = DRIVER) -> dict:
    """Load ``page`` with the catcher and the driver added; return what the driver recorded."""
    assert page.count("<head>") == 1 and page.count("</body>") == 1
    page = page.replace("<head>", "<head>\n" + ERROR_CATCHER, 1).replace("</body>", driver + "\n</body>", 1)
    write_text_atomic(path, page)
    proc = chromium("--virtual-time-budget=10000", "--dump-dom", path.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = parse(proc.stdout).find_all("pre", id="burden-test-results")
    assert found, "the driver left no results; Chromium said:\n" + proc.stderr[-2000:]
    results = json.loads(found[0].text())
    assert "driver_error" not in results, results.get("driver_error")
    assert results["errors"] == [], results["errors"]
    return results


def screenshot(url: str, target: Path, width: int = 1400, height: int = 3000) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    proc = chromium(f"--screenshot={target}", f"--window-size={width},{height}", "--virtual-time-budget=5000", url)
    assert proc.returncode == 0 and target.is_file(), proc.stderr[-2000:]
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (width, height)
    assert len(data) > 50_000  # a blank page compresses to a few kilobytes


# ------------------------------------------------------------------------------------------------
# what the page should show, worked out from the Estimate


class Expected:
    def __init__(self, e):
        self.e = e
        self.names = [r.name for r in e.layers]
        index = {n: i for i, n in enumerate(self.names)}
        self.parent = [index[n.rsplit(".", 1)[0] if "." in n else ""] if n else -1 for n in self.names]
        self.kids = {p for p in self.parent if p >= 0}

    def shown(self, collapsed, order=None):
        """Names shown when the modules in ``collapsed`` are folded, in ``order`` (default: execution)."""
        def visible(i):
            p = self.parent[i]
            while p >= 0:
                if p in collapsed:
                    return False
                p = self.parent[p]
            return True
        order = range(len(self.names)) if order is None else order
        return [self.names[i] for i in order if visible(i)]

    def to_depth(self, d):
        return {i for i in self.kids if self.e.layers[i].depth >= d}

    def order(self, key, descending):
        idx = list(range(len(self.names)))
        values = [key(r) for r in self.e.layers]
        return sorted(idx, key=lambda i: (-values[i] if descending else values[i], i))

    def natural_order(self):
        return sorted(range(len(self.names)),
                      key=cmp_to_key(lambda a, b: natural_compare(self.names[a], self.names[b]) or a - b))


def numel(shape):
    if shape is None:
        return -1
    if all(isinstance(d, int) for d in shape):
        n = 1
        for d in shape:
            n *= d
        return n
    return sum(max(numel(s), 0) for s in shape)


@pytest.fixture(scope="module")
def se50():
    e = burden.estimate("se_resnet50", 224)
    t = scale("se_resnet50")
    units = chart_units(e)
    curve = list(itertools.accumulate(e.layers[i].self_feature_bytes for i in units))  # nothing is freed
    memory = SimpleNamespace(curve=curve, peak_feature_bytes=max(curve), peak_op="fc")
    return e, estimate_page(e, scale=t, memory=memory)


def test_sorting_folding_and_charts_in_chromium(se50, tmp_path):
    e, page = se50
    got = driven(page, tmp_path / "driven.html")
    x = Expected(e)
    n = len(e.layers)
    assert got["rows"] == n == 249
    # the bars by default: one per module at depth 2 with a figure (worked out here from the layers)
    # a module at depth 2 holds its submodules' figures; one above it, only its own ops
    expected_bars = {m: sum(1 for r in e.layers if r.depth == 2 and getattr(r, m) or r.depth < 2 and getattr(r, "self_" + m))
                     for m in ("param_bytes", "feature_bytes", "flops")}
    assert got["bars"] == {**expected_bars, "live_memory": 0}
    assert all(got["min_bar_px"][m] >= 10 for m in expected_bars)  # of 1,400 pixels: no hairlines
    assert got["curve_width"] > 500  # the live-memory line is drawn across the chart
    assert got["drawn_bars"] == sum(got["bars"].values())  # every bar has a box on screen
    assert all(w > 500 for w in got["chart_widths"].values()) and got["table_width"] > 500
    assert got["controls_shown"] and got["images"] == 0 and not got["pwned"]
    steps = got["steps"]
    assert steps["initial"] == [r.name for r in e.layers if r.depth <= 2]  # opens folded to depth 2
    assert got["count_label"] == f"Showing {len(steps['initial'])} of {n} modules"
    assert steps["all"] == x.names
    assert steps["flops_desc"] == x.shown(set(), x.order(lambda r: r.flops, True))
    assert steps["flops_desc"][:2] == ["", "layer3"]  # the model, then its most expensive stage
    assert got["flops_aria"] == "descending" and got["flops_aria_2"] == "ascending"
    assert steps["flops_asc"] == x.shown(set(), x.order(lambda r: r.flops, False))
    assert steps["name_asc"] == x.shown(set(), x.natural_order())
    assert steps["params_desc"] == x.shown(set(), x.order(lambda r: r.params, True))
    assert steps["shape_desc"] == x.shown(set(), x.order(lambda r: numel(r.output_shape), True))
    assert steps["exec"] == x.names and got["sorted_headers"] == 0
    # folding layer1 with everything open hides all its descendants, not just its children
    layer1 = x.names.index("layer1")
    assert steps["layer1_folded_from_all"] == x.shown({layer1})
    assert len(steps["layer1_folded_from_all"]) == n - sum(1 for m in x.names if m.startswith("layer1."))
    assert steps["layer1_unfolded_from_all"] == x.names
    assert steps["depth1"] == x.shown(x.to_depth(1)) == [r.name for r in e.layers if r.depth <= 1]
    folded = x.to_depth(1) - {x.names.index("layer1")}
    assert steps["layer1_open"] == x.shown(folded)
    assert set(steps["layer1_open"]) - set(steps["depth1"]) == {"layer1.0", "layer1.1", "layer1.2"}
    assert got["layer1_expanded"] == "true"
    assert steps["feature_desc_folded"] == x.shown(folded, x.order(lambda r: r.feature_bytes, True))
    assert steps["layer1_closed"] == x.shown(x.to_depth(1), x.order(lambda r: r.feature_bytes, True))
    assert steps["root_closed"] == [""]
    types = {r.name: r.type.lower() for r in e.layers}
    details = {r.name: r.details.lower() for r in e.layers}

    def matching(*words):
        return [m for m in x.names if all(w in f"{m.lower()} {types[m]} {details[m]}" for w in words)]

    assert steps["search_se_up"] == matching("se.up") and len(steps["search_se_up"]) == 16  # one per block
    assert got["search_label"] == "16 of 249 modules match"
    assert steps["search_conv_k1"] == matching("conv2d", "k1") and len(steps["search_conv_k1"]) > 16
    assert steps["search_maxpool"] == ["stem.pool"]
    assert steps["search_none"] == []
    assert steps["search_cleared"] == steps["root_closed"]  # the folds come back
    assert got["training_rows"] == 0


def test_hostile_names_stay_text_in_chromium(tmp_path):
    model = nn.Sequential()
    model.add_module("<img src=x onerror=pwned=1>", type("<script>pwned=2</script>", (Cumulative,), {})())
    model.add_module("</script><script>pwned=3</script>", nn.ReLU())
    e = burden.estimate(model, (3, 8, 8))
    got = driven(estimate_page(e), tmp_path / "hostile.html")
    assert got["images"] == 0 and not got["pwned"]
    assert got["scripts"] == 4  # the page's JSON and code, plus this test's catcher and driver
    assert got["steps"]["all"] == [r.name for r in e.layers]


def test_senet154_grouped_charts_and_training_section_in_chromium(tmp_path):
    """SENet-154's 734 modules: the charts stay readable (at most MAX_BARS bars, none a hairline);
    a report made with mode training shows its training section."""
    from burden.render.html import MAX_BARS
    from burden.reports import write_reports

    written = write_reports(["senet154"], tmp_path / "r", mode="training", optimizer="adamw")
    page = written[0].read_text(encoding="utf-8")
    got = driven(page, tmp_path / "senet154.html")
    e = burden.estimate("senet154", 224)
    assert got["rows"] == len(e.layers) == 734
    for metric in ("param_bytes", "feature_bytes", "flops"):
        assert 0 < got["bars"][metric] <= MAX_BARS
        assert got["min_bar_px"][metric] >= 6  # in an 800-pixel window; one bar per module gave hairlines
    assert got["training_rows"] == 12 and got["training_height"] > 200
    screenshot(written[0].as_uri(), ARTIFACTS / "senet154_training.png", height=2400)


# Reads the roofline chart as drawn, then sorts the layer table by predicted time.
ROOFLINE_DRIVER = r"""<script>
(function () {
  var out = { errors: window.__errors };
  try {
    var svg = document.querySelector('svg[data-metric="roofline"]');
    var box = svg.getBoundingClientRect();
    var centre = function (el) { var b = el.getBoundingClientRect(); return [b.left + b.width / 2, b.top + b.height / 2, b]; };
    var points = Array.prototype.slice.call(svg.querySelectorAll("circle.roof-point"));
    out.svg_width = box.width;
    out.points = points.map(function (c) {
      var p = centre(c);
      return { layer: c.getAttribute("data-layer"), bound: c.getAttribute("data-bound"), x: p[0], y: p[1],
               drawn: p[2].width > 0 && p[2].left >= box.left - 1 && p[2].right <= box.right + 1 &&
                      p[2].top >= box.top - 1 && p[2].bottom <= box.bottom + 1 };
    });
    var roof = svg.querySelector("path.memory-roof").getBoundingClientRect();
    out.roof = [roof.width, roof.height];
    var table = document.getElementById("layer-table");
    document.querySelector('button[data-show-depth="all"]').click();
    var header = Array.prototype.filter.call(table.tHead.rows[0].cells, function (th) {
      return th.textContent.trim() === "predicted time"; })[0];
    header.querySelector("button").click();
    out.sorted = Array.prototype.slice.call(table.tBodies[0].rows)
      .filter(function (r) { return !r.hidden && r.getClientRects().length > 0; })
      .map(function (r) { return r.cells[0].getAttribute("data-v"); });
    out.bound_cells = Array.prototype.filter.call(table.querySelectorAll("td.bound"), function (td) {
      return td.textContent === "compute" || td.textContent === "memory"; }).length;
  } catch (err) {
    out.driver_error = String(err && err.stack || err);
  }
""" + RECORD


def test_roofline_chart_in_chromium(tmp_path):
    """The roofline chart of SE-ResNet-50 on the A100 data sheet: one point per layer without
    submodules, placed by intensity and attained FLOP/s (worked out here from the Estimate), and
    the layer table sorted by predicted time."""
    e = burden.estimate("se_resnet50", batch_size=16, device_profile="a100")
    lat = e.latency
    got = driven(estimate_page(e), tmp_path / "roofline.html", ROOFLINE_DRIVER)
    parents = {r.name.rpartition(".")[0] for r in e.layers if r.name}
    leaves = {t.name: t for t in lat.layers if t.name and t.name not in parents and t.flops and t.bytes_moved}
    points = got["points"]
    assert sorted(p["layer"] for p in points) == sorted(leaves) and len(points) > 100
    assert all(p["drawn"] for p in points) and got["svg_width"] > 500
    assert got["roof"][0] > 300 and got["roof"][1] > 50  # the slope and the flat peak are drawn
    for p in points:
        assert p["bound"] == leaves[p["layer"]].bound
    # higher intensity is further right; more FLOP/s attained is higher up (screen y grows downwards)
    by_intensity = sorted(points, key=lambda p: leaves[p["layer"]].intensity)
    assert all(a["x"] <= b["x"] + 0.5 for a, b in zip(by_intensity, by_intensity[1:]))
    by_rate = sorted(points, key=lambda p: leaves[p["layer"]].attained_flops)
    assert all(a["y"] >= b["y"] - 0.5 for a, b in zip(by_rate, by_rate[1:]))
    # no layer attains more than the roofs allow: the highest peak, and the bandwidth times its intensity
    top = max(v for _, v in burden.devices.load("a100").roof().peak_flops)
    for t in leaves.values():
        assert t.attained_flops <= top * 1.000001 and t.attained_flops <= lat.bandwidth * t.intensity * 1.000001
    # the drawn peak is the one most FLOPs use: TF32, which cuDNN convolutions use for float32 by default
    assert lat.dtype == ("tfloat32" if torch.backends.cudnn.allow_tf32 else "float32")
    x = Expected(e)
    assert got["sorted"] == x.shown(set(), x.order(lambda r: lat.layer(r.name).predicted_seconds, True))
    assert got["bound_cells"] == sum(1 for t in lat.layers if t.bound)
    screenshot((tmp_path / "roofline.html").as_uri() + "#roofline", ARTIFACTS / "roofline.png", height=1400)


def test_screenshots(se50, tmp_path):
    e, page = se50
    report = tmp_path / "se_resnet50.html"
    write_text_atomic(report, page)
    screenshot(report.as_uri(), ARTIFACTS / "se_resnet50.png")
    names = ["se_resnet50", "se_bn_inception"]
    index = tmp_path / "index.html"
    write_text_atomic(index, index_page([e, burden.estimate("se_bn_inception", 224)],
                                        [f"{n}.html" for n in names]))
    screenshot(index.as_uri(), ARTIFACTS / "index.png", height=1400)
    # the committed index: seven models in the table and the chart
    screenshot((Path(__file__).resolve().parent.parent / "reports" / "index.html").as_uri(),
               ARTIFACTS / "reports_index.png", height=1600)
