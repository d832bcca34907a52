"""How fast is burden, and at what memory, against the tools people use today?

Times burden.estimate against each peer that is installed (fvcore's FlopCountAnalysis, ptflops,
thop, torchinfo, torch's FlopCounterMode on real CPU tensors) on the seven SE networks, and the
cold CLI against a bare ``import torch``. The fair peer is FlopCounterMode on the meta device, as
burden runs: the same model built on meta and a meta input, so neither allocates features.
Every measurement runs in a fresh process, so peak RSS is that of one tool on one case, and each
gives two times: the first call in that process (after the imports: lazy kernels, burden's
remembered meta results and the registry's models are all cold) and the median of warm calls.
Peers on real tensors are skipped where the features would not fit in half of the free memory.
Not part of the test suite.

    python benches/speed.py                  # full run, writes benches/results/speed.md
    python benches/speed.py --quick          # a smaller run to try it out
    python benches/speed.py --before ../old  # also time the burden of another checkout, in the same run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ["se_resnet50", "se_resnet101", "se_resnet152", "se_resnext50_32x4d", "se_resnext101_32x4d",
          "senet154", "se_bn_inception"]
PEERS = ["flop_counter_meta", "fvcore", "ptflops", "thop", "torchinfo", "flop_counter"]
ON_META = ("burden", "flop_counter_meta")  # tools that allocate no features: they run at any size


# --- worker: one tool, one case, in its own process ------------------------------------------------

def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peer_runner(tool: str, name: str, size: int, batch: int):
    import copy

    import torch

    import burden

    from torch.utils.flop_counter import FlopCounterMode

    def counted(model, x):
        def run():
            with FlopCounterMode(display=False) as counter:
                model(x)
            return counter.get_total_flops()
        return run

    torch.manual_seed(0)
    if tool == "flop_counter_meta":
        with torch.device("meta"):  # as burden runs: no weights, no features
            return counted(burden.create_model(name).eval(), torch.zeros(batch, 3, size, size))
    model = burden.create_model(name).eval()  # real CPU weights: the peers run real forward passes
    x = torch.zeros(batch, 3, size, size)

    if tool == "fvcore":
        from fvcore.nn import FlopCountAnalysis

        def run():
            a = FlopCountAnalysis(model, (x,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return a.total()
    elif tool == "ptflops":
        from ptflops import get_model_complexity_info

        def run():
            return get_model_complexity_info(model, (3, size, size), as_strings=False, print_per_layer_stat=False,
                                             verbose=False, input_constructor=lambda _: {"x": x})[0]
    elif tool == "thop":
        from thop import profile

        def run():
            return profile(copy.deepcopy(model), inputs=(x,), verbose=False)[0]  # thop adds buffers: fresh copy
    elif tool == "torchinfo":
        from torchinfo import summary

        def run():
            return summary(model, input_data=x, verbose=0).total_mult_adds
    elif tool == "flop_counter":
        run = counted(model, x)
    else:
        raise SystemExit(f"unknown tool {tool}")
    return run


def worker(tool: str, name: str, size: int, batch: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if tool.startswith("burden@"):  # another checkout's burden, for a before/after in one run
        sys.path.insert(0, tool.split("@", 1)[1])
    if tool.startswith("burden"):
        import burden

        def run():
            return burden.estimate(name, size, batch_size=batch).flops
    else:
        run = _peer_runner(tool, name, size, batch)
    baseline = _rss_now()
    with torch.no_grad():
        start = time.perf_counter()
        run()  # the first call: lazy kernels and caches are built here
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return {"first_s": first, "median_s": statistics.median(times), "baseline_rss": baseline}


# --- parent: spawn workers, collect, write the table ------------------------------------------------

def _spawn(argv: list[str], timeout: float = 1800) -> tuple[dict | None, int, float]:
    """Run a process; its JSON line (if any), its own peak RSS (bytes) and wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"  failed: {' '.join(argv[-5:])}: {err.strip().splitlines()[-1] if err.strip() else status}",
              file=sys.stderr)
        return None, usage.ru_maxrss * 1024, wall
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else None), usage.ru_maxrss * 1024, wall


