"""The figures burden reports: one frozen record per layer and the immutable result of an analysis.

Nothing here formats numbers; ``burden.render`` does. The convenience methods on ``Estimate``
hand off to the renderers so that a notebook needs one import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerFigures:
    """One module's figures. ``params``, ``feature_bytes`` and ``flops`` include its submodules;
    the ``self_`` figures are its own: its direct parameters and the ops its ``forward`` runs
    outside any submodule. A parent's figure is the sum of its children's plus its own."""

    name: str  # module path; "" for the model itself
    type: str
    depth: int
    output_shape: Any  # nested lists of ints, as the module's output nests tensors; None if never called
    calls: int
    params: int
    param_bytes: int
    feature_bytes: int
    flops: int
    self_params: int
    self_param_bytes: int
    self_feature_bytes: int
    self_flops: int


@dataclass(frozen=True)
class UncountedOp:
    """An op the convention has no rule for: it counted 0 FLOPs, its output memory still counted."""

    op: str
    calls: int
    layers: tuple[str, ...]


@dataclass(frozen=True)
class TrainingFigures:
    """One training step: what it holds (bytes) and what its backward pass costs (FLOPs).

    ``training_peak_bytes`` = parameters + optimizer state + the most live memory at any op of
    the forward and backward (activations autograd saved, gradients as they appear, temporaries),
    with gradients starting from ``zero_grad(set_to_none=True)``.
    """

    optimizer: str
    gradient_bytes: int
    optimizer_bytes: int
    saved_activation_bytes: int
    backward_peak_bytes: int
    training_peak_bytes: int
    forward_flops: int  # the forward in training mode (batch statistics, dropout on)
    backward_flops: int
    backward_uncounted_ops: tuple[UncountedOp, ...]


@dataclass(frozen=True)
class Estimate:
    """The burden of one model at one input size, batch size and dtype, under one convention."""

    model: str
    input: tuple[int, ...]  # per-sample shape, [C, H, W] for images
    batch: int
    dtype: str
    convention: str
    memory_convention: str
    params: int
    trainable_params: int
    param_bytes: int
    feature_bytes: int
    flops: int
    layers: tuple[LayerFigures, ...]
    uncounted_ops: tuple[UncountedOp, ...]
    # inference peak: the most feature memory live at once when buffers are freed as eager
    # PyTorch frees them, the op where it is reached, and parameters + that peak
    peak_feature_bytes: int = 0
    peak_op: Any = None  # burden.memory.PeakOp(index, op, module)
    peak_bytes: int = 0
    mode: str = "inference"
    training: TrainingFigures | None = None  # with mode="training"
    # where the pass was traced, and what the reader must know about how the figures were obtained;
    # not part of equality, which compares figures
    device: str = field(default="meta", compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)
    # live feature memory after each op (for charts); not part of equality
    live_curve: tuple[int, ...] = field(default=(), compare=False, repr=False)
    # what was analysed (a name or the nn.Module), so that ``scale`` can trace it again
    source: Any = field(default=None, compare=False, repr=False)

    def layer(self, name: str) -> LayerFigures:
        for record in self.layers:
            if record.name == name:
                return record
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        from .render.json import estimate_to_dict

        return estimate_to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        from .render.json import estimate_to_json

        return estimate_to_json(self, indent=indent)

    def summary(self) -> str:
        from .render.text import summary

        return summary(self)

    def table(self, fmt: str = "github", depth: int | None = None, columns: list[str] | None = None,
              sort: str | None = None, top: int | None = None) -> str:
        from .render.text import layer_table

        return layer_table(self, fmt=fmt, depth=depth, columns=columns, sort=sort, top=top)

    def scale(self, scales: Any = None, *, batch_size: int = 128, trunk: str | None = None) -> Any:
        """The feature-extraction scale table of the same model (see ``burden.scale``)."""
        from .api import scale
        from .inputs import DEFAULT_SCALES

        if self.source is None:
            raise ValueError("this estimate does not know its model; call burden.scale(model, ...)")
        return scale(self.source, scales or DEFAULT_SCALES, batch_size=batch_size, trunk=trunk,
                     dtype=self.dtype, convention=self.convention)

    def to_html(self) -> str:
        """A self-contained HTML page: summary, per-layer table, profile charts, uncounted ops."""
        from .render.html import estimate_page

        return estimate_page(self)

    def save_html(self, path: Any) -> None:
        from .render.html import write_text_atomic

        write_text_atomic(path, self.to_html())

    def _repr_html_(self) -> str:
        from .render.html import estimate_fragment

        return estimate_fragment(self)

    def __str__(self) -> str:
        return self.summary()
