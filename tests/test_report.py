"""HTML reports: the page's figures, tables and charts, escaping of names that come from a model,
atomic writes, the index and README of ``burden report --all``, and the committed ``reports/``."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import burden
from burden.api import scale
from burden.cli import main
from burden.conventions import get_convention
from burden.render import html as html_render
from burden.render.html import estimate_fragment, estimate_page, index_markdown, index_page, write_text_atomic
from caffe_reference import PROTOTXT, burden_of

REPO = Path(__file__).resolve().parent.parent
METRICS = ("param_bytes", "feature_bytes", "flops")

MiB = 2**20


def caffe_row(name):
    """params, param memory, feature memory and FLOPs of a model as the index shows them, worked
    out from the SE authors' Caffe definition (tests/caffe_reference.py, which shares no code
    with burden): 224 x 224, batch 1, float32."""
    figures = burden_of(name)
    return (f"{figures['params']:,}", f"{4 * figures['params'] / MiB:.2f} MiB",
            f"{figures['feature_bytes'] / MiB:.2f} MiB", f"{figures['flops'] / 1e9:.2f} GFLOPs")


REFERENCE_ROWS = {name: caffe_row(name) for name in PROTOTXT}


# ------------------------------------------------------------------------------------------------
# a small DOM for the checks (the standard library's HTML parser, so the page is read as a browser
# tokenizes it: script and style contents are raw text, entities are decoded)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag=None, cls=None, **attrs):
        out = []
        for n in self.iter():
            if tag and n.tag != tag:
                continue
            if cls and cls not in (n.attrs.get("class") or "").split():
                continue
            if any(n.attrs.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            out.append(n)
        return out

    def find(self, tag=None, cls=None, **attrs):
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag}> with class={cls} {attrs}"
        return found[0]

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def __getitem__(self, key):
        return self.attrs[key]


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(page: str) -> Node:
    b = _Builder()
    b.feed(page)
    b.close()
    return b.root


def cells(tr):
    return [c for c in tr.children if isinstance(c, Node) and c.tag in ("td", "th")]


def label(td):
    """A cell's text without its buttons (the layer table's fold toggles)."""
    return "".join(c if isinstance(c, str) else label(c) for c in td.children
                   if isinstance(c, str) or c.tag != "button")


def table_rows(root, table_cls):
    table = root.find("table", cls=table_cls)
    return [tr for tr in table.find("tbody").find_all("tr")]


def rules_of(dom):
    """The counting rules a page lists, as (what, how) pairs."""
    rules = dom.find("section", id="convention").find("dl", cls="rules")
    return [(r.find("dt").text(), r.find("dd").text()) for r in rules.find_all("div", cls="rule")]


def parent_name(name):
    return name.rsplit(".", 1)[0] if "." in name else ""


def natural_compare(a, b):
    """The page's text sort, written out again: digit runs as numbers, the rest by code point."""
    x, y = re.findall(r"\d+|\D+", a), re.findall(r"\d+|\D+", b)
    for p, q in zip(x, y):
        if p == q:
            continue
        if p.isdigit() and q.isdigit():
            if int(p) != int(q):
                return -1 if int(p) < int(q) else 1
            if len(p) != len(q):
                return -1 if len(p) < len(q) else 1
            continue
        return -1 if p < q else 1
    return len(x) - len(y)


def own_units(e, metric):
    """Modules with a figure of their own for ``metric``: the bars that chart must have."""
    return [r for r in e.layers if getattr(r, "self_" + metric)]


# ------------------------------------------------------------------------------------------------
# one page


@pytest.fixture(scope="module")
def r50():
    e = burden.estimate("se_resnet50", 224)
    t = scale("se_resnet50", "0.5,1")
    page = estimate_page(e, scale=t)
    return SimpleNamespace(e=e, t=t, page=page, dom=parse(page))


def test_summary_figures_and_convention(r50):
    dom = r50.dom
    cards = {c.find(cls="label").text(): c.find(cls="value").text() for c in dom.find_all("div", cls="card")}
    # SE-ResNet-50's figures from its Caffe definition (28,141,144 parameters, 107.35 MiB, ...)
    params, param_mem, feature_mem, flops = REFERENCE_ROWS["se_resnet50"]
    peak = cards.pop("Inference peak")
    assert cards == {"Parameters": params, "Parameter memory": param_mem, "Feature memory": feature_mem,
                     "FLOPs": flops}
    # the inference peak: parameters and buffers (53 batch norms' 8-byte counters too), the input
    # batch (3 x 224 x 224 floats) and the most feature memory live at once, at the module named
    e = r50.e
    assert e.input_bytes == 3 * 224 * 224 * 4 and e.held_bytes == 112_564_576 + 53 * 8
    assert e.peak_bytes == e.held_bytes + e.input_bytes + e.peak_feature_bytes
    assert 0 < e.peak_feature_bytes < e.feature_bytes
    assert_displays(peak, e.peak_bytes)
    card = dom.find("div", id="card-peak").find(cls="exact")
    assert e.peak_op.module and e.peak_op.module in card.text() and e.peak_op.op in card["title"]
    assert_displays(card.text().split(") and ")[1].split(" of ")[0], e.peak_feature_bytes)
    settings = " ".join(dom.find("ul", cls="settings").text().split())
    assert settings == "input 3 x 224 x 224 batch 1 dtype float32 convention convnet-burden mode inference"
    assert not dom.find_all("section", id="training") and not dom.find_all("div", id="card-training")
    assert dom.find("h1").text() == "se_resnet50"
    # 28,141,144 params x 4 bytes
    assert "112,564,576 bytes" in r50.page
    assert rules_of(dom) == list(get_convention("convnet-burden").rules) and len(rules_of(dom)) >= 5
    assert dom.find("span", cls="pill").text() == "convnet-burden"
    summary = json.loads(dom.find("script", id="burden-summary").text())
    assert (summary["params"], summary["flops"], summary["model"]) == (28141144, r50.e.flops, "se_resnet50")


