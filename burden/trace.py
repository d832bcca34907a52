"""The tracing engine: one forward pass, recorded op by op and attributed to modules.

Forward hooks on every module keep a stack of module paths; a ``TorchDispatchMode`` sees every
aten op, including the work that ``forward`` does through functional calls (``F.relu``, the
SE rescale, residual sums, ``flatten``). Each op becomes an ``OpEvent`` owned by the innermost
module on the stack. Nothing here counts FLOPs or bytes: counting applies a convention to the
recorded events afterwards, so one trace serves every convention.

By default the pass runs on the meta device. Parameters, buffers and any other tensor the model
holds are swapped for meta stand-ins at the moment an op uses them, so no weights are copied and
no activation memory is allocated, and the user's tensors are never written to.
"""

from __future__ import annotations

import gc
import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import BurdenError, ForwardError, ShapeError

aten = torch.ops.aten

# Metadata queries: they are not work, and some (size, stride) must not be intercepted at all.
_QUERIES = {
    aten.is_contiguous.default, aten.is_contiguous.memory_format, aten.is_strides_like_format.default,
    aten.is_non_overlapping_and_dense.default, aten.size.default, aten.sym_size.default,
    aten.stride.default, aten.sym_stride.default, aten.storage_offset.default,
    aten.sym_storage_offset.default, aten.numel.default, aten.sym_numel.default, aten.dim.default,
    torch.ops.prim.layout.default, torch.ops.prim.device.default,
}