def measure(tool: str, name: str, size: int, batch: int, repeats: int) -> dict | None:
    data, peak, _ = _spawn([sys.executable, __file__, "--worker", tool, name, str(size), str(batch), str(repeats)])
    if data is not None:
        data["peak_rss"] = peak
    return data


def installed(tool: str) -> bool:
    module = {"fvcore": "fvcore", "ptflops": "ptflops", "thop": "thop", "torchinfo": "torchinfo",
              "flop_counter": "torch", "flop_counter_meta": "torch"}[tool]
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def _fits(name: str, size: int, batch: int) -> bool:
    import burden

    need = burden.estimate(name, size, batch_size=batch, memory="all-outputs").feature_bytes
    need += burden.estimate(name, 224).param_bytes
    with open("/proc/meminfo") as f:
        free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    return need < free // 2


def fits(name: str, size: int, batch: int) -> bool:
    """Whether a real forward pass would fit in half of the free memory (burden says how much it
    needs). Asked in a worker: the parent never imports torch, because a forked child starts with
    the parent's resident memory and would report it as its own peak."""
    data, _, _ = _spawn([sys.executable, __file__, "--worker", "fits", name, str(size), str(batch), "0"])
    return bool(data and data["fits"])


def cold(argv: list[str], runs: int) -> tuple[float, int]:
    walls, peaks = [], []
    for _ in range(runs):
        _, peak, wall = _spawn(argv)
        walls.append(wall)
        peaks.append(peak)
    return statistics.median(walls), max(peaks)


def machine() -> str:
    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:")) / 2**20
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; Python {platform.python_version()}, "
            f"torch {torch_version}, {platform.system()} {platform.release()}")


