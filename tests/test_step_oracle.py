"""The whole-step oracle (``allocator_oracle.measure_step``) against figures worked out by hand.

Each expected figure below is derived in a comment from the shapes and from what PyTorch's own
code does: autograd for the forward and backward, and ``torch/optim/adam.py`` and ``sgd.py`` for
the optimizer step. Nothing here comes from burden.

Terms used throughout. ``W`` is the 4,000,000 bytes of a 1000 x 1000 float weight (and of its
gradient and of each Adam moment). ``R`` is what is resident when the step starts: parameters,
buffers, optimizer state and the input batch. ``SCALAR`` is the 8-byte double tensor that PyTorch's
Python binding makes of a Python number passed where an op takes a Tensor (``t / 0.5``,
``t.mul_(0.999)``, ``step_t += 1``): it is made outside any op, so it is tensor memory and not a
kernel's scratch; the 4-byte float copy of it that the op then makes inside itself is scratch.
Ops whose number argument is a Scalar in their schema (``lerp_``'s weight, ``addcmul_``'s
``value``, ``add_``'s ``alpha``) make nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from allocator_oracle import PhaseFigures, StepFigures, measure_step

W = 1000 * 1000 * 4  # a 1000 x 1000 float32 weight, its gradient, or one Adam moment of it
X = 1000 * 4  # the input batch of the small models: 1 x 1000 floats
SCALAR = 8  # a Python number wrapped into a 0-dim double tensor by the Python binding
STEP = 4  # Adam's step counter: a 0-dim float32 tensor per parameter


def sgd(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1)


class Summed(nn.Module):
    """Linear layers without bias whose output is summed: the model returns its own scalar loss."""

    def __init__(self, layers: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(*[nn.Linear(1000, 1000, bias=False) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).sum()


def spans(m: StepFigures) -> list[tuple]:
    """(phase, micro-batch, start, peak, end) of every phase, relative to the resident bytes."""
    r = m.resident
    return [(p.name, p.micro_batch, p.start - r, p.peak - r, p.end - r) for p in m.phases]


def x1() -> torch.Tensor:
    return torch.randn(1, 1000)


# --- plain SGD ---------------------------------------------------------------------------------

def test_sgd_one_linear():
    m = measure_step(Summed(), (x1(),), optimizer=sgd)
    # Resident: the weight and the input; SGD without momentum keeps no state.
    assert (m.parameters, m.optimizer_state, m.inputs) == (W, 0, X)
    # Forward: the 1 x 1000 output (4,000) and its sum (4); the sum saves nothing of the output,
    # and mm saves only the input and the weight (resident), so the output is freed at once.
    # Backward: the seed of ones (4) that loss.backward() makes; MmBackward makes the weight's
    # gradient (W) and, inside the same kernel call, a contiguous copy of the expanded 1 x 1000
    # upstream gradient (4,000: scratch); AccumulateGrad steals the gradient, no copy. The loss and
    # the seed go, the gradient stays. The optimizer adds it into the weight in place (add_'s
    # ``alpha`` is a Scalar: nothing is made), and zero_grad(set_to_none) frees it.
    assert spans(m) == [("forward", 0, 0, 4000 + 4, 4),
                        ("backward", 0, 4, 4 + 4 + W, W),
                        ("optimizer", None, W, W, 0)]
    assert (m.peak, m.peak_phase.name) == (W + X + 4 + 4 + W, "backward")
    assert (m.workspace, m.retained) == (4000, 0)


def test_sgd_momentum_one_linear():
    m = measure_step(Summed(), (x1(),), optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9))
    # State: one momentum buffer (W), made by the warm-up step as ``grad.clone()``.
    assert (m.parameters, m.optimizer_state, m.inputs) == (W, W, X)
    # ``buf.mul_(momentum)`` wraps 0.9 into a SCALAR; ``.add_(grad, alpha=...)`` makes nothing.
    assert spans(m)[2] == ("optimizer", None, W, W + SCALAR, 0)
    assert m.peak == W + W + X + 4 + 4 + W  # still in the backward


def test_sgd_two_linears():
    m = measure_step(Summed(layers=2), (x1(),), optimizer=sgd)
    assert (m.parameters, m.optimizer_state, m.inputs) == (2 * W, 0, X)
    # Forward: h = x W1^T (4,000, saved by the second mm), y (4,000, freed after the sum), the
    # loss (4). Backward: seed (4); the second MmBackward makes dW2 (W) and dh (4,000) and then
    # releases h, which it saved; the first makes dW1 (W) while dh is alive.
    h = 4000
    assert spans(m) == [("forward", 0, 0, h + 4000 + 4, h + 4),
                        ("backward", 0, h + 4, 4 + 4 + W + 4000 + W, 2 * W),
                        ("optimizer", None, 2 * W, 2 * W, 0)]


# --- Adam and AdamW, three implementations -----------------------------------------------------

ADAM = [torch.optim.Adam, torch.optim.AdamW]


@pytest.mark.parametrize("adam", ADAM, ids=lambda c: c.__name__)
def test_adam_single_tensor(adam):
    # _single_tensor_adam, per parameter: ``step_t += 1`` (a SCALAR, gone at once), AdamW's
    # ``param.mul_(1 - lr * wd)`` (a SCALAR), ``exp_avg.lerp_`` and ``exp_avg_sq.mul_().addcmul_()``
    # in place (one more SCALAR for beta2), then
    #     denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    # sqrt() makes W, the division wraps its number (SCALAR) and makes another W while the sqrt is
    # alive; then the sqrt and the SCALAR go. addcdiv_ updates the parameter in place.
    m = measure_step(Summed(), (x1(),), optimizer=lambda ps: adam(ps, foreach=False))
    # State: exp_avg and exp_avg_sq (W each) and the 0-dim float32 step counter.
    assert (m.parameters, m.optimizer_state, m.inputs) == (W, 2 * W + STEP, X)
    # The optimizer starts holding the gradient (W) and peaks at gradient + sqrt + SCALAR + denom.
    assert spans(m)[2] == ("optimizer", None, W, W + W + SCALAR + W, 0)
    assert m.peak_phase.name == "optimizer"
    assert m.peak == (W + 2 * W + STEP + X) + 3 * W + SCALAR

    # Two weights: ``denom`` is a local of the loop, so the first parameter's denom is still bound
    # while the second's sqrt and division are made: gradients (2 W) + denom of W1 (W) + sqrt (W)
    # + SCALAR + division (W).
    m = measure_step(Summed(layers=2), (x1(),), optimizer=lambda ps: adam(ps, foreach=False))
    assert (m.parameters, m.optimizer_state) == (2 * W, 4 * W + 2 * STEP)
    assert spans(m)[2] == ("optimizer", None, 2 * W, 2 * W + W + W + SCALAR + W, 0)


@pytest.mark.parametrize("adam", ADAM, ids=lambda c: c.__name__)
def test_adam_foreach(adam):
    # _multi_tensor_adam: the step counters go up by ``torch.tensor(1.0)`` (4 bytes, freed before
    # anything else is made), the moments are updated in place by _foreach_lerp_, _foreach_mul_ and
    # _foreach_addcmul_ (AdamW's decay by _foreach_mul_ on the parameters), then
    #     exp_avg_sq_sqrt = torch._foreach_sqrt(device_exp_avg_sqs)
    # makes one W per parameter, all alive together; _foreach_div_, _foreach_add_ and
    # _foreach_addcdiv_ work in place on them (their lists of numbers wrapped inside the kernel:
    # scratch). So the step holds the gradients plus one more copy of every parameter, whatever
    # the number of parameters: below single-tensor's 3 W for one weight, but the whole model's
    # size at once where single-tensor holds only about two of its largest parameters.
    m = measure_step(Summed(), (x1(),), optimizer=lambda ps: adam(ps, foreach=True))
    assert (m.parameters, m.optimizer_state, m.inputs) == (W, 2 * W + STEP, X)
    assert spans(m)[2] == ("optimizer", None, W, W + W, 0)
    assert m.peak_phase.name == "optimizer"

    m = measure_step(Summed(layers=2), (x1(),), optimizer=lambda ps: adam(ps, foreach=True))
    assert spans(m)[2] == ("optimizer", None, 2 * W, 2 * W + 2 * W, 0)


@pytest.mark.parametrize("adam", ADAM, ids=lambda c: c.__name__)
def test_adam_fused(adam):
    # _fused_adam: ``_foreach_add_(device_state_steps, 1)`` in place (1 is a Scalar), then one
    # _fused_adam_ / _fused_adamw_ call that updates parameters and moments in place: the step
    # holds nothing beyond the gradients, so the peak stays in the backward. The step counter of
    # a fused Adam lives on the parameters' device as float32: 4 bytes here too.
    m = measure_step(Summed(), (x1(),), optimizer=lambda ps: adam(ps, fused=True))
    assert (m.parameters, m.optimizer_state, m.inputs) == (W, 2 * W + STEP, X)
    assert spans(m)[2] == ("optimizer", None, W, W, 0)
    assert m.peak_phase.name == "backward"
    assert m.peak == (W + 2 * W + STEP + X) + 4 + 4 + W


# --- gradient accumulation ---------------------------------------------------------------------

def test_accumulation_adds_in_place():
    m = measure_step(Summed(), (x1(),), optimizer=sgd, accum=2)
    # Micro-batch 0 as in test_sgd_one_linear: the gradient is made and kept. Micro-batch 1:
    # MmBackward makes a new gradient (W) while the kept one is alive; AccumulateGrad adds it into
    # the kept one in place (``variable.grad += new_grad``) and the new one is freed.
    assert spans(m) == [("forward", 0, 0, 4000 + 4, 4),
                        ("backward", 0, 4, 4 + 4 + W, W),
                        ("forward", 1, W, W + 4000 + 4, W + 4),
                        ("backward", 1, W + 4, W + 4 + 4 + W, W),
                        ("optimizer", None, W, W, 0)]
    assert (m.peak_phase.name, m.peak_phase.micro_batch) == ("backward", 1)
    assert m.peak == W + X + 2 * W + 8


# --- which tensor the step backpropagates from --------------------------------------------------

B = 100  # batch of the models below, so that their 100 x 1000 outputs (L bytes) stand out
L = B * 1000 * 4


@dataclass
class Output:
    """A model output with a ``loss`` attribute, as a Hugging Face ModelOutput has."""

    loss: torch.Tensor
    logits: torch.Tensor


class WithLoss(nn.Module):
    """Returns its loss beside its logits, in a dict or in an object with a ``loss`` attribute."""

    def __init__(self, as_object: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear, self.as_object = nn.Linear(1000, 1000, bias=False), as_object

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> object:
        logits = self.linear(x)
        loss = (logits * labels).sum()
        return Output(loss, logits) if self.as_object else {"loss": loss, "logits": logits}


class Logits(nn.Module):
    """Returns outputs but no loss: float logits, integer ids and a tensor that needs no grad."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(1000, 1000, bias=False)

    def forward(self, x: torch.Tensor) -> dict:
        logits = self.linear(x)
        return {"logits": logits, "ids": logits.argmax(-1), "input": x}


