"""Every optimizer ``torch.optim`` ships, by name: its state and its step's temporaries as its own code
makes them, against the CPU allocator running the same optimizer for real (``measure_step``), in
each implementation it has. An optimizer that cannot run on stand-ins says why.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import burden
from allocator_oracle import measure_step
from burden.errors import DataDependentError
from burden.optimizers import optimizer_classes

# a Python number passed to an op that takes a tensor is an 8-byte CPU tensor made outside any op
# (the single-tensor loops divide by one): burden does not see it, the allocator may, a few at a time
WRAPPED_NUMBERS = 4 * 8
RUN_ON_META = ("adadelta", "adagrad", "adam", "adamw", "adamax", "nadam", "radam", "rmsprop", "rprop", "sgd")


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 64))


def implementations(name: str) -> list[str]:
    probe = optimizer_classes()[name](nn.Linear(1, 1).parameters())
    return ["single"] + [impl for impl in ("foreach", "fused") if impl in probe.param_groups[0]]


CASES = [(name, impl) for name in RUN_ON_META for impl in implementations(name)]


@pytest.mark.parametrize("name, impl", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_each_optimizer_against_the_allocator(name, impl):
    cls = optimizer_classes()[name]
    flags = {"foreach": impl == "foreach"} | ({"fused": True} if impl == "fused" else {})
    measured = measure_step(mlp(), (torch.randn(8, 256),), optimizer=lambda ps: cls(ps, **flags))
    e = burden.estimate(mlp(), (256,), batch_size=8, mode="training", optimizer=name, optimizer_impl=impl,
                        device="meta")
    t = e.training
    assert t.optimizer == cls.__name__ and t.optimizer_impl == impl
    assert t.optimizer_bytes == measured.optimizer_state
    step = measured.phase("optimizer")
    assert 0 <= step.peak - t.optimizer_step_peak_bytes <= WRAPPED_NUMBERS
    assert 0 <= measured.peak - t.training_peak_bytes <= WRAPPED_NUMBERS


def test_every_optimizer_is_accounted_for():
    """Each optimizer torch.optim ships runs on meta, runs on the CPU (its step reads values), or is
    refused with the reason (Muon and Adafactor are newer than some releases burden supports)."""
    shipped = set(optimizer_classes())
    assert {*RUN_ON_META, "asgd", "lbfgs", "sparseadam"} <= shipped
    assert shipped <= {*RUN_ON_META, "asgd", "adafactor", "lbfgs", "sparseadam", "muon"}


@pytest.mark.parametrize("name", ["asgd", "adafactor"])
def test_a_step_that_reads_values_runs_on_the_cpu(name):
    if name not in optimizer_classes():
        pytest.skip(f"this torch has no {name}")
    e = burden.estimate(mlp(), (256,), batch_size=8, mode="training", optimizer=name)
    assert e.device == "cpu" and "reads tensor values" in e.notes[0]
    with pytest.raises(DataDependentError, match="reads tensor values"):
        burden.estimate(mlp(), (256,), batch_size=8, mode="training", optimizer=name, device="meta")


@pytest.mark.parametrize("name, reason", [("lbfgs", "closure"), ("sparseadam", "dense gradients"),
                                          ("muon", "2D parameters")])
def test_an_optimizer_that_cannot_run_says_why(name, reason):
    if name not in optimizer_classes():
        pytest.skip(f"this torch has no {name}")
    with pytest.raises(burden.BurdenError, match=reason):
        burden.estimate(mlp(), (256,), batch_size=8, mode="training", optimizer=name)


def test_a_class_and_a_factory():
    by_class = burden.estimate(mlp(), (256,), batch_size=8, mode="training", optimizer=torch.optim.AdamW)
    by_name = burden.estimate(mlp(), (256,), batch_size=8, mode="training", optimizer="adamw")
    assert by_class.training.training_peak_bytes == by_name.training.training_peak_bytes
    amsgrad = burden.estimate(mlp(), (256,), batch_size=8, mode="training",
                              optimizer=lambda ps: torch.optim.Adam(ps, amsgrad=True))
    # amsgrad keeps a third moment per parameter: its own code says so
    adam = burden.estimate(mlp(), (256,), batch_size=8, mode="training", optimizer="adam")
    params = 256 * 512 + 512 + 512 * 64 + 64
    assert amsgrad.training.optimizer_bytes - adam.training.optimizer_bytes == 4 * params
    with pytest.raises(burden.BurdenError, match="not a torch.optim.Optimizer"):
        burden.estimate(mlp(), (256,), mode="training", optimizer=lambda ps: object())


def test_the_target_picks_the_implementation():
    cpu = burden.estimate(mlp(), (256,), mode="training", optimizer="adam")
    cuda = burden.estimate(mlp(), (256,), mode="training", optimizer="adam", target="cuda")
    assert (cpu.training.optimizer_impl, cuda.training.optimizer_impl) == ("single", "foreach")
    mine = burden.estimate(mlp(), (256,), mode="training", optimizer=lambda ps: torch.optim.Adam(ps, fused=True),
                           target="cuda")
    assert mine.training.optimizer_impl == "fused"  # the user's own choice is kept
