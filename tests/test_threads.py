"""Estimates in a shared process: other threads' arithmetic is untouched, and estimates running at
once in several threads give what each gives alone.

The oracles are torch itself (the dtype and the values of real float32 ops run by another thread,
against the same ops run before any estimate) and each estimate run alone, in this process, first.
"""

import threading

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import burden


class ConvAttention(nn.Module):
    """Convolutions, batch norm, and torch's own attention layer (whose Python forward calls
    ``linear`` and ``scaled_dot_product_attention`` from inside ``torch.nn.functional``)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x))).flatten(2).transpose(1, 2)
        y = y + self.attn(y, y, y, need_weights=False)[0]
        return self.head(y.mean(1)) @ torch.eye(10)


def _real_work():
    """Real float32 work of every kind that autocast would cast: linear, matmul, @, conv2d."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 16, generator=g), torch.randn(16, 16, generator=g)
    image, kernel = torch.randn(1, 3, 8, 8, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    return [F.linear(a, b), torch.matmul(a, b), a @ b, a.matmul(b), F.conv2d(image, kernel),
            torch.conv2d(image, kernel)]


def _in_threads(jobs):
    """Each job in its own thread, all started together; their results and their exceptions."""
    results, errors = [None] * len(jobs), []
    start = threading.Barrier(len(jobs))

    def run(i, job):
        start.wait()
        try:
            results[i] = job()
        except BaseException as exc:  # noqa: BLE001 - reported below, with the thread's own error
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_another_threads_float32_ops_stay_float32_through_amp_estimates():
    expected = _real_work()
    stop = threading.Event()
    seen = []

    def worker():
        while not stop.is_set():
            seen.append(_real_work())

    def amp_estimate(amp):
        return lambda: burden.estimate(ConvAttention(), 32, batch_size=2, amp=amp, mode="training")

    other = threading.Thread(target=worker)
    other.start()
    try:
        _, errors = _in_threads([amp_estimate("bf16"), amp_estimate("fp16"), amp_estimate("bf16")])
    finally:
        stop.set()
        other.join()
    assert not errors, errors
    assert seen, "the other thread ran no work while the estimates ran"
    for outputs in seen:
        assert [t.dtype for t in outputs] == [torch.float32] * len(expected)
        for got, want in zip(outputs, expected):
            assert torch.equal(got, want)


def test_nothing_of_torchs_is_rebound_while_an_estimate_runs():
    names = {"F.linear": lambda: F.linear, "torch.matmul": lambda: torch.matmul,
             "Tensor.__matmul__": lambda: torch.Tensor.__matmul__, "Tensor.tolist": lambda: torch.Tensor.tolist,
             "F.sdpa": lambda: F.scaled_dot_product_attention}
    before = {name: get() for name, get in names.items()}
    hooks = torch.nn.modules.module
    during = []

    def watch(stop):
        while not stop.is_set():
            during.append(({name: get() for name, get in names.items()},
                           len(hooks._global_forward_pre_hooks) + len(hooks._global_forward_hooks)))

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    try:
        burden.estimate(ConvAttention(), 32, amp="bf16", mode="training")
    finally:
        stop.set()
        watcher.join()
    assert during
    for found, global_hooks in during:
        assert found == before
        assert global_hooks == 0


JOBS = {"plain": dict(mode="training"), "amp": dict(mode="training", amp="bf16")}


def _estimate(kw):
    return burden.estimate("se_resnet50", 64, batch_size=2, **kw).to_dict()


@pytest.fixture(scope="module")
def alone():
    found = {name: _estimate(kw) for name, kw in JOBS.items()}
    assert found["plain"] != found["amp"]  # the two differ, so a mix-up would show
    return found


@pytest.mark.consistency
@pytest.mark.parametrize("round_", range(5))
def test_concurrent_training_estimates_equal_each_alone(alone, round_):
    """Two training estimates of se_resnet50 at once, one with amp, as each gives alone."""
    results, errors = _in_threads([lambda kw=kw: _estimate(kw) for kw in JOBS.values()])
    assert not errors, errors
    assert dict(zip(JOBS, results)) == alone


@pytest.mark.consistency
def test_one_model_object_in_two_threads_takes_turns():
    """The same nn.Module given to two analyses at once (training, and training with amp): each
    hooks the module and swaps its tensors while it runs, so they take turns, and each gives what
    it gives alone; the module comes back unchanged."""
    model = ConvAttention()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = [dict(mode="training"), dict(mode="training", amp="bf16")]
    alone = [burden.estimate(model, 32, batch_size=2, **kw).to_dict() for kw in kinds]
    for _ in range(3):
        results, errors = _in_threads([lambda kw=kw: burden.estimate(model, 32, batch_size=2, **kw).to_dict()
                                       for kw in kinds])
        assert not errors, errors
        assert results == alone
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
