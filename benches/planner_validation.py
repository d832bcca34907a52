"""Will it fit? burden's training-step peaks against the CPU allocator, and the planner's answer.

For SE-ResNet-50 (burden's own) and torchvision's ViT-B/16, at three batch sizes, plus a bf16
autocast step and a checkpointed step of each: burden's prediction (on the meta device) against
the peak the CPU allocator itself reports for a real training step of the same network
(``tests/allocator_oracle.py``: profiler allocation events, oneDNN off, one thread, kernel
workspaces set apart), which shares no code and no method with burden. Checkpointing is applied
to the measured model by this script, by wrapping the chosen modules' forward in
``torch.utils.checkpoint``; autocast is ``torch.autocast("cpu")`` around the measured forward.
Then ``burden fit se_resnet50 --memory 8GiB --mode training --optimizer adam``, confirmed by
two estimates of its own. Needs torchvision for the ViT (the zoo environment). Writes
``benches/results/planner.md``.

    python benches/planner_validation.py            # every case (tens of minutes on 2 cores)
    python benches/planner_validation.py --quick    # smaller inputs
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import burden  # noqa: E402
from allocator_oracle import measure_step  # noqa: E402

TOLERANCE = 0.05


def _vit(size: int) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.vit_b_16(image_size=size)


def _se_resnet50(size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return burden.create_model("se_resnet50")


MODELS = {"se_resnet50": (_se_resnet50, ["layer2", "layer3"]),
          "vit_b_16": (_vit, [f"encoder.layers.encoder_layer_{i}" for i in range(12)])}
# batches large enough that activations, not the weights and Adam's state, make the peak
BATCHES = {"se_resnet50": (4, 8, 16), "vit_b_16": (2, 4, 8)}


def _checkpointed(model: torch.nn.Module, paths: list[str]) -> torch.nn.Module:
    for path in paths:
        module = model.get_submodule(path)
        inner = module.forward
        module.forward = lambda *a, _f=inner: checkpoint(_f, *a, use_reentrant=False)
    return model


def case(name: str, batch: int, size: int, amp: torch.dtype | None = None, ckpt: bool = False) -> dict:
    build, paths = MODELS[name]
    start = time.perf_counter()
    model = build(size)
    e = burden.estimate(model, (3, size, size), batch_size=batch, mode="training", optimizer="adam", amp=amp,
                        checkpoint=paths if ckpt else None)
    measured_model = _checkpointed(build(size), paths) if ckpt else build(size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = measure_step(measured_model, (torch.randn(batch, 3, size, size),), optimizer=torch.optim.Adam,
                         autocast=amp)
    options = ", ".join(o for o in (f"{amp}".replace("torch.", "") + " autocast" if amp else "",
                                    "checkpointed " + (",".join(paths) if len(paths) < 3 else f"{len(paths)} blocks")
                                    if ckpt else "") if o) or "float32"
    return {"model": name, "batch": batch, "input": size, "options": options,
            "predicted": e.training.training_peak_bytes, "measured": m.peak,
            "workspace": m.workspace, "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs (112 x 112)")
    parser.add_argument("--out", default=str(ROOT / "benches" / "results" / "planner.md"))
    args = parser.parse_args()
    size = 112 if args.quick else 224
    batches = {name: (1, 2, 4) for name in MODELS} if args.quick else BATCHES
    cases = [(name, b, None, False) for name in MODELS for b in batches[name]]
    cases += [(name, batches[name][1], torch.bfloat16, False) for name in MODELS]
    cases += [(name, batches[name][1], None, True) for name in MODELS]
    rows = []
    for name, batch, amp, ckpt in cases:
        rows.append(case(name, batch, size, amp, ckpt))
        r = rows[-1]
        print(f"{r['model']} batch {r['batch']} {r['options']}: {r['predicted']:,} / {r['measured']:,} "
              f"({r['predicted'] / r['measured']:.4f}, {r['seconds']:.0f} s)", flush=True)

    budget = "8GiB"
    f = burden.fit("se_resnet50", budget, mode="training", optimizer="adam")
    at = burden.estimate("se_resnet50", 224, batch_size=f.max_batch, mode="training").training.training_peak_bytes
    after = burden.estimate("se_resnet50", 224, batch_size=f.max_batch + 1,
                            mode="training").training.training_peak_bytes
    lines = [
        "# Will it fit? Training-step peaks against the CPU allocator",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}. Reproduce with "
        f"`python benches/planner_validation.py{' --quick' if args.quick else ''}` (torchvision needed for the ViT).",
        "",
        f"Input {size} x {size}, Adam. Predicted: `burden.estimate(..., mode='training')` on the meta device. "
        "Measured: the CPU allocator's own events for a real whole step, optimizer step included "
        "(tests/allocator_oracle.py::measure_step; oneDNN off, kernel workspaces apart, shown for reference). Bytes.",
        "",
        "| model | batch | options | predicted | measured | predicted / measured | within 5% | workspace (not predicted) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["predicted"] / r["measured"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['options']} | {r['predicted']:,} | {r['measured']:,} | "
                     f"{ratio:.4f} | {'yes' if abs(ratio - 1) <= TOLERANCE else '**no**'} | {r['workspace']:,} |")
    lines += [
        "",
        f"`burden fit se_resnet50 --memory {budget} --mode training --optimizer adam`: largest batch "
        f"**{f.max_batch}**, peak {f.peak_bytes:,} B (budget {f.budget_bytes:,} B), batch {f.max_batch + 1} "
        f"would need {f.next_peak_bytes:,} B; {f.traces} traces. Confirmed by estimates of their own (the "
        f"input batch in each peak): {at:,} B at {f.max_batch} (fits: {at <= f.budget_bytes}), {after:,} B at "
        f"{f.max_batch + 1} (fits: {after <= f.budget_bytes}).",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(abs(r["predicted"] / r["measured"] - 1) <= TOLERANCE for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
