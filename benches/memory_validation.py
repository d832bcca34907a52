"""Predicted against measured memory for the seven SE networks: inference peak, saved activations,
the whole training step's peak. Not a test: it runs the real networks on the CPU and takes minutes.

    python benches/memory_validation.py                      # all seven, batch 1 and 8
    python benches/memory_validation.py --models se_resnet50 --batches 1

Predictions come from burden on the meta device (float32, Adam). Measurements run the same
network on real CPU tensors and read the CPU allocator's own allocation and free events through
the profiler (``tests/allocator_oracle.py``, the test suite's oracle: oneDNN off, one thread,
kernel workspaces told apart from tensors), which shares nothing with burden's method. The
workspaces, which burden does not predict, are printed as columns of their own. Where CUDA is
available, the same inference pass and whole training step are run on the GPU and
``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` are compared with burden's
``target="cuda"`` figures for that GPU (its data sheet's profile). The Markdown table goes to
``benches/results/memory.md``, rewritten after every row.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import burden  # noqa: E402
from allocator_oracle import measure, measure_step  # noqa: E402
from burden.devices import matching  # noqa: E402
from burden.figures import TrainingFigures  # noqa: E402
from burden.memory import inference_peak, inferred_lifetimes, replay, trace_lifetimes  # noqa: E402
from burden.api import request  # noqa: E402
from burden.training import training_step  # noqa: E402

OPTIMIZER = "adam"
MiB = 2**20


@dataclass
class Row:
    model: str
    batch: int
    figures: dict[str, tuple[int, int]]  # figure -> (predicted, measured by the CPU allocator): the target
    workspace: dict[str, int]  # kernel scratch memory the allocator saw, not predicted: inference, training
    references: dict[str, tuple[int, int]]  # other comparisons -> (figure compared, reference figure)
    step: TrainingFigures
    seconds: float


def predict(model: torch.nn.Module, batch: int, size: int) -> tuple[dict[str, int], TrainingFigures]:
    x = torch.zeros(batch, 3, size, size, device="meta")
    model.eval()
    with torch.no_grad():
        trace = trace_lifetimes(model, (x,))
    live = inference_peak(trace, elsize=4)
    # the same trace with frees inferred from last reads only: what eager PyTorch does not do
    last_reads = replay(trace.events, *inferred_lifetimes(trace), elsize=4)
    step = training_step(model, (x,), None, request(mode="training", optimizer=OPTIMIZER)).figures
    return {"inference": live.peak_feature_bytes, "saved": step.saved_activation_bytes,
            "training": step.training_peak_bytes, "last_reads": last_reads.peak_feature_bytes}, step


def measure_cpu(model: torch.nn.Module, batch: int, size: int) -> tuple[dict[str, int], dict[str, int]]:
    """The allocator's tensor figures and, apart, its kernel workspaces. The training figure is the
    whole step's peak (``measure_step``): parameters, buffers, optimizer state and the input, plus the
    most tensor memory held in forward, backward and the optimizer's step."""
    x = torch.randn(batch, 3, size, size)
    m = measure(model, (x,), optimizer=OPTIMIZER)
    whole = measure_step(model, (x,), optimizer=torch.optim.Adam)
    return ({"inference": m.inference_peak, "saved": m.saved_activations, "training": whole.peak},
            {"inference": m.inference_workspace, "training": whole.workspace})


def _cuda_step(model: torch.nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    out = model(x)
    torch.autograd.backward([out], [torch.ones_like(out)])
    del out
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure_cuda(model: torch.nn.Module, batch: int, size: int) -> dict[str, int]:
    """The caching allocator's own figures on the GPU, in a fresh process's state as far as one can
    make it: the inference pass (weights and input included), then a whole training step after one
    step that made the optimizer's state (PyTorch's default Adam there: foreach)."""
    torch.cuda.empty_cache()
    model = model.cuda()
    x = torch.randn(batch, 3, size, size, device="cuda")
    model.eval()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        model(x)
    torch.cuda.synchronize()
    out = {"inference": torch.cuda.max_memory_allocated(), "inference_reserved": torch.cuda.max_memory_reserved()}
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    _cuda_step(model, x, opt)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    _cuda_step(model, x, opt)
    torch.cuda.synchronize()
    out.update(training=torch.cuda.max_memory_allocated(), training_reserved=torch.cuda.max_memory_reserved())
    del opt
    model.cpu()
    torch.cuda.empty_cache()
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {torch.get_num_threads()} torch threads; {gpu}; torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.machine()}")


