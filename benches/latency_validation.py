"""How fast will it run? burden's roofline bound against the measured time of the real model.

For the seven SE networks at batch 1 and 16, and for a sample of torchvision and timm models
(``--zoo``; needs the zoo environment), the predicted time (``burden.estimate(...,
device_profile=...)``, a meta trace and the profile's roofs) beside the median time of the real
model with random weights (``burden.bench``: ``torch.utils.benchmark`` blocks after warm-up). The
profile is this machine's own (``burden calibrate``, run first with ``--calibrate`` or when none is
stored) on a CPU, and the GPU's data sheet on CUDA. It checks what issue 14 asks:

- at batch 16, predicted / measured lies in [0.3, 1.0] for every SE network;
- the SE networks in order of predicted time are in order of measured time, except where two
  measured medians lie within 10% of each other;
- the Spearman rank correlation of predicted and measured time over the zoo sample is >= 0.9.

    python benches/latency_validation.py --calibrate            # SE networks on this CPU
    python benches/latency_validation.py --zoo                  # and the zoo sample (zoo environment)
    python benches/latency_validation.py --device cuda --zoo    # on a GPU, with its data sheet

Writes a markdown table (``--out``, default ``benches/results/latency-<device>.md``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import burden  # noqa: E402
from burden import devices  # noqa: E402
from burden.benchmark import device_name  # noqa: E402

SE_NETS = ("se_bn_inception", "se_resnet50", "se_resnet101", "se_resnet152", "se_resnext50_32x4d",
           "se_resnext101_32x4d", "senet154")
# a spread of shapes and costs: plain and grouped convolutions, depthwise separable ones, dense
# blocks, squeeze-excitation, transformers and MLP mixers
ZOO = (
    "torchvision:alexnet", "torchvision:vgg11", "torchvision:resnet18", "torchvision:resnet50",
    "torchvision:resnext50_32x4d", "torchvision:wide_resnet50_2", "torchvision:densenet121",
    "torchvision:googlenet", "torchvision:squeezenet1_1", "torchvision:shufflenet_v2_x1_0",
    "torchvision:mobilenet_v2", "torchvision:mobilenet_v3_large", "torchvision:mnasnet1_0",
    "torchvision:efficientnet_b0", "torchvision:regnet_y_400mf", "torchvision:regnet_x_1_6gf",
    "torchvision:convnext_tiny", "torchvision:vit_b_16", "timm:vit_tiny_patch16_224",
    "timm:deit_small_patch16_224", "timm:mixer_b16_224", "timm:resnet26d", "timm:ghostnet_100",
    "timm:efficientnet_b2",
)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties), computed here, by hand."""
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var


def order_holds(rows: list[dict]) -> tuple[bool, list[str]]:
    """The models sorted by predicted time are sorted by measured time, except pairs whose
    measured medians lie within 10% of each other."""
    ranked = sorted(rows, key=lambda r: r["predicted"])
    broken = []
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:  # a predicted faster than b
            if a["measured"] > b["measured"] and a["measured"] > 1.10 * b["measured"]:
                broken.append(f"{a['model']} predicted faster than {b['model']} but measured "
                              f"{a['measured'] * 1e3:.1f} ms against {b['measured'] * 1e3:.1f} ms")
    return not broken, broken


