"""One rank of a sharded training step, traced through PyTorch's own parallel code.

``fully_shard`` (FSDP2) and ``parallelize_module`` (tensor parallelism) are applied to burden's own
copy of the model, made of fake tensors (``FakeTensorMode``: shapes, dtypes and storages, no
memory), in torch's ``fake`` process group, whose collectives return at once and move nothing.
FSDP2 refuses parameters left on meta once it trains, so the copy is fake, not meta. The training
step of ``burden.training`` then runs on that copy as one rank runs it, and its figures are that
rank's, from that code: its shards of the parameters, gradients and optimizer state with FSDP's
padding, the parameters FSDP gathers for the block running and the one it prefetches, the
all-gather and reduce-scatter buffers, tensor parallelism's partial activations.

FSDP frees and refills its gathered parameters by resizing their storages in place, which no
dispatch mode sees: each ``FSDPParam`` of the copy reports those resizes to the tracer. DTensor
works out an op's global shape by running it once on fake tensors of that shape: those ops are
left out, as are the new tensors the fake ``wait_tensor`` makes where eager returns its input.
Collectives are ops of the trace like any other; ``collectives`` reads what each one moved.

A process has one default process group, and the fake one is it for as long as a sharded step is
traced (one at a time, under a lock). A process that has its own (a job started by ``torchrun``)
is refused: burden never touches a real group.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import threading
from collections import Counter
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import replace
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import _disable_current_modes

from .containers import leaves, map_tensors
from .errors import InputSpecError, UnsupportedModelError
from .figures import Collective, ShardedFigures
from .op_groups import COLLECTIVES
from .options import TP_STYLES
from .records import OpEvent, TensorInfo
from .request import Request, Sharding
from .trace import Tracer
from .training import Step, training_step

_WORLD = threading.Lock()  # the process's one default process group: one sharded trace at a time
_WORLDS = itertools.count()  # numbers each fake world's device mesh dimensions apart


class Steps:
    """Training steps of one module under one request's plan, as a context: a sharded plan opens
    its fake world and makes its sharded copy once, for every step traced inside (``fit`` traces
    several batch sizes); without one, each call is ``training.training_step`` on the module."""

    def __init__(self, module: nn.Module, req: Request) -> None:
        self.module, self.plan, self.dtype = module, req.sharding, req.dtype
        self._stack = ExitStack()
        self._model: nn.Module | None = None
        self._units: tuple[str, ...] = ()
        self._kept: dict = {}  # the copy's optimizer and its state, from one step to the next

    def __enter__(self) -> "Steps":
        if self.plan is not None:
            with ExitStack() as stack:
                mesh = stack.enter_context(_fake_world(self.plan))
                stack.enter_context(FakeTensorMode(allow_non_fake_inputs=False))
                self._model = _fake_copy(self.module, self.dtype)
                self._units = _apply(self._model, self.plan, mesh)
                self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._model = None
        self._stack.close()

    def __call__(self, args: tuple, kwargs: dict, req: Request, checkpoint: tuple[str, ...] = (),
                 batch: int | None = None) -> Step:
        if self._model is None:
            return training_step(self.module, args, kwargs, req, checkpoint, batch=batch)
        model = self._model
        fake_args, fake_kwargs = map_tensors(_fake_like, (args, kwargs))
        # the fake tensors run as they are, as real CPU tensors would (no meta stand-ins)
        result = training_step(model, fake_args, fake_kwargs, req.on("cpu"), checkpoint, batch=batch,
                               watch=lambda tracer: _watched(model, tracer), kept=self._kept)
        moved = collectives(result.events)
        plan = self.plan
        link = req.profile.interconnect if req.profile is not None else None
        figures = ShardedFigures(world_size=plan.world_size, rank=plan.rank, fsdp=plan.fsdp,
                                 tensor_parallel=plan.tensor_parallel, units=self._units, collectives=moved,
                                 communication_seconds=None if link is None else
                                 sum(c.wire_bytes for c in moved) / link)
        return replace(result, figures=replace(result.figures, sharding=figures))


def step(module: nn.Module, args: tuple, kwargs: dict, req: Request, checkpoint: tuple[str, ...] = (),
         batch: int | None = None) -> Step:
    """One training step of ``module`` under ``req``: one rank's, traced, when the request shards it."""
    with Steps(module, req) as run:
        return run(args, kwargs, req, checkpoint, batch)