FIGURES = (("inference", "Inference peak (features)"), ("saved", "Saved activations"),
           ("training", "Training-step peak (Adam)"))
WORKSPACES = (("inference", "inference workspace MiB"), ("training", "training workspace MiB"))
REFERENCES = (
    ("last_reads", "inference peak freeing at last reads / allocator"),
    ("cuda_inference", "inference: predicted / CUDA max_memory_allocated"),
    ("cuda_inference_reserved", "inference: predicted / CUDA max_memory_reserved"),
    ("cuda_training", "training step: predicted / CUDA max_memory_allocated"),
    ("cuda_training_reserved", "training step: predicted / CUDA max_memory_reserved"),
)


def _mib(n: int) -> str:
    return f"{n / MiB:.2f}"


def table(rows: list[Row]) -> str:
    head = "| model | batch " + "".join(f"| {t}: predicted MiB | measured MiB | ratio " for _, t in FIGURES)
    head += "".join(f"| {t} " for _, t in WORKSPACES)
    lines = [head + "| time s |",
             "|---|---:" + "|---:|---:|---:" * len(FIGURES) + "|---:" * len(WORKSPACES) + "|---:|"]
    for row in rows:
        cells = "".join(f"| {_mib(p)} | {_mib(m)} | {p / m:.4f} " for p, m in (row.figures[k] for k, _ in FIGURES))
        cells += "".join(f"| {_mib(row.workspace[k])} " for k, _ in WORKSPACES)
        lines.append(f"| {row.model} | {row.batch} {cells}| {row.seconds:.0f} |")
    return "\n".join(lines)


def references_table(rows: list[Row]) -> str:
    present = [(k, t) for k, t in REFERENCES if any(k in row.references for row in rows)]
    lines = ["| model | batch " + "".join(f"| {t} " for _, t in present) + "|",
             "|---|---:" + "|---:" * len(present) + "|"]
    for row in rows:
        cells = "".join(f"| {row.references[k][0] / row.references[k][1]:.4f} " if k in row.references else "| "
                        for k, _ in present)
        lines.append(f"| {row.model} | {row.batch} {cells}|")
    return "\n".join(lines)


def flops_table(rows: list[Row]) -> str:
    lines = ["| model | batch | forward GFLOPs (training mode) | backward GFLOPs | backward / forward "
             "| uncounted backward ops |", "|---|---:|---:|---:|---:|---|"]
    for row in rows:
        step = row.step
        uncounted = ", ".join(f"{u.op} x{u.calls}" for u in step.backward_uncounted_ops) or "none"
        lines.append(f"| {row.model} | {row.batch} | {step.forward_flops / 1e9:.2f} | {step.backward_flops / 1e9:.2f} "
                     f"| {step.backward_flops / step.forward_flops:.3f} | {uncounted} |")
    return "\n".join(lines)