def measure(models: tuple[str, ...], batches: list[int], device: str, profile: str, min_time: float, rounds: int,
            log: list[dict], dtype: str | None = None) -> list[dict]:
    """Each model's median over ``rounds`` rounds, every model timed once per round: a shared
    machine's speed drifts, and interleaving spreads the drift over every model alike."""
    rows = []
    for batch in batches:
        seen: dict[str, list[float]] = {}
        predicted = {}
        for round_ in range(rounds):
            for name in models:
                start = time.time()
                try:
                    if name not in predicted:
                        predicted[name] = burden.estimate(name, batch_size=batch, dtype=dtype,
                                                          device_profile=profile).latency
                    b = burden.bench(name, batch_size=batch, dtype=dtype, device=device, device_profile=profile,
                                     per_module=False, min_run_time=min_time)
                except burden.BurdenError as exc:
                    print(f"{name} batch {batch}: skipped: {exc}", flush=True)
                    continue
                seen.setdefault(name, []).append(b.median_seconds)
                print(f"round {round_ + 1}: {name:32s} batch {batch:3d}: predicted "
                      f"{predicted[name].predicted_seconds * 1e3:9.2f} ms, measured {b.median_seconds * 1e3:9.2f} ms "
                      f"[{time.time() - start:.0f} s]", flush=True)
        for name in models:
            if name not in seen:
                continue
            times, lat = sorted(seen[name]), predicted[name]
            median = statistics.median(times)
            row = {"model": name, "batch": batch, "predicted": lat.predicted_seconds, "measured": median,
                   "spread": times[-1] - times[0], "rounds": times, "ratio": lat.predicted_seconds / median,
                   "bound": lat.bound, "flops": lat.flops, "bytes": lat.bytes_moved,
                   "ops_uncounted": [u.op for u in lat.uncounted_ops]}
            rows.append(row)
            log.append(row)
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | batch | predicted | measured (median of rounds) | spread (max - min) | predicted / measured "
             "| bound |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['predicted'] * 1e3:.2f} ms | {r['measured'] * 1e3:.2f} ms | "
                     f"{r['spread'] * 1e3:.2f} ms | {r['ratio']:.3f} | {r['bound']} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--profile", default=None, help="default: local on cpu, the GPU's data sheet on cuda")
    parser.add_argument("--calibrate", action="store_true", help="run burden calibrate (cpu) first")
    parser.add_argument("--zoo", action="store_true", help="add the torchvision and timm sample")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--min-time", type=float, default=1.0, help="per burden.bench call")
    parser.add_argument("--rounds", type=int, default=3, help="each model timed once per round; the median")
    parser.add_argument("--out", default=None)
    parser.add_argument("--dtype", default=None, help="the dtype the models run in (default: their own)")
    parser.add_argument("--only", default=None, help="only models whose name holds this text (a quick check)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    se_nets, zoo_models = (tuple(m for m in group if args.only is None or args.only in m) for group in (SE_NETS, ZOO))
    if args.device == "cpu":
        profile = args.profile or "local"
        if args.calibrate or (profile == "local" and "local" not in devices.stored_names()):
            burden.calibrate(profile, progress=print)
    else:
        profile = args.profile or devices.matching(torch.cuda.get_device_name())
        if profile is None:
            raise SystemExit(f"no data sheet for {torch.cuda.get_device_name()}: give --profile")
    p = devices.load(profile)
    where = device_name(args.device)
    log: list[dict] = []
    out = [f"# Predicted (roofline) against measured forward time: {args.device}", "",
           f"Device: {where}; torch {torch.__version__}; profile {p.summary}.",
           f"Command: `python benches/latency_validation.py --device {args.device}"
           f"{' --zoo' if args.zoo else ''}{f' --dtype {args.dtype}' if args.dtype else ''} --batches {args.batches} "
           f"--min-time {args.min_time:g} --rounds {args.rounds}`",
           ""]
    ok = True
    se = measure(se_nets, batches, args.device, profile, args.min_time, args.rounds, log, args.dtype)
    out += ["## The seven SE networks", ""] + table(se) + [""]
    at16 = [r for r in se if r["batch"] == 16]
    if at16:
        inside = all(0.3 <= r["ratio"] <= 1.0 for r in at16)
        ordered, broken = order_holds(at16)
        out += [f"- batch 16: predicted / measured from {min(r['ratio'] for r in at16):.3f} to "
                f"{max(r['ratio'] for r in at16):.3f}: {'inside' if inside else 'OUTSIDE'} [0.3, 1.0]",
                f"- order by predicted time {'matches' if ordered else 'does NOT match'} the order by measured "
                f"time (pairs within 10% exempt)" + "".join(f"\n  - {b}" for b in broken)]
        ok = ok and inside and ordered
    for batch in batches:
        rows = [r for r in se if r["batch"] == batch]
        if len(rows) > 2:
            out.append(f"- batch {batch}: Spearman rank correlation {spearman([r['predicted'] for r in rows], [r['measured'] for r in rows]):.3f}")
    if args.zoo:
        zoo = measure(zoo_models, batches, args.device, profile, args.min_time, args.rounds, log, args.dtype)
        out += ["", f"## Zoo sample ({len({r['model'] for r in zoo})} models)", ""] + table(zoo) + [""]
        for batch in batches:
            rows = [r for r in zoo if r["batch"] == batch]
            if len(rows) > 2:
                rho = spearman([r["predicted"] for r in rows], [r["measured"] for r in rows])
                out.append(f"- batch {batch}: Spearman rank correlation {rho:.3f} over {len(rows)} models "
                           f"({'>=' if rho >= 0.9 else 'BELOW'} 0.9); predicted / measured from "
                           f"{min(r['ratio'] for r in rows):.3f} to {max(r['ratio'] for r in rows):.3f}")
                ok = ok and rho >= 0.9
    text = "\n".join(out) + "\n"
    path = Path(args.out or ROOT / "benches" / "results" / f"latency-{args.device}.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
