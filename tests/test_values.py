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


class ReusesAddresses(nn.Module):
    """Storages written with unknown values die, and new ones are born at their addresses: a value
    made afterwards from constants alone is known whatever address it lands on."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        for _ in range(64):
            scratch = torch.zeros(4, device=x.device)
            scratch.copy_(y[0, :4])  # a weight's values written in: unknown from here on
            del scratch
            fresh = torch.arange(4, device=x.device)
            if not bool((fresh >= 0).all()):  # read: known, wherever the allocator put it
                return y * 2
        return y


def test_a_dead_storages_address_carries_no_unknown_values():
    e = burden.estimate(ReusesAddresses(), inputs=(burden.TensorSpec(2, 8),), device="meta")
    assert e.params == 72


def test_token_inputs_are_their_own_values():
    """A model that reads its ids and mask (a language model's padding check) is analysed on meta
    when its inputs are real token inputs (``seq=``)."""

    class ChecksPadding(nn.Module):
        main_input_name = "input_ids"

        def __init__(self) -> None:
            super().__init__()
            self.config = type("Config", (), {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2})()
            self.embed = nn.Embedding(16, 8)

        def forward(self, input_ids, attention_mask):
            if bool((attention_mask == 0).any()) or bool((input_ids == self.config.pad_token_id).any()):
                return self.embed(input_ids) * 0
            return self.embed(input_ids)

    e = burden.estimate(ChecksPadding(), seq=32, batch_size=2, device="meta")
    assert e.device == "meta" and e.params == 128
    with pytest.raises(DataDependentError):  # shapes alone, no values: still stops on meta
        burden.estimate(ChecksPadding(), inputs={"input_ids": burden.TensorSpec(2, 32, dtype=torch.int64),
                                                 "attention_mask": burden.TensorSpec(2, 32, dtype=torch.int64)},
                        device="meta")


class ReadsOutsideOps(nn.Module):
    """Three reads of known values that no aten op makes: ``tolist()``, an index by a Python list,
    and a deep copy (a cache layer copied in forward) whose copy is read."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        import copy

        lengths = torch.arange(x.shape[0], device=x.device) + 2
        ends = lengths[[-1, 0]]  # Python indexing makes its index tensor on meta, without values
        copied = copy.deepcopy(lengths)
        return self.fc(x[: ends.tolist()[1]]) * copied.tolist()[-1]  # two rows of four, times 5


def test_reads_outside_ops_are_known_on_meta():
    e = burden.estimate(ReadsOutsideOps(), inputs=(burden.TensorSpec(4, 8),), device="meta")
    real = burden.estimate(ReadsOutsideOps(), inputs=(burden.TensorSpec(4, 8),), device="cpu")
    assert e.device == "meta" and e.flops == real.flops and list(e.layer("fc").output_shape) == [2, 8]


def test_values_held_at_once_stay_within_a_budget():
    """Past the budget, large values are left unknown (a training step's zeros as large as the
    weights); small ones, which control flow reads, are still computed."""
    from burden.values import KnownValues

    values = KnownValues(budget=1 << 12, small=1 << 8)
    zeros = torch.ops.aten.zeros.default
    large = [torch.empty(512, device="meta") for _ in range(3)]
    for t in large:
        values.after(zeros, ([512],), {"device": torch.device("meta")}, t)
    assert [values.carries(t) for t in large] == [True, True, False]  # 2 KiB each, 4 KiB at most
    small = torch.empty(8, device="meta")
    values.after(zeros, ([8],), {"device": torch.device("meta")}, small)
    assert values.carries(small)
    del large[0]  # a value dies with its tensor, and its bytes with it
    assert values.held_bytes == 2048 + 32