def test_layer_table_has_every_module_with_exact_values(r50):
    e, rows = r50.e, table_rows(r50.dom, "layers")
    assert len(rows) == len(e.layers) == 249
    index = {r.name: i for i, r in enumerate(e.layers)}
    for tr, r in zip(rows, e.layers):
        c = cells(tr)
        assert c[0]["data-v"] == r.name
        assert label(c[0]) == (r.name or "(model)")
        assert c[1].text() == r.type and c[2].text() == c[2]["data-v"] == r.details
        assert [x["data-v"] for x in c[4:]] == [str(r.params), str(r.param_bytes), str(r.feature_bytes),
                                                str(r.flops), str(r.flops)]
        assert c[8].text() == f"{100 * r.flops / e.flops:.2f}"
        assert int(tr["data-parent"]) == (index[parent_name(r.name)] if r.name else -1)
        assert int(tr["data-depth"]) == r.depth
        has_kids = any(parent_name(o.name) == r.name for o in e.layers if o.name)
        assert tr["data-kids"] == ("1" if has_kids else "0")
        assert bool(tr.find_all("button", cls="tg")) == has_kids
    layer3 = rows[index["layer3"]]
    assert cells(layer3)[3].text() == "1x1024x14x14" and cells(layer3)[3]["data-v"] == str(1024 * 14 * 14)
    # by hand: the stem's first convolution is 7 x 7, stride 2, padding 3, 3 -> 64 channels
    assert cells(rows[index["stem.conv1.conv"]])[2].text() == "k7 s2 p3 3->64"
    assert cells(rows[index["fc"]])[2].text() == "2048->1000"
    headers = r50.dom.find("table", cls="layers").find("thead").find_all("th")
    assert [h.text() for h in headers] == ["module", "type", "details", "output shape", "params", "param mem",
                                           "feature mem", "FLOPs", "% FLOPs"]
    search = r50.dom.find("input", id="layer-search")
    assert search["type"] == "search" and search["aria-controls"] == "layer-table"
    assert all(h.find_all("button") for h in headers)  # every column sorts
    depth_buttons = [b["data-show-depth"] for b in r50.dom.find_all("button") if "data-show-depth" in b.attrs]
    assert depth_buttons == ["1", "2", "3", "all"]  # the deepest module of SE-ResNet-50 is at depth 4


def test_profile_charts_one_bar_per_module_with_own_figures(r50):
    e = r50.e
    deepest = max(r.depth for r in e.layers)
    dom = parse(estimate_page(e, chart_depth=deepest))
    svgs = {s["data-metric"]: s for s in dom.find_all("svg", cls="plot")}
    assert set(svgs) == set(METRICS) | {"live_memory"}  # the live-memory curve is a line, not bars
    position = {r.name: i for i, r in enumerate(e.layers)}
    for metric in METRICS:
        bars = svgs[metric].find_all("rect", cls="bar")
        assert len(bars) == len(own_units(e, metric))
        assert sum(int(b["data-v"]) for b in bars) == getattr(e, metric)  # bars add up to the total
        names = []
        for b in bars:
            title = b.find("title").text()
            name = title.split(" · ")[0].removesuffix(" (own ops)")
            name = "" if name == "(model)" else name
            assert getattr(e.layer(name), "self_" + metric) == int(b["data-v"])
            names.append(name)
        xs = [float(b["x"]) for b in bars]
        assert xs == sorted(xs) and len(set(xs)) == len(xs)
        # execution order: leaves in the model's order, a block's own ops after its submodules
        for k, name in enumerate(names):
            later = names[k + 1:]
            assert not any(o.startswith(name + ".") for o in later if name)
        leaves = [n for n in names if not any(o.name.startswith(n + ".") for o in e.layers if n)]
        assert leaves == sorted(leaves, key=position.get)
    # by hand: 16 blocks x (conv1, conv2, conv3, relu, se.pool, se.down, se.relu, se.up, own residual
    # sum) = 144, 4 downsample convs, stem conv, relu and pool, avgpool and fc: 153 bars with FLOPs
    assert len(svgs["flops"].find_all("rect", cls="bar")) == 153
    # the top-level stages are marked under the bars
    labels = [t.text() for t in svgs["flops"].find_all("text", cls="band-label")]
    assert [x for x in labels if x.startswith("layer")] == ["layer1", "layer2", "layer3", "layer4"]


def grouped_bars(svg):
    """(module, own ops only, value) of each bar of a chart."""
    return [(b["data-name"], b.attrs.get("data-own") == "1", int(b["data-v"])) for b in svg.find_all("rect", cls="bar")]


def test_profile_charts_grouped_by_depth_by_default(r50):
    """SE-ResNet-50 by default: one bar per module at depth 2 (the stem's conv and pool, the 16
    blocks, avgpool, fc: by hand from the architecture), each the module's whole figure."""
    e = r50.e
    svgs = {s["data-metric"]: s for s in r50.dom.find_all("svg", cls="plot")}
    blocks = [f"layer{k}.{b}" for k, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for b in range(n)]
    for metric in METRICS:
        svg = svgs[metric]
        assert svg["data-chart-depth"] == "2"
        bars = grouped_bars(svg)
        assert sum(v for *_, v in bars) == getattr(e, metric)
        for name, own, v in bars:
            layer = e.layer(name)
            assert v == (getattr(layer, "self_" + metric) if own else getattr(layer, metric)), name
        assert [n for n, *_ in bars if n.startswith("layer")] == blocks
    assert [n for n, *_ in grouped_bars(svgs["flops"])] == ["stem.conv1", "stem.pool"] + blocks + ["avgpool", "fc"]
    assert svgs["flops"]["data-slots"] == "20"
    labels = [t.text() for t in svgs["flops"].find_all("text", cls="band-label")]
    assert labels == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]


def test_senet154_chart_has_readable_bars():
    """SENet-154 has 734 modules; its default charts group them into at most MAX_BARS bars, each of
    a slot the chart's width over the bars, and every top-level span is labelled."""
    e = burden.estimate("senet154", 224)
    dom = parse(estimate_page(e))
    top = [r.name for r in e.layers if r.depth == 1]
    for svg in dom.find_all("svg", cls="plot"):
        if svg["data-metric"] not in METRICS:
            continue
        bars = svg.find_all("rect", cls="bar")
        assert 0 < int(svg["data-slots"]) <= html_render.MAX_BARS and len(bars) <= html_render.MAX_BARS
        assert min(float(b["width"]) for b in bars) >= 8  # of a 1000-unit-wide chart
        assert sum(int(b["data-v"]) for b in bars) == getattr(e, svg["data-metric"])
        labelled = [t.text() for t in svg.find_all("text", cls="band-label")]
        spans = [r.find("title").text() for r in svg.find_all("rect", cls="band")]
        assert labelled == spans  # every span named under the chart
        assert set(labelled) <= set(top) and {"stem", "layer1", "layer2", "layer3", "layer4", "fc"} <= set(labelled)
    # all 670 modules with figures of their own, at the deepest depth: the chart scrolls instead
    deep = parse(estimate_page(e, chart_depth=9)).find("svg", data_metric="flops")
    assert int(deep["data-slots"]) == sum(1 for r in e.layers if r.self_param_bytes or r.self_feature_bytes
                                          or r.self_flops)
    assert float(deep["viewbox"].split()[2]) >= 5 * int(deep["data-slots"]) and "width:" in deep["style"]


