"""The optimizer of a training step: built from a name, a class or a factory, set to the
implementation PyTorch would run on the target, and stepped without the hooks around ``step``.

burden never writes a rule for what an optimizer keeps or allocates: the real ``torch.optim``
code runs on the stand-ins of the parameters, so its state and the temporaries of its
``step()`` come out of its own code. Three things are burden's own, each for a stated reason:

- **Which implementation.** PyTorch picks foreach kernels when every parameter is on a CUDA-like
  device and the single-tensor loop otherwise (``_default_to_fused_or_foreach``); on meta
  stand-ins it would always pick the loop, so the choice is made here for the target and written
  into each parameter group, as ``foreach=``/``fused=`` would.
- **The fused device check.** ``fused=True`` checks that the parameters are on a device with fused
  kernels; meta stands for the target device, which has them. SGD and Adagrad read a flag to skip
  the check once done; Adam and AdamW check when they create their state, so the steady state is
  made by the single-tensor code, whose state is the fused one but for where ``step`` lives: fused
  keeps it on the device (adam.py's note "special device hosting for step"), so it is moved there.
- **No hooks.** ``Optimizer.step`` is wrapped by PyTorch (profiling, global step hooks, a dynamo
  graph break that imports ``torch._dynamo``): burden runs the function underneath with gradients
  off, as the wrapper does. A user's global step hooks belong to their own optimizers, not to this one.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .errors import InputSpecError
from .options import OPTIMIZER_IMPLS
from .suggest import did_you_mean

# Names that are not a class name: what "momentum" has always meant in burden.
_ALIASES: dict[str, Callable[[list], torch.optim.Optimizer]] = {
    "momentum": lambda params: torch.optim.SGD(params, lr=1e-3, momentum=0.9),
}


def optimizer_classes() -> dict[str, type]:
    """Every optimizer ``torch.optim`` ships, by lower-case name."""
    found = {}
    for name in dir(torch.optim):
        value = getattr(torch.optim, name)
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer) and value is not torch.optim.Optimizer:
            found[name.lower()] = value
    return found


OptimizerSpec = Any  # a name, an Optimizer subclass, or a callable params -> Optimizer


def describe(spec: OptimizerSpec) -> str:
    """The optimizer's name as the results show it."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, type):
        return spec.__name__
    return getattr(spec, "__qualname__", None) or type(spec).__name__


def factory(spec: OptimizerSpec) -> Callable[[list], torch.optim.Optimizer]:
    """A function from the trainable parameters to a new optimizer, checked before anything runs."""
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in _ALIASES:
            return _ALIASES[key]
        if ":" in spec:
            return factory(_imported(spec))
        classes = optimizer_classes()
        if key not in classes:
            names = [*classes, *_ALIASES]
            raise InputSpecError(f"unknown optimizer {spec!r}{did_you_mean(key, names)}; use a torch.optim name "
                                 f"({', '.join(sorted(names))}), package.module:Class, or pass a class or a "
                                 f"function params -> optimizer")
        return factory(classes[key])
    if isinstance(spec, type):
        if not issubclass(spec, torch.optim.Optimizer):
            raise InputSpecError(f"{spec.__name__} is not a torch.optim.Optimizer")
        _refuse_closure(spec)
        return spec
    if callable(spec):
        return spec
    raise InputSpecError(f"optimizer must be a name, an Optimizer class or a function params -> optimizer, "
                         f"got {type(spec).__name__}")


def _imported(path: str) -> Any:
    module, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise InputSpecError(f"cannot load optimizer {path!r}: {exc}") from None


def _refuse_closure(cls: type) -> None:
    closure = inspect.signature(cls.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise InputSpecError(f"{cls.__name__}.step needs a closure that evaluates the model again and reads the "
                             f"loss's value, which stand-ins do not have: burden cannot run it")


def default_impl(target: str) -> str:
    """What PyTorch runs when the optimizer is left to choose: foreach kernels on CUDA, the
    single-tensor loop on the CPU (``_default_to_fused_or_foreach``)."""
    return "foreach" if target == "cuda" else "single"


@dataclass
class Optimizer:
    """burden's own optimizer over the stand-ins, and how its step is run."""

    optimizer: torch.optim.Optimizer
    impl: str  # single, foreach or fused; "" when the optimizer has no choice of implementation
    name: str

    def warm_up(self, params: Iterable[nn.Parameter]) -> None:
        """One step on zero gradients, so that the state exists as in every step after the first."""
        params = list(params)
        if not params:
            return
        for p in params:
            p.grad = torch.zeros_like(p)
        fused = self.impl == "fused"
        if fused:
            self._set(fused=False)
        self.step()
        if fused:
            self._set(fused=True)
            for state in self.optimizer.state.values():
                step = state.get("step")
                if isinstance(step, torch.Tensor) and step.dim() == 0 and step.device != params[0].device:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self.zero_grad()

    def has_state(self, params: Iterable[nn.Parameter]) -> bool:
        """Whether every one of ``params`` has its state already (a step has run on it)."""
        state = self.optimizer.state
        return all(p in state and bool(state[p]) for p in params)

    def step(self) -> None:
        with torch.set_grad_enabled(bool(self.optimizer.defaults.get("differentiable", False))):
            inspect.unwrap(type(self.optimizer).step)(self.optimizer)

    def zero_grad(self) -> None:
        inspect.unwrap(type(self.optimizer).zero_grad)(self.optimizer, set_to_none=True)

    def state_tensors(self) -> list[torch.Tensor]:
        return [v for state in self.optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]

    def _set(self, **flags: bool) -> None:
        for group in self.optimizer.param_groups:
            group.update(flags)


def build(spec: OptimizerSpec, params: list[nn.Parameter], impl: str | None, target: str) -> Optimizer:
    """The optimizer over ``params`` with the implementation ``impl`` (None: the target's default
    where the optimizer left it open)."""
    make = factory(spec)
    try:
        optimizer = make(params)
    except Exception as exc:
        raise InputSpecError(f"cannot build the optimizer {describe(spec)}: {exc}") from None
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputSpecError(f"the optimizer factory returned {type(optimizer).__name__}, not a torch.optim.Optimizer")
    _refuse_closure(type(optimizer))
    groups = optimizer.param_groups
    has = {key: all(key in g for g in groups) for key in ("foreach", "fused")}
    chosen = impl
    if chosen is None:
        set_by_user = any(g.get("foreach") or g.get("fused") for g in groups)
        if set_by_user:
            chosen = "fused" if any(g.get("fused") for g in groups) else "foreach"
        elif has["foreach"]:
            chosen = default_impl(target)
        else:
            chosen = ""
    elif chosen != "single" and not has[chosen]:
        raise InputSpecError(f"{type(optimizer).__name__} has no {chosen} implementation")
    if chosen:
        for g in groups:
            if "foreach" in g:
                g["foreach"] = chosen == "foreach"
            if "fused" in g:
                g["fused"] = chosen == "fused"
    if chosen == "fused":
        optimizer._need_device_dtype_check_for_fused = False  # type: ignore[attr-defined]  # SGD, Adagrad
    return Optimizer(optimizer, chosen, f"{type(optimizer).__name__}")


def check_impl(impl: str | None) -> str | None:
    if impl is not None and impl not in OPTIMIZER_IMPLS:
        raise InputSpecError(f"unknown optimizer implementation {impl!r}; use {', '.join(OPTIMIZER_IMPLS)}")
    return impl
