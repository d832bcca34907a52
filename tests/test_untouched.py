"""The user's model comes out of an analysis exactly as it went in, even when the analysis fails."""

import pytest
import torch
from torch import nn

import burden


class Net(nn.Module):
    def __init__(self, fail=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.fail = fail

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        if self.fail:
            raise RuntimeError("boom")
        return self.head(y.mean((2, 3)))


def snapshot(model):
    return {
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        "devices": [p.device.type for p in model.parameters()],
        "dtypes": [p.dtype for p in model.parameters()],
        "grad": [p.requires_grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def prepare(model):
    model.train()
    model.bn.eval()  # mixed modes must survive
    model.conv.weight.requires_grad_(False)
    model.head.register_forward_hook(lambda m, i, o: None)
    return model


def assert_same(before, after):
    for key in ("training", "hooks", "devices", "dtypes", "grad"):
        assert before[key] == after[key], key
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_model_untouched_after_analysis(device):
    model = prepare(Net())
    before = snapshot(model)
    burden.estimate(model, (3, 8, 8), device=device)
    assert_same(before, snapshot(model))


def test_model_untouched_after_failure():
    model = prepare(Net(fail=True))
    before = snapshot(model)
    with pytest.raises(burden.BurdenError, match="boom"):
        burden.estimate(model, (3, 8, 8))
    assert_same(before, snapshot(model))


def test_model_untouched_after_shape_error():
    model = prepare(Net())
    before = snapshot(model)
    with pytest.raises(burden.BurdenError, match="conv"):
        burden.estimate(model, (3, 2, 2))
    assert_same(before, snapshot(model))


def test_language_model_untouched_after_generate():
    """``burden.generate`` runs the model's own generate(): its class (swapped while the trace
    runs, so that it reports the target's device), modes, hooks, weights and generation config come
    back as they were."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100)
    model = transformers.LlamaForCausalLM(config)
    model.train()
    model.model.norm.eval()
    model.lm_head.register_forward_hook(lambda m, i, o: None)
    cls, generation, attributes = type(model), model.generation_config.to_dict(), set(vars(model))
    before = snapshot(model)
    burden.generate(model, 8, 4, batch_size=2)
    burden.generate(model, 8, 4, batch_size=2, cache="static")  # transformers remembers a static cache's size
    assert type(model) is cls and model.generation_config.to_dict() == generation and set(vars(model)) == attributes
    assert_same(before, snapshot(model))