def map_tensors(fn: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """``value`` with every tensor in it replaced by ``fn(tensor)``, through tuples, lists and dicts.

    A few plain containers are all aten ops take and return; torch's general pytree walk costs
    more than the rest of the trace together.
    """
    if isinstance(value, torch.Tensor):
        return fn(value)
    kind = type(value)
    if kind is tuple or kind is list:
        if all(type(v) in _PLAIN for v in value):  # sizes, strides, paddings: nothing to map
            return value
        return kind(map_tensors(fn, v) for v in value)
    if kind is dict:
        return {k: map_tensors(fn, v) for k, v in value.items()}
    return value


_PLAIN = {int, float, bool, type(None), str}


def leaves(value: Any) -> list[Any]:
    """The non-container values in ``value``, depth first."""
    if type(value) in (tuple, list):
        return [leaf for v in value for leaf in leaves(v)]
    if type(value) is dict:
        return [leaf for v in value.values() for leaf in leaves(v)]
    return [value]


@dataclass(frozen=True, eq=False)
class TensorInfo:
    """What counting needs to know about a tensor: its shape, dtype and which storage it lives in."""

    shape: torch.Size
    dtype: torch.dtype
    storage: int  # burden's own storage number, stable for the whole trace

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass(frozen=True, eq=False)
class OpEvent:
    """One aten op as it ran: arguments with tensors replaced by ``TensorInfo``, and its outputs."""

    func: torch._ops.OpOverload
    module: str
    args: tuple
    kwargs: dict
    out: Any  # the op's return value with tensors replaced by TensorInfo
    outputs: tuple[TensorInfo, ...]  # the tensors in ``out``, flattened
    fresh: tuple[bool, ...]  # per output: new storage, not a view of or a write into an input

    @property
    def name(self) -> str:
        return str(self.func.overloadpacket).replace("aten::", "aten.")

    @property
    def packet(self) -> torch._ops.OpOverloadPacket:
        return self.func.overloadpacket

    @property
    def inplace(self) -> bool:
        return self.func._schema.is_mutable

    @property
    def tensor_inputs(self) -> list[TensorInfo]:
        return [x for x in leaves((self.args, self.kwargs)) if isinstance(x, TensorInfo)]


@dataclass
class ModuleInfo:
    path: str
    type: str
    depth: int
    order: int  # position in execution order (first call); never-called modules come last
    calls: int = 0
    output_shape: Any = None  # shapes of the first call's output, nested like the output
    # per call: (first event index, end event index, input shapes, output shapes)
    spans: list[tuple[int, int, Any, Any]] = field(default_factory=list)


@dataclass
class Trace:
    events: list[OpEvent]
    modules: dict[str, ModuleInfo]  # path -> info, in execution order
    # model inputs as the first op saw them; feature memory never counts them
    input_storages: set[int] = field(default_factory=set)
    # storages of the tensors the forward returned (empty when the trace stopped early)
    output_storages: set[int] = field(default_factory=set)
    stopped_after: str | None = None  # the module after which the trace was cut, if any


def _shape_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return [int(d) for d in value.shape]
    if isinstance(value, (list, tuple)):
        return [_shape_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: _shape_tree(v) for k, v in value.items()}
    return None


def describe_shapes(value: Any) -> str:
    """Shapes of the tensors in an argument list, as a person reads them: ``1x3x224x224``."""
    shapes = ["x".join(str(int(d)) for d in t.shape) for t in leaves(value)
              if isinstance(t, (torch.Tensor, TensorInfo))]
    return ", ".join(shapes) if shapes else "no tensors"


def _batch_norm_shapes(args: tuple, training: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch norm's outputs as the CPU kernels return them: statistics are saved only when training.

    The meta kernel is a Python decomposition that is slow and imports torch._dynamo on first use.
    """
    x, channels = args[0], args[0].shape[1] if args[0].dim() > 1 else 0
    for t in args[1:5]:
        if isinstance(t, torch.Tensor) and t.numel() != channels:
            raise RuntimeError(f"batch norm expected {channels} channels, got a parameter of {t.numel()}")
    stats_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    stats = (channels,) if training else (0,)
    return torch.empty_like(x), x.new_empty(stats, dtype=stats_dtype), x.new_empty(stats, dtype=stats_dtype)


# Shape-only kernels for ops whose meta implementation is slow: (args, kwargs) -> outputs.
_META_SHORTCUTS: dict[Any, Callable[[tuple, dict], Any]] = {
    aten._native_batch_norm_legit_no_training.default: lambda a, k: _batch_norm_shapes(a, False),
    aten.native_batch_norm.default: lambda a, k: _batch_norm_shapes(a, bool(a[5])),
}


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection for a while, for work that frees no tensor (counting)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist now out of garbage collection while a trace runs.

    A full collection would walk torch's whole heap, which costs more than the trace. Collection
    itself stays on: first-time code paths of some meta kernels leave cycles that hold tensors,
    and they must die as promptly as they would without burden, or lifetimes come out longer."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _Uncacheable(Exception):
    pass


_SCALARS = (bool, int, float, str, torch.dtype, torch.device, torch.memory_format, torch.layout, type(None))


def _meta_key(value: Any) -> Any:
    """What a meta kernel's result depends on: tensor metadata and the other arguments."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.stride(), value.dtype, value.storage_offset())
    if type(value) in (tuple, list):
        return tuple(_meta_key(v) for v in value)
    if type(value) is dict:
        return tuple((k, _meta_key(v)) for k, v in value.items())
    if isinstance(value, _SCALARS):
        return (type(value), value)  # True and 1 are equal keys otherwise
    raise _Uncacheable


def _cacheable(func: torch._ops.OpOverload) -> bool:
    schema = func._schema
    return not schema.is_mutable and all(r.alias_info is None for r in schema.returns)


# Meta kernels are pure functions of metadata, and many run in Python (refs, decompositions) at
# 100-500 us an op. A network repeats the same blocks at the same shapes, so most calls are
# answered here, by allocating fresh meta outputs of the remembered shapes.
_META_RESULTS: dict[Any, Any] = {}
_META_RESULTS_LIMIT = 1 << 14
_CACHEABLE: dict[Any, bool] = {}


def _describe(out: Any) -> tuple[bool, tuple]:
    """(whether the op returned a tuple, the (shape, stride, dtype) of each output)."""
    if isinstance(out, torch.Tensor):
        return False, ((tuple(out.shape), out.stride(), out.dtype),)
    if type(out) is tuple and all(isinstance(t, torch.Tensor) for t in out):
        return True, tuple((tuple(t.shape), t.stride(), t.dtype) for t in out)
    raise _Uncacheable


def _rebuild(spec: tuple[bool, tuple]) -> Any:
    many, outputs = spec
    out = tuple(torch.empty_strided(shape, stride, dtype=dtype, device="meta") for shape, stride, dtype in outputs)
    return out if many else out[0]


def meta_call(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
    """Run ``func`` on meta tensors, from the remembered result when the same call was seen."""
    cacheable = _CACHEABLE.get(func)
    if cacheable is None:
        cacheable = _CACHEABLE[func] = _cacheable(func)
    key = None
    if cacheable:
        try:
            key = (func, _meta_key(args), _meta_key(kwargs))
        except _Uncacheable:
            key = None
        if key is not None:
            spec = _META_RESULTS.get(key)
            if spec is not None:
                return _rebuild(spec)
    shortcut = _META_SHORTCUTS.get(func)
    out = shortcut(args, kwargs) if shortcut is not None else func(*args, **kwargs)
    if key is not None and len(_META_RESULTS) < _META_RESULTS_LIMIT:
        try:
            _META_RESULTS[key] = _describe(out)
        except _Uncacheable:
            pass
    return out


class _StopTrace(Exception):
    """Raised from the forward hook of the module a partial trace ends at."""


_DECOMPOSES: dict[Any, bool] = {}


def _decomposes(func: torch._ops.OpOverload) -> bool:
    """Whether ``func.decompose`` can do anything: asked once per op, not on every call."""
    known = _DECOMPOSES.get(func)
    if known is None:
        key = torch._C.DispatchKey.CompositeImplicitAutograd
        known = _DECOMPOSES[func] = key in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(
            func.name(), key)
    return known


class _Recorder(TorchDispatchMode):
    def __init__(self, tracer: "Tracer") -> None:
        super().__init__()
        self.tracer = tracer

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Nothing is compiled inside a trace; without this, torch wraps __torch_dispatch__ in
        # dynamo.disable, and the first op imports torch._dynamo (about 2 s of a cold start).
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        kwargs = kwargs or {}
        if func in _QUERIES:
            return func(*args, **kwargs)
        # Like torch's FlopCounterMode: see an op through its decomposition where it has one, so
        # both look at the same primitive ops.
        if _decomposes(func):
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        return self.tracer.run_op(func, args, kwargs)


class Tracer:
    """Runs one forward pass of ``model`` and records it. Use ``trace_forward``."""

    def __init__(self, model: nn.Module, meta: bool, stop_after: str | None = None) -> None:
        self.model = model
        self.meta = meta
        self.stop_after = stop_after
        self.events: list[OpEvent] = []
        self.modules: dict[str, ModuleInfo] = {}
        self.stack: list[str] = []
        self.stack_args: list[Any] = []  # each open module's inputs, to say what a failing module got
        self.open_spans: list[int] = []
        self._paths: dict[int, str] = {}  # id(module) -> its path in the model
        self._storage_ids: dict[int, int] = {}
        self._next_storage = itertools.count()
        self._order = itertools.count()
        self.failure: BurdenError | None = None

    # storage numbering -------------------------------------------------------------------------
    def _storage_of(self, t: torch.Tensor, fresh: bool = False) -> int:
        key = t.untyped_storage()._cdata
        if fresh or key not in self._storage_ids:
            # A fresh output at an address seen before means the old storage was freed and reused.
            self._storage_ids[key] = next(self._next_storage)
        return self._storage_ids[key]

    def _info(self, t: torch.Tensor, fresh: bool = False) -> TensorInfo:
        return TensorInfo(shape=t.shape, dtype=t.dtype, storage=self._storage_of(t, fresh))

    # op interception ---------------------------------------------------------------------------
    def _to_meta(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.device.type != "meta":
            out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
            # keep storage identity: the stand-in is the same storage as the real tensor
            self._storage_ids[out.untyped_storage()._cdata] = self._storage_of(x)
            return out
        if isinstance(x, torch.device) and x.type != "meta":
            return torch.device("meta")
        return x

    def run_op(self, func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
        if self.meta:
            args, kwargs = map_tensors(self._to_meta, args), {k: self._to_meta(v) if isinstance(v, torch.device)
                                                              else map_tensors(self._to_meta, v)
                                                              for k, v in kwargs.items()}
        module = self.stack[-1] if self.stack else ""
        in_args, in_kwargs = map_tensors(self._info, args), map_tensors(self._info, kwargs)
        try:
            out = meta_call(func, args, kwargs) if self.meta else func(*args, **kwargs)
        except BurdenError:
            raise
        except Exception as exc:  # the op itself refused: shapes that do not fit
            self.failure = _op_failure(func, module, self.modules, args, exc)
            raise self.failure from None
        returns = func._schema.returns
        # One schema return per element of a returned tuple; a single Tensor[] return covers all.
        per_value = out if type(out) is tuple and len(returns) == len(out) else (out,)
        infos, fresh, out_parts = [], [], []
        for value, ret in zip(per_value, returns):
            new = ret.alias_info is None

            def record(t: torch.Tensor, new: bool = new) -> TensorInfo:
                info = self._info(t, fresh=new)
                infos.append(info)
                fresh.append(new)
                return info

            out_parts.append(map_tensors(record, value))
        out_info = tuple(out_parts) if per_value is out else (out_parts[0] if out_parts else None)
        self.events.append(OpEvent(func=func, module=module, args=in_args, kwargs=in_kwargs,
                                   out=out_info, outputs=tuple(infos), fresh=tuple(fresh)))
        return out

    # module hooks ------------------------------------------------------------------------------
    # Two process-wide hooks rather than two per module: registering and removing thousands of
    # handles costs more than the calls they watch. Modules outside the model are ignored.
    def _pre_hook(self, module: nn.Module, args: Any) -> None:
        path = self._paths.get(id(module))
        if path is None:
            return
        info = self.modules[path]
        if info.calls == 0:
            info.order = next(self._order)
        info.calls += 1
        self.stack.append(path)
        self.stack_args.append(args)
        self.open_spans.append(len(self.events))

    def _post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        path = self._paths.get(id(module))
        if path is None:
            return
        info = self.modules[path]
        shapes = _shape_tree(output)
        if info.output_shape is None:
            info.output_shape = shapes
        info.spans.append((self.open_spans.pop(), len(self.events), _shape_tree(self.stack_args[-1]), shapes))
        self.stack.pop()
        self.stack_args.pop()
        if path == self.stop_after:
            raise _StopTrace

    def _stand_ins(self) -> dict[str, torch.Tensor] | None:
        """Meta stand-ins for a real model's parameters and buffers, or None when it is on meta.

        Some modules (nn.LSTM) check devices in Python before any op runs, so swapping tensors
        op by op is not enough: ``functional_call`` swaps them for the whole call and restores
        the originals afterwards, also when the forward raises.
        """
        state = dict(self.model.named_parameters())
        state.update(self.model.named_buffers())
        if not self.meta or all(t.device.type == "meta" for t in state.values()):
            return None
        stand_ins = {name: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
                     for name, t in state.items()}
        for name, t in state.items():
            self._storage_ids[stand_ins[name].untyped_storage()._cdata] = self._storage_of(t)
        return stand_ins

    def _call(self, args: tuple, kwargs: dict, stand_ins: dict[str, torch.Tensor] | None) -> Any:
        if stand_ins is None:
            return self.model(*args, **kwargs)
        return torch.func.functional_call(self.model, stand_ins, args, kwargs, strict=False)

    def run(self, args: tuple, kwargs: dict) -> Trace:
        with frozen_heap():
            return self._run(args, kwargs)

    def _run(self, args: tuple, kwargs: dict) -> Trace:
        never = 10**9
        for path, module in self.model.named_modules():
            depth = 0 if path == "" else path.count(".") + 1
            self.modules[path] = ModuleInfo(path=path, type=type(module).__name__, depth=depth, order=never)
            self._paths[id(module)] = path
        handles = [register_module_forward_pre_hook(self._pre_hook), register_module_forward_hook(self._post_hook)]
        try:
            if self.stop_after is not None and self.stop_after not in self.modules:
                raise ShapeError(f"the model has no module {self.stop_after!r}")
            inputs = {self._storage_of(t) for t in iter_tensors((args, kwargs))}
            output: Any = None
            stand_ins = self._stand_ins()
            with _Recorder(self):
                try:
                    output = self._call(args, kwargs, stand_ins)
                except _StopTrace:
                    pass
                except BurdenError:
                    raise
                except Exception as exc:
                    module_args = self.stack_args[-1] if self.stack_args else args
                    raise _forward_failure(self.stack, self.modules, module_args, exc) from None
        finally:
            for h in handles:
                h.remove()
        if self.stop_after is not None and self.modules[self.stop_after].calls == 0:
            raise ShapeError(f"module {self.stop_after!r} never ran in the forward pass")
        ordered = dict(sorted(self.modules.items(), key=lambda kv: kv[1].order))
        outputs = {self._storage_of(t) for t in iter_tensors(output)}
        return Trace(events=self.events, modules=ordered, input_storages=inputs, output_storages=outputs,
                     stopped_after=self.stop_after)


def _where(path: str, modules: dict[str, ModuleInfo]) -> str:
    if path == "" or path not in modules:
        return "the model's own forward"
    return f"layer {path} ({modules[path].type})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _op_failure(func: Any, module: str, modules: dict[str, ModuleInfo], args: tuple, exc: Exception) -> BurdenError:
    op = str(func.overloadpacket).replace("aten::", "")
    return ShapeError(f"the input does not fit at {_where(module, modules)}: {op} got {describe_shapes(args)}: "
                      f"{_first_line(exc)}")


def _forward_failure(stack: list[str], modules: dict[str, ModuleInfo], args: tuple, exc: Exception) -> BurdenError:
    path = stack[-1] if stack else ""
    where = _where(path, modules)
    if isinstance(exc, NotImplementedError) or "meta" in str(exc).lower():
        return ForwardError(f"forward failed at {where}: {_first_line(exc)} (the model needs real tensor "
                            f"values; analyse it with device='cpu')")
    return ForwardError(f"forward failed at {where}, which got {describe_shapes(args)}: "
                        f"{type(exc).__name__}: {_first_line(exc)}")


def trace_forward(model: nn.Module, args: tuple, kwargs: dict | None = None, *, meta: bool = True,
                  stop_after: str | None = None) -> Trace:
    """Trace one forward pass of ``model`` on ``args``.

    With ``stop_after``, the pass ends as soon as that module (a path such as ``layer4``) returns:
    the trace then holds exactly the work of computing that module's output. The caller owns the
    model's mode and grad state; this function only adds hooks and removes them again, whether
    the pass succeeds or raises.
    """
    # No ``torch.device("meta")`` context: it adds a Python call to every torch function, and the
    # recorder already sends factory calls and stray real tensors to the meta device op by op.
    return Tracer(model, meta=meta, stop_after=stop_after).run(args, kwargs or {})


def iter_tensors(value: Any) -> Iterator[torch.Tensor]:
    for leaf in leaves(value):
        if isinstance(leaf, torch.Tensor):
            yield leaf