def fmt_s(s: float | None) -> str:
    return "-" if s is None else (f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s")


def fmt_mb(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two models, fewer repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "speed.md"))
    parser.add_argument("--before", metavar="CHECKOUT",
                        help="also time the burden package of this checkout (a before/after in one run)")
    parser.add_argument("--worker", nargs=5, metavar=("TOOL", "MODEL", "SIZE", "BATCH", "REPEATS"))
    args = parser.parse_args()
    if args.worker:
        tool, name, size, batch, repeats = args.worker
        if tool == "fits":
            print(json.dumps({"fits": _fits(name, int(size), int(batch))}))
        else:
            print(json.dumps(worker(tool, name, int(size), int(batch), int(repeats))))
        return

    models = ["se_resnet50", "senet154"] if args.quick else MODELS
    repeats = 3 if args.quick else args.repeats
    peers = [p for p in PEERS if installed(p)] + ([f"burden@{os.path.abspath(args.before)}"] if args.before else [])
    cases = [(224, 1), (448, 1), (672, 1), (448, 128), (672, 128)]
    rows = []
    for name in models:
        for size, batch in cases:
            print(f"{name} {size} x {size}, batch {batch}", file=sys.stderr, flush=True)
            ours = measure("burden", name, size, batch, repeats)
            row = {"model": name, "size": size, "batch": batch, "burden": ours, "peers": {}}
            ok = fits(name, size, batch)
            for peer in peers:
                # another burden, and FlopCounterMode on meta, allocate no features: they run at any size
                on_meta = peer.startswith("burden@") or peer in ON_META
                row["peers"][peer] = measure(peer, name, size, batch, repeats) if ok or on_meta else None
            rows.append(row)

    python = sys.executable
    cli_runs = 3 if args.quick else 7
    torch_wall, torch_rss = cold([python, "-c", "import torch"], cli_runs)
    cli_wall, cli_rss = cold([python, "-m", "burden", "estimate", "senet154", "--input", "224"], cli_runs)
    quick = {command: cold([python, "-m", "burden", command], cli_runs)[0] for command in ("--help", "list", "conventions")}

    lines = [
        "# burden speed and memory against its peers",
        "",
        f"Machine: {machine()}.",
        "",
        "Reproduce with `python benches/speed.py` (after `pip install fvcore ptflops thop torchinfo`; each",
        "peer that imports is measured). Each tool runs in a fresh process: *first* is its first call there",
        "(imports excluded; lazy kernels and caches cold), *warm* the median of later calls; peak RSS is the",
        "whole worker process's. `flop_counter_meta` is PyTorch's FlopCounterMode on the meta device, as",
        "burden runs (the model built on meta, a meta input): the like-for-like peer. The other peers run",
        "real forward passes on the CPU and are skipped (-) where their features would not fit in half of",
        "the free memory. Ratio = peer time / burden time, first to first and warm to warm.",
        "",
    ]
    header = (["model", "input", "batch", "burden first", "burden warm"]
              + [f"{p} first (x burden)" for p in peers if p in ON_META]
              + [f"{p} warm (x burden)" for p in peers] + ["burden peak RSS"] + [f"{p} peak RSS" for p in peers])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for r in rows:
        ours = r["burden"]
        cells = [r["model"], f"{r['size']} x {r['size']}", str(r["batch"]), fmt_s(ours and ours["first_s"]),
                 fmt_s(ours and ours["median_s"])]
        for p in (p for p in peers if p in ON_META):
            theirs = r["peers"].get(p)
            cells.append(f"{fmt_s(theirs['first_s'])} ({theirs['first_s'] / ours['first_s']:.1f}x)"
                         if theirs and ours else "-")
        for p in peers:
            theirs = r["peers"].get(p)
            if theirs and ours:
                cells.append(f"{fmt_s(theirs['median_s'])} ({theirs['median_s'] / ours['median_s']:.1f}x)")
            else:
                cells.append("-")
        cells.append(fmt_mb(ours and ours["peak_rss"]))
        cells += [fmt_mb(r["peers"][p]["peak_rss"]) if r["peers"].get(p) else "-" for p in peers]
        lines.append("| " + " | ".join(cells) + " |")

    def case(name: str, size: int, batch: int) -> dict:
        return next(r for r in rows if (r["model"], r["size"], r["batch"]) == (name, size, batch))

    big = case("senet154", 672, 128)["burden"]["median_s"]
    small = case("senet154", 224, 1)["burden"]["median_s"]
    fv = case("senet154", 224, 1)["peers"].get("fvcore")
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    if fv:
        speedup = fv["median_s"] / small
        lines.append(f"| warm SENet-154 at 224 at least 10x faster than fvcore | {fmt_s(small)} vs "
                     f"{fmt_s(fv['median_s'])}: {speedup:.1f}x | {'yes' if speedup >= 10 else 'no'} |")
    meta_peer = case("senet154", 224, 1)["peers"].get("flop_counter_meta")
    ours154 = case("senet154", 224, 1)["burden"]
    if meta_peer and ours154:
        lines.append(f"| SENet-154 at 224 against FlopCounterMode on meta, first call and warm (not a target: "
                     f"the like-for-like figure) | {fmt_s(ours154['first_s'])} vs {fmt_s(meta_peer['first_s'])}; "
                     f"{fmt_s(ours154['median_s'])} vs {fmt_s(meta_peer['median_s'])} | "
                     f"{meta_peer['first_s'] / ours154['first_s']:.1f}x; "
                     f"{meta_peer['median_s'] / ours154['median_s']:.1f}x |")
    lines.append(f"| SENet-154 at 672, batch 128 within 1.2x of 224, batch 1 | {fmt_s(big)} vs {fmt_s(small)}: "
                 f"{big / small:.2f}x | {'yes' if big <= 1.2 * small else 'no'} |")
    extra = cli_rss - torch_rss
    lines.append(f"| peak RSS of `burden estimate senet154` at most 150 MB above `import torch` | "
                 f"{fmt_mb(cli_rss)} vs {fmt_mb(torch_rss)}: +{extra / 1e6:.0f} MB | "
                 f"{'yes' if extra <= 150e6 else 'no'} |")
    lines.append(f"| cold `burden estimate senet154 --input 224` at most 1.5x a bare `import torch` | "
                 f"{fmt_s(cli_wall)} vs {fmt_s(torch_wall)}: {cli_wall / torch_wall:.2f}x | "
                 f"{'yes' if cli_wall <= 1.5 * torch_wall else 'no'} |")
    for command, wall in quick.items():
        lines.append(f"| cold `burden {command}` under 0.5 s (it imports no torch) | {fmt_s(wall)} | "
                     f"{'yes' if wall < 0.5 else 'no'} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
