"""The whole training step: burden's prediction against the CPU allocator, with PyTorch's MemTracker beside.

Every case is one steady-state training step (forward, backward from the model's loss, the
optimizer's step, zero_grad; the optimizer's state from an earlier step; the input batch held):
burden predicts it on the meta device; the oracle (``tests/allocator_oracle.py::measure_step``)
runs it for real on CPU tensors and reads the CPU allocator's own allocation and free events
through the profiler (oneDNN off, one thread, kernel workspaces apart), sharing no code and no
method with burden. ``torch.distributed._tools.mem_tracker.MemTracker`` (a peer, never an oracle)
runs the same two steps under ``FakeTensorMode``; its time and burden's are both taken warm (the
second of two calls), burden's for the whole ``burden.estimate(..., mode="training")``.

Cases: SE-ResNet-50 (burden's own), a ViT and two causal language models from ``transformers``
configs (a Llama with LoRA from ``peft``, a Qwen2 with Hugging Face gradient checkpointing), each at
two batch sizes, with AdamW (SGD with momentum for SE-ResNet-50) in its single-tensor, foreach and
fused implementations, and one case of gradient accumulation. Writes ``benches/results/step.md``.

    python benches/step_validation.py            # every case (several minutes on 2 cores)
    python benches/step_validation.py --quick    # one implementation per case
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import burden  # noqa: E402
from allocator_oracle import measure_step  # noqa: E402

TOLERANCE = 0.02
OUT = ROOT / "benches" / "results" / "step.md"


@dataclass
class Case:
    name: str
    build: Callable[[], torch.nn.Module]  # random weights, on the CPU
    inputs: Callable[[int], dict[str, Any]]  # the real batch at a batch size
    batches: tuple[int, int]
    optimizer: str  # a torch.optim name burden takes
    accum: int = 1


def _tokens(vocab: int, length: int) -> Callable[[int], dict[str, Any]]:
    def make(batch: int) -> dict[str, Any]:
        ids = torch.randint(0, vocab, (batch, length))
        return {"input_ids": ids, "labels": ids.clone()}
    return make


def _images(size: int, classes: int, keyword: bool) -> Callable[[int], dict[str, Any]]:
    def make(batch: int) -> dict[str, Any]:
        x = torch.randn(batch, 3, size, size)
        return {"pixel_values": x, "labels": torch.randint(0, classes, (batch,))} if keyword else {"x": x}
    return make


def _se_resnet50() -> torch.nn.Module:
    return burden.create_model("se_resnet50")


def _vit() -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
                       image_size=224, patch_size=16, num_labels=100)
    return ViTForImageClassification(config)


def _llama_lora() -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=32000, max_position_embeddings=1024)
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))


def _qwen2_checkpointed() -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=32000, max_position_embeddings=1024)
    model = Qwen2ForCausalLM(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers 5 calls it deprecated; recipes still call it
        model.gradient_checkpointing_enable()
    return model


CASES = (
    Case("SE-ResNet-50 224", _se_resnet50, _images(224, 1000, keyword=False), (1, 4), "momentum"),
    Case("ViT (6 x 384) 224", _vit, _images(224, 100, keyword=True), (2, 8), "adamw"),
    Case("Llama + LoRA (r=8), 128 tokens", _llama_lora, _tokens(32000, 128), (1, 4), "adamw"),
    Case("Qwen2, gradient checkpointing, 256 tokens", _qwen2_checkpointed, _tokens(32000, 256), (1, 4), "adamw"),
    Case("Llama + LoRA, 2 micro-batches", _llama_lora, _tokens(32000, 128), (2, 4), "adamw", accum=2),
)


def _optimizer(name: str, impl: str) -> Callable[[list], torch.optim.Optimizer]:
    """The oracle's optimizer, built by torch.optim itself with the implementation asked for."""
    flags = {"foreach": impl == "foreach"} | ({"fused": True} if impl == "fused" else {})
    if name == "momentum":
        return lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, **flags)
    return lambda params: getattr(torch.optim, {"adamw": "AdamW", "adam": "Adam"}[name])(params, **flags)


def _spec(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: burden.TensorSpec(*v.shape, dtype=v.dtype) for k, v in inputs.items()}


def predict(case: Case, model: torch.nn.Module, batch: int, impl: str) -> tuple[Any, float]:
    def run() -> Any:
        return burden.estimate(model, inputs=_spec(case.inputs(batch)), mode="training", optimizer=case.optimizer,
                               optimizer_impl=impl, grad_accum=case.accum, convention="torch")

    run()
    start = time.perf_counter()
    e = run()
    return e, time.perf_counter() - start


