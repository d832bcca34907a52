"""The notebook API on models beyond the zoo; every expected figure is worked out by hand."""

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import burden
from burden.errors import FactoryImportError, ForwardError, ShapeError


class TiedTwoInput(nn.Module):
    """Token ids and an extra feature input; the classifier reuses the embedding matrix."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids, extra):
        return self.head(self.embed(ids) + extra)


@pytest.mark.parametrize("style", ["positional", "keyword", "examples"])
def test_two_inputs_with_tied_weight(style):
    ids, extra = burden.TensorSpec(2, 3, dtype=torch.long), burden.TensorSpec(2, 3, 4)
    inputs = {"positional": (ids, extra),
              "keyword": {"args": (ids,), "kwargs": {"extra": extra}},
              "examples": (torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 3, 4))}[style]
    e = burden.estimate(TiedTwoInput(), inputs=inputs)
    # params: the 10 x 4 matrix once, although two modules hold it
    assert e.params == 40 and e.param_bytes == 160
    # embedding lookup 0 FLOPs -> 24 values; sum 24 FLOPs -> 24 values; head: 6 rows x 10 outputs x 4 = 240
    assert e.flops == 24 + 240
    assert e.feature_bytes == (24 + 24 + 60) * 4
    assert e.batch == 2 and e.input == (3,)


class Branchy(nn.Module):
    """Dict input, shape-dependent control flow, a module called twice, tuple and dict outputs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4, bias=False)

    def forward(self, batch):
        x = batch["x"]
        if x.shape[-1] == 4:  # Python control flow on shapes
            x = self.fc(self.fc(x))
        else:
            x = x[..., :4]
        return (x, {"double": x * 2, "list": [x.sum(-1)]})


def test_nested_inputs_outputs_control_flow_and_repeated_calls():
    e = burden.estimate(Branchy(), inputs=({"x": torch.Size([3, 4])},), convention="macs")
    assert e.flops == 2 * (3 * 4 * 4)  # fc twice, 48 multiply-adds each
    assert e.layer("fc").calls == 2
    assert e.layer("").output_shape == [[3, 4], {"double": [3, 4], "list": [[3]]}]


def test_matmul_bmm_einsum_counted():
    class Mats(nn.Module):
        def forward(self, a, b):
            return a @ b, torch.bmm(a, b), torch.einsum("bij,bjk->bik", a, b)

    # each is 2 x (3 x 5 outputs) x 4 inner = 120 multiply-adds
    e = burden.estimate(Mats(), inputs=(torch.Size([2, 3, 4]), torch.Size([2, 4, 5])), convention="macs")
    assert e.flops == 3 * 120
    e = burden.estimate(Mats(), inputs=(torch.Size([2, 3, 4]), torch.Size([2, 4, 5])))
    assert e.flops == 3 * 120 and e.feature_bytes == 3 * 30 * 4
    assert burden.estimate(Mats(), inputs=(torch.Size([2, 3, 4]), torch.Size([2, 4, 5])),
                           convention="torch").flops == 2 * 3 * 120