@pytest.mark.parametrize("as_object", [False, True], ids=["dict", "attribute"])
def test_loss_is_taken_and_the_rest_dropped(as_object):
    m = measure_step(WithLoss(as_object), (torch.randn(B, 1000),), {"labels": torch.randn(B, 1000)}, optimizer=sgd)
    assert (m.parameters, m.inputs) == (W, 2 * L)
    # Forward: logits (L), the product (L), its sum (4). mul saves only ``labels`` (the logits'
    # gradient needs it; labels need no gradient, so the logits are not saved), sum saves nothing:
    # the product goes after the sum, and the logits go when the output is dropped for its loss.
    # Backward: seed (4); MulBackward makes the logits' gradient (L) from the expanded seed and
    # labels; MmBackward makes the weight's gradient (W).
    assert spans(m) == [("forward", 0, 0, L + L + 4, 4),
                        ("backward", 0, 4, 4 + 4 + L + W, W),
                        ("optimizer", None, W, W, 0)]


def test_no_loss_backpropagates_ones_from_float_outputs():
    m = measure_step(Logits(), (torch.randn(B, 1000),), optimizer=sgd)
    # Forward: the logits (L) and the argmax ids (B int64 = 800 bytes); the input is resident.
    # Both are held until the backward ends. Only the logits are floating and need a gradient:
    # one seed of ones (L), contiguous, so MmBackward copies nothing; the weight's gradient (W).
    ids = B * 8
    assert spans(m) == [("forward", 0, 0, L + ids, L + ids),
                        ("backward", 0, L + ids, L + ids + L + W, W),
                        ("optimizer", None, W, W, 0)]
    assert m.workspace == 0