def test_scale_table_se_resnet152_at_112():
    e = burden.estimate("se_resnet152", 224)
    t = scale("se_resnet152", "0.5")
    dom = parse(estimate_page(e, scale=t))
    [row] = table_rows(dom, "scale-table")
    # 112 / 32 = 3.5 rounds up to a 4 x 4 map of 2048 channels; batch 128, float32
    assert [c.text() for c in cells(row)] == ["0.5", "112 x 112", "2048 x 4 x 4", "6.96 GiB", "371.64 GFLOPs"]
    assert t.rows[0].feature_bytes == 7477485568 and t.rows[0].flops == 371637815296
    head = [c.text() for c in dom.find("table", cls="scale-table").find("thead").find_all("th")]
    assert head == ["scale", "input size", "layer4 output (C x H x W)", "feature memory (batch 128)",
                    "FLOPs (batch 128)"]


def test_scale_rows_that_do_not_fit_say_so():
    model = nn.Sequential(nn.Conv2d(3, 8, 7), nn.Conv2d(8, 8, 7))
    t = scale(model, [0.05, 1], trunk="1", base=64)
    assert not t.rows[0].fits and t.rows[1].fits
    e = burden.estimate(model, (3, 64, 64))
    rows = table_rows(parse(estimate_page(e, scale=t)), "scale-table")
    first = [c.text() for c in cells(rows[0])]
    assert first[:2] == ["0.05", "3 x 3"] and first[2] == "does not fit: " + t.rows[0].error
    assert "nofit" in rows[0]["class"]
    assert [c.text() for c in cells(rows[1])][:3] == ["1", "64 x 64", "8 x 52 x 52"]  # 64 - 6 - 6


def test_live_memory_chart_from_a_stand_in():
    e = burden.estimate("se_resnet50", 224)
    mib = 2 ** 20
    memory = SimpleNamespace(curve=[mib, 3 * mib, 30 * mib, 12 * mib, 5 * mib], peak_feature_bytes=30 * mib,
                             peak_op="aten.add <b>x</b>")
    page = estimate_page(e, memory=memory)
    dom = parse(page)
    svg = dom.find("svg", data_metric="live_memory")
    d = svg.find("path", cls="curve")["d"]
    points = re.findall(r"[ML]([\d.]+) ([\d.]+)", d)
    assert len(points) == 5 and d.startswith("M")
    ys = [float(y) for _, y in points]
    assert ys.index(min(ys)) == 2  # the highest point is the third op
    marker = svg.find("circle", cls="peak")
    assert (marker["cx"], marker["cy"]) == points[2]
    assert svg.find("text", cls="peak-label").text() == "peak 30.00 MiB"
    assert marker.find("title").text() == "peak: 30.00 MiB at op 3, aten.add <b>x</b>"
    assert "<b>x</b>" not in page and "aten.add &lt;b&gt;x&lt;/b&gt;" in page
    assert "live-memory" not in estimate_page(dataclasses.replace(e, live_curve=()))  # no curve, no chart
    own = parse(estimate_page(e)).find("svg", data_metric="live_memory")  # by default, the estimate's own
    assert own.find("text", cls="peak-label").text() == f"peak {e.peak_feature_bytes / 2**20:.2f} MiB"
    # its x axis is marked by stage: each run of ops in one top-level module, in order, named
    stages = own.find_all("rect", cls="stage")
    assert [r["data-stage"] for r in stages] == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "",
                                                 "fc"]
    firsts = [int(r["data-first"]) for r in stages]
    assert firsts[0] == 1 and firsts == sorted(firsts) and int(stages[-1]["data-last"]) == len(e.live_curve)
    labels = [t.text() for t in own.find_all("text", cls="stage-label")]
    assert labels == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    xs = [float(r["x"]) for r in stages]
    assert xs == sorted(xs) and xs[0] == html_render._LEFT


def test_live_memory_peak_op_as_a_record():
    """``peak_op`` may also be a record with the op, its module and its position in the curve."""
    e = burden.estimate(nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 16, 16))
    peak_op = SimpleNamespace(index=1, op="aten.convolution", module="<i>block</i>")
    memory = SimpleNamespace(curve=[10, 40, 40, 5], peak_feature_bytes=40, peak_op=peak_op)
    dom = parse(estimate_page(e, memory=memory))
    svg = dom.find("svg", data_metric="live_memory")
    points = re.findall(r"[ML]([\d.]+) ([\d.]+)", svg.find("path", cls="curve")["d"])
    marker = svg.find("circle", cls="peak")
    assert (marker["cx"], marker["cy"]) == points[1]
    assert marker.find("title").text() == "peak: 40 B at op 2, aten.convolution in <i>block</i>"
    assert dom.find("section", id="live-memory").find("code").text() == "aten.convolution in <i>block</i>"
    assert not dom.find_all("i")


def test_long_memory_curve_is_thinned_but_keeps_its_peak():
    e = burden.estimate(nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 16, 16))
    curve = [1000 + (i % 7) for i in range(5000)]
    curve[3333] = 9000
    dom = parse(estimate_page(e, memory=SimpleNamespace(curve=curve, peak_feature_bytes=9000, peak_op="conv")))
    svg = dom.find("svg", data_metric="live_memory")
    points = re.findall(r"[ML]([\d.]+) ([\d.]+)", svg.find("path", cls="curve")["d"])
    assert len(points) <= 1200
    top = min(points, key=lambda p: float(p[1]))
    assert top == (svg.find("circle", cls="peak")["cx"], svg.find("circle", cls="peak")["cy"])
    assert "op 3334" in svg.find("circle", cls="peak").find("title").text()


