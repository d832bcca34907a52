"""The model zoo: burden against every classification model in torchvision and timm, and a few
Hugging Face models built from small configs. Random init, no weights, batch 1, each model's
default input size. Not part of the test suite: the full run takes hours.

For each model it checks

- ``convention="torch"`` against ``torch.utils.flop_counter.FlopCounterMode``, run here on a meta
  copy of the model (eval mode, no_grad): the totals must be equal;
- repeated calls in one process: the whole ``to_dict()`` must be identical;
- a meta trace against a CPU trace (``device="cpu"``) of the same model, every figure, the peak
  and the per-layer records included, where the model fits in memory;
- on a fixed sample of CNNs, ViTs, Swin, MLP-Mixers and EfficientNets, the memory predictions
  (inference peak, saved activations, the whole training step's peak with Adam) against the CPU
  allocator's own events (``tests/allocator_oracle.py``), which share no code and no method with burden;
- burden's own shape rules (``burden/shape_rules.py``) against torch's meta kernels: during the
  first estimate, every op a rule answers also runs its meta kernel, and the outputs' shapes,
  strides and dtypes must be equal;
- burden's time beside FlopCounterMode's.

Every model runs in a fresh process with a timeout and a memory cap, so one bad model cannot end
the run. Records go to a JSON-lines file as they finish and the Markdown summary is rewritten
after each one, so a partial run is useful and ``--resume`` picks up where it stopped.

    python benches/zoo.py                         # everything
    python benches/zoo.py --ci                    # ~17 small models, exits 1 on any failure
    python benches/zoo.py --models timm:resnet18,torchvision:swin_t,hf:bert
    python benches/zoo.py --source timm --limit 50 --resume
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

TIMEOUT_S = 300
WORKER_RSS_LIMIT = 9 * 2**30  # two workers stay well inside 24 GiB
CPU_TRACE_MAX_BYTES = 3 * 2**30  # parameters + every layer output: the CPU trace and its model fit
CPU_TRACE_MAX_FLOPS = 60e9  # a real forward on one thread stays within seconds
MEMORY_BATCH = 2  # batch 2 so that a figure that ignores the batch cannot pass by accident
MEMORY_TOLERANCE = 0.05
DIFF_LIMIT = 12  # differences kept per check: enough to see the pattern
DEVICE_KEYS = frozenset({"device"})  # what a meta and a CPU trace report differently by design
# Kernels only the CPU runs, fused from what the meta trace sees as several ops: their figures
# differ by design (README, "Memory you can plan with"), and the difference is listed, not failed.
CPU_FUSED_KERNELS = frozenset({"aten._native_multi_head_attention", "aten.mkldnn_rnn_layer",
                               "aten._transformer_encoder_layer_fwd"})

# Memory predictions are checked against the allocator on these (CNNs, EfficientNets, ViTs, Swin,
# MLP-Mixers and a few hybrids), from both libraries.
MEMORY_SAMPLE = frozenset({
    "torchvision:resnet18", "torchvision:resnet50", "torchvision:densenet121", "torchvision:mobilenet_v2",
    "torchvision:mobilenet_v3_small", "torchvision:squeezenet1_1", "torchvision:shufflenet_v2_x1_0",
    "torchvision:googlenet", "torchvision:regnet_y_400mf", "torchvision:convnext_tiny",
    "timm:resnet18", "timm:convnext_atto", "timm:ghostnet_100", "timm:regnetx_002",
    "torchvision:efficientnet_b0", "torchvision:efficientnet_v2_s", "timm:efficientnet_b0",
    "timm:tf_efficientnet_b0", "timm:efficientnetv2_rw_t",
    "torchvision:vit_b_32", "timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224",
    "timm:vit_small_patch16_224",
    "torchvision:swin_t", "torchvision:swin_v2_t", "timm:swin_tiny_patch4_window7_224",
    "timm:mixer_s16_224", "timm:resmlp_12_224", "timm:gmlp_ti16_224",
    "torchvision:maxvit_t", "timm:levit_128s", "timm:poolformer_s12", "timm:mobilevit_xxs",
})

CI_MODELS = (
    "torchvision:resnet18", "torchvision:mobilenet_v3_small", "torchvision:squeezenet1_1",
    "torchvision:shufflenet_v2_x0_5", "torchvision:efficientnet_b0", "torchvision:swin_t",
    "torchvision:vit_b_32", "torchvision:googlenet",
    "timm:convnext_atto", "timm:vit_tiny_patch16_224", "timm:mixer_s16_224", "timm:levit_128s",
    "timm:efficientnet_b0", "timm:mobilevit_xxs", "timm:regnetx_002",
    "hf:bert", "hf:gpt2",
)

HF_MODELS = ("bert", "gpt2", "t5", "vit", "whisper")
NO_IMPORT = "burden did not import"  # others edit the working tree while the zoo runs: retried
IMPORT_RETRIES, IMPORT_RETRY_WAIT_S = 5, 30
CRASHES = ("raw", "internal")  # a refusal must be a BurdenError that says what is wrong with the model
KNOWN = ("meta vs cpu, fused",)
MOVED_TOLERANCE = 1e-3  # bytes moved on meta and on the CPU, as a fraction of the model's total  # checks whose differences are by design, listed apart


# --- the models --------------------------------------------------------------------------------

@dataclass
class Case:
    """One model, ready to analyse: how to build it and what to feed it."""

    build: Callable[[], Any]  # a fresh nn.Module on the current default device, random init
    size: tuple[int, ...] | None  # per-sample image shape, or None when ``specs`` gives the inputs
    specs: dict[str, Any] | None = None  # keyword inputs as burden.TensorSpec (Hugging Face models)

    def burden_kwargs(self, batch: int = 1) -> dict[str, Any]:
        """Arguments for burden.estimate that give the input."""
        if self.specs is None:
            return {"input_size": self.size, "batch_size": batch}
        return {"inputs": {k: _rebatch(s, batch) for k, s in self.specs.items()}}

    def example(self, device: str, batch: int = 1) -> tuple[tuple, dict]:
        """Real (or meta) inputs for running the model outside burden: zeros for ids, noise for images."""
        import torch

        if self.specs is None:
            return (torch.randn(batch, *self.size, device=device),), {}
        kwargs = {}
        for key, spec in self.specs.items():
            shape = (batch, *spec.shape[1:])
            dtype = spec.dtype or torch.float32
            kwargs[key] = (torch.zeros(shape, dtype=dtype, device=device) if not dtype.is_floating_point
                           else torch.randn(shape, dtype=dtype, device=device))
        return (), kwargs


def _rebatch(spec: Any, batch: int) -> Any:
    import burden

    return burden.TensorSpec(batch, *spec.shape[1:], dtype=spec.dtype)


def _torchvision_case(name: str) -> Case:
    import torchvision

    size = 299 if name == "inception_v3" else 224
    return Case(lambda: torchvision.models.get_model(name, weights=None), (3, size, size))


def _timm_case(name: str) -> Case:
    import timm
    import torch

    with torch.device("meta"):  # the default input size without allocating the model
        cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    return Case(lambda: timm.create_model(name, pretrained=False), tuple(cfg["input_size"]))


def _hf_case(name: str) -> Case:
    """Small configs of five families: encoder, decoder, encoder-decoder, vision, speech."""
    import torch
    import transformers as hf
    from burden import TensorSpec

    ids = TensorSpec(1, 32, dtype=torch.long)
    dec = TensorSpec(1, 16, dtype=torch.long)
    small = {"vocab_size": 1000}
    table = {
        "bert": (hf.BertForSequenceClassification, hf.BertConfig(**small, hidden_size=64, num_hidden_layers=2,
                                                                  num_attention_heads=2, intermediate_size=128,
                                                                  max_position_embeddings=128),
                 {"input_ids": ids}),
        "gpt2": (hf.GPT2LMHeadModel, hf.GPT2Config(**small, n_positions=128, n_embd=64, n_layer=2, n_head=2),
                 {"input_ids": ids}),
        "t5": (hf.T5ForConditionalGeneration, hf.T5Config(**small, d_model=64, d_kv=32, d_ff=128, num_layers=2,
                                                          num_heads=2, decoder_start_token_id=0),
               {"input_ids": ids, "decoder_input_ids": dec}),
        "vit": (hf.ViTForImageClassification, hf.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                           intermediate_size=128, image_size=224, patch_size=16),
                {"pixel_values": TensorSpec(1, 3, 224, 224)}),
        "whisper": (hf.WhisperForConditionalGeneration,
                    hf.WhisperConfig(**small, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                     decoder_start_token_id=3, d_model=64, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                                     decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500,
                                     max_target_positions=64),
                    {"input_features": TensorSpec(1, 80, 3000), "decoder_input_ids": dec}),
    }
    cls, config, specs = table[name]
    return Case(lambda: cls(config), None, specs)


CASES: dict[str, Callable[[str], Case]] = {"torchvision": _torchvision_case, "timm": _timm_case, "hf": _hf_case}


def _spread(names: Iterable[str]) -> list[str]:
    """A fixed shuffle, so that a partial run is a sample of every family, not of the first letters."""
    return sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())


def list_models(source: str | None) -> list[str]:
    """Model ids (``source:name``) of one source or all, torchvision and Hugging Face first."""
    ids: list[str] = []
    if source in (None, "torchvision"):
        import torchvision

        ids += [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    if source in (None, "hf"):
        ids += [f"hf:{n}" for n in HF_MODELS]
    if source in (None, "timm"):
        import timm

        ids += _spread(f"timm:{n}" for n in timm.list_models())
    return ids


# --- the worker: one model in its own process --------------------------------------------------

def _where(exc: BaseException) -> dict[str, str]:
    """The innermost frame in burden and the innermost frame overall, as file:line function."""
    frames = traceback.extract_tb(exc.__traceback__)
    show = lambda f: f"{os.path.relpath(f.filename, ROOT) if f.filename.startswith(str(ROOT)) else f.filename}" \
                     f":{f.lineno} {f.name}"
    ours = [f for f in frames if f"{os.sep}burden{os.sep}" in f.filename and "benches" not in f.filename]
    return {"burden_frame": show(ours[-1]) if ours else "", "innermost_frame": show(frames[-1]) if frames else ""}


def _kind(exc: BaseException) -> str:
    """'refusal' for a BurdenError that names a problem with the model or the call; 'internal' for
    burden's InternalError (a bug it caught and wrapped); 'raw' for anything else. Both of the last
    two are crashes."""
    import burden.errors

    internal = getattr(burden.errors, "InternalError", ())
    if internal and isinstance(exc, internal):
        return "internal"
    return "refusal" if isinstance(exc, burden.errors.BurdenError) else "raw"


def _error(exc: BaseException) -> dict[str, Any]:
    kind = _kind(exc)
    origin = exc.__cause__ if kind == "internal" and exc.__cause__ is not None else exc  # where the bug is
    return {"kind": kind, "type": type(exc).__name__ if origin is exc else f"{type(exc).__name__}({type(origin).__name__})",
            "message": str(exc)[:800], **_where(origin),
            "traceback": "".join(traceback.format_exception(origin)[-8:])[-4000:]}


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two to_dict() results differ, as 'path: a != b'; layers are matched by name."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: missing on one side" for k in sorted(set(a) ^ set(b), key=str)]
        for k in [k for k in a if k in b]:  # a's order: totals before layers
            out += diff(a[k], b[k], f"{path}{k}" if str(k).startswith("[") else f"{path}.{k}" if path else str(k))
        return out
    if path == "layers" and isinstance(a, list) and isinstance(b, list):
        return diff({f"[{x['name']!r}]": x for x in a}, {f"[{x['name']!r}]": x for x in b}, "layers") + \
            (["layers: order differs"] if [x["name"] for x in a] != [x["name"] for x in b] else [])
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"[:300]]


class Worker:
    """Runs the checks on one model and keeps the record on disk after every stage, so that a
    timeout or a crash of the process still leaves what was found before it."""

    def __init__(self, model_id: str, record_path: Path) -> None:
        self.path = record_path
        source, _, name = model_id.partition(":")
        self.rec: dict[str, Any] = {"id": model_id, "source": source, "name": name, "stage": "start",
                                    "errors": [], "notes": [], "stage_s": {}}
        self.clock = time.perf_counter()

    def save(self, stage: str) -> None:
        now = time.perf_counter()
        self.rec["stage_s"][stage] = round(now - self.clock, 3)  # where a slow model spends its time
        self.clock = now
        self.rec["stage"] = stage
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.rec, default=str))
        tmp.replace(self.path)

    def call(self, label: str, fn: Callable[[], Any]) -> Any:
        """A burden call: its result, or None with the error recorded (BurdenError or raw)."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every exception is a finding
            self.rec["errors"].append({"call": label, **_error(exc)})
            return None

    def run(self) -> None:
        import torch

        self.rec["burden_tree"] = burden_tree()
        try:  # the working tree may be mid-edit; the parent tries again later
            import burden  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            self.rec.update(outcome=NO_IMPORT, import_error=f"{type(exc).__name__}: {exc}")
            self.save("done")
            return
        torch.set_num_threads(1)  # others share the cores; the allocator oracle wants one thread too
        torch.manual_seed(0)
        case = self.build_case()
        if case is None:
            return
        meta_model = self.build_meta(case)
        if meta_model is None:
            return
        self.check_flops(case, meta_model)
        default = self.check_default(case, meta_model)
        cpu_model = self.cpu_model(case, default)
        if cpu_model is not None:
            self.check_devices(case, cpu_model)
            if self.rec["id"] in MEMORY_SAMPLE:
                self.check_memory(case, cpu_model)
        self.rec["outcome"] = self.outcome()
        self.save("done")

    def build_case(self) -> Case | None:
        try:
            case = CASES[self.rec["source"]](self.rec["name"])
        except Exception as exc:  # noqa: BLE001
            self.rec.update(outcome="not built", build_error=_error(exc))
            self.save("done")
            return None
        self.rec["input"] = list(case.size) if case.size else {k: list(s.shape) for k, s in case.specs.items()}
        return case

    def build_meta(self, case: Case) -> Any:
        """The model on meta. Some models compute values in __init__ (``.item()``); those are built
        on the CPU and a meta copy is made, which the reference counter runs on."""
        import torch

        try:
            with torch.device("meta"):
                model = case.build()
            self.rec["built_on"] = "meta"
        except Exception as exc:  # noqa: BLE001
            try:
                model = case.build().to("meta")
            except Exception as exc2:  # noqa: BLE001
                self.rec.update(outcome="not built", build_error=_error(exc2))
                self.save("done")
                return None
            self.rec["notes"].append(f"does not build on meta ({type(exc).__name__}: {str(exc)[:120]}); built on CPU")
            self.rec["built_on"] = "cpu, copied to meta"
        model.eval()
        self.rec["params"] = sum(p.numel() for p in model.parameters())
        self.save("built")
        return model

    def flop_counter(self, model: Any, case: Case, device: str) -> tuple[int, float]:
        """FlopCounterMode's total and its time, in eval mode under no_grad; its per-module counts
        (module path -> {op: FLOPs}) are kept to say where a mismatch is."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        args, kwargs = case.example(device)
        start = time.perf_counter()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*args, **kwargs)
        elapsed = time.perf_counter() - start
        root = type(model).__name__
        self.fcm_modules = {("" if k == root else k.removeprefix(root + ".")): {str(op): n for op, n in ops.items()}
                            for k, ops in counter.get_flop_counts().items() if k != "Global"}
        return counter.get_total_flops(), elapsed

    def reference(self, case: Case, meta_model: Any) -> None:
        """FlopCounterMode on meta; on the CPU where the model's forward needs values."""
        try:
            self.flop_counter(meta_model, case, "meta")  # warms the meta kernels for both tools
            self.rec["fcm"], self.rec["fcm_s"] = self.flop_counter(meta_model, case, "meta")
            self.rec["fcm_device"] = "meta"
            return
        except Exception as exc:  # noqa: BLE001
            self.rec["fcm_meta_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        if self.small_enough(self.rec["params"] * 4):
            try:
                import torch

                torch.manual_seed(0)
                self.rec["fcm"], _ = self.flop_counter(case.build().eval(), case, "cpu")
                self.rec["fcm_device"] = "cpu"
            except Exception as exc:  # noqa: BLE001
                self.rec["fcm_cpu_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"

    def check_flops(self, case: Case, meta_model: Any) -> None:
        """convention='torch' against FlopCounterMode, its time, and a repeat."""
        import burden

        self.reference(case, meta_model)
        self.save("reference")
        start = time.perf_counter()
        first = self.call("estimate torch", lambda: burden.estimate(meta_model, convention="torch",
                                                                    **case.burden_kwargs()))
        self.rec["burden_s"] = time.perf_counter() - start
        if first is None:
            return
        self.rec["burden_flops"] = first.flops
        if "fcm" in self.rec and first.flops != self.rec["fcm"]:
            self.rec["flops_where"] = self.flops_where(first)
        second = self.call("estimate torch (repeat)", lambda: burden.estimate(meta_model, convention="torch",
                                                                              **case.burden_kwargs()))
        if second is not None:
            self.rec["repeat_torch"] = diff(first.to_dict(), second.to_dict())[:DIFF_LIMIT]
        self.save("flops")

    def flops_where(self, e: Any) -> list[str]:
        """The innermost modules whose FLOPs differ from FlopCounterMode's, with its ops there."""
        modules = getattr(self, "fcm_modules", {})
        theirs = {name: sum(ops.values()) for name, ops in modules.items()}
        differ = {r.name: r for r in e.layers if r.flops != theirs.get(r.name, 0)}
        inner = [n for n in differ if not any(o != n and (n == "" or o.startswith(n + ".")) for o in differ)]
        return [f"{n or '(root)'} ({differ[n].type}): burden {differ[n].flops:,} (own ops {differ[n].self_flops:,}) "
                f"vs FlopCounterMode {theirs.get(n, 0):,} {modules.get(n, {})}" for n in inner[:6]]

    def check_default(self, case: Case, meta_model: Any) -> Any:
        """The default convention twice (a repeat check), with the figures the CPU stage sizes from."""
        import burden

        with self.rules_checked():
            first = self.call("estimate", lambda: burden.estimate(meta_model, **case.burden_kwargs()))
        if first is None:
            self.save("default")
            return None
        second = self.call("estimate (repeat)", lambda: burden.estimate(meta_model, **case.burden_kwargs()))
        if second is not None:
            self.rec["repeat_default"] = diff(first.to_dict(), second.to_dict())[:DIFF_LIMIT]
        self.rec.update(param_bytes=first.param_bytes, feature_bytes=first.feature_bytes, flops=first.flops,
                        peak_feature_bytes=first.peak_feature_bytes)
        self.save("default")
        return first

    @contextmanager
    def rules_checked(self) -> Iterator[None]:
        """Each answer of a shape rule checked against the meta kernel it stands in for (the
        batch-norm rules follow the CPU kernels, and are checked by the tests instead)."""
        from burden import meta_kernels, shape_rules
        from burden.containers import map_tensors

        def layout(value: Any) -> Any:
            return map_tensors(lambda t: (tuple(t.shape), t.stride(), str(t.dtype)), value)

        answers, mismatches = [0], self.rec.setdefault("rule_mismatches", [])

        def checked(func: Any, args: tuple, kwargs: dict) -> Any:
            out = shape_rules.shape_rule(func, args, kwargs)
            if out is not None and func not in shape_rules.CPU_RULES:
                answers[0] += 1
                try:
                    theirs = layout(func(*args, **kwargs))
                except Exception as exc:  # noqa: BLE001 - the rule answered where torch refuses
                    theirs = f"meta kernel refused: {type(exc).__name__}: {str(exc)[:120]}"
                if layout(out) != theirs and len(mismatches) < DIFF_LIMIT:
                    inputs = map_tensors(lambda t: (tuple(t.shape), t.stride(), str(t.dtype)), args)
                    mismatches.append(f"{func}: rule {layout(out)} vs meta {theirs} for {inputs}"[:400])
            return out

        meta_kernels.META_KERNELS.clear()  # every op runs its rule, not a remembered result
        meta_kernels.shape_rule, original = checked, meta_kernels.shape_rule
        try:
            yield
        finally:
            meta_kernels.shape_rule = original
            self.rec["rule_answers"] = answers[0]

    def small_enough(self, nbytes: int, flops: float = 0) -> bool:
        return nbytes <= CPU_TRACE_MAX_BYTES and flops <= CPU_TRACE_MAX_FLOPS

    def cpu_model(self, case: Case, default: Any) -> Any:
        """The same architecture with real random weights, where it and its features fit."""
        import torch

        size = (default.param_bytes + default.feature_bytes) if default is not None else self.rec["params"] * 8
        if not self.small_enough(size, self.rec.get("fcm") or self.rec.get("burden_flops") or 0):
            self.rec["cpu"] = {"status": "skipped: too large for a real run here"}
            return None
        torch.manual_seed(0)
        try:
            return case.build()
        except Exception as exc:  # noqa: BLE001
            self.rec["cpu"] = {"status": f"skipped: does not build on the CPU ({type(exc).__name__}: {exc})"[:300]}
            return None

    def check_devices(self, case: Case, model: Any) -> None:
        """The same model traced on meta and on the CPU: every figure must agree. Where burden
        refused the meta trace, the CPU trace is what a user would fall back to."""
        import burden

        on_meta = self.call("estimate on CPU model", lambda: burden.estimate(model, **case.burden_kwargs()))

        def strip(e: Any) -> dict[str, Any]:
            d = {k: v for k, v in e.to_dict().items() if k not in DEVICE_KEYS}
            # The peak's position counts ops, and Python can take device-specific paths that run a
            # different number of them (`x[i] = 3`: fill_ on the CPU, scalar_tensor + copy_ on meta);
            # the peak's bytes, op and module are compared.
            if d.get("peak_op"):
                d["peak_op"] = {k: v for k, v in d["peak_op"].items() if k != "index"}
            # Those paths move different bytes too (meta copies an expanded scalar, the CPU fills):
            # bytes moved are compared apart, within MOVED_TOLERANCE of the model's total.
            d.pop("bytes_moved", None)
            for layer in d.get("layers", []):
                layer.pop("bytes_moved", None)
                layer.pop("self_bytes_moved", None)
            return d

        def moved(e: Any) -> dict[str, int]:
            return {"(total)": e.bytes_moved, **{r.name or "(model)": r.bytes_moved for r in e.layers}}

        on_cpu = self.call("estimate device=cpu", lambda: burden.estimate(model, device="cpu",
                                                                          **case.burden_kwargs()))
        if on_cpu is not None:
            self.rec["cpu_flops"] = on_cpu.flops
        if "burden_flops" not in self.rec and on_cpu is not None:  # meta refused: count on the CPU instead
            torch_count = self.call("estimate torch device=cpu", lambda: burden.estimate(
                model, device="cpu", convention="torch", **case.burden_kwargs()))
            if torch_count is not None:
                self.rec["burden_flops"], self.rec["burden_flops_device"] = torch_count.flops, "cpu"
        if on_meta is not None and on_cpu is not None:
            a, b = moved(on_meta), moved(on_cpu)
            slack = MOVED_TOLERANCE * max(on_meta.bytes_moved, 1)
            far = [f"bytes_moved of {k}: {a[k]} != {b.get(k)}" for k in a if abs(a[k] - b.get(k, 0)) > slack]
            self.rec["cpu"] = {"status": "checked",
                               "diffs": (diff(strip(on_meta), strip(on_cpu)) + far)[:DIFF_LIMIT],
                               "fused": sorted({u.op for u in on_cpu.uncounted_ops} & CPU_FUSED_KERNELS)}
        else:
            self.rec["cpu"] = {"status": "not compared: an estimate failed"}
        self.save("devices")

    def check_memory(self, case: Case, model: Any) -> None:
        """Predicted memory against the allocator's own events (last: the oracle trains the model)."""
        import burden

        import torch

        sys.path.insert(0, str(ROOT / "tests"))
        from allocator_oracle import measure, measure_step

        e = self.call("estimate training", lambda: burden.estimate(model, mode="training", optimizer="adam",
                                                                   **case.burden_kwargs(MEMORY_BATCH)))
        if e is None:
            return
        predicted = {"inference_peak": e.peak_feature_bytes, "saved_activations": e.training.saved_activation_bytes,
                     "training_peak": e.training.training_peak_bytes}
        self.rec["memory"] = {"batch": MEMORY_BATCH, "predicted": predicted}
        self.save("memory predicted")
        args, kwargs = case.example("cpu", MEMORY_BATCH)
        try:
            m = measure(model, args, kwargs, optimizer="adam")
            # the whole step (the optimizer's step, the input batch), as burden's training peak counts it
            step = measure_step(model, args, kwargs, optimizer=torch.optim.Adam)
        except Exception as exc:  # noqa: BLE001 - the oracle's failure is not burden's
            self.rec["memory"]["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            return
        self.rec["memory"]["measured"] = {"inference_peak": m.inference_peak, "saved_activations": m.saved_activations,
                                          "training_peak": step.peak}
        self.rec["memory"]["workspace"] = {"inference": m.inference_workspace, "training": step.workspace}
        self.save("memory")

    def outcome(self) -> str:
        errors = self.rec["errors"]
        if any(e["kind"] in CRASHES for e in errors):
            return "crashed"
        analysed = {e["call"] for e in errors}.isdisjoint({"estimate torch", "estimate"})
        if analysed:
            return "analysed"
        return "analysed on cpu only" if "cpu_flops" in self.rec else "refused"


def burden_tree() -> str:
    """A digest of burden's sources, so that each record says which working tree it ran."""
    digest = hashlib.sha1()
    for path in sorted((ROOT / "burden").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def worker_main(model_id: str, record: Path) -> None:
    Worker(model_id, record).run()


# --- the parent: a pool of fresh processes -------------------------------------------------------

def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Running:
    model_id: str
    proc: Any  # multiprocessing.Process
    record: Path
    log: Path
    started: float
    peak_rss: int = 0


WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
              "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
# Imported once by the fork server, so that each model's fresh process starts in a second instead
# of ten. burden itself is not preloaded: every model imports the working tree as it is then.
PRELOAD = ["torch", "torchvision", "timm"]


def _child(model_id: str, record: Path, log: Path) -> None:
    """The worker process: its output to its own log, then the checks."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    worker_main(model_id, record)


def _start(ctx: Any, model_id: str, scratch: Path) -> Running:
    slug = model_id.replace(":", "__").replace("/", "_")
    record, log = scratch / f"{slug}.json", scratch / f"{slug}.log"
    proc = ctx.Process(target=_child, args=(model_id, record, log), daemon=True)
    proc.start()
    return Running(model_id, proc, record, log, time.monotonic())


def _finish(run: Running, killed: str | None) -> dict[str, Any]:
    """The worker's record, completed with how the process ended."""
    try:
        rec = json.loads(run.record.read_text())
    except (OSError, ValueError):
        source, _, name = run.model_id.partition(":")
        rec = {"id": run.model_id, "source": source, "name": name, "stage": "start", "errors": [], "notes": []}
    rec["seconds"] = round(time.monotonic() - run.started, 1)
    rec["peak_rss"] = run.peak_rss
    if killed or rec.get("stage") != "done":
        tail = run.log.read_text(errors="replace")[-1500:] if run.log.exists() else ""
        rec["outcome"] = killed or f"died (exit {run.proc.exitcode})"
        rec["died_in_stage"] = rec.get("stage")
        rec["log_tail"] = tail
    for path in (run.record, run.log):
        path.unlink(missing_ok=True)
    return rec


def run_pool(model_ids: list[str], jobs: int, on_record: Callable[[dict[str, Any]], None]) -> None:
    """Each model in a fresh process, ``jobs`` at a time, with a timeout and an RSS cap."""
    import multiprocessing

    os.environ.update(WORKER_ENV)  # before the fork server starts: it and every worker inherit them
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    running: list[Running] = []
    with tempfile.TemporaryDirectory(prefix="zoo-") as tmp:
        try:
            _pool_loop(ctx, jobs, list(reversed(model_ids)), running, Path(tmp), on_record)
        finally:  # interrupted: no worker outlives the run
            for run in running:
                run.proc.kill()


def _verdict(run: Any, timeout_s: float = TIMEOUT_S, rss_limit: int = WORKER_RSS_LIMIT) -> str | None:
    """Why a worker (a record with ``proc``, ``started`` and ``peak_rss``) must be stopped now, if it
    must; its peak RSS is brought up to date."""
    run.peak_rss = max(run.peak_rss, _rss(run.proc.pid))
    if time.monotonic() - run.started > timeout_s:
        return f"timeout ({timeout_s} s)"
    if run.peak_rss > rss_limit:
        return f"killed: RSS over {rss_limit / 2**30:.0f} GiB"
    return None


def _pool_loop(ctx: Any, jobs: int, todo: list[str], running: list[Running], scratch: Path,
               on_record: Callable[[dict[str, Any]], None]) -> None:
    retries: dict[str, int] = {}
    paused_until = 0.0
    while todo or running:
        while todo and len(running) < jobs and time.monotonic() >= paused_until:
            running.append(_start(ctx, todo.pop(), scratch))
        time.sleep(0.2)
        for run in list(running):
            killed = _verdict(run)
            if killed:
                run.proc.kill()
            elif run.proc.exitcode is None:
                continue
            run.proc.join()
            running.remove(run)
            rec = _finish(run, killed)
            if rec.get("outcome") == NO_IMPORT and retries.get(run.model_id, 0) < IMPORT_RETRIES:
                retries[run.model_id] = retries.get(run.model_id, 0) + 1
                todo.append(run.model_id)
                paused_until = time.monotonic() + IMPORT_RETRY_WAIT_S
                print(f"burden does not import ({rec.get('import_error')}); {run.model_id} again in "
                      f"{IMPORT_RETRY_WAIT_S} s", flush=True)
                continue
            on_record(rec)


# --- what failed ---------------------------------------------------------------------------------

def _ratio(rec: dict[str, Any], key: str) -> float | None:
    mem = rec.get("memory") or {}
    measured = (mem.get("measured") or {}).get(key)
    if not measured:
        return None
    return mem["predicted"][key] / measured


def failures(rec: dict[str, Any]) -> list[tuple[str, str]]:
    """(check, detail) for every check this model failed."""
    out = []
    if "fcm" in rec and "burden_flops" in rec and rec["fcm"] != rec["burden_flops"]:
        out.append(("flops", f"burden {rec['burden_flops']:,} vs FlopCounterMode {rec['fcm']:,} "
                             f"(on {rec['fcm_device']}, ratio {rec['burden_flops'] / max(rec['fcm'], 1):.4f})"
                    + "".join(f"; {w}" for w in rec.get("flops_where", [])[:2])))
    for key in ("repeat_torch", "repeat_default"):
        if rec.get(key):
            out.append(("repeat", f"{key}: " + "; ".join(rec[key][:4])))
    if rec.get("rule_mismatches"):
        out.append(("shape rules", "; ".join(rec["rule_mismatches"][:3])))
    cpu = rec.get("cpu") or {}
    if cpu.get("diffs"):
        check = "meta vs cpu, fused" if cpu.get("fused") else "meta vs cpu"
        out.append((check, ("CPU runs " + ", ".join(cpu["fused"]) + ": " if cpu.get("fused") else "")
                    + "; ".join(cpu["diffs"][:4])))
    for key in ("inference_peak", "saved_activations", "training_peak"):
        r = _ratio(rec, key)
        if r is not None and abs(r - 1) > MEMORY_TOLERANCE:
            out.append(("memory", f"{key} predicted/measured {r:.4f}"))
    if (rec.get("memory") or {}).get("error"):
        out.append(("memory oracle", rec["memory"]["error"]))
    for e in rec.get("errors", []):
        if e["kind"] in CRASHES:
            out.append(("raw exception", f"{e['call']}: {e['type']}: {e['message'][:200]} at {e['burden_frame']}"))
    if rec.get("outcome", "").startswith(("timeout", "killed", "died")):
        out.append(("worker", f"{rec['outcome']} in stage {rec.get('died_in_stage')}"))
    return out


# --- the summary -------------------------------------------------------------------------------

def _load(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                records[rec["id"]] = rec  # a later run of the same model wins
    return records


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "none\n"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _refusal(rec: dict[str, Any]) -> str:
    errors = [e for e in rec.get("errors", []) if e["kind"] == "refusal"]
    return f"{errors[0]['type']}: {errors[0]['message']}" if errors else ""


def _memory_rows(records: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for rec in records:
        mem = rec.get("memory")
        if not mem or "measured" not in mem:
            continue
        cells = [rec["id"], mem["batch"]]
        for key in ("inference_peak", "saved_activations", "training_peak"):
            p, m = mem["predicted"][key], mem["measured"][key]
            cells.append(f"{p / 2**20:.2f} / {m / 2**20:.2f} ({p / m:.4f})" if m else f"{p / 2**20:.2f} / 0")
        cells.append(f"{mem['workspace']['inference'] / 2**20:.1f} / {mem['workspace']['training'] / 2**20:.1f}")
        cells.append("yes" if all(abs((_ratio(rec, k) or 1) - 1) <= MEMORY_TOLERANCE
                                  for k in ("inference_peak", "saved_activations", "training_peak")) else "**no**")
        rows.append(cells)
    return rows


def _timing(records: list[dict[str, Any]]) -> str:
    pairs = [(r["id"], r["burden_s"], r["fcm_s"]) for r in records
             if r.get("fcm_s") and r.get("burden_s") and "burden_flops" in r]
    if not pairs:
        return "no model timed\n"
    ratios = [b / f for _, b, f in pairs]
    slower = sorted(((b / f, i, b, f) for i, b, f in pairs if b > f), reverse=True)
    text = (f"burden.estimate(convention='torch') against FlopCounterMode on meta, one call each after the "
            f"model is built (FlopCounterMode run once before, untimed, so the meta kernels are warm for both), "
            f"{len(pairs)} models: median burden / FlopCounterMode = **{statistics.median(ratios):.2f}** "
            f"(quartiles {statistics.quantiles(ratios, n=4)[0]:.2f} - {statistics.quantiles(ratios, n=4)[2]:.2f}"
            f" where n > 1); burden total {sum(b for _, b, _ in pairs):.1f} s, FlopCounterMode total "
            f"{sum(f for _, _, f in pairs):.1f} s. burden was slower on {len(slower)} models.\n\n"
            if len(pairs) > 1 else f"one model timed: ratio {ratios[0]:.2f}\n\n")
    return text + _table(["model", "burden / FCM", "burden (s)", "FlopCounterMode (s)"],
                         [[i, f"{r:.2f}", f"{b:.3f}", f"{f:.3f}"] for r, i, b, f in slower[:60]]) + \
        (f"\n... and {len(slower) - 60} more\n" if len(slower) > 60 else "")


def _machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def summarise(records: dict[str, dict[str, Any]], planned: int) -> str:
    """The Markdown report of every record so far."""
    recs = sorted(records.values(), key=lambda r: r["id"])
    by_outcome: dict[str, int] = {}
    for r in recs:
        key = r.get("outcome", "?").split(" (")[0]
        by_outcome[key] = by_outcome.get(key, 0) + 1
    failing = [(r, [f for f in failures(r) if f[0] not in KNOWN]) for r in recs]
    known = [[r["id"], detail] for r in recs for check, detail in failures(r) if check in KNOWN]
    groups: dict[str, list[list[Any]]] = {}
    for r, fs in failing:
        for check, detail in fs:
            groups.setdefault(check, []).append([r["id"], detail])
    not_analysed = [[r["id"], r.get("outcome"), _refusal(r) or _not_analysed_reason(r)] for r in recs
                    if r.get("outcome") != "analysed"]
    checks = {"FlopCounterMode comparisons": sum("fcm" in r and "burden_flops" in r for r in recs),
              "repeat checks": sum("repeat_torch" in r for r in recs),
              "meta vs CPU comparisons": sum((r.get("cpu") or {}).get("status") == "checked" for r in recs),
              "memory measurements": sum("measured" in (r.get("memory") or {}) for r in recs),
              "shape-rule checks (models; op answers checked against the meta kernel)":
                  f"{sum('rule_answers' in r for r in recs)}; {sum(r.get('rule_answers', 0) for r in recs):,}"}
    parts = [
        "# burden on the model zoo\n\n",
        f"Generated by `python benches/zoo.py`. Machine: {_machine()}. {len(recs)} of {planned} planned models "
        f"done. Random init, no weights, batch 1, each model's default input size; one fresh process per model "
        f"(timeout {TIMEOUT_S} s, RSS cap {WORKER_RSS_LIMIT / 2**30:.0f} GiB).\n",
        "\n## Counts\n\n",
        _table(["outcome", "models"], sorted(by_outcome.items())),
        "\n" + _table(["check", "models"], list(checks.items())),
        f"\nModels failing at least one check: {sum(bool(fs) for _, fs in failing)}.\n",
        "\n## Every model not analysed\n\n",
        _table(["model", "outcome", "reason"], not_analysed),
    ]
    titles = {"flops": "FlopCounterMode mismatches", "meta vs cpu": "Meta against CPU mismatches",
              "repeat": "Repeat mismatches", "memory": "Memory predictions outside 5%",
              "raw exception": "Crashes: raw exceptions and InternalError from burden", "worker": "Workers that timed out or died",
              "memory oracle": "Allocator oracle errors", "shape rules": "Shape rules against the meta kernels"}
    for check, title in titles.items():
        parts += [f"\n## {title}\n\n", _table(["model", "detail"], groups.get(check, []))]
    parts += ["\n## Known differences: kernels only the CPU runs\n\n",
              "On real CPU tensors PyTorch runs fused kernels that the meta device cannot (the fast path of "
              "`nn.MultiheadAttention` and `nn.TransformerEncoderLayer` in inference, oneDNN's LSTM); burden has "
              "no formula for them, so the CPU trace lists them as uncounted, while the meta trace, burden's "
              "default, counts the ops they are made of. Listed here, not counted as failures.\n\n",
              _table(["model", "detail"], known)]
    parts += ["\n## Memory: predicted / measured (MiB, ratio)\n\n",
              f"burden.estimate(model, mode='training', optimizer='adam') at batch {MEMORY_BATCH} against "
              f"tests/allocator_oracle.py (CPU allocator events, oneDNN off). Workspace: the kernels' scratch "
              f"memory that the oracle sets apart (inference / training), not predicted by burden.\n\n",
              _table(["model", "batch", "inference peak", "saved activations", "training peak (Adam)",
                      "workspace MiB", "within 5%"], _memory_rows(recs)),
              "\n## Timing\n\n", _timing(recs)]
    no_reference = [[r["id"], r.get("fcm_meta_error", ""), r.get("fcm_cpu_error", "not tried: too large")]
                    for r in recs if "fcm_meta_error" in r and "fcm" not in r]
    parts += ["\n## FlopCounterMode could not run (no reference; burden not compared)\n\n",
              _table(["model", "on meta", "on the CPU"], no_reference)]
    notes = [[r["id"], "; ".join(r["notes"])] for r in recs if r.get("notes")]
    parts += ["\n## Notes\n\n", _table(["model", "note"], notes)]
    trees: dict[str, int] = {}
    for r in recs:
        trees[r.get("burden_tree", "?")] = trees.get(r.get("burden_tree", "?"), 0) + 1
    parts += ["\n## Reproduce\n\n",
              "One model, with every check: `python benches/zoo.py --models timm:NAME --out /tmp/one.md` "
              "(ids are `torchvision:NAME`, `timm:NAME`, `hf:bert|gpt2|t5|vit|whisper`); the record, with "
              "tracebacks, is in `/tmp/one.jsonl`. In the same process, without the pool: "
              "`python benches/zoo.py --worker timm:NAME --record /tmp/one.json`.\n\n",
              f"burden's sources changed during the run: records carry a digest of `burden/**/*.py` "
              f"(`burden_tree`); {len(trees)} distinct trees: "
              + ", ".join(f"{t} ({n})" for t, n in sorted(trees.items(), key=lambda kv: -kv[1])[:12]) + ".\n"]
    return "".join(parts)


def _not_analysed_reason(rec: dict[str, Any]) -> str:
    if rec.get("build_error"):
        b = rec["build_error"]
        return f"model does not build: {b['type']}: {b['message'][:200]}"
    raw = [e for e in rec.get("errors", []) if e["kind"] in CRASHES]
    if raw:
        return f"{raw[0]['call']}: {raw[0]['type']}: {raw[0]['message'][:200]} at {raw[0]['burden_frame']}"
    if rec.get("died_in_stage"):
        return f"in stage {rec['died_in_stage']}; " + rec.get("log_tail", "")[-200:]
    return ""


# --- the command line --------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ci", action="store_true", help="a CI-sized subset; exit 1 on any failure")
    p.add_argument("--models", help="comma-separated ids: torchvision:NAME, timm:NAME, hf:NAME")
    p.add_argument("--source", choices=["timm", "torchvision", "hf"])
    p.add_argument("--limit", type=int)
    p.add_argument("--out", type=Path, help="the Markdown summary; the records go beside it as .jsonl")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--resume", action="store_true",
                   help="keep the .jsonl and skip the models already in it (those named by --models run again)")
    p.add_argument("--report", action="store_true", help="only rewrite the Markdown from the .jsonl")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def selected(args: argparse.Namespace) -> list[str]:
    if args.models:
        ids = [m.strip() for m in args.models.split(",") if m.strip()]
    elif args.ci:
        ids = list(CI_MODELS)
    else:
        ids = list_models(args.source)
    if args.source:
        ids = [m for m in ids if m.startswith(args.source + ":")]
    return ids[:args.limit] if args.limit else ids


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.record)
        return 0
    out = args.out or RESULTS / ("zoo-ci.md" if args.ci else "zoo.md")
    jsonl = out.with_suffix(".jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.report:
        records = _load(jsonl)
        out.write_text(summarise(records, max(len(records), len(selected(args)))))
        print(f"{len(records)} records summarised in {out}")
        return 0
    ids = selected(args)
    records = _load(jsonl) if args.resume else {}
    if not args.resume:
        jsonl.write_text("")
    todo = ids if args.models else [m for m in ids if m not in records]  # models named outright run again
    print(f"{len(ids)} models, {len(todo)} to run, {min(args.jobs, 2)} at a time; records in {jsonl}", flush=True)
    planned = len(set(ids) | set(records))
    done_now: list[dict[str, Any]] = []

    def on_record(rec: dict[str, Any]) -> None:
        records[rec["id"]] = rec
        done_now.append(rec)
        with jsonl.open("a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        out.write_text(summarise(records, planned))
        fs = [f for f in failures(rec) if f[0] not in KNOWN]
        print(f"[{len(done_now)}/{len(todo)}] {rec['id']}: {rec.get('outcome')} {rec['seconds']} s"
              + "".join(f"\n    {c}: {d}" for c, d in fs), flush=True)

    run_pool(todo, max(1, min(args.jobs, 2)), on_record)
    out.write_text(summarise(records, planned))
    bad = [r for r in done_now if [f for f in failures(r) if f[0] not in KNOWN]
           or r.get("outcome") not in ("analysed", "refused")]
    print(f"done: {len(done_now)} run, {len(bad)} with a failure or not analysed; summary in {out}")
    return 1 if args.ci and bad else 0


if __name__ == "__main__":
    sys.exit(main())
