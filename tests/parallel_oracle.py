"""Real multi-process training steps (torchrun, gloo, CPU tensors), measured apart from burden.

Each case starts 2 or 4 processes that build a model with random weights, shard it as a user does
(``fully_shard`` on each block, then on the root; ``parallelize_module`` with a tensor-parallel
plan), and run two whole training steps (forward, backward from the model's loss, AdamW's step,
``zero_grad``). The second is measured:

- memory by the CPU allocator's own events from before the model is built
  (``allocator_oracle.measure_built_step``), sharing no code and no method with burden;
- communication by wrappers around the collective functions the parallel code calls
  (``torch.distributed.all_gather_single`` and friends, the functional collectives DTensor calls):
  the bytes of each call's input and output buffers, by kind;
- on FSDP cases, ``torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker`` (a peer, never an
  oracle) tracks one more step of a fresh copy, and its time is taken.

``measured(case, processes)`` runs one case and returns each rank's figures. The module is also
the workers' script: ``python -m torch.distributed.run ... parallel_oracle.py --worker CASE``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH, SEQ = 2, 64

# (name, model, plan, processes)
CASES = [("llama-fsdp2", "llama", "fsdp", 2), ("llama-fsdp4", "llama", "fsdp", 4), ("llama-tp2", "llama", "tp", 2),
         ("llama-tp2-fsdp2", "llama", "tp+fsdp", 4),
         ("vit-fsdp2", "vit", "fsdp", 2), ("vit-fsdp4", "vit", "fsdp", 4), ("vit-tp2", "vit", "tp", 2)]
# ViT has no tensor-parallel plan of its own in transformers: attention heads and the MLP split
VIT_PLAN = {"vit.layers.*.attention.q_proj": "colwise", "vit.layers.*.attention.k_proj": "colwise",
            "vit.layers.*.attention.v_proj": "colwise", "vit.layers.*.attention.o_proj": "rowwise",
            "vit.layers.*.mlp.fc1": "colwise", "vit.layers.*.mlp.fc2": "rowwise"}


def config(model: str) -> Any:
    import transformers
    if model == "llama":
        return transformers.LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=32000)
    return transformers.ViTConfig(hidden_size=192, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4,
                                  image_size=224, patch_size=16, num_labels=10)


def build(model: str) -> torch.nn.Module:
    import transformers
    cls = transformers.LlamaForCausalLM if model == "llama" else transformers.ViTForImageClassification
    return cls(config(model))


def batch(model: str) -> dict[str, torch.Tensor]:
    if model == "llama":  # as burden's --seq makes them: ids, a mask of ones, the ids as labels
        ids = torch.full((BATCH, SEQ), 1, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    return {"pixel_values": torch.randn(BATCH, 3, 224, 224), "labels": torch.zeros(BATCH, dtype=torch.long)}


class _Counted:
    """Bytes of every collective call's input and output buffers, by kind, while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.calls: Counter = Counter()
        self.sent: Counter = Counter()
        self.received: Counter = Counter()

    def wrap(self, owner: Any, name: str, kind: str, sends: Callable, receives: Callable) -> None:
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if self.on:
                self.calls[kind] += 1
                self.sent[kind] += _nbytes(sends(args, kwargs))
                self.received[kind] += _nbytes(receives(args, kwargs, out))
            return out

        setattr(owner, name, counted)


def _nbytes(tensors: Any) -> int:
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    return sum(_nbytes(t) for t in tensors)


def _arg(position: int, name: str) -> Callable:
    return lambda args, kwargs, *_: args[position] if len(args) > position else kwargs[name]


def _counted_collectives() -> _Counted:
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol
    counted = _Counted()
    result = lambda args, kwargs, out: out  # noqa: E731
    counted.wrap(dist, "all_gather_single", "all-gather", _arg(1, "input"), _arg(0, "output"))
    counted.wrap(dist, "reduce_scatter_single", "reduce-scatter", _arg(1, "input"), _arg(0, "output"))
    counted.wrap(dist, "all_gather_into_tensor", "all-gather", _arg(1, "input_tensor"), _arg(0, "output_tensor"))
    counted.wrap(dist, "reduce_scatter_tensor", "reduce-scatter", _arg(1, "input"), _arg(0, "output"))
    counted.wrap(dist, "all_reduce", "all-reduce", _arg(0, "tensor"), _arg(0, "tensor"))
    counted.wrap(funcol, "all_reduce", "all-reduce", _arg(0, "self"), result)
    counted.wrap(funcol, "all_gather_single", "all-gather", _arg(0, "self"), result)
    counted.wrap(funcol, "reduce_scatter_single", "reduce-scatter", _arg(0, "self"), result)
    return counted