def test_loss_fn_overrides():
    m = measure_step(Logits(), (torch.randn(B, 1000),), optimizer=sgd, loss_fn=lambda out: out["logits"].sum())
    # The loss is the logits' sum; the output (logits and ids) goes once the loss is taken.
    # Backward: seed (4), a scratch contiguous copy of the expanded seed (L), the gradient (W).
    ids = B * 8
    assert spans(m) == [("forward", 0, 0, L + ids + 4, 4),
                        ("backward", 0, 4, 4 + 4 + W, W),
                        ("optimizer", None, W, W, 0)]
    assert m.workspace == L


def test_autocast_forward():
    m = measure_step(Summed(), (torch.randn(B, 1000),), optimizer=sgd, autocast=torch.bfloat16)
    # Forward under autocast: the weight cast to bfloat16 (W / 2, in autocast's cache), the input
    # cast (L / 2), the bfloat16 output (L / 2) and its bfloat16 sum (2). mm saves the cast input
    # only (the input needs no gradient, so the cast weight is not saved): the cast weight goes
    # when the autocast region ends and clears its cache, the output after the sum.
    # Backward: seed (2); MmBackward makes the bfloat16 gradient of the cast weight (W / 2; the
    # contiguous copy of the expanded seed, L / 2, is scratch) and then releases the cast input
    # it saved; ToCopyBackward makes the float32 gradient (W) while the bfloat16 one is alive.
    assert spans(m) == [("forward", 0, 0, W // 2 + L // 2 + L // 2 + 2, L // 2 + 2),
                        ("backward", 0, L // 2 + 2, L // 2 + 2 + 2 + W // 2 - L // 2 + W, W),
                        ("optimizer", None, W, W, 0)]
    assert m.workspace == L // 2


def test_resident_counts_each_storage_once():
    x = torch.randn(B, 1000)
    # The labels are the input itself: one storage, counted once.
    m = measure_step(WithLoss(False), (x,), {"labels": x}, optimizer=sgd)
    assert m.inputs == L


def test_figures_are_immutable_and_checked():
    m = measure_step(Summed(), (x1(),), optimizer=sgd)
    assert isinstance(m.phases, tuple) and isinstance(m.phases[0], PhaseFigures)
    with pytest.raises(AttributeError):
        m.peak = 0  # type: ignore[misc]
    assert m.phase("backward", 0) is m.peak_phase
    assert m.transient == m.peak - m.resident
    with pytest.raises(ValueError):
        measure_step(Summed(), (x1(),), optimizer=sgd, accum=0)


# --- a Hugging Face model: runs, reports its phases, and obeys the rules derived above -------------

def _llama() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=32000)
    return transformers.LlamaForCausalLM(config)


def _batch(batch: int, length: int) -> dict:
    ids = torch.randint(0, 32000, (batch, length), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "labels": ids.clone()}


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _check_resident(model: nn.Module, m: StepFigures, batch: dict) -> list[int]:
    """The resident split, counted from the model; returns the trainable parameters' sizes in order."""
    trainable = [p.numel() * p.element_size() for p in model.parameters() if p.requires_grad]
    assert m.parameters == _bytes(model.parameters()) + _bytes(model.buffers())
    assert m.optimizer_state == 2 * sum(trainable) + STEP * len(trainable)  # frozen parameters get no state
    assert m.inputs == _bytes(batch.values())
    assert [(p.name, p.micro_batch) for p in m.phases] == [("forward", 0), ("backward", 0), ("optimizer", None)]
    assert m.retained == 0
    # when the optimizer starts, the step holds the gradients of the trainable parameters and
    # nothing else: the output was dropped for its loss, the loss after its backward
    assert m.phase("optimizer").start - m.resident == sum(trainable)
    return trainable


@pytest.mark.parametrize("kind", ["single", "foreach", "fused"])
def test_llama_adamw(kind):
    model, batch = _llama(), _batch(1, 64)
    factory = {"single": lambda ps: torch.optim.AdamW(ps, foreach=False),
               "foreach": lambda ps: torch.optim.AdamW(ps, foreach=True),
               "fused": lambda ps: torch.optim.AdamW(ps, fused=True)}[kind]
    m = measure_step(model, kwargs=batch, optimizer=factory)
    sizes = _check_resident(model, m, batch)
    step = m.phase("optimizer")
    # the optimizer's transient, from the rules of the small cases above
    transient = {"single": max(before + 2 * size for before, size in zip([0, *sizes], sizes)) + SCALAR,
                 "foreach": sum(sizes),
                 "fused": 0}[kind]
    assert step.peak - step.start == transient


def test_llama_lora_and_checkpointing():
    peft = pytest.importorskip("peft")
    model, batch = _llama(), _batch(2, 128)
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    m = measure_step(model, kwargs=batch, optimizer=lambda ps: torch.optim.AdamW(ps, fused=True))
    sizes = _check_resident(model, m, batch)
    assert len(sizes) == 4 * 2 * 2  # A and B of q_proj and v_proj in four layers

    plain, checkpointed, batch = _llama(), _llama(), _batch(1, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers 5 renames it activation_checkpointing_enable
        checkpointed.gradient_checkpointing_enable()
        full = measure_step(plain, kwargs=batch, optimizer=lambda ps: torch.optim.AdamW(ps, fused=True))
        saved = measure_step(checkpointed, kwargs=batch, optimizer=lambda ps: torch.optim.AdamW(ps, fused=True))
    _check_resident(checkpointed, saved, batch)
    # checkpointing keeps fewer activations when the forward ends
    assert saved.phase("forward", 0).end < full.phase("forward", 0).end
