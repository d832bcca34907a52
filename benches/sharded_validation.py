"""Sharded training: burden's traced rank against real multi-process runs, FSDPMemTracker beside.

Every case starts 2 or 4 real processes with ``torchrun`` (gloo, CPU tensors) that shard a model as
a user does and run two training steps, the second measured by the CPU allocator's own events and
by wrappers around the collectives (``tests/parallel_oracle.py``, which shares no code and no method
with burden), with ``FSDPMemTracker`` beside as a peer on FSDP cases. burden traces each rank of the
same plan with fake tensors (``burden.estimate(..., shard="fsdp", world_size=N, rank=r)``, or
``tensor_parallel=2``), and each rank's figure is compared with that rank's measurement: the peak
within 2%, every kind of collective's calls and bytes exact. Writes ``benches/results/sharded.md``.

    python benches/sharded_validation.py            # every case (a few minutes on 2 cores)
    python benches/sharded_validation.py --quick    # 2 processes only
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from parallel_oracle import BATCH, CASES, SEQ, VIT_PLAN, build, measured  # noqa: E402

TOLERANCE = 0.02
OUT = ROOT / "benches" / "results" / "sharded.md"


def traced(name: str, plan: str, processes: int, rank: int) -> tuple[Any, float]:
    import burden
    with torch.device("meta"):
        model = build(name)
    options: dict[str, Any] = {"mode": "training", "optimizer": "adamw", "batch_size": BATCH, "rank": rank,
                               "world_size": processes}
    if "fsdp" in plan:
        options["shard"] = "fsdp"
    if "tp" in plan:
        options["tensor_parallel"] = 2
        if name == "vit":
            options["tp_plan"] = VIT_PLAN
    if name == "llama":
        options["seq"] = SEQ
    else:
        options["inputs"] = {"pixel_values": torch.Size([BATCH, 3, 224, 224]),
                             "labels": burden.TensorSpec((BATCH,), dtype=torch.long)}
        options.pop("batch_size")
    burden.estimate(model, **options)  # warm
    start = time.perf_counter()
    figures = burden.estimate(model, **options).training
    return figures, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 processes only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows, failures = [], 0
    for case, name, plan, processes in CASES:
        if args.quick and processes > 2:
            continue
        ranks = measured(case, processes)
        for real in ranks:
            figures, seconds = traced(name, plan, processes, real["rank"])
            ratio = figures.training_peak_bytes / real["peak"]
            moved = {c.kind: (c.calls, c.sent_bytes, c.received_bytes) for c in figures.sharding.collectives}
            real_moved = {k: (real["calls"][k], real["sent"][k], real["received"][k]) for k in real["calls"]}
            exact = moved == real_moved
            ok = abs(ratio - 1) <= TOLERANCE and exact
            failures += not ok
            peer = (f"{real['peer_peak']:,} ({real['peer_peak'] / real['peak']:.4f}), {real['peer_seconds']:.2f} s"
                    if "peer_peak" in real else real.get("peer_error", "-"))
            comm = "; ".join(f"{k} {v[0]} x, {v[1]:,} B out, {v[2]:,} B in" for k, v in sorted(moved.items()))
            rows.append(f"| {case} | {real['rank']} | {real['resident']:,} | {real['peak']:,} | "
                        f"{figures.training_peak_bytes:,} | {ratio:.4f} | {comm} | {'exact' if exact else 'DIFFERS'} | "
                        f"{seconds:.2f} s | {peer} |")
            print(rows[-1], flush=True)
            if not exact:
                print(f"  measured {real_moved}\n  traced   {moved}")
    header = [
        "# Sharded training: burden's traced rank against real multi-process runs", "",
        f"`python benches/sharded_validation.py{' --quick' if args.quick else ''}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"gloo, CPU tensors, batch {BATCH}, AdamW, float32. Llama: 4 layers of 256, vocabulary 32000, "
        f"{SEQ} tokens; ViT: 6 layers of 192, 224 x 224 images, 10 classes.", "",
        "Measured: each rank's CPU allocator, every event from before the model is built "
        "(tests/allocator_oracle.py::measure_built_step); collectives by wrappers around the functions the "
        "parallel code calls. burden: that rank traced with fake tensors in a fake process group; its time is "
        "one whole warm `burden.estimate`. FSDPMemTracker: a peer on FSDP cases, its peak and time for one "
        "tracked step of the real run.", "",
        "| case | rank | resident at the step's start (measured) | peak measured | peak burden | ratio | "
        "collectives (burden: calls, bytes out, bytes in) | vs measured | burden time | FSDPMemTracker |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---|"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + rows) + "\n")
    print(f"{failures} case(s) outside {TOLERANCE:.0%} or with collectives that differ; wrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
