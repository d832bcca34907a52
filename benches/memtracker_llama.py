"""Issue 19's own case: a small Llama from a transformers config (19,286,272 parameters), batch 1 x 64
tokens, AdamW in its three implementations, one steady-state training step.

Three figures per implementation: burden's training peak (on meta), the CPU allocator's own peak
of a real step (``tests/allocator_oracle.py::measure_step``, the oracle) and PyTorch's
``MemTracker`` under ``FakeTensorMode`` (a peer), with burden's and MemTracker's warm times (the
second of two runs each). Not part of the test suite.

    python benches/memtracker_llama.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import burden  # noqa: E402
from allocator_oracle import measure_step  # noqa: E402

VOCAB, TOKENS = 32000, 64


def _config():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=512)


def _adamw(impl: str):
    return lambda params: torch.optim.AdamW(params, foreach=impl == "foreach", fused=(impl == "fused") or None)


def _ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, TOKENS))


def memtracker(impl: str) -> tuple[int, float]:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    from transformers import LlamaForCausalLM

    seconds = []
    for _ in range(2):
        with FakeTensorMode():
            model = LlamaForCausalLM(_config())
            optimizer = _adamw(impl)(model.parameters())
            ids, labels = _ids(), _ids()
            tracker = MemTracker()
            tracker.track_external(model, optimizer, ids, labels)
            start = time.perf_counter()
            with tracker:
                for _ in range(2):  # the second step is the steady state
                    model(input_ids=ids, labels=labels).loss.backward()
                    optimizer.step()
                    optimizer.zero_grad()
                    tracker.reset_mod_stats()
            seconds.append(time.perf_counter() - start)
    return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"], seconds[-1]


def main() -> None:
    from transformers import LlamaForCausalLM

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = LlamaForCausalLM(_config())
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, torch {torch.__version__}")
    spec = {"input_ids": burden.TensorSpec((1, TOKENS), dtype=torch.int64),
            "labels": burden.TensorSpec((1, TOKENS), dtype=torch.int64)}
    print("| AdamW | burden B | allocator B | burden / allocator | MemTracker B | burden s | MemTracker s | faster |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for impl in ("single", "foreach", "fused"):
        def run():
            return burden.estimate(model, inputs=spec, mode="training", optimizer="adamw", optimizer_impl=impl)
        run()
        start = time.perf_counter()
        peak = run().training.training_peak_bytes
        ours = time.perf_counter() - start
        real = measure_step(LlamaForCausalLM(_config()), (), {"input_ids": _ids(), "labels": _ids()},
                            optimizer=_adamw(impl)).peak
        theirs, their_seconds = memtracker(impl)
        print(f"| {impl} | {peak:,} | {real:,} | {peak / real:.6f} | {theirs:,} | {ours:.3f} | {their_seconds:.2f} | "
              f"{their_seconds / ours:.0f}x |")


if __name__ == "__main__":
    main()