def test_attention_counted():
    class SDPA(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    # batch 2, 3 heads, 5 queries, 7 keys, dim 8: QK^T 2*3*5*7*8 = 1680, AV 2*3*5*7*8 = 1680
    spec = (torch.Size([2, 3, 5, 8]), torch.Size([2, 3, 7, 8]), torch.Size([2, 3, 7, 8]))
    assert burden.estimate(SDPA(), inputs=spec, convention="macs").flops == 3360
    assert burden.estimate(SDPA(), inputs=spec, convention="torch").flops == 6720

    # MultiheadAttention, E = 8, 2 heads, batch 1, 5 tokens: in-projection 3 x 5 x 8 x 8 = 960,
    # QK^T and AV 2 heads x 5 x 5 x 4 = 200 each, out-projection 5 x 8 x 8 = 320
    mha = nn.MultiheadAttention(8, 2, batch_first=True)

    class Self(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    assert burden.estimate(Self(), inputs=(torch.Size([1, 5, 8]),), convention="macs").flops == 960 + 400 + 320


@pytest.mark.parametrize("cell,gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_layers_counted(cell, gates):
    # input 6 -> hidden 5, batch 2, 7 steps: per step and sample gates x 5 x (6 + 5) multiply-adds
    rnn = cell(6, 5, batch_first=True)
    e = burden.estimate(rnn, inputs=(torch.Size([2, 7, 6]),), convention="macs")
    assert e.flops == 2 * 7 * gates * 5 * (6 + 5)
    assert e.params == gates * 5 * (6 + 5) + 2 * gates * 5


def test_real_model_unchanged_by_meta_analysis_of_an_lstm():
    rnn = nn.LSTM(3, 2)
    before = {k: v.clone() for k, v in rnn.state_dict().items()}
    burden.estimate(rnn, inputs=(torch.Size([4, 1, 3]),))
    assert all(p.device.type == "cpu" for p in rnn.parameters())
    assert all(torch.equal(before[k], v) for k, v in rnn.state_dict().items())


def test_estimate_is_immutable_and_serialisable():
    e = burden.estimate("se_resnet50", 64)
    with pytest.raises(AttributeError):
        e.flops = 0
    data = json.loads(e.to_json())
    assert data == e.to_dict()
    assert data["flops"] == e.flops and data["layers"][0]["name"] == ""
    table = e.table(depth=1, columns=["name", "flops"], sort="flops", top=2)
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == ["layer3", "layer2", "total"]  # the two costliest stages, then the total


def test_compare_returns_the_reference_table_shape():
    c = burden.compare(["se_resnet50", "se_bn_inception"])
    data = c.to_dict()
    assert [r["model"] for r in data["rows"]] == ["se_resnet50", "se_bn_inception"]
    assert data["rows"][0]["params"] == 28_141_144
    latex = c.table(fmt="latex_booktabs")
    assert "\\toprule" in latex and "se\\_resnet50" in latex
    assert "<table>" in c._repr_html_()


def test_factory_path(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text("import torch\n"
                                          "def tiny():\n    return torch.nn.Linear(3, 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    e = burden.estimate("mymodels:tiny", (3,))
    assert e.params == 8 and e.flops == 2 * 3 + 2


def test_factory_path_that_does_not_import():
    with pytest.raises(FactoryImportError, match="no_such_module"):
        burden.estimate("no_such_module:make")
    with pytest.raises(burden.BurdenError, match="has no attribute"):
        burden.estimate("json:no_such_factory")


def test_forward_error_names_module_and_its_input_shapes():
    class Inner(nn.Module):
        def forward(self, x):
            raise ValueError("unexpected layout")

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 1)
            self.block = nn.Sequential(nn.Identity(), Inner())

        def forward(self, x):
            return self.block(self.conv(x))

    with pytest.raises(ForwardError) as info:
        burden.estimate(Outer(), (3, 8, 8), batch_size=2)
    message = str(info.value)
    assert "block.1" in message and "2x6x8x8" in message and "unexpected layout" in message


def test_inputs_that_do_not_fit():
    with pytest.raises(ShapeError, match=r"layer 0\.fc \(Linear\)"):
        burden.estimate(nn.Sequential(OrderedLinear()), (3,))
    with pytest.raises(ForwardError, match="extra"):  # a missing argument
        burden.estimate(TiedTwoInput(), inputs=(burden.TensorSpec(2, 3, dtype=torch.long),))


class OrderedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def test_timm_and_torchvision_names_when_installed(monkeypatch):
    """Neither package is a dependency; stand-ins show the names reach their factories, weightless."""
    import sys
    import types

    calls = []
    timm = types.ModuleType("timm")
    timm.create_model = lambda name, pretrained: calls.append((name, pretrained)) or nn.Linear(3, 2)
    timm.list_models = lambda: ["seresnext50_32x4d"]

    def get_model(name, weights):
        calls.append((name, weights))
        layer = nn.Linear(3, 4)
        if name == "reads_its_weights":  # as torchvision's RegNets do: impossible on meta
            float(layer.weight.abs().sum())
        return layer

    torchvision = types.ModuleType("torchvision")
    torchvision.models = types.SimpleNamespace(get_model=get_model,
                                               list_models=lambda: ["resnet50", "reads_its_weights"])
    monkeypatch.setitem(sys.modules, "timm", timm)
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    assert burden.estimate("timm:seresnext50_32x4d", (3,)).params == 8
    assert burden.estimate("torchvision:resnet50", (3,)).params == 16
    assert calls == [("seresnext50_32x4d", False), ("resnet50", None)]
    # built on the CPU and moved to meta when its constructor reads values; the figures are the same
    assert burden.estimate("torchvision:reads_its_weights", (3,)).params == 16
    with pytest.raises(FactoryImportError, match="has no model 'resnet5'; did you mean resnet50"):
        burden.estimate("torchvision:resnet5")


def test_torchvision_that_does_not_import(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails, as beside a mismatched torch
    with pytest.raises(FactoryImportError, match="torchvision"):
        burden.estimate("torchvision:resnet50")


def test_training_mode_figures():
    # 4 -> 3 -> 2 MLP without bias: 12 + 6 = 18 trainable values, 72 bytes of gradients
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    # state: SGD none, SGD with momentum a buffer per parameter, Adam and AdamW two moments per
    # parameter and a 4-byte step counter for each of the two parameters
    for optimizer, name, state in (("sgd", "SGD", 0), ("momentum", "SGD", 72), ("adam", "Adam", 2 * 72 + 8),
                                   ("adamw", "AdamW", 2 * 72 + 8)):
        e = burden.estimate(model, (4,), batch_size=5, mode="training", optimizer=optimizer)
        assert e.mode == "training" and e.training.optimizer == name
        assert e.training.gradient_bytes == 18 * 4
        assert e.training.optimizer_bytes == state
        # backward: grad of the second weight 2x3 outer products over 5 samples = 30, grad of its
        # input 5 x 3 x 2 = 30, ReLU backward 2 x 15 = 30, grad of the first weight 5 x 3 x 4 = 60;
        # the first layer's input needs no gradient
        assert e.training.backward_flops == 30 + 30 + 30 + 60
    data = e.to_dict()
    assert data["gradient_bytes"] == 72 and data["optimizer"] == "AdamW"
    assert burden.estimate(model, (4,)).to_dict()["training_peak_bytes"] is None


def test_training_mode_refusals():
    with pytest.raises(burden.BurdenError, match="optimizer"):
        burden.estimate(nn.Linear(2, 2), (2,), mode="training", optimizer="lion")
    with pytest.raises(burden.BurdenError, match="backward"):
        burden.estimate(nn.Linear(2, 2), (2,), mode="training", convention="fvcore")
    with pytest.raises(burden.BurdenError, match="mode"):
        burden.estimate(nn.Linear(2, 2), (2,), mode="train")
