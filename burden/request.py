"""One analysis request, validated once at the API boundary and handed down whole.

Every option the user gives (sizes, dtype, conventions, where to trace, mixed precision, the
target's accounting, a device profile, and what a training step runs) lives here, so that the
layers below take the request, not a growing list of parameters. Nothing here builds or traces
a model; the helpers at the end are the one place that builds default inputs and sizes them.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from .accounting import Accounting
from .containers import iter_tensors
from .conventions import Convention, MemoryConvention, get_convention, get_memory_convention
from .devices import DeviceProfile
from .errors import InputSpecError
from .kernels import Kernels
from .inputs import materialize_inputs, parse_batch, parse_dtype, parse_input_size
from .machine import require_cuda
from .optimizers import OptimizerSpec
from .options import DEFAULT_OPTIMIZER, ROUTINGS, SHARDS, TP_STYLES
from .records import value_bytes
from .tokens import token_inputs


@dataclass(frozen=True)
class Training:
    """What one training step runs: the optimizer (a name, a class or a factory), its
    implementation (None: as PyTorch picks it on the target), and how many micro-batches'
    gradients are accumulated before the optimizer steps."""

    optimizer: OptimizerSpec = DEFAULT_OPTIMIZER
    optimizer_impl: str | None = None
    grad_accum: int = 1


@dataclass(frozen=True)
class Sharding:
    """A training step split across ranks, traced as one rank runs it (``burden.sharded``): FSDP2
    over the data-parallel ranks, tensor parallelism within groups of ``tensor_parallel``."""

    world_size: int
    fsdp: bool = True
    tensor_parallel: int = 1
    modules: tuple[str, ...] = ()  # FSDP's units by path or class name; (): the model's blocks
    tp_plan: tuple[tuple[str, str], ...] = ()  # (module pattern, style); (): the model's own plan
    rank: int = 0


@dataclass(frozen=True)
class Request:
    """A validated analysis request."""

    size: tuple[int, ...]
    batch: int
    dtype: torch.dtype | None  # None: the model's own
    convention: Convention
    memory: MemoryConvention
    device: str | None  # None: meta, with the CPU as fallback for models that need values
    check_memory: bool = True  # refuse a real-device run that would take more than half the free memory
    progress: Callable[[str], None] | None = None  # told how a long real-device run is going
    amp: torch.dtype | None = None  # mixed precision's low precision (torch.autocast's policy), or None
    accounting: Accounting = Accounting()  # the target allocator's rounding, ZeRO sharding
    profile: DeviceProfile | None = None  # the device whose roofline predicts the forward's time
    mode: str = "inference"
    training: Training = field(default_factory=Training)
    tokens: bool = False  # size is (sequence length,): a language model's token inputs (burden.tokens)
    routing: str = ROUTINGS[0]  # balanced, or refuse (burden.routing)
    sharding: Sharding | None = None  # a sharded training step (FSDP2, tensor parallelism), one rank traced

    @classmethod
    def counting(cls, size: Any, batch: Any, dtype: Any, convention: str) -> "Request":
        """A request that only counts one forward pass on meta (``scale``'s rows), every argument checked."""
        rules = get_convention(convention)
        return cls(size=parse_input_size(size), batch=parse_batch(batch),
                   dtype=None if dtype is None else parse_dtype(dtype), convention=rules,
                   memory=get_memory_convention(rules.memory), device="meta")

    @property
    def meta(self) -> bool:
        return self.device is None or self.device == "meta"

    def on(self, device: str) -> "Request":
        return replace(self, device=device)

    def at_batch(self, batch: int) -> "Request":
        return replace(self, batch=batch)

    @property
    def kernels(self) -> Kernels:
        """The kernels the traced pass runs: the target's attention chooser and autocast policy."""
        return Kernels(self.accounting.target, self.accounting.capability, self.amp, self.routing)

    def elsize(self, module: nn.Module) -> int:
        return torch.empty((), dtype=self.dtype or model_dtype(module)).element_size()

    def feature_elsize(self, module: nn.Module) -> int | None:
        """Bytes per floating feature value; None (each at its own dtype's size) under mixed
        precision, where features are of several dtypes."""
        return None if self.amp is not None else self.elsize(module)


def check_device(device: str | torch.device | None) -> str | None:
    """The device to trace on: None (meta, or the CPU where the model needs values), or one named."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputSpecError(f"unknown device {device!r}; use 'meta' (default) or a real device such as "
                             f"'cpu'") from None
    if dev.type == "cuda":
        require_cuda()
    return str(dev)


def sharding(shard: str | None, world_size: int, zero: int, tensor_parallel: Any, modules: Any, plan: Any,
             rank: Any) -> Sharding | None:
    """The sharded step asked for (None for one device, or ZeRO's arithmetic), every part checked:
    ``plan`` is a mapping or a JSON file's path, module pattern -> tensor-parallel style."""
    if shard is not None and shard not in SHARDS:
        raise InputSpecError(f"unknown sharding {shard!r}; choose {' or '.join(SHARDS)}")
    if isinstance(tensor_parallel, bool) or not isinstance(tensor_parallel, int) or tensor_parallel < 1:
        raise InputSpecError(f"tensor parallelism takes a whole number of ranks from 1, got {tensor_parallel!r}")
    if shard is None and tensor_parallel == 1:
        if modules or plan:
            raise InputSpecError("--shard-modules and --tp-plan shape a sharded step: give --shard fsdp or "
                                 "--tensor-parallel N")
        return None
    if zero:
        raise InputSpecError("--zero is the quick arithmetic for DeepSpeed; --shard and --tensor-parallel trace "
                             "PyTorch's own parallel code: choose one")
    world = world_size if shard is not None else max(world_size, tensor_parallel)
    if world < 2:
        raise InputSpecError("a sharded step spans ranks: give --world-size N (world_size=N) above 1")
    if world % tensor_parallel:
        raise InputSpecError(f"the world size {world} is not a multiple of the tensor-parallel size {tensor_parallel}")
    if shard is None and world != tensor_parallel:
        raise InputSpecError(f"{world} ranks and tensor parallelism over {tensor_parallel}: give --shard fsdp for "
                             f"the data-parallel ranks, or a world size of {tensor_parallel}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise InputSpecError(f"the rank traced must be a whole number from 0 to {world - 1}, got {rank!r}")
    if plan is not None and tensor_parallel == 1:
        raise InputSpecError("a tensor-parallel plan needs --tensor-parallel N above 1")
    return Sharding(world_size=world, fsdp=shard is not None, tensor_parallel=tensor_parallel,
                    modules=_names(modules), tp_plan=_tp_plan(plan), rank=rank)


def _names(modules: Any) -> tuple[str, ...]:
    if modules is None:
        return ()
    if isinstance(modules, str):
        return tuple(m.strip() for m in modules.split(",") if m.strip())
    if not all(isinstance(m, str) for m in modules):
        raise InputSpecError(f"modules to shard are paths or class names, got {modules!r}")
    return tuple(modules)


def _tp_plan(plan: Any) -> tuple[tuple[str, str], ...]:
    if plan is None:
        return ()
    if isinstance(plan, (str, os.PathLike)):
        try:
            plan = json.loads(Path(plan).read_text())
        except OSError as exc:
            raise InputSpecError(f"cannot read the tensor-parallel plan {str(plan)!r}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise InputSpecError(f"the tensor-parallel plan is not JSON: {exc}") from None
    if not isinstance(plan, Mapping) or not plan:
        raise InputSpecError("a tensor-parallel plan is a JSON object of module pattern -> style")
    for pattern, style in plan.items():
        if not isinstance(pattern, str) or style not in TP_STYLES:
            raise InputSpecError(f"unknown tensor-parallel style {style!r} for {pattern!r}; choose "
                                 f"{', '.join(TP_STYLES)}")
    return tuple(plan.items())


def check_grad_accum(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputSpecError(f"gradient accumulation takes a whole number of micro-batches from 1, got {value!r}")
    return value


def model_dtype(model: nn.Module) -> torch.dtype:
    """The model's own floating dtype: that of its first floating parameter or buffer."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def model_inputs(module: nn.Module, req: Request, inputs: Any = None, device: str | None = None) -> tuple[tuple, dict]:
    """The forward's arguments: ``inputs`` built on ``device`` (default: where the request traces),
    or one image batch of the request's size. The one place default inputs are made."""
    device = device or ("meta" if req.meta else req.device)
    if inputs is None and req.tokens:
        config = getattr(module, "config", None)
        if config is None:
            raise InputSpecError(f"{type(module).__name__} has no config of a language model's: give its inputs "
                                 f"(inputs=, --inputs) instead of a sequence length")
        # real ids and mask wherever the trace runs: their values are small and the model may read them
        return (), token_inputs(config, req.batch, req.size[0], labels=req.mode == "training",
                                device="cpu" if device == "meta" else device)
    if inputs is None and getattr(module, "main_input_name", None) == "input_ids":
        raise InputSpecError(f"{type(module).__name__} takes token ids: give a sequence length (seq=, --seq N) or "
                             f"its inputs (inputs=, --inputs)")
    if inputs is None:
        return (torch.zeros((req.batch, *req.size), dtype=model_dtype(module), device=device),), {}
    return materialize_inputs(inputs, device=device, dtype=model_dtype(module))


def input_sizes(args: tuple, kwargs: dict, elsize: int | None) -> list[int]:
    """The input batch, each distinct storage's bytes once, floating values at the analysis element
    size: what the device holds of it through the pass."""
    sizes: dict[int, int] = {}
    for t in iter_tensors((args, kwargs)):
        sizes[t.untyped_storage()._cdata] = t.numel() * value_bytes(t.dtype, elsize)
    return list(sizes.values())


def input_bytes(args: tuple, kwargs: dict, elsize: int | None, accounts: Accounting) -> int:
    return accounts.tensors(input_sizes(args, kwargs, elsize))


def describe_inputs(args: tuple, kwargs: dict) -> tuple[tuple[int, ...], int]:
    """The per-sample shape and batch of the first tensor input, as the summary shows them."""
    for leaf in iter_tensors((args, kwargs)):
        if leaf.dim() > 0:
            return tuple(leaf.shape[1:]), int(leaf.shape[0])
    return (), 1

