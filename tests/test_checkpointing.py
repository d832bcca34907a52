"""Activation checkpointing: burden's ``checkpoint=`` option, and models that checkpoint themselves.

The oracle is the CPU allocator (``allocator_oracle.measure_step``) running a real training step of
a model that the test checkpoints itself, by wrapping the module's forward in
``torch.utils.checkpoint`` here, not with burden's code.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import burden
from allocator_oracle import measure, measure_step
from burden.errors import InputSpecError

# checkpoint saves the CPU generator's state (a 5,056-byte tensor made outside any op) per region
RNG_STATE = 5_056
# single-tensor Adam divides by a Python number, which PyTorch wraps as an 8-byte tensor burden does not see
WRAPPED_NUMBER = 8


def whole_step(model: nn.Module, x: torch.Tensor):
    return measure_step(model, (x,), optimizer=torch.optim.Adam)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU()),
                         nn.Linear(256, 10))


class SelfCheckpointed(nn.Module):
    """A model that calls torch.utils.checkpoint in its own forward."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.body, self.head, self.reentrant = mlp()[0], nn.Linear(256, 10), reentrant

    def forward(self, x):
        return self.head(checkpoint(self.body, x, use_reentrant=self.reentrant))


def checkpointed_by_hand(model: nn.Module, path: str) -> nn.Module:
    module = model.get_submodule(path)
    inner = module.forward
    module.forward = lambda *a: checkpoint(inner, *a, use_reentrant=False)
    return model


def _close(predicted: int, measured: int, slack: int) -> bool:
    return measured - slack <= predicted <= measured


@pytest.mark.parametrize("reentrant", [False, True])
def test_a_model_that_checkpoints_itself(reentrant):
    x = torch.randn(128, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reentrant: "None of the inputs have requires_grad=True"
        e = burden.estimate(SelfCheckpointed(reentrant), (64,), batch_size=128, mode="training")
        m = measure(SelfCheckpointed(reentrant), (x,))
        whole = whole_step(SelfCheckpointed(reentrant), x)
    t = e.training
    assert _close(t.training_peak_bytes, whole.peak, 2 * RNG_STATE + WRAPPED_NUMBER)
    assert _close(t.saved_activation_bytes, m.saved_activations, RNG_STATE)


def test_the_checkpoint_option_against_a_step_checkpointed_by_hand():
    x = torch.randn(128, 64)
    e = burden.estimate(mlp(), (64,), batch_size=128, mode="training", checkpoint=["0"])
    m = whole_step(checkpointed_by_hand(mlp(), "0"), x)
    plain = whole_step(mlp(), x)
    t = e.training
    assert _close(t.training_peak_bytes, m.peak, 2 * RNG_STATE + WRAPPED_NUMBER)
    assert _close(t.unchecked_peak_bytes, plain.peak, WRAPPED_NUMBER)
    assert t.checkpointed == ("0",)
    # the recomputation is the checkpointed block's forward: its four ops, as in an inference count
    assert t.recompute_flops == burden.estimate(mlp(), (64,), batch_size=128).layer("0").flops > 0
    assert t.recompute_peak_bytes > 0


def test_a_convnet_with_checkpointed_stages():
    # large enough that activations, not gradients, make the peak
    x = torch.randn(8, 3, 128, 128)
    e = burden.estimate("se_resnet50", 128, batch_size=8, mode="training", checkpoint="layer2,layer3")
    model = burden.create_model("se_resnet50")
    for path in ("layer2", "layer3"):
        checkpointed_by_hand(model, path)
    m = whole_step(model, x)
    assert abs(e.training.training_peak_bytes / m.peak - 1) < 0.01
    assert e.training.training_peak_bytes < e.training.unchecked_peak_bytes


def test_checkpoint_depth_and_mistakes():
    e = burden.estimate(mlp(), (64,), batch_size=4, mode="training", checkpoint_depth=1)
    assert e.training.checkpointed == ("0", "1")
    for kwargs, needle in (({"checkpoint": ["2"]}, "no such module"), ({"checkpoint": ["0", "0.0"]}, "inside"),
                           ({"checkpoint_depth": 9}, "depth 9")):
        with pytest.raises(InputSpecError, match=needle):
            burden.estimate(mlp(), (64,), mode="training", **kwargs)
    with pytest.raises(InputSpecError, match="training"):
        burden.estimate(mlp(), (64,), checkpoint=["0"])


def test_the_model_is_given_back_unchanged():
    model = mlp()
    before = dict(model[0].__dict__)
    burden.estimate(model, (64,), mode="training", checkpoint=["0"])
    assert "forward" not in model[0].__dict__ and model[0].__dict__.keys() == before.keys()


def test_fit_with_checkpointing_fits_a_larger_batch():
    plain = burden.fit("se_resnet50", "2GiB")
    checked = burden.fit("se_resnet50", "2GiB", checkpoint_depth=1)
    assert checked.max_batch > plain.max_batch and checked.checkpointed