class Cumulative(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.cumsum(self.conv(x), 1).erf()


def test_uncounted_ops_listed_or_none(r50):
    e = burden.estimate(Cumulative(), (3, 8, 8))
    assert {u.op for u in e.uncounted_ops} == {"aten.cumsum", "aten.erf"}
    rows = table_rows(parse(estimate_page(e)), "uncounted-table")
    got = sorted(tuple(" ".join(c.text().split()) for c in cells(tr)) for tr in rows)
    assert got == [("aten.cumsum", "1", "(model)"), ("aten.erf", "1", "(model)")]
    section = r50.dom.find("section", id="uncounted")
    assert not section.find_all("table") and "None" in section.find("p", cls="none").text()


def test_fragment_for_jupyter(r50):
    e = r50.e
    frag = estimate_fragment(e)
    dom = parse(frag)
    assert "<script" not in frag
    rows = table_rows(dom, "layers")
    assert [cells(tr)[0].text() for tr in rows] == [r.name for r in e.layers if r.depth == 1]
    kv = {cells(tr)[0].text(): cells(tr)[1].text() for tr in table_rows(dom, "kv")}
    assert (kv["params"], kv["FLOPs"]) == (REFERENCE_ROWS["se_resnet50"][0], REFERENCE_ROWS["se_resnet50"][3])
    assert kv["model"] == "se_resnet50"
    assert_displays(kv["inference peak"], e.peak_bytes)
    assert e.peak_op.module in frag and "training peak" not in kv
    assert e._repr_html_() == frag


def test_fragment_and_page_show_notes():
    e = burden.estimate(nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 8, 8))
    noted = dataclasses.replace(e, notes=("traced on the CPU: <the forward needs real values>",))
    for html in (estimate_fragment(noted), estimate_page(noted)):
        dom = parse(html)
        notes = [p.text() for p in dom.find(cls="notes").find_all("p")]
        assert notes == ["Note: traced on the CPU: <the forward needs real values>"]
    # an estimate says in which mode the model ran
    for html in (estimate_fragment(e), estimate_page(e)):
        notes = [p.text() for p in parse(html).find(cls="notes").find_all("p")]
        assert notes == ["Note: the model ran in eval mode under no_grad (batch norm with running statistics, "
                         "dropout off)"]


class Tied(nn.Module):
    """A pool called twice at two sizes, and a linear layer whose weight is another's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.a = nn.Linear(16, 16, bias=False)
        self.b = nn.Linear(16, 16, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(self.pool(self.pool(self.conv(x))).flatten(2)))


def test_layer_table_details_calls_and_tied_weights():
    e = burden.estimate(Tied(), (3, 16, 16))
    dom = parse(estimate_page(e))
    rows = {cells(tr)[0]["data-v"]: cells(tr) for tr in table_rows(dom, "layers")}
    # by hand: 3 x 3 convolution, padding 1, 3 -> 8 channels; pooling 2 x 2, stride 2
    assert rows["conv"][2].text() == "k3 p1 3->8" and rows["pool"][2].text() == "k2 s2"
    # the pool runs on 16 x 16 and then on 8 x 8: both outputs listed
    pool = rows["pool"][3]
    assert pool["data-calls"] == "2" and pool["title"] == "call 1: 1x8x8x8; call 2: 1x8x4x4"
    assert label(pool) == "1x8x8x81x8x4x4 2 calls"
    assert rows["conv"][3].attrs.get("data-calls") is None
    # b's 16 x 16 weight is a's: counted at a, marked at b
    assert rows["a"][4].text() == "256" and "tied" not in rows["a"][4].text()
    tied = rows["b"][4]
    assert tied.text() == "0 (+256 tied)" and tied["data-v"] == "0" and tied["data-tied"] == "256"
    assert "counted at that module" in tied.find("span", cls="tied")["title"]
    frag = parse(estimate_fragment(e))
    assert "0 (+256 tied)" in [cells(tr)[4].text() for tr in table_rows(frag, "layers")]


def test_training_section(tmp_path):
    """One training step of a single 16 -> 8 linear layer with Adam, worked out by hand: 136
    parameters of 4 bytes, one gradient each, Adam's two moments and a 4-byte step counter for the
    weight and the bias; the input 4 x 16 floats."""
    e = burden.estimate(nn.Sequential(nn.Linear(16, 8)), (16,), batch_size=4, mode="training", optimizer="adam")
    t = e.training
    assert (t.gradient_bytes, t.optimizer_bytes, t.input_bytes) == (136 * 4, 2 * 136 * 4 + 8, 256)
    page = estimate_page(e)
    dom = parse(page)
    section = dom.find("section", id="training")
    rows = {tr["data-key"]: [c.text() for c in cells(tr)] for tr in section.find("tbody").find_all("tr")}
    assert list(rows) == ["gradient_bytes", "optimizer_bytes", "input_bytes", "saved_activation_bytes",
                          "forward_peak_bytes", "backward_peak_bytes", "optimizer_step_peak_bytes",
                          "training_peak_bytes", "forward_flops", "backward_flops", "step_flops",
                          "backward_uncounted_ops"]
    assert rows["gradient_bytes"][:3] == ["Gradients", "544 B", "544 B"]
    assert rows["optimizer_bytes"][:3] == ["Optimizer state", "1.07 KiB", "1,096 B"]
    for key in ("saved_activation_bytes", "forward_peak_bytes", "backward_peak_bytes", "optimizer_step_peak_bytes",
                "training_peak_bytes"):
        assert exact_number(rows[key][2]) == getattr(t, key)
        assert_displays(rows[key][1], getattr(t, key))
    # the training peak is the highest of the phases, each holding parameters, state and input throughout
    assert t.training_peak_bytes == max(t.forward_peak_bytes, t.backward_peak_bytes, t.optimizer_step_peak_bytes)
    assert t.forward_peak_bytes >= 544 + 1096 + 256
    assert t.peak_phase in rows["training_peak_bytes"][3]
    # forward: 4 x 8 outputs x 16 multiply-adds + 32 bias adds = 544 FLOPs
    assert rows["forward_flops"][2] == "544" and t.forward_flops == 544
    assert exact_number(rows["backward_flops"][2]) == t.backward_flops > 0
    assert exact_number(rows["step_flops"][2]) == 544 + t.backward_flops
    assert rows["backward_uncounted_ops"][1] == str(len(t.backward_uncounted_ops))
    note = " ".join(section.find("p", cls="note").text().split())
    assert "zero_grad(set_to_none=True)" in note and "Adam (single-tensor) step" in note
    cards = {c.find(cls="label").text(): c for c in dom.find_all("div", cls="card")}
    assert_displays(cards["Training peak"].find(cls="value").text(), t.training_peak_bytes)
    assert "Adam" in cards["Training peak"].find(cls="exact").text()
    summary = json.loads(dom.find("script", id="burden-summary").text())
    assert summary["mode"] == "training" and summary["training"]["optimizer_bytes"] == 1096
    assert "mode training (optimizer Adam)" in " ".join(dom.find("ul", cls="settings").text().split())
    frag = {cells(tr)[0].text(): cells(tr)[1].text() for tr in table_rows(parse(estimate_fragment(e)), "kv")}
    assert (frag["gradients"], frag["optimizer state"]) == ("544 B", "1.07 KiB")
    assert_displays(frag["training peak"], t.training_peak_bytes)


def test_reference_figures_beside_burdens(r50):
    """The published table (typed in tests/test_reference.py from the mcnSENets README), beside
    burden's figures on the SE pages; nothing for other models, and a warning at other settings."""
    from test_reference import REFERENCE

    section = r50.dom.find("section", id="reference")
    assert "mcnSENets README" in section.text() and "convnet-burden" in section.text()
    rows = [[c.text() for c in cells(tr)] for tr in table_rows(section, "reference-table")]
    param_mb, feature_mb, gflops = REFERENCE["se_resnet50"]
    assert rows == [["Parameter memory", "107.35 MiB", "107 MB", f"{param_mb} MB", "yes"],
                    ["Feature memory", "102.78 MiB", "103 MB", f"{feature_mb} MB", "yes"],
                    ["FLOPs", "3.90 GFLOPs", "4 GFLOPs", f"{gflops} GFLOPs", "yes"]]
    assert 'id="reference"' not in estimate_page(burden.estimate(nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 8, 8)))
    other = parse(estimate_page(burden.estimate("se_resnet50", 224, batch_size=2))).find("section", id="reference")
    assert "not comparable" in other.text() and not other.find_all("table")


