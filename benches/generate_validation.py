"""Serving: ``burden.generate`` against real ``generate()`` runs, and at the scale of a 70B model.

Three tables, written to ``benches/results/generate.md``:

1. **Memory.** Small configs (a Llama with GQA, GPT-2, a Mistral with a sliding window, a Mixtral
   mixture of experts), batch 2, prompt 32, 16 new tokens, float32: burden's KV cache and peak
   against a real ``generate()`` on the CPU measured by the allocator's own events
   (``tests/allocator_oracle.py``): the cache is what the run leaves allocated besides the ids.
2. **Time.** ``burden bench --generate`` on this CPU, for a Llama and a GPT-2 of about 130M
   parameters: the measured time to first token and mean decode step beside the roofline on the
   ``local`` profile (``burden calibrate``, measured here
   into a temporary ``BURDEN_HOME`` unless one is given with ``--profile``).
3. **Scale.** A Llama-3-70B-shaped config at prompt 8,192 with one new token in bfloat16, in a
   process of its own: params, KV cache, the wall time and the process's peak RSS.

    python benches/generate_validation.py            # all three (a few minutes on 2 cores)
    python benches/generate_validation.py --quick    # shorter timings
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import burden  # noqa: E402
from test_generation import _llama_70b, _real_run, _small  # noqa: E402

import transformers  # noqa: E402

KINDS = ("llama", "gpt2", "mistral", "mixtral")
BATCH, PROMPT, NEW = 2, 32, 16

SCALE = """
import json, resource, sys, time, tempfile
sys.path.insert(0, {tests!r})
from test_generation import _llama_70b
import burden
folder = tempfile.mkdtemp()
_llama_70b().save_pretrained(folder)
start = time.perf_counter()
g = burden.generate(folder, 8192, 1, dtype="bfloat16")
seconds = time.perf_counter() - start
print(json.dumps({{"params": g.params, "kv": g.kv_cache_bytes, "peak": g.peak_bytes, "seconds": seconds,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""


def memory_rows() -> list[str]:
    rows = []
    for kind in KINDS:
        config = _small(kind)
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = burden.generate(model, PROMPT, NEW, batch_size=BATCH)
            kv, peak = _real_run(model, config, "dynamic")
        rows.append(f"| {kind} | {g.kv_cache_bytes:,} | {kv:,} | {'yes' if g.kv_cache_bytes == kv else 'NO'} | "
                    f"{g.peak_bytes:,} | {peak:,} | {g.peak_bytes / peak:.4f} |")
        print(rows[-1], file=sys.stderr)
    return rows


def _timed_configs() -> dict[str, object]:
    """Configs large enough (about 130M parameters) that the kernels, not generate()'s Python, take
    the time: a tiny model's step is mostly overhead, which no roofline predicts."""
    t = transformers
    return {"llama": t.LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                                   num_attention_heads=16, num_key_value_heads=4, vocab_size=32000),
            "gpt2": t.GPT2Config(n_embd=1024, n_layer=8, n_head=16, vocab_size=32000, n_positions=1024)}


def time_rows(profile: str, min_time: float) -> list[str]:
    rows = []
    for kind, config in _timed_configs().items():
        folder = tempfile.mkdtemp()
        config.save_pretrained(folder)
        for batch, prompt in ((1, 128), (4, 128)):
            b = burden.bench_generate(folder, prompt, NEW, batch_size=batch, device_profile=profile,
                                      min_run_time=min_time)
            p = b.predicted
            rows.append(f"| {kind} | {batch} | {prompt} | {b.time_to_first_token_seconds * 1e3:.2f} | "
                        f"{p.time_to_first_token_seconds * 1e3:.2f} | {b.prefill_efficiency:.2f} | "
                        f"{b.seconds_per_output_token * 1e3:.2f} | {p.seconds_per_output_token * 1e3:.2f} | "
                        f"{b.decode_efficiency:.2f} |")
            print(rows[-1], file=sys.stderr)
    return rows


def scale_row() -> str:
    out = subprocess.run([sys.executable, "-c", SCALE.format(tests=str(ROOT / "tests"))], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return (f"| Llama-3-70B shape, prompt 8,192, 1 new token, bfloat16 | {r['params']:,} | {r['kv']:,} | "
            f"{r['peak']:,} | {r['seconds']:.2f} s | {r['rss'] / 2**30:.2f} GiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", default=None, help="a calibrated profile's name (default: calibrate one here)")
    args = parser.parse_args()
    profile = args.profile
    if profile is None:
        os.environ["BURDEN_HOME"] = tempfile.mkdtemp()
        burden.calibrate("local", quick=args.quick)
        profile = "local"
    memory = memory_rows()
    timing = time_rows(profile, 0.3 if args.quick else 1.0)
    scale = scale_row()
    print(scale, file=sys.stderr)
    lines = [
        "# Serving: generate() against real runs, and at scale", "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, transformers "
        f"{transformers.__version__}. Reproduce with `python benches/generate_validation.py`.", "",
        f"## Memory: batch {BATCH}, prompt {PROMPT}, {NEW} new tokens, float32", "",
        "Predicted: `burden.generate` on the meta device. Measured: a real greedy `generate()` on the CPU, by the "
        "allocator's own events (tests/allocator_oracle.py); the cache is what the run leaves allocated besides the "
        "generated ids. Bytes.", "",
        "| config | KV cache predicted | KV cache measured | exact | peak predicted | peak measured | ratio |",
        "|---|---|---|---|---|---|---|", *memory, "",
        f"## Time on this CPU: {NEW} new tokens, float32, configs of about 130M parameters", "",
        f"Measured: `burden bench --generate` (median of one-token generations; the mean decode step). Predicted: "
        f"the roofline on the `{profile}` profile measured by `burden calibrate` (the last decode step, the longest). "
        f"Efficiency = predicted / measured. Milliseconds.", "",
        "| config | batch | prompt | first token | roofline | efficiency | per token | roofline | efficiency |",
        "|---|---|---|---|---|---|---|---|---|", *timing, "",
        "## Scale", "",
        "`burden.generate` in a process of its own: wall time of the call and the process's peak RSS.", "",
        "| case | params | KV cache (B) | peak (B) | time | peak RSS |", "|---|---|---|---|---|---|", scale, "",
    ]
    out = ROOT / "benches" / "results" / "generate.md"
    out.write_text("\n".join(lines))
    print(out)


if __name__ == "__main__":
    main()