# the oldest torch whose FSDP2, DTensor and fake process group the sharded trace was checked on
# (2.13 and 2.14 here; older releases differ in the private pieces it reads, such as FSDP's storage
# resizes and DTensor's shape propagation)
OLDEST = (2, 13)


def available() -> bool:
    """Whether this torch can trace a sharded step."""
    release = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return dist.is_available() and release >= OLDEST


@contextmanager
def _fake_world(plan: Sharding) -> Iterator[Any]:
    """The fake default process group of ``plan.world_size`` ranks, this one ``plan.rank``, and its
    device mesh: one dimension, or (data parallel, tensor parallel)."""
    if not available():
        raise InputSpecError(f"a sharded plan traces PyTorch's own parallel code as torch "
                             f"{'.'.join(map(str, OLDEST))} and later run it; this is torch {torch.__version__}")
    from torch.distributed.device_mesh import init_device_mesh
    with _WORLD:
        if dist.is_initialized():
            raise InputSpecError("this process already has a default process group (torch.distributed): burden "
                                 "traces a sharded step in a fake group of its own and never touches a real one; "
                                 "plan it in a process without one")
        # torch's own fake store and the backend it registers (what init_process_group("fake") imports)
        from torch.testing._internal.distributed.fake_pg import FakeStore
        dist.init_process_group("fake", rank=plan.rank, world_size=plan.world_size, store=FakeStore())
        try:
            # DTensor caches its sharding decisions by device mesh, and meshes are equal by shape and
            # dimension names: names no other mesh has keep this world's decisions to this world
            world = next(_WORLDS)
            dp = plan.world_size // plan.tensor_parallel
            if plan.tensor_parallel == 1 or dp == 1:
                yield init_device_mesh("cpu", (plan.world_size,), mesh_dim_names=(f"burden-{world}",))
            else:
                yield init_device_mesh("cpu", (dp, plan.tensor_parallel),
                                       mesh_dim_names=(f"burden-dp-{world}", f"burden-tp-{world}"))
        finally:
            dist.destroy_process_group()


def _fake_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A fake CPU tensor (inside the fake mode) of ``t``'s shape and strides, and its dtype or
    ``dtype`` (a meta tensor, a real one alike)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=dtype or t.dtype, device="cpu")


