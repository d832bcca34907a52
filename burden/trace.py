"""The tracer: one forward pass, recorded op by op and attributed to modules.

Hooks on the model's own modules keep a stack of module paths; a ``TorchDispatchMode`` sees every
aten op, including the work that ``forward`` does through functional calls (``F.relu``, the SE
rescale, residual sums, ``flatten``). Each op becomes an ``OpEvent`` owned by the innermost module
on the stack. Nothing here counts FLOPs or bytes: counting applies a convention to the recorded
events afterwards, so one trace serves every convention.

By default the pass runs on the meta device, with the model's tensors swapped for meta stand-ins
(``burden.stand_ins``), so no weights are copied, no activation memory is allocated, and the
user's tensors are never written to. Observers (``op_recorded``) see every op as it is recorded:
that is how memory lifetimes and the training step watch a pass without reaching inside.

Everything a trace installs is its own or this thread's: hooks on the traced model's modules
(removed on the way out), dispatch and function modes (torch keeps their stacks per thread). Another
thread's work, and other models, run as if no trace were running.
"""

from __future__ import annotations

import itertools
import sys
import threading
import weakref
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode

from .autocast import autocast
from .containers import iter_tensors, map_tensors, shape_tree
from .errors import BurdenError, DataDependentError, ShapeError, UnsupportedModelError
from .heap import no_full_collections
from .kernels import Kernels
from .meta_kernels import META_KERNELS, target_attention
from .patching import backward_with, swapped
from .op_groups import ALIAS_OPS, AUX_OUTPUT_OPS, DATA_DEPENDENT_OPS, FACTORY_OPS, WAIT_TENSOR, decomposes
from .records import ModuleInfo, OpEvent, TensorInfo, Trace, schema_facts
from .stand_ins import Make, StandIns, meta_stand_in
from .trace_errors import describe_shapes, forward_failure, internal_failure, needs_values_message, op_failure, where
from .values import NOTHING, KnownValues

aten = torch.ops.aten

# Metadata queries: they are not work, and some (size, stride) must not be intercepted at all.
_QUERIES = {
    aten.is_contiguous.default, aten.is_contiguous.memory_format, aten.is_strides_like_format.default,
    aten.is_non_overlapping_and_dense.default, aten.size.default, aten.sym_size.default,
    aten.stride.default, aten.sym_stride.default, aten.storage_offset.default,
    aten.sym_storage_offset.default, aten.numel.default, aten.sym_numel.default, aten.dim.default,
    torch.ops.prim.layout.default, torch.ops.prim.device.default,
}
# ops that may legitimately make an empty output from non-empty inputs
_MAY_BE_EMPTY = {*ALIAS_OPS, *FACTORY_OPS, *DATA_DEPENDENT_OPS, aten.index}

class Observer(Protocol):
    def op_recorded(self, tracer: "Tracer", event: OpEvent, outputs: tuple[torch.Tensor, ...]) -> None:
        """Called after each recorded op, with the tensors it really returned (as ``event.outputs``)."""

    def storage_freed(self, tracer: "Tracer", storage: int) -> None:
        """Called when the last reference to a storage the tracer numbered dies."""

    def storage_allocated(self, tracer: "Tracer", tensor: torch.Tensor, storage: int) -> None:
        """Called when a storage that no op made gets memory: one that FSDP resized from nothing."""


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
        if self.tracer.own_model:
            if any(not issubclass(t, FakeTensor) for t in types):
                # a DTensor (or a collective's waiting tensor) runs its own dispatch, whose ops on its
                # local tensors come back here and are recorded: what the rank really holds and runs
                return NotImplemented
            if _called_from(sys._getframe(1), self.tracer.not_run):
                # DTensor's sharding propagation works out an output's global shape by running the
                # op on fake tensors of that shape (once per op and layout, then cached): no rank runs it
                return func(*args, **kwargs)
            if func is WAIT_TENSOR:
                # eager returns the collective's output itself once it is done; the fake kernel
                # would make a new tensor that no rank holds
                return args[0]
        # Like torch's FlopCounterMode: see an op through its decomposition where it has one, so
        # both look at the same primitive ops.
        if decomposes(func):
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        # burden's own bookkeeping is not the model's code: the trace's function modes (and any of
        # the caller's) stay out of it, which also spares a Python call per tensor attribute read
        with torch._C.DisableTorchFunction():
            return self.tracer.run_op(func, args, kwargs)