def test_estimate_methods_and_determinism(r50, tmp_path):
    e = r50.e
    assert e.to_html() == estimate_page(e)
    assert estimate_page(e, scale=r50.t) == r50.page  # same input, same bytes
    e.save_html(tmp_path / "a" / "b" / "page.html")
    assert (tmp_path / "a" / "b" / "page.html").read_text(encoding="utf-8") == e.to_html()


def test_tiny_model_without_flops_renders():
    e = burden.estimate(nn.Sequential(nn.Flatten()), (3, 4, 4))
    dom = parse(estimate_page(e))
    assert len(table_rows(dom, "layers")) == len(e.layers)
    for svg in dom.find_all("svg", cls="plot"):
        if svg["data-metric"] in METRICS:
            assert len(svg.find_all("rect", cls="bar")) == len(own_units(e, svg["data-metric"]))


# ------------------------------------------------------------------------------------------------
# escaping: names from the model never become markup

HOSTILE_MODULE = "<img src=x onerror=alert(1)>"
HOSTILE_QUOTES = "x\" onmouseover=\"alert(4)\" y='"
HOSTILE_BREAKOUT = "</script><script>alert(2)</script>"
HOSTILE_CLASS = "<script>alert(3)</script>"
HOSTILE_MODEL = "<svg onload=alert(5)>\u2028"


def hostile_model():
    inner_cls = type(HOSTILE_CLASS, (Cumulative,), {})
    outer_cls = type(HOSTILE_MODEL, (nn.Sequential,), {})
    model = outer_cls()
    model.add_module(HOSTILE_MODULE, inner_cls())
    model.add_module(HOSTILE_BREAKOUT, nn.ReLU())
    model.add_module(HOSTILE_QUOTES, nn.Conv2d(4, 2, 1))
    return model


def assert_no_markup_from_model(page, scripts):
    low = page.lower()
    assert "<img" not in low and "<svg onload" not in low and "</script><script>" not in low
    assert low.count("<script") == scripts
    dom = parse(page)
    for node in dom.iter():
        assert node.tag not in ("img", "iframe", "object", "embed")
        assert not [a for a in node.attrs if a.startswith("on")], (node.tag, node.attrs)
    return dom


def test_hostile_names_are_escaped_everywhere(tmp_path):
    model = hostile_model()
    e = burden.estimate(model, (3, 8, 8))
    assert e.model == HOSTILE_MODEL and HOSTILE_CLASS in {r.type for r in e.layers}
    assert any(u.layers == (HOSTILE_MODULE,) for u in e.uncounted_ops)
    t = scale(model, [1], trunk=HOSTILE_MODULE, base=8)
    memory = SimpleNamespace(curve=[1, 2], peak_feature_bytes=2, peak_op=HOSTILE_BREAKOUT)
    page = estimate_page(e, scale=t, memory=memory)
    dom = assert_no_markup_from_model(page, scripts=2)
    # the names are all there, as text
    names = [cells(tr)[0]["data-v"] for tr in table_rows(dom, "layers")]
    assert names == [r.name for r in e.layers] and HOSTILE_QUOTES in names
    assert HOSTILE_CLASS in [cells(tr)[1].text() for tr in table_rows(dom, "layers")]
    titles = [t.text() for svg in dom.find_all("svg", cls="plot") for t in svg.find_all("title")]
    assert any(x.startswith(HOSTILE_MODULE + " (own ops) · " + HOSTILE_CLASS) for x in titles)
    assert any(x.startswith(HOSTILE_QUOTES + " · Conv2d") for x in titles)
    assert any(HOSTILE_BREAKOUT in x for x in titles)  # the peak marker's title
    assert dom.find("h1").text() == HOSTILE_MODEL
    assert HOSTILE_MODULE in dom.find("table", cls="uncounted-table").text()
    assert HOSTILE_MODULE in dom.find("table", cls="scale-table").text()
    # the JSON for scripts: no '<', '>', '&' or line separators in the raw text, same value back
    raw = dom.find("script", id="burden-summary").text()
    assert not set("<>&\u2028\u2029") & set(raw)
    assert json.loads(raw)["model"] == HOSTILE_MODEL

    assert_no_markup_from_model(estimate_fragment(e), scripts=0)
    index = index_page([e], ["hostile.html"])
    idom = assert_no_markup_from_model(index, scripts=0)
    assert idom.find("td", cls="model").text() == HOSTILE_MODEL
    readme = index_markdown([e], ["hostile.html"])
    assert "<svg" not in readme and "&lt;svg onload=alert(5)&gt;" in readme


# ------------------------------------------------------------------------------------------------
# atomic writes and template lookup


def test_write_text_atomic(tmp_path):
    target = tmp_path / "new" / "folder" / "page.html"
    text = "caf\u00e9 \u2014 <b>\n" * 3
    old = os.umask(0o022)
    try:
        assert write_text_atomic(target, text) == target
    finally:
        os.umask(old)
    assert target.read_bytes() == text.encode("utf-8")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # as any file written with umask 022
    write_text_atomic(str(target), "second")
    assert target.read_text(encoding="utf-8") == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["page.html"]


@pytest.mark.parametrize("failure", ["encode", "fsync", "replace"])
def test_write_text_atomic_never_leaves_half_a_file(tmp_path, monkeypatch, failure):
    target = tmp_path / "page.html"
    target.write_text("old and whole", encoding="utf-8")
    text = "x" * 100_000 + "\ud800"  # a lone surrogate: UTF-8 encoding fails after the start
    if failure == "fsync":
        def interrupted(fd):
            raise KeyboardInterrupt

        monkeypatch.setattr(html_render.os, "fsync", interrupted)
        text = "new"
    elif failure == "replace":
        def refused(src, dst):
            raise OSError("disk full")

        monkeypatch.setattr(html_render.os, "replace", refused)
        text = "new"
    with pytest.raises((UnicodeEncodeError, KeyboardInterrupt, OSError)):
        write_text_atomic(target, text)
    assert target.read_text(encoding="utf-8") == "old and whole"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]  # no temporary file left behind