def _fake_copy(module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """burden's own copy of ``module`` (inside the fake mode) with fake CPU tensors for every parameter
    and buffer (floating ones at ``dtype`` when given); tied tensors stay tied, and the user's module
    is not touched."""
    memo: dict[int, Any] = {}
    # plain tensor attributes too (a rotary embedding's copy of its frequencies): no meta or real
    # tensor may meet the fake ones
    attributes = (v for m in module.modules() for v in vars(m).values() if isinstance(v, torch.Tensor))
    for t in itertools.chain(module.parameters(), module.buffers(), attributes):
        if id(t) in memo:
            continue
        out = _fake_like(t, dtype if t.is_floating_point() else None)
        memo[id(t)] = nn.Parameter(out, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else out
    try:
        return copy.deepcopy(module, memo)
    except Exception as exc:
        raise UnsupportedModelError(f"burden cannot copy {type(module).__name__} to shard it: {exc}") from None


def _apply(model: nn.Module, plan: Sharding, mesh: Any) -> tuple[str, ...]:
    """Tensor parallelism, then FSDP, as users apply them; returns the FSDP units' paths."""
    tp_mesh, dp_mesh = (mesh[mesh.mesh_dim_names[1]], mesh[mesh.mesh_dim_names[0]]) if mesh.ndim == 2 else (mesh, mesh)
    if plan.tensor_parallel > 1:
        _parallelize(model, plan, tp_mesh)
    if not plan.fsdp:
        return ()
    from torch.distributed.fsdp import fully_shard
    units = fsdp_units(model, plan.modules)
    named = dict(model.named_modules())
    # Over tensor-parallel parameters FSDP joins the two meshes, which reads the mesh's real rank
    # tables: that runs outside the fake mode (the parameters are fake tensors all the same)
    with _disable_current_modes() if plan.tensor_parallel > 1 else nullcontext():
        for path in units:
            fully_shard(named[path], mesh=dp_mesh)
        fully_shard(model, mesh=dp_mesh)
    # FSDP's first forward initialises it (padding shards again, once); the step traced is a later one
    model._get_fsdp_state()._lazy_init()
    return (*units, "")


def fsdp_units(model: nn.Module, names: tuple[str, ...]) -> tuple[str, ...]:
    """The modules FSDP wraps one by one (the root is wrapped last, around them): those named (a
    path, or a class name for every module of it), else the model's own blocks (a Hugging Face
    model's ``_no_split_modules``), else the items of its lists of like blocks."""
    modules = [(path, m) for path, m in model.named_modules() if path]
    if names:
        chosen = [path for path, m in modules if path in names or type(m).__name__ in names]
        missing = [n for n in names if not any(p == n or type(m).__name__ == n for p, m in modules)]
        if missing:
            raise InputSpecError(f"cannot shard {missing[0]!r}: the model has no module of that path or class")
    else:
        blocks = set(getattr(model, "_no_split_modules", None) or ())
        chosen = [path for path, m in modules if type(m).__name__ in blocks]
        if not chosen:  # the items of every list of like blocks (a ResNet's stages, a ViT's encoder)
            items = {id(c) for _, m in modules if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 1
                     and len({type(c) for c in m}) == 1 for c in m}
            chosen = [path for path, m in modules if id(m) in items]
    # nested units are FSDP's to handle, but a unit inside another named one is a user's slip
    return tuple(p for p in chosen if not any(p.startswith(q + ".") for q in chosen))


def tp_plan(model: nn.Module, plan: Sharding) -> dict[str, str]:
    """The tensor-parallel plan, module pattern -> style: the one given, else the model's own
    (a Hugging Face config's ``base_model_tp_plan``, under its base model's prefix)."""
    if plan.tp_plan:
        return dict(plan.tp_plan)
    config = getattr(model, "config", None)
    own = getattr(config, "base_model_tp_plan", None) if config is not None else None
    if not own:
        raise InputSpecError(f"{type(model).__name__} has no tensor-parallel plan of its own: give one with "
                             f"--tp-plan FILE (tp_plan=), a JSON object of module pattern -> "
                             f"{' | '.join(TP_STYLES)}")
    prefix = getattr(model, "base_model_prefix", "")
    inside = prefix and any(path == prefix for path, _ in model.named_modules())
    return {(f"{prefix}.{k}" if inside else k): v for k, v in own.items()}


def _parallelize(model: nn.Module, plan: Sharding, mesh: Any) -> None:
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel, SequenceParallel,
                                                   parallelize_module)
    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel,
              "colwise_rep": lambda: ColwiseParallel(output_layouts=Replicate()),
              "rowwise_rep": lambda: RowwiseParallel(input_layouts=Replicate()), "sequence_parallel": SequenceParallel}
    wanted = tp_plan(model, plan)
    paths = [p for p, _ in model.named_modules()]
    for pattern, style in wanted.items():
        if style not in styles:  # a model's own plan may use styles beyond PyTorch's
            raise InputSpecError(f"{type(model).__name__}'s own tensor-parallel plan has the style {style!r} "
                                 f"({pattern!r}); burden applies {', '.join(TP_STYLES)}: give --tp-plan FILE")
        if not any(fnmatch.fnmatchcase(p, pattern) for p in paths):
            raise InputSpecError(f"the tensor-parallel plan names {pattern!r}, which matches no module of the model")
    try:
        parallelize_module(model, mesh, {pattern: styles[style]() for pattern, style in wanted.items()})
    except (ValueError, NotImplementedError, RuntimeError) as exc:
        raise UnsupportedModelError(f"PyTorch's parallelize_module refused the plan: {exc}") from None


