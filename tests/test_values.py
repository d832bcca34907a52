"""Known values beside a meta trace (``burden/values.py``): a read of a value computed from constants
alone gets its answer on meta; a read of anything that depends on a weight or an input still stops
the trace; the values never leak into the model or another trace."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import burden
from burden.errors import DataDependentError


class Positions(nn.Module):
    """Hugging Face's packed-sequence check in small: positions from arange, a value read of them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0).expand(x.shape[0], -1)
        steps = torch.diff(positions, prepend=positions[:, :1] - 1, dim=-1)
        if (steps != 1).cumsum(-1)[:, -1].eq(0).all():  # one sequence per row: no packing
            return self.fc(x)
        return self.fc(x) * 2  # never taken


class ReadsAWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x) * float(self.fc.weight.abs().max())


class ReadsItsInput(nn.Module):
    def forward(self, x):
        return x[: int(x.sum().item()) % 2 + 1]


def test_a_value_of_constants_is_known_on_meta():
    e = burden.estimate(Positions(), inputs=(burden.TensorSpec(2, 16, 8),), device="meta")
    assert e.device == "meta" and e.flops > 0
    # the branch taken is the one a real run on the CPU takes (its figures, the memory included)
    real = burden.estimate(Positions(), inputs=(burden.TensorSpec(2, 16, 8),), device="cpu")
    assert (e.flops, e.peak_bytes, e.feature_bytes) == (real.flops, real.peak_bytes, real.feature_bytes)
    assert e.layer("fc").flops == 2 * 16 * 8 * 8 + 2 * 16 * 8


def test_a_value_of_constants_in_a_training_step():
    e = burden.estimate(Positions(), inputs=(burden.TensorSpec(2, 16, 8),), mode="training", device="meta")
    assert e.training.training_peak_bytes > 0


@pytest.mark.parametrize("model", [ReadsAWeight(), ReadsItsInput()])
def test_a_value_of_a_weight_or_an_input_still_stops_the_trace(model):
    with pytest.raises(DataDependentError):
        burden.estimate(model, inputs=(burden.TensorSpec(2, 8),), device="meta")
    e = burden.estimate(model, inputs=(burden.TensorSpec(2, 8),))  # and the CPU answers, as it says
    assert e.device == "cpu" and e.notes[0].startswith("traced on the CPU")


def test_values_stay_in_their_trace():
    model = Positions()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    burden.estimate(model, inputs=(burden.TensorSpec(2, 16, 8),), device="meta")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(hasattr(t, "_burden_value") for t in [*model.parameters(), *model.buffers()])