def test_template_lookup_prefers_the_installed_copy(tmp_path, monkeypatch):
    assert html_render.template_dir() == REPO / "templates"  # a checkout has no burden/templates
    installed, checkout = tmp_path / "burden" / "templates", tmp_path / "templates"
    for d in (installed, checkout):
        d.mkdir(parents=True)
        (d / "estimate.html.j2").write_text("x")
    monkeypatch.setattr(html_render, "TEMPLATE_DIRS", (installed, checkout))
    assert html_render.template_dir() == installed
    monkeypatch.setattr(html_render, "TEMPLATE_DIRS", (tmp_path / "none", checkout))
    assert html_render.template_dir() == checkout
    monkeypatch.setattr(html_render, "TEMPLATE_DIRS", (tmp_path / "none",))
    with pytest.raises(FileNotFoundError):
        html_render.template_dir()


# ------------------------------------------------------------------------------------------------
# burden report


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_report_one_model(tmp_path, capsys):
    code, out, err = run_cli(capsys, "report", "se_resnet50", "--out", str(tmp_path / "r"))
    assert code == 0 and err == ""
    assert out.split() == [str(tmp_path / "r" / "se_resnet50.html")]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["se_resnet50.html"]  # no index without --all
    dom = parse((tmp_path / "r" / "se_resnet50.html").read_text(encoding="utf-8"))
    assert len(table_rows(dom, "scale-table")) == 6  # 0.5, 1, ..., 3 x 224
    assert len(table_rows(dom, "layers")) == 249


def test_report_training_mode(tmp_path, capsys):
    code, out, err = run_cli(capsys, "report", "se_bn_inception", "--mode", "training", "--optimizer", "sgd",
                             "--batch", "2", "--chart-depth", "1", "--out", str(tmp_path / "r"))
    assert code == 0 and err == ""
    dom = parse((tmp_path / "r" / "se_bn_inception.html").read_text(encoding="utf-8"))
    e = burden.estimate("se_bn_inception", 224, batch_size=2, mode="training", optimizer="sgd")
    rows = {tr["data-key"]: cells(tr) for tr in table_rows(dom, "training-table")}
    assert exact_number(rows["optimizer_bytes"][2].text()) == 0  # plain SGD keeps no state
    for key in ("gradient_bytes", "saved_activation_bytes", "forward_flops"):
        assert exact_number(rows[key][2].text()) == getattr(e.training, key), key
    # the backward's figures are not compared with a second estimate: the first training step traced
    # in a process can record a different backward (higher peak, other FLOPs) than later ones.
    assert exact_number(rows["step_flops"][2].text()) == e.training.forward_flops + exact_number(
        rows["backward_flops"][2].text())
    backward, peak = (exact_number(rows[k][2].text()) for k in ("backward_peak_bytes", "training_peak_bytes"))
    assert peak >= backward >= e.param_bytes + exact_number(rows["gradient_bytes"][2].text())
    assert exact_number(rows["gradient_bytes"][2].text()) == 4 * e.trainable_params
    assert {s["data-chart-depth"] for s in dom.find_all("svg", cls="plot") if s["data-metric"] != "live_memory"} == {"1"}
    assert "batch 2" in dom.find("ul", cls="settings").text().replace("\n", " ")
    code, _, err = run_cli(capsys, "report", "se_bn_inception", "--optimizer", "sgd", "--out", str(tmp_path / "x"))
    assert code == 2 and "--mode training" in err and not (tmp_path / "x").exists()