@contextmanager
def _watched(model: nn.Module, tracer: Tracer) -> Iterator[None]:
    """What the tracer must be told of burden's sharded copy: every ``FSDPParam`` reports when it
    refills or frees its gathered parameter (a storage resized in place; the methods replaced are
    the copy's own objects', and die with it), and the ops DTensor runs only to work out a global
    shape are not the rank's."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import _op_schema, _sharding_prop
    shape_only = (getattr(_sharding_prop.ShardingPropagator, "_propagate_tensor_meta_non_cached", None),
                  getattr(_op_schema, "_rebuild_tensor_from_dtensor_meta", None))
    tracer.not_run = frozenset(f.__code__ for f in shape_only if f is not None)
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        group = module._get_fsdp_state()._fsdp_param_group
        for param in group.fsdp_params if group is not None else ():
            _report(param, tracer)
    yield


def _report(param: Any, tracer: Tracer) -> None:
    alloc, free = param.alloc_all_gather_outputs, param.free_unsharded_param

    def gathered() -> list[torch.Tensor]:
        return [*param.all_gather_outputs, *getattr(param, "_unsharded_inner_tensors", ())]

    def resized(run: Any) -> None:
        # only a storage that went from nothing to something, or back, changed: FSDP also "refills"
        # outputs that still hold their memory (the first all-gather, which made them)
        before = [t.untyped_storage().nbytes() for t in gathered()]
        run()
        for t, had in zip(gathered(), before):
            if (t.untyped_storage().nbytes() == 0) != (had == 0):
                tracer.storage_resized(t)

    param.alloc_all_gather_outputs = lambda: resized(alloc)
    param.free_unsharded_param = lambda: resized(free)


def collectives(events: tuple[OpEvent, ...] | list[OpEvent]) -> tuple[Collective, ...]:
    """What the rank's collectives moved, by kind: calls, bytes of the buffers it sends from and
    receives into, and the bytes a ring algorithm puts on its links."""
    calls: Counter = Counter()
    sent: Counter = Counter()
    received: Counter = Counter()
    wire: Counter = Counter()
    for event in events:
        facts = COLLECTIVES.get(event.func)
        if facts is None:
            continue
        kind, sends, receives = facts
        bound = _bound(event)
        out = _bytes([bound[name] for name in sends])
        into = sum(_bytes([event.out]) if name == "" else _bytes([bound[name]]) for name in receives)
        size = _group_size(bound, out, into)
        calls[kind] += 1
        sent[kind] += out
        received[kind] += into
        wire[kind] += _ring_bytes(kind, out, into, size)
    return tuple(Collective(kind, calls[kind], sent[kind], received[kind], wire[kind]) for kind in sorted(calls))


def _bound(event: OpEvent) -> dict[str, Any]:
    names = [a.name for a in event.func._schema.arguments]
    return {**dict(zip(names, event.args)), **event.kwargs}


def _bytes(values: Any) -> int:
    """Bytes of the recorded tensors among ``values`` (lists of them too), at their own dtypes."""
    return sum(t.nbytes(None) for t in leaves(values) if isinstance(t, TensorInfo))


def _group_size(bound: dict[str, Any], sent: int, received: int) -> int:
    """How many ranks take part: read off the buffers of a gather or scatter, else the group's own
    size (the fake group is alive while this runs)."""
    if "group_size" in bound:
        return int(bound["group_size"])
    if min(sent, received) and max(sent, received) % min(sent, received) == 0 and sent != received:
        return max(sent, received) // min(sent, received)
    group = bound.get("process_group")
    if group is None:
        from torch._C._distributed_c10d import _resolve_process_group
        return int(_resolve_process_group(bound["group_name"]).size())
    return int(dist.ProcessGroup.unbox(group).size())


def _ring_bytes(kind: str, sent: int, received: int, size: int) -> int:
    """What a ring algorithm sends from a rank: (n-1)/n of the gathered or scattered whole, twice
    that for an all-reduce (nccl-tests' bus bandwidth factors)."""
    if size <= 1:
        return 0
    if kind == "all-gather":
        return received * (size - 1) // size
    if kind in ("reduce-scatter", "all-to-all"):
        return sent * (size - 1) // size
    if kind == "all-reduce":
        return 2 * sent * (size - 1) // size
    return sent