def report(rows: list[Row], command: str, size: int) -> str:
    worst = max(abs(p / m - 1) for row in rows for p, m in row.figures.values())
    return f"""# Predicted against measured memory, SE networks at {size} x {size}

Reproduce: `{command}`

Machine: {machine()}

Predicted: burden on the meta device, float32 (4 bytes per element), Adam. Inference peak is the
most feature memory live at once in an eval-mode forward under `no_grad` (weights and input left
out). Saved activations are what autograd holds for backward when the forward ends. Training-step
peak is the whole step's (forward, backward, Adam's step, zero_grad), everything held included:
parameters, buffers, Adam's state, the input batch, and the gradients and temporaries as they live.

Measured: the same network on real CPU tensors (random weights), by the CPU allocator itself: the
profiler's allocation and free events (`profile_memory=True`), read by `tests/allocator_oracle.py`
with oneDNN off and one intra-op thread. It never looks at tensors, storages or ops' outputs. A
block taken and given back inside one op call is that kernel's workspace (the im2col columns of
the convolution, the per-group pieces of the grouped convolution's backward): burden does not
predict workspaces, which depend on the backend, not the model, so they are left out of the
measured figures and shown in columns of their own. The training figure is the whole step's
(`measure_step`), with the real parameter, buffer (BatchNorm's integer counters too),
optimizer-state and input storages. Ratio is predicted / measured. Worst deviation: {worst:.4%}.

{table(rows)}

Known cause of a training ratio above 1: where a tensor's gradient is the sum of several
branches' gradients (the inception blocks), autograd adds the second into the first in place
when nothing else holds the first. burden traces under a dispatch mode, and under any dispatch
mode autograd adds out of place, so burden predicts one gradient buffer more wherever that sum
falls at the peak (`tests/test_memory.py::test_branch_gradients_by_hand_burden`). Checked for
se_bn_inception at batch 1, 224 x 224: the allocator, measuring the backward under a pass-through
dispatch mode, gives burden's figure to the byte.

## Other references (ratios)

- Freeing at last reads: the same inference trace replayed with each buffer freed right after the
  last op that reads it. Eager PyTorch keeps buffers longer (locals, `Module.__call__` arguments,
  lists), so that rule underestimates; burden records the real frees instead.
- CUDA, where a GPU is present: `torch.cuda.max_memory_allocated` and `max_memory_reserved` over the
  inference pass and a whole training step (after one that made Adam's state), against burden's
  `target="cuda"` figures for that GPU (cuBLAS workspace and simulated reserved memory included;
  cuDNN's workspaces are not predicted).

{references_table(rows)}

## Backward FLOPs (convnet-burden, from the ops autograd ran)

A multiply-add is one FLOP; batch norm is 0 in the forward (folded away, as the convention says)
but not in backward, where it cannot be folded.

{flops_table(rows)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=burden.list_models())
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for the predictions and CUDA runs (the allocator measures on one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benches" / "results" / "memory.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benches/memory_validation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for name in args.models:
        for batch in args.batches:
            rows.append(validate(name, batch, args.size))
            args.out.write_text(report(rows, command.strip(), args.size))
            print(f"{name} batch {batch}: " + ", ".join(f"{k} {p / m:.4f}" for k, (p, m) in
                                                       {**rows[-1].figures, **rows[-1].references}.items()),
                  "| workspace " + ", ".join(f"{k} {_mib(v)} MiB" for k, v in rows[-1].workspace.items()),
                  f"({rows[-1].seconds:.0f} s)", flush=True)
    return 0


def validate(name: str, batch: int, size: int) -> Row:
    start = time.perf_counter()
    torch.manual_seed(0)
    model = burden.create_model(name)
    predicted, step = predict(model, batch, size)
    measured, workspace = measure_cpu(model, batch, size)
    figures = {k: (predicted[k], measured[k]) for k in measured}
    references = {"last_reads": (predicted["last_reads"], measured["inference"])}
    if torch.cuda.is_available():
        # predicted for this GPU as the caching allocator counts and reserves (target="cuda")
        e = burden.estimate(name, size, batch_size=batch, mode="training", optimizer=OPTIMIZER, target="cuda",
                            device_profile=matching(torch.cuda.get_device_name()))
        on_cuda = {"inference": e.peak_bytes, "inference_reserved": e.reserved_bytes,
                   "training": e.training.training_peak_bytes, "training_reserved": e.training.reserved_bytes}
        references.update({"cuda_" + k: (on_cuda[k], v) for k, v in measure_cuda(model, batch, size).items()})
    row = Row(name, batch, figures, workspace, references, step, time.perf_counter() - start)
    del model
    gc.collect()
    return row


if __name__ == "__main__":
    sys.exit(main())