def test_report_unknown_model_writes_nothing(tmp_path, capsys):
    code, out, err = run_cli(capsys, "report", "se_resnet50", "se_resnet5O", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown model 'se_resnet5O'" in err and "se_resnet50" in err
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def report_all(tmp_path_factory):
    """``burden report --all --out <tmp>/reports/``: the documented command, run once."""
    out = tmp_path_factory.mktemp("generated") / "reports"
    code = main(["report", "--all", "--out", str(out) + "/"])
    assert code == 0
    return out


def test_report_all_writes_every_model_index_and_readme(report_all):
    expected = {f"{n}.html" for n in burden.list_models()} | {"index.html", "README.md"}
    assert {p.name for p in report_all.iterdir()} == expected
    assert len(expected) == 9


def test_index_links_every_model(report_all):
    dom = parse((report_all / "index.html").read_text(encoding="utf-8"))
    rows = table_rows(dom, "index-table")
    assert [r.find("a")["href"] for r in rows] == [f"{n}.html" for n in burden.list_models()]
    got = {r.find("a").text(): tuple(c.text() for c in cells(r)[1:6]) for r in rows}
    assert got == {n: ("224 x 224",) + v for n, v in REFERENCE_ROWS.items()}
    head = [c.text() for c in dom.find("table", cls="index-table").find("thead").find_all("th")]
    assert head == ["model", "input size", "params", "param memory", "feature memory", "FLOPs", "inference peak",
                    "reference: param / feature / FLOPs"]
    from test_reference import REFERENCE

    for r in rows:
        name = r.find("a").text()
        assert cells(r)[7].text() == "{} MB / {} MB / {} GFLOPs".format(*REFERENCE[name])
        assert_displays(cells(r)[6].text(), burden.estimate(name, 224).peak_bytes)
    assert "mcnSENets README" in dom.find("p", id="reference-source").text()
    assert rules_of(dom) == list(get_convention("convnet-burden").rules)
    assert "burden report --all --out reports/" in dom.find("footer").text()


def test_readme_table(report_all):
    lines = (report_all / "README.md").read_text(encoding="utf-8").splitlines()
    from test_reference import REFERENCE

    start = lines.index("| model | input size | params | param memory | feature memory | FLOPs | inference peak | "
                        "reference: param / feature / FLOPs |")
    assert lines[start + 1] == "|:---|:---|---:|---:|---:|---:|---:|---:|"
    rows = lines[start + 2:start + 2 + len(REFERENCE_ROWS)]
    assert [r.rsplit(" | ", 2)[0] for r in rows] == [f"| [{n}]({n}.html) | 224 x 224 | " + " | ".join(REFERENCE_ROWS[n])
                                                     for n in burden.list_models()]
    assert [r.rsplit(" | ", 1)[1] for r in rows] == ["{} MB / {} MB / {} GFLOPs |".format(*REFERENCE[n])
                                                     for n in burden.list_models()]
    assert lines[start + 2 + len(REFERENCE_ROWS)] == ""
    assert any("`burden report --all --out reports/`" in line for line in lines)


def test_generated_se_resnet152_page(report_all):
    dom = parse((report_all / "se_resnet152.html").read_text(encoding="utf-8"))
    rows = [[c.text() for c in cells(tr)] for tr in table_rows(dom, "scale-table")]
    assert [r[:3] for r in rows] == [["0.5", "112 x 112", "2048 x 4 x 4"], ["1", "224 x 224", "2048 x 7 x 7"],
                                     ["1.5", "336 x 336", "2048 x 11 x 11"], ["2", "448 x 448", "2048 x 14 x 14"],
                                     ["2.5", "560 x 560", "2048 x 18 x 18"], ["3", "672 x 672", "2048 x 21 x 21"]]
    assert rows[0][3:] == ["6.96 GiB", "371.64 GFLOPs"]
    assert len(table_rows(dom, "layers")) == len(burden.estimate("se_resnet152", 224).layers)


def test_index_chart_of_the_models(report_all):
    """FLOPs across, parameter memory up, marker area = feature memory; each marker links its page."""
    dom = parse((report_all / "index.html").read_text(encoding="utf-8"))
    svg = dom.find("svg", cls="scatter")
    links = svg.find_all("a", cls="mark-link")
    names = burden.list_models()
    assert [a["href"] for a in links] == [f"{n}.html" for n in names]
    assert [a.find("text", cls="mark-label").text() for a in links] == names
    es = {n: burden.estimate(n, 224) for n in names}
    marks = {}
    for a in links:
        e = es[a["data-model"]]
        assert (int(a["data-flops"]), int(a["data-param-bytes"]), int(a["data-feature-bytes"])) == \
            (e.flops, e.param_bytes, e.feature_bytes)
        c = a.find("circle", cls="mark")
        marks[a["data-model"]] = (float(c["cx"]), float(c["cy"]), float(c["r"]))
    # positions are linear in the figures (same scale for every model): compare two by hand
    (x1, y1, r1), (x2, y2, r2) = marks["se_resnet50"], marks["senet154"]
    left, bottom = html_render._SL, html_render._SB
    assert abs((x2 - left) / (x1 - left) - es["senet154"].flops / es["se_resnet50"].flops) < 0.01
    assert abs((bottom - y2) / (bottom - y1) - es["senet154"].param_bytes / es["se_resnet50"].param_bytes) < 0.01
    assert abs((r2 / r1) ** 2 - es["senet154"].feature_bytes / es["se_resnet50"].feature_bytes) < 0.02
    # no two labels overlap (boxes from the label's anchor, at 6.6 units a character)
    boxes = []
    for a in links:
        t = a.find("text", cls="mark-label")
        w = 6.6 * len(t.text())
        x = float(t["x"]) - {"start": 0, "middle": w / 2, "end": w}[t["text-anchor"]]
        boxes.append((x, float(t["y"]) - 11, x + w, float(t["y"]) + 3))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    axis = [t.text() for t in svg.find_all("text", cls="axis-title")]
    assert axis == ["FLOPs per forward pass", "parameter memory"]


def test_pages_need_no_network(report_all):
    for path in sorted(report_all.glob("*.html")):
        page = path.read_text(encoding="utf-8")
        low = page.lower()
        for needle in ("http://", "https://", "<link", " src=", "url(", "@import", "<img", "<iframe"):
            assert needle not in low, (path.name, needle)
        dom = parse(page)
        assert all(not s.attrs.get("src") for s in dom.find_all("script"))


def test_report_command_is_deterministic(tmp_path, capsys):
    """The same command writes the same bytes: no timestamps, no dict-order or address noise."""
    pages = []
    for run in ("first", "second"):
        code, _, _ = run_cli(capsys, "report", "se_bn_inception", "--out", str(tmp_path / run / "r"))
        assert code == 0
        pages.append((tmp_path / run / "r" / "se_bn_inception.html").read_bytes())
    assert pages[0] == pages[1] and len(pages[0]) > 10_000
    estimates = [burden.estimate(nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 8, 8)), burden.estimate(Cumulative(), (3, 8, 8))]
    assert index_page(estimates, ["a.html", "b.html"]) == index_page(estimates, ["a.html", "b.html"])
    assert index_markdown(estimates, ["a.html", "b.html"]) == index_markdown(estimates, ["a.html", "b.html"])


# ------------------------------------------------------------------------------------------------
# the committed reports/: their figures and structure are what burden gives now. Not their bytes:
# a page also carries wording (and, where an input does not fit, torch's own error message) that
# may change without any figure changing.

COMMITTED = REPO / "reports"
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
         "FLOPs": 1, "KFLOPs": 1e3, "MFLOPs": 1e6, "GFLOPs": 1e9, "TFLOPs": 1e12}


def assert_displays(text, exact):
    """``text`` ("107.35 MiB", "3.90 GFLOPs", "12 B") is ``exact`` at the rounding it shows."""
    match = re.fullmatch(r"(\d+(?:\.(\d+))?) (\w+)", text.strip())
    assert match, text
    digits = len(match.group(2) or "")
    assert f"{exact / UNITS[match.group(3)]:.{digits}f}" == match.group(1), (text, exact)


def exact_number(text):
    """The integer in "11,239,424 bytes" or "3,901,580,632 per forward pass"."""
    return int(re.match(r"\s*([\d,]+)", text).group(1).replace(",", ""))


@pytest.fixture(scope="module")
def committed():
    """Each committed model page, parsed, beside burden's estimate now (224 x 224, batch 1)."""
    return {name: SimpleNamespace(dom=parse((COMMITTED / f"{name}.html").read_text(encoding="utf-8")),
                                  e=burden.estimate(name, 224))
            for name in burden.list_models()}


def test_committed_reports_hold_every_model():
    expected = {f"{n}.html" for n in burden.list_models()} | {"index.html", "README.md"}
    assert {p.name for p in COMMITTED.iterdir() if p.is_file()} == expected