def _called_from(frame: Any, codes: frozenset, depth: int = 6) -> bool:
    """Whether one of the few Python frames nearest the op's call runs one of ``codes``."""
    while frame is not None and depth:
        if frame.f_code in codes:
            return True
        frame, depth = frame.f_back, depth - 1
    return False


class _Values(TorchDispatchMode):
    """Ops run as they are, unrecorded, their known values kept (burden's own optimizer's first step,
    which makes its state: ASGD's and Adafactor's scalars are read with ``.item()``)."""

    def __init__(self, tracer: "Tracer") -> None:
        super().__init__()
        self.values = tracer.values

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's signature)
        kwargs = kwargs or {}
        values = self.values
        if func in _QUERIES or values is None:
            return func(*args, **kwargs)
        tensors = list(iter_tensors((args, kwargs)))
        real = any(not t.is_meta for t in tensors)
        with_values = real or any(values.carries(t) for t in tensors) or values.makes_values(func)
        out = values.read(func, args, kwargs) if with_values and func.overloadpacket in DATA_DEPENDENT_OPS \
            else NOTHING
        if out is NOTHING:
            out = META_KERNELS(func, args, kwargs) if tensors and not real else func(*args, **kwargs)
            if with_values:
                values.after(func, args, kwargs, out)
        return out


class _StopTrace(Exception):
    """Raised from the forward hook of the module a partial trace ends at."""


def _refuse_unsupported(path: str, module: nn.Module) -> None:
    """Modules burden cannot trace, refused up front with the reason."""
    if isinstance(module, torch.jit.ScriptModule):
        where = "the model" if path == "" else f"its submodule {path!r}"
        raise UnsupportedModelError(
            f"{where} is a TorchScript module: its forward runs in the TorchScript interpreter, which "
            f"calls no Python forward hooks and cannot take stand-ins for its weights, so burden cannot "
            f"attribute or trace it; analyse the eager nn.Module it was scripted or traced from")