def _shard(model: torch.nn.Module, name: str, plan: str, world: int) -> None:
    """As a user shards it: tensor parallelism first, then FSDP2 on each block and the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    if plan == "tp+fsdp":
        mesh = init_device_mesh("cpu", (world // 2, 2), mesh_dim_names=("dp", "tp"))
        dp, tp = mesh["dp"], mesh["tp"]
    else:
        dp = tp = init_device_mesh("cpu", (world,))
    if "tp" in plan:
        if name == "llama":
            prefix = "model.layers.*."
            styles = {"self_attn.q_proj": "c", "self_attn.k_proj": "c", "self_attn.v_proj": "c",
                      "self_attn.o_proj": "r", "mlp.gate_proj": "c", "mlp.up_proj": "c", "mlp.down_proj": "r"}
            wanted = {prefix + k: v for k, v in styles.items()}
        else:
            wanted = {k: v[0] for k, v in VIT_PLAN.items()}
        parallelize_module(model, tp, {k: ColwiseParallel() if v == "c" else RowwiseParallel()
                                       for k, v in wanted.items()})
    if "fsdp" in plan:
        blocks = model.model.layers if name == "llama" else [model.vit.embeddings, *model.vit.layers]
        for block in blocks:
            fully_shard(block, mesh=dp)
        fully_shard(model, mesh=dp)


def _train_step(model: torch.nn.Module, args: tuple, kwargs: dict, opt: torch.optim.Optimizer) -> None:
    loss = model(*args, **kwargs).loss
    loss.backward()
    del loss
    opt.step()
    opt.zero_grad(set_to_none=True)


def worker(case: str, out: Path) -> None:
    import torch.distributed as dist
    from allocator_oracle import measure_built_step
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    _, name, plan, _ = next(c for c in CASES if c[0] == case)
    counted = _counted_collectives()
    steps = []

    def make() -> tuple:
        torch.manual_seed(0)
        model = build(name)
        _shard(model, name, plan, world)
        return model, (), batch(name), torch.optim.AdamW(model.parameters())

    def step(model: torch.nn.Module, args: tuple, kwargs: dict, opt: torch.optim.Optimizer) -> None:
        steps.append(model)
        counted.on = len(steps) == 2  # the measured step only
        model.train()
        _train_step(model, args, kwargs, opt)
        counted.on = False
        if len(steps) == 1:
            # no collective of the step before still in flight on gloo's threads when the measured one
            # starts (they let go of their tensors when they finish, at a moment that varies)
            dist.barrier()
            time.sleep(0.5)

    figures = measure_built_step(make, step)
    result: dict[str, Any] = {"rank": rank, "resident": figures.resident, "peak": figures.peak,
                              "workspace": figures.workspace, "backend": figures.backend,
                              "retained": figures.retained,
                              "calls": dict(counted.calls), "sent": dict(counted.sent),
                              "received": dict(counted.received)}
    if plan == "fsdp":
        result.update(_fsdp_mem_tracker(make))
    out.with_suffix(f".{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def _fsdp_mem_tracker(make: Callable) -> dict[str, Any]:
    """The peer: FSDPMemTracker's peak for a steady-state step of a fresh copy, and its time."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    model, args, kwargs, opt = make()
    _train_step(model, args, kwargs, opt)
    try:
        start = time.perf_counter()
        tracker = FSDPMemTracker(model, opt)
        tracker.track_inputs((args, kwargs))
        with tracker:
            _train_step(model, args, kwargs, opt)
        seconds = time.perf_counter() - start
        peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
        return {"peer_peak": peak, "peer_seconds": seconds}
    except Exception as exc:  # a peer: its failure is reported, not fatal
        return {"peer_error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measured(case: str, processes: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rank"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   f"--master_port={_free_port()}", __file__, "--worker", case, "--result", str(out)]
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if run.returncode:
            raise RuntimeError(f"{case}: torchrun failed\n{run.stderr[-3000:]}")
        return [json.loads(out.with_suffix(f".{r}.json").read_text()) for r in range(processes)]




if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--result", type=Path, required=True)
    cli = parser.parse_args()
    worker(cli.worker, cli.result)