@pytest.mark.parametrize("name", sorted(PROTOTXT))
def test_committed_page_summary(committed, name):
    dom, e = committed[name].dom, committed[name].e
    assert dom.find("h1").text() == name
    summary = json.loads(dom.find("script", id="burden-summary").text())
    assert summary == {"model": name, "input": [3, 224, 224], "batch": 1, "dtype": "float32",
                       "convention": "convnet-burden", "memory_convention": e.memory_convention,
                       "params": e.params, "param_bytes": e.param_bytes, "feature_bytes": e.feature_bytes,
                       "flops": e.flops, "peak_feature_bytes": e.peak_feature_bytes, "input_bytes": e.input_bytes,
                       "peak_bytes": e.peak_bytes, "mode": "inference", "bytes_moved": e.bytes_moved,
                       "latency": None}
    cards = {c.find(cls="label").text(): c for c in dom.find_all("div", cls="card")}
    assert set(cards) == {"Parameters", "Parameter memory", "Feature memory", "FLOPs", "Inference peak"}
    assert_displays(cards.pop("Inference peak").find(cls="value").text(), e.peak_bytes)
    assert cards["Parameters"].find(cls="value").text() == f"{e.params:,}"
    for label, exact in (("Parameter memory", e.param_bytes), ("Feature memory", e.feature_bytes), ("FLOPs", e.flops)):
        assert_displays(cards[label].find(cls="value").text(), exact)
        assert exact_number(cards[label].find(cls="exact").text()) == exact
    # and burden's figures now are still those of the Caffe definition
    assert tuple(c.find(cls="value").text() for c in cards.values()) == REFERENCE_ROWS[name]
    # the inference peak: the curve's peak exactly, parameters + peak at the displayed rounding
    section = dom.find("section", id="live-memory")
    caption = section.find("figcaption").text()
    assert exact_number(caption.split("(")[-1]) == e.peak_feature_bytes
    assert_displays(section.find("p", cls="note").find_all("b")[-1].text(), e.peak_bytes)
    # the counting rules are there (their wording may change without a figure changing)
    assert dom.find("span", cls="pill").text() == "convnet-burden" and len(rules_of(dom)) >= 5


@pytest.mark.parametrize("name", sorted(PROTOTXT))
def test_committed_page_layer_table_and_charts(committed, name):
    dom, e = committed[name].dom, committed[name].e
    rows = table_rows(dom, "layers")
    assert len(rows) == len(e.layers)
    for tr, layer in zip(rows, e.layers):
        c = cells(tr)
        assert c[0]["data-v"] == layer.name and c[1].text() == layer.type
        assert int(tr["data-depth"]) == layer.depth
        assert c[2].text() == layer.details
        assert [int(x["data-v"]) for x in c[4:8]] == [layer.params, layer.param_bytes, layer.feature_bytes,
                                                       layer.flops]
    svgs = {svg["data-metric"]: svg for svg in dom.find_all("svg", cls="plot")}
    assert set(svgs) == set(METRICS) | {"live_memory"}
    for metric in METRICS:
        bars = grouped_bars(svgs[metric])
        assert 0 < len(bars) <= html_render.MAX_BARS
        assert sum(v for *_, v in bars) == getattr(e, metric)
        for module, own, v in bars:
            layer = e.layer(module)
            assert v == (getattr(layer, "self_" + metric) if own else getattr(layer, metric))
    stages = [r["data-stage"] for r in svgs["live_memory"].find_all("rect", cls="stage")]
    assert stages == [m for _, m in e.live_stages]
    assert svgs["live_memory"].find("path", cls="curve")["d"].startswith("M")


@pytest.mark.parametrize("name", ["se_bn_inception", "se_resnet50"])
def test_committed_page_scale_table(committed, name):
    """The feature-extraction table: the exact figures (in the cells' titles) where the input fits;
    where it does not, that it does not, whatever words torch uses to say why."""
    rows = table_rows(committed[name].dom, "scale-table")
    t = scale(name)
    assert len(rows) == len(t.rows) == 6
    for tr, row in zip(rows, t.rows):
        c = cells(tr)
        assert c[0].text() == f"{row.scale:g}" and c[1].text() == f"{row.input[-1]} x {row.input[-2]}"
        assert ("nofit" in (tr.attrs.get("class") or "").split()) == (not row.fits)
        if row.fits:
            assert exact_number(c[3]["title"]) == row.feature_bytes and exact_number(c[4]["title"]) == row.flops
            assert_displays(c[3].text(), row.feature_bytes)
            assert_displays(c[4].text(), row.flops)
        else:
            assert c[2].text().startswith("does not fit:")


def test_committed_index_and_readme(committed):
    from test_reference import REFERENCE

    names = burden.list_models()
    dom = parse((COMMITTED / "index.html").read_text(encoding="utf-8"))
    rows = table_rows(dom, "index-table")
    assert [r.find("a")["href"] for r in rows] == [f"{n}.html" for n in names]
    for r, name in zip(rows, names):
        e = committed[name].e
        c = [x.text() for x in cells(r)]
        assert c[:3] == [name, "224 x 224", f"{e.params:,}"]
        for text, exact in zip(c[3:7], (e.param_bytes, e.feature_bytes, e.flops, e.peak_bytes)):
            assert_displays(text, exact)
        assert c[7] == "{} MB / {} MB / {} GFLOPs".format(*REFERENCE[name])
    assert len(dom.find("svg", cls="scatter").find_all("a", cls="mark-link")) == len(names)
    readme = (COMMITTED / "README.md").read_text(encoding="utf-8")
    linked = re.findall(r"^\| \[(\w+)\]\((\w+\.html)\) \| 224 x 224 \| ([\d,]+) \| (.+?) \| (.+?) \| (.+?) \| "
                        r"(.+?) \| (\d+) MB / (\d+) MB / (\d+) GFLOPs \|$", readme, re.M)
    assert [(n, page) for n, page, *_ in linked] == [(n, f"{n}.html") for n in names]
    for (name, _, params, *shown) in linked:
        e = committed[name].e
        assert params == f"{e.params:,}"
        for text, exact in zip(shown[:4], (e.param_bytes, e.feature_bytes, e.flops, e.peak_bytes)):
            assert_displays(text, exact)
        assert tuple(int(x) for x in shown[4:]) == REFERENCE[name]
    assert "burden report --all --out reports/" in readme


def test_repository_readme_table(committed):
    """The table in the repository's README: burden's figures now, beside the reference table."""
    from test_reference import REFERENCE

    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\w+) \| ([\d,]+) \| (.+?) \| (.+?) \| (.+?) \| (\d+) / (\d+) / (\d+) \|$", text, re.M)
    assert sorted(r[0] for r in rows) == sorted(burden.list_models())
    for name, params, param_mem, feature_mem, flops, *reference in rows:
        e = committed[name].e
        assert params == f"{e.params:,}"
        for shown, exact in zip((param_mem, feature_mem, flops), (e.param_bytes, e.feature_bytes, e.flops)):
            assert_displays(shown, exact)
        assert tuple(int(x) for x in reference) == REFERENCE[name]