class Tracer:
    """Records forward passes (and, for training, the backward ops) of ``model``."""

    def __init__(self, model: nn.Module, meta: bool, stop_after: str | None = None, make: Make | None = None,
                 observers: tuple[Observer, ...] = (), kernels: Kernels = Kernels(), own_model: bool = False) -> None:
        self.model = model
        # burden's own copy of a model (a sharded one, of fake tensors): nothing of it is swapped,
        # and tensor subclasses (DTensor) run their own dispatch beneath the recorder
        self.own_model = own_model
        # with ``own_model``: the code of PyTorch's own that runs ops no rank runs (given by the caller)
        self.not_run: frozenset = frozenset()
        self.kernels = kernels  # the target's attention chooser, and its autocast policy in the forward
        self.meta = meta
        self.stop_after = stop_after
        self.forward_done = False  # set by ``trace``: module calls from then on are not recorded
        self.phase = "forward"  # forward, backward or optimizer step: what the recorded ops belong to
        # Set while burden's own optimizer runs: the real tensors it touches (its CPU step counters)
        # are its own, never the user's, so ops on real tensors alone run as they are and give
        # their values (``.item()``) where converting them to meta would lose them.
        self.own_real_tensors = False
        self.observers = observers
        self.events: list[OpEvent] = []
        self.modules: dict[str, ModuleInfo] = {}
        self.stack: list[str] = []
        self.stack_args: list[Any] = []  # each open module's positional inputs (its records' input shapes)
        self.stack_kwargs: list[dict] = []  # and its keyword inputs, to say what a failing module got
        self.open_spans: list[int] = []
        self._paths: dict[int, str] = {}  # id(module) -> its path in the model
        self._thread = threading.get_ident()  # the thread whose module calls are this trace's
        self.swaps: Any = None  # the function mode ``recording`` turned on, for ``backward``
        self._storage_ids: dict[int, int] = {}
        self._next_storage = itertools.count()
        # storage -> (address, number): a plain weak reference per numbered storage, whose callback
        # says it died (weakref.finalize does the same at several times the cost, and a trace
        # numbers thousands of storages)
        self._watched: dict[weakref.ref, tuple[int, int]] = {}
        self._order = itertools.count()
        # small values computed from constants and inputs alone
        self.values = KnownValues(assume=kernels.routing == "balanced") if meta else None
        self.stand_ins = StandIns(make or (meta_stand_in if meta else _unchanged), on_new=self._same_storage)
        never = 10**9
        for path, module in model.named_modules():
            _refuse_unsupported(path, module)
            depth = 0 if path == "" else path.count(".") + 1
            self.modules[path] = ModuleInfo(path=path, type=type(module).__name__, depth=depth, order=never)
            self._paths.setdefault(id(module), path)

    # storage numbering -------------------------------------------------------------------------
    # A storage is known by the address of its StorageImpl, which the allocator hands out again
    # once the storage dies: a finalizer forgets the address then, so that a tensor made outside
    # any op (a scalar that ``x[i] = 3`` turns into a tensor) is never taken for a dead one.
    def storage_of(self, t: torch.Tensor, fresh: bool = False) -> int:
        return self._number(t.untyped_storage(), fresh)

    def _number(self, storage: torch.UntypedStorage, fresh: bool = False) -> int:
        key = storage._cdata
        number = None if fresh else self._storage_ids.get(key)
        if number is None:
            number = self._storage_ids[key] = next(self._next_storage)
            self._watched[weakref.ref(storage, self._storage_died)] = (key, number)
        return number

    def _storage_died(self, ref: weakref.ref) -> None:
        watched = self._watched.pop(ref, None)
        if watched is None:
            return  # no longer watched (the trace has stopped)
        key, number = watched
        if self._storage_ids.get(key) == number:
            del self._storage_ids[key]
        if self.values is not None:
            self.values.forget(key)
        for observer in self.observers:
            observer.storage_freed(self, number)

    def storage_resized(self, t: torch.Tensor) -> None:
        """``t``'s storage was resized in place (FSDP frees and refills its gathered parameters so,
        and no dispatch mode sees it): to nothing, it is freed; from nothing, it is a new allocation."""
        storage = t.untyped_storage()
        key = storage._cdata
        if storage.nbytes() == 0:
            number = self._storage_ids.pop(key, None)
            if number is not None:
                for observer in self.observers:
                    observer.storage_freed(self, number)
            return
        number = self._number(storage, fresh=True)
        for observer in self.observers:
            observer.storage_allocated(self, t, number)

    def stop(self) -> None:
        """Stop watching storages: those still alive now stay alive in every record."""
        self._watched.clear()  # the references die with the table, and their callbacks with them

    def _same_storage(self, original: torch.Tensor, stand_in: torch.Tensor) -> None:
        # the stand-in is the same storage as the real tensor, for tied weights and inputs alike
        self._storage_ids[stand_in.untyped_storage()._cdata] = self.storage_of(original)

    # op interception ---------------------------------------------------------------------------
    def _to_meta(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor) and not x.is_meta:
            return self.stand_ins.of(x)
        if isinstance(x, torch.device) and x.type != "meta":
            return torch.device("meta")
        return x

    def _to_meta_args(self, value: Any) -> Any:
        return self._to_meta(value) if isinstance(value, torch.device) else map_tensors(self._to_meta, value)

    def run_op(self, func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
        module = self.stack[-1] if self.stack else ""
        try:
            inputs: list[TensorInfo] = []
            keys: set[int] = set()
            real: list[bool] = []
            on_meta: list[bool] = []
            valued: list[bool] = []  # meta inputs that carry a known value
            known = self._storage_ids
            values = self.values

            def describe(t: torch.Tensor) -> TensorInfo:
                storage = t.untyped_storage()
                key = storage._cdata
                keys.add(key)
                if t.is_meta:
                    on_meta.append(True)
                    if values is not None and values.carries(t):
                        valued.append(True)
                else:
                    real.append(True)
                number = known.get(key)
                info = TensorInfo(t.shape, t.dtype, self._number(storage) if number is None else number)
                inputs.append(info)
                return info

            in_args, in_kwargs = map_tensors(describe, args), map_tensors(describe, kwargs)
            as_is = not self.meta or (self.own_real_tensors and real and not on_meta)
            given = args, kwargs  # before any real tensor becomes meta: real tensors are their own values
            # On meta, a real tensor (a constant made in forward) or device gets its meta stand-in, which
            # is numbered as the same storage; the storages the kernel sees decide what its outputs alias.
            if not as_is and (real or kwargs and any(isinstance(v, torch.device) for v in kwargs.values())):
                args = tuple(self._to_meta_args(a) for a in args)
                kwargs = {k: self._to_meta_args(v) for k, v in kwargs.items()}
                keys = {t.untyped_storage()._cdata for t in iter_tensors((args, kwargs))}
        except Exception as exc:
            raise internal_failure(func, module, self.modules, args, exc) from None
        kernel_values = False  # the meta kernel ran where values may be known: they are computed after it
        try:
            if as_is:
                out = func(*args, **kwargs)
            else:
                # values are computed only where an input has one, or a factory makes one
                with_values = bool(real or valued) or self.values.makes_values(func)
                out = self.values.read(func, *given) if with_values and func.overloadpacket in DATA_DEPENDENT_OPS \
                    else NOTHING
                if out is NOTHING:
                    out = META_KERNELS(func, args, kwargs)
                    kernel_values = with_values
        except BurdenError:
            raise
        except Exception as exc:  # the op itself refused: shapes that do not fit, or values it needs
            raise op_failure(func, module, self.modules, args, exc, self.meta) from None
        try:  # from here on a failure is burden's own, never the op's
            if kernel_values:
                self.values.after(func, *given, out)
            event, outputs = self._record(func, module, in_args, in_kwargs, tuple(inputs), keys, out)
            for observer in self.observers:
                observer.op_recorded(self, event, outputs)
        except BurdenError:
            raise
        except Exception as exc:
            raise internal_failure(func, module, self.modules, args, exc) from None
        return out

    def _record(self, func: torch._ops.OpOverload, module: str, in_args: tuple, in_kwargs: dict,
                inputs: tuple[TensorInfo, ...], input_keys: set[int], out: Any
                ) -> tuple[OpEvent, tuple[torch.Tensor, ...]]:
        returns = schema_facts(func)[1]  # per return: declared new
        # One schema return per element of a returned tuple; a single Tensor[] return covers all.
        per_value = out if type(out) is tuple and len(returns) == len(out) else (out,)
        infos, fresh, out_parts, tensors = [], [], [], []
        for value, declared_new in zip(per_value, returns):

            def record(t: torch.Tensor, declared_new: bool = declared_new) -> TensorInfo:
                # an output in an input's storage is not new, whatever the schema says (_unsafe_view)
                storage = t.untyped_storage()
                new = declared_new and storage._cdata not in input_keys
                info = TensorInfo(t.shape, t.dtype, self._number(storage, fresh=new))
                infos.append(info)
                fresh.append(new)
                tensors.append(t)
                return info

            out_parts.append(map_tensors(record, value))
        out_info = tuple(out_parts) if per_value is out else (out_parts[0] if out_parts else None)
        event = OpEvent(func=func, module=module, args=in_args, kwargs=in_kwargs, out=out_info,
                        outputs=tuple(infos), fresh=tuple(fresh), inputs=inputs)
        self._check_shapes(event)
        self.events.append(event)
        return event, tuple(tensors)

    def _check_shapes(self, event: OpEvent) -> None:
        """burden's own check that the input fits: some torch releases' meta kernels give an empty
        output (a convolution over an input smaller than its kernel) instead of raising."""
        packet = event.packet
        if packet in _MAY_BE_EMPTY:
            return
        inputs = event.inputs
        if not inputs or any(0 in t.shape for t in inputs):
            return
        checked = event.outputs[:1] if packet in AUX_OUTPUT_OPS else event.outputs
        for t in checked:
            if 0 in t.shape:  # sizes are never negative; a 0-d shape holds no 0
                raise ShapeError(f"the input is too small at {where(event.module, self.modules)}: {event.name} "
                                 f"made an empty output ({describe_shapes(t)}) from {describe_shapes(inputs)}")

    # module hooks ------------------------------------------------------------------------------
    # Hooks on the model's own modules, never torch's global ones, which every model in the
    # process would call (a few thousand handles cost milliseconds). Another thread's calls of the
    # same modules are ignored.
    def _pre_hook(self, module: nn.Module, args: Any, kwargs: dict) -> None:
        path = self._paths.get(id(module))
        if path is None or self.forward_done or threading.get_ident() != self._thread:
            return
        info = self.modules[path]
        if info.calls == 0:
            info.order = next(self._order)
        info.calls += 1
        self.stack.append(path)
        self.stack_args.append(args)
        self.stack_kwargs.append(kwargs)
        self.open_spans.append(len(self.events))

    def _post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        path = self._paths.get(id(module))
        if threading.get_ident() != self._thread:  # the same model, called by another thread meanwhile
            return
        if path is None or self.forward_done or not self.stack or self.stack[-1] != path:
            return
        info = self.modules[path]
        shapes = shape_tree(output)
        if info.output_shape is None:
            info.output_shape = shapes
        info.spans.append((self.open_spans.pop(), len(self.events), shape_tree(self.stack_args[-1]), shapes))
        self.stack.pop()
        self.stack_args.pop()
        self.stack_kwargs.pop()
        if path == self.stop_after:
            raise _StopTrace

    # running -----------------------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[None]:
        """Stand-ins swapped in and module hooks installed; everything put back on the way out."""
        if self.stop_after is not None and self.stop_after not in self.modules:
            raise ShapeError(f"the model has no module {self.stop_after!r}")
        META_KERNELS.begin()
        with ExitStack() as stack:
            stack.enter_context(no_full_collections())
            if not self.own_model:
                stack.enter_context(self.stand_ins.swapped(self.model))
            self._thread = threading.get_ident()
            # the model's own hooks run after these, as they would after torch's global hooks
            handles = [hook for module in self.model.modules()
                       for hook in (module.register_forward_pre_hook(self._pre_hook, prepend=True, with_kwargs=True),
                                    module.register_forward_hook(self._post_hook, prepend=True))]
            stack.callback(lambda: [h.remove() for h in handles])
            yield

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Every aten op run inside the block is recorded (on meta, with the target's kernel choices)."""
        with ExitStack() as stack:
            capability = self.kernels.capability if self.kernels.device == "cuda" else None
            # burden's fake copy of a sharded model has no known values and runs the CPU's kernels by
            # itself: only CUDA's attention is swapped in there, and on the CPU target nothing
            if self.meta or (self.own_model and capability is not None):
                # one function mode for both swaps: each torch call the model makes passes through it
                reads = self.values.reads(self._values_needed) if self.values is not None else {}
                self.swaps = stack.enter_context(swapped({**target_attention(capability), **reads}))
                stack.callback(setattr, self, "swaps", None)
            stack.enter_context(_Recorder(self))
            yield

    def backward(self, roots: list[torch.Tensor], seeds: list[torch.Tensor]) -> None:
        """Backpropagate inside ``recording``, the forward's swaps on wherever autograd runs the
        model's code again (checkpointed modules)."""
        backward_with(self.swaps, roots, seeds)

    def _values_needed(self, what: str) -> DataDependentError:
        at = where(self.stack[-1] if self.stack else "", self.modules)
        return DataDependentError(needs_values_message(what, at))

    def small_values(self) -> Any:
        """Only small values computed inside the block (``KnownValues.small_values``); a CPU trace
        has real tensors and no known values to limit."""
        return self.values.small_values() if self.values is not None else nullcontext()

    def unrecorded(self) -> _Values:
        """Ops inside the block run unrecorded, with their known values kept."""
        return _Values(self)

    def attribute_to(self, path: str) -> None:
        """Attribute the ops recorded from now on to ``path`` (backward ops have no module call)."""
        self.stack[:] = [path]

    def forward(self, args: tuple, kwargs: dict, call: Callable[..., Any] | None = None) -> Any:
        """One forward pass inside ``session`` (or ``call``, a method of the model's that runs it, such
        as ``generate``); returns its output (None if cut short)."""
        inputs = {self.storage_of(t) for t in iter_tensors((args, kwargs))}
        self.input_storages = inputs
        try:
            with self.recording(), autocast(self.kernels.amp, self.kernels.device):
                return (call or self.model)(*args, **kwargs)
        except _StopTrace:
            return None
        except DataDependentError as exc:
            exc.feature_bytes_so_far = self._allocated_bytes()
            raise
        except BurdenError:
            raise
        except Exception as exc:
            module_args = (self.stack_args[-1], self.stack_kwargs[-1]) if self.stack_args else (args, kwargs)
            failure = forward_failure(self.stack, self.modules, module_args, exc)
            if isinstance(failure, DataDependentError):
                failure.feature_bytes_so_far = self._allocated_bytes()
            raise failure from None

    def _allocated_bytes(self) -> int:
        return sum(t.numel * t.dtype.itemsize for e in self.events for t, new in zip(e.outputs, e.fresh) if new)

    def trace(self, output: Any) -> Trace:
        # Module calls after this (a checkpoint's recomputation in backward) are not forward calls:
        # they neither add to the module records nor hold their arguments (an early-stopped
        # recomputation never returns, and its arguments would stay alive).
        self.forward_done = True
        if self.stop_after is not None and self.modules[self.stop_after].calls == 0:
            raise ShapeError(f"module {self.stop_after!r} never ran in the forward pass")
        ordered = dict(sorted(self.modules.items(), key=lambda kv: kv[1].order))
        outputs = {self.storage_of(t) for t in iter_tensors(output)}
        assumptions = tuple(sorted(self.values.assumptions)) if self.values is not None else ()
        return Trace(events=self.events, modules=ordered, input_storages=getattr(self, "input_storages", set()),
                     output_storages=outputs, stopped_after=self.stop_after, assumptions=assumptions)

    def run(self, args: tuple, kwargs: dict) -> Trace:
        with self.session():
            output = self.forward(args, kwargs)
            return self.trace(output)


def _unchanged(t: torch.Tensor, parameter: bool) -> torch.Tensor:
    return t


def trace_forward(model: nn.Module, args: tuple, kwargs: dict | None = None, *, meta: bool = True,
                  stop_after: str | None = None, observers: tuple[Observer, ...] = (),
                  kernels: Kernels = Kernels()) -> Trace:
    """Trace one forward pass of ``model`` on ``args``.

    With ``stop_after``, the pass ends as soon as that module (a path such as ``layer4``) returns:
    the trace then holds exactly the work of computing that module's output. The caller owns the
    model's mode and grad state; this function only swaps in stand-ins and adds hooks, and puts
    everything back, whether the pass succeeds or raises.
    """
    # No ``torch.device("meta")`` context: it adds a Python call to every torch function, and the
    # recorder already sends factory calls and stray real tensors to the meta device op by op.
    tracer = Tracer(model, meta=meta, stop_after=stop_after, observers=observers, kernels=kernels)
    try:
        return tracer.run(args, kwargs or {})
    finally:
        tracer.stop()