def memtracker(case: Case, batch: int, impl: str) -> tuple[int | str, float | None]:
    """MemTracker's peak over two steps under FakeTensorMode (the second is the steady state) and the
    time of its tracked steps; where it cannot run the case, what stopped it and None."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    try:
        times = []
        for _ in range(2):  # the second is the warm one
            with FakeTensorMode():
                model = case.build()
                model.train()
                opt = _optimizer(case.optimizer, impl)([p for p in model.parameters() if p.requires_grad])
                inputs = case.inputs(batch)
                tracker = MemTracker()
                tracker.track_external(model, opt, *inputs.values())
                start = time.perf_counter()
                with tracker:
                    for _ in range(2):
                        for _ in range(case.accum):
                            out = model(**inputs) if "x" not in inputs else model(inputs["x"])
                            loss = out.loss if hasattr(out, "loss") else None
                            if loss is None:
                                torch.autograd.backward([out], [torch.ones_like(out)])
                            else:
                                loss.backward()
                            del out, loss
                        opt.step()
                        opt.zero_grad()
                        tracker.reset_mod_stats()  # MemTracker tracks one iteration's module calls at a time
                times.append(time.perf_counter() - start)
        # the peak over both steps: the first one's, before the state exists, is not higher
        return int(tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]), times[-1]
    except Exception as exc:  # a peer's limitation, recorded as such
        return f"cannot: {type(exc).__name__}", None


def measure(case: Case, batch: int, impl: str) -> Any:
    torch.manual_seed(0)
    model = case.build()
    inputs = case.inputs(batch)
    forward_args = (inputs["x"],) if "x" in inputs else ()
    kwargs = {} if "x" in inputs else inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return measure_step(model, forward_args, kwargs, optimizer=_optimizer(case.optimizer, impl), accum=case.accum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one implementation per case")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    rows = []
    worst = 0.0
    impls = ("single",) if args.quick else ("single", "foreach", "fused")
    for case in CASES:
        torch.manual_seed(0)
        model = case.build()
        for batch in case.batches:
            for impl in impls:
                if case.accum > 1 and impl != "single":
                    continue
                e, seconds = predict(case, model, batch, impl)
                m = measure(case, batch, impl)
                peer, peer_seconds = memtracker(case, batch, impl)
                t = e.training
                ratio = t.training_peak_bytes / m.peak
                worst = max(worst, abs(ratio - 1))
                phase = {"optimizer": "optimizer step"}.get(m.peak_phase.name, m.peak_phase.name)
                if case.accum > 1 and m.peak_phase.micro_batch is not None:
                    phase += f" (micro-batch {m.peak_phase.micro_batch + 1})"
                rows.append([case.name, str(batch) + (f" x {case.accum}" if case.accum > 1 else ""), impl,
                             f"{t.training_peak_bytes:,}", f"{m.peak:,}", f"{ratio:.5f}", t.peak_phase, phase,
                             f"{peer:,}" if isinstance(peer, int) else peer,
                             f"{peer / m.peak:.5f}" if isinstance(peer, int) else "",
                             f"{seconds:.3f}", f"{peer_seconds:.2f}" if peer_seconds is not None else "",
                             f"{peer_seconds / seconds:.0f}x" if peer_seconds is not None else ""])
                print(" | ".join(rows[-1]), flush=True)
                _write(Path(args.out), rows, worst)
    print(f"worst deviation {worst:.4%} (tolerance {TOLERANCE:.0%})")
    if worst > TOLERANCE:
        raise SystemExit(1)


def _write(path: Path, rows: list[list[str]], worst: float) -> None:
    header = ["case", "batch", "optimizer", "burden peak B", "allocator peak B", "burden / allocator",
              "burden's peak phase", "allocator's peak phase", "MemTracker peak B", "MemTracker / allocator",
              "burden s", "MemTracker s", "burden faster"]
    lines = [
        "# The whole training step against the CPU allocator",
        "",
        "Reproduce: `python benches/step_validation.py` (needs `transformers` and `peft`).",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, 1 intra-op thread for the measured steps.",
        "",
        "One steady-state step: forward, backward from the model's loss, `optimizer.step()` and",
        "`zero_grad(set_to_none=True)`, the optimizer's state from an earlier step, the input batch held.",
        "burden predicts it on the meta device. The allocator's figure is the CPU allocator's own",
        "allocation and free events during a real step (`tests/allocator_oracle.py::measure_step`, kernel",
        "workspaces apart). MemTracker (PyTorch's `torch.distributed._tools.mem_tracker`) is a peer under",
        "`FakeTensorMode`, not an oracle. Times are warm (the second of two calls): burden's whole",
        "`burden.estimate(..., mode=\"training\")` against MemTracker's two tracked steps.",
        "",
        f"Worst deviation of burden from the allocator: {worst:.4%} (tolerance {TOLERANCE:.0%}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if k < 3 or k in (6, 7) else "---:" for k in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
