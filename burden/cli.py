"""The ``burden`` command line: a thin argparse layer over the library API.

Bad input prints one line on stderr and exits with status 2; no traceback reaches the user
unless ``BURDEN_DEBUG=1`` asks for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from . import options
from .devices import BUILT_IN as _BUILT_IN

BUILT_IN_PROFILES = tuple(_BUILT_IN)
from .errors import BurdenError, InputSpecError, InternalError

EXIT_USAGE = 2
ESTIMATE_FORMATS = ("text", "json", "csv", "markdown", "github")


def _table_format(fmt: str) -> str:
    """Markdown is what tabulate calls github."""
    return "github" if fmt == "markdown" else fmt


def _input_options(args: argparse.Namespace) -> dict:
    """The input size and batch, a language model's sequence length and batch, or with --inputs
    every input's shape."""
    seq = getattr(args, "seq", None)
    if seq is not None and (args.inputs is not None or args.input is not None):
        raise InputSpecError("--seq gives a language model's token inputs: leave out --input and --inputs")
    if args.inputs is not None:
        if args.input is not None or args.batch is not None:
            raise InputSpecError("--inputs gives every input's shape, batch included: leave out --input and --batch")
        from .inputs import parse_inputs_spec

        return {"inputs": parse_inputs_spec(args.inputs)}
    if seq is not None:
        return {"seq": seq, "batch_size": args.batch or 1}
    return {"input_size": args.input, "batch_size": args.batch or 1}  # no --input: the model's own size


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints the whole usage; one line is enough
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(text: str, lowest: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"malformed {what} {text!r}; give a whole number") from None
    if value < lowest:
        raise argparse.ArgumentTypeError(f"{what} must be {lowest} or more, got {value}")
    return value


def _whole(text: str) -> int:
    """A count from 1: tokens, a sequence length."""
    return _at_least(text, 1, "count")


def _add_seq_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seq", default=None, type=_whole, metavar="N",
                   help="a language model's input: input_ids of N tokens and an attention mask (in training the "
                        "ids as labels too); replaces --input")


def _add_generate_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--generate", action="store_true",
                   help=f"a language model's generate() of --prompt + --new-tokens tokens: {what}")
    p.add_argument("--prompt", default=None, type=_whole, metavar="N", help="with --generate: tokens in each prompt")
    p.add_argument("--new-tokens", default=None, type=_whole, metavar="N",
                   help="with --generate: tokens generated for each prompt")


def _positive_int(text: str) -> int:
    from .inputs import parse_batch

    try:
        return parse_batch(text)
    except BurdenError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _depth(text: str) -> int:
    return _at_least(text, 0, "depth")


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", default=None, metavar="SIZE",
                   help=f"image input size: 224, 224x320 (H x W) or 3x224x224 (C x H x W); default: the "
                        f"model's own (timm's pretrained_cfg, torchvision's default weights), else "
                        f"{options.DEFAULT_INPUT}")
    p.add_argument("--inputs", default=None, metavar="SPEC",
                   help="the model's inputs when it does not take one image, shapes batch first: 2x128:int64, "
                        "2x3x224x224,2x10:int64, or input_ids=2x128:int64,attention_mask=2x128:int64 (a "
                        "dtype left out is the model's own); replaces --input and --batch")
    _add_seq_option(p)
    p.add_argument("--no-memory-check", dest="check_memory", action="store_false",
                   help="with --device cpu: run even when the run would hold more than half of the free memory")
    p.add_argument("--batch", default=None, type=_positive_int, metavar="N", help="batch size (default 1)")
    p.add_argument("--dtype", default=None, metavar="DTYPE",
                   help=f"{', '.join(options.DTYPE_NAMES)}: sets the bytes per value (default: the model's own "
                        f"parameter dtype, float32 for the registered models)")
    p.add_argument("--convention", default=options.DEFAULT_CONVENTION, metavar="NAME",
                   help=f"FLOP convention: {', '.join(options.CONVENTIONS)} (default {options.DEFAULT_CONVENTION}; "
                        f"see burden conventions)")
    p.add_argument("--memory", default=None, metavar="NAME",
                   help=f"feature-memory convention: {', '.join(options.MEMORY_CONVENTIONS)} (default: the FLOP "
                        f"convention's own)")
    p.add_argument("--device", default=None,
                   help="trace on 'meta' (no memory, any size) or on a real device such as 'cpu'; by default "
                        "meta, and the CPU for a model whose forward needs real values, when it fits in memory")


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="cpu", choices=("cpu", "cuda"),
                   help="how the peaks count bytes: cpu (default, exact, as the CPU allocator) or cuda (as "
                        "torch.cuda.max_memory_allocated: every tensor rounded up to 512 bytes)")
    p.add_argument("--world-size", default=1, type=_positive_int, metavar="N",
                   help="with --shard or --zero: the number of ranks (devices)")
    p.add_argument("--shard", default=None, choices=options.SHARDS,
                   help="with --mode training: trace one rank of the step under PyTorch's FSDP2 (fully_shard on "
                        "each block, then the root), in a fake process group; the figures are that rank's")
    p.add_argument("--tensor-parallel", default=1, type=_positive_int, metavar="N",
                   help="with --mode training: PyTorch's tensor parallelism within groups of N ranks, by the "
                        "model's own plan (a Hugging Face config's) or --tp-plan")
    p.add_argument("--shard-modules", default=None, metavar="LIST",
                   help="with --shard: the modules FSDP wraps, comma-separated paths or class names (default: the "
                        "model's blocks)")
    p.add_argument("--tp-plan", default=None, metavar="FILE",
                   help="with --tensor-parallel: a JSON object of module pattern -> "
                        f"{' | '.join(options.TP_STYLES)}")
    p.add_argument("--zero", default=0, type=int, choices=(0, 1, 2, 3),
                   help="quick arithmetic for DeepSpeed ZeRO, not a trace: stage 1 divides the optimizer state by "
                        "the world size, 2 the gradients too, 3 the parameters too")


def _parallel_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"world_size": args.world_size, "zero": args.zero, "shard": args.shard,
            "tensor_parallel": args.tensor_parallel, "shard_modules": args.shard_modules, "tp_plan": args.tp_plan}


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--optimizer", default=None, metavar="NAME",
                   help=f"with --mode training: any torch.optim optimizer by name ({', '.join(options.OPTIMIZERS)}; "
                        f"momentum is SGD with momentum 0.9) or package.module:Class; its own code runs, state and "
                        f"step temporaries included (default {options.DEFAULT_OPTIMIZER})")
    p.add_argument("--optimizer-impl", default=None, choices=options.OPTIMIZER_IMPLS,
                   help="with --mode training: the optimizer's implementation (default: as PyTorch picks it on the "
                        "target: single-tensor on cpu, foreach on cuda)")
    p.add_argument("--grad-accum", default=1, type=_positive_int, metavar="N",
                   help="with --mode training: accumulate the gradients of N micro-batches before each optimizer "
                        "step (the batch is the micro-batch)")


def _training_options(args: argparse.Namespace) -> dict:
    """The training step's options, refused outside training as the library refuses them."""
    if args.optimizer is not None and args.mode != "training":
        raise InputSpecError("--optimizer sets the optimizer of a training step: use --mode training")
    return {"optimizer": args.optimizer or options.DEFAULT_OPTIMIZER, "optimizer_impl": args.optimizer_impl,
            "grad_accum": args.grad_accum}


def _add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", default=None, choices=("bf16", "fp16"),
                   help="mixed precision as torch.autocast runs it on the CPU: matrix products and convolutions in "
                        "bf16 or fp16, float32 weights, gradients and optimizer state")
    p.add_argument("--checkpoint", default=None, metavar="MODULE[,MODULE...]",
                   help="with --mode training: run these modules under activation checkpointing "
                        "(torch.utils.checkpoint, non-reentrant): less memory, their forward recomputed in backward")
    p.add_argument("--checkpoint-depth", default=None, type=_positive_int, metavar="N",
                   help="with --mode training: checkpoint every module N levels down (1: the model's children)")


def _add_routing_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--routing", choices=options.ROUTINGS, default=options.ROUTINGS[0],
                   help="choices a model makes from its weights and reads (a mixture of experts' top-k, "
                        "generate()'s greedy token): balanced (default, the assumption named in the notes) or "
                        "refuse (assume nothing: such a model needs its values)")


def _add_profile_option(p: argparse.ArgumentParser, what: str = "the per-layer roofline time and bound") -> None:
    p.add_argument("--device-profile", default=None, metavar="NAME",
                   help=f"add {what} on a device: a data sheet ({', '.join(BUILT_IN_PROFILES)}), 'local' after "
                        f"burden calibrate, or a profile's JSON file (see burden profiles); a lower bound on time")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"malformed time {text!r}; give seconds, such as 2 or 0.5") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the time must be positive, got {text}")
    return value


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"malformed thread counts {text!r}; give 1,2,4") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"thread counts are whole numbers from 1, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="burden", description="What will this network cost? Parameter memory, feature memory "
                                               "and FLOPs of PyTorch models, per layer, under named rules.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    est = sub.add_parser("estimate", help="the burden of one model")
    est.add_argument("model", help="a registered name (burden list) or package.module:factory")
    _add_analysis_options(est)
    est.add_argument("--layers", action="store_true", help="also print the per-layer table")
    est.add_argument("--depth", type=_depth, default=None, metavar="N", help="with --layers: modules down to depth N")
    est.add_argument("--leaves", action="store_true", help="with --layers: only modules without submodules")
    est.add_argument("--format", choices=ESTIMATE_FORMATS, default="text",
                     help="text (default); json (every figure, layers included); csv (one row per layer, exact "
                          "integers); markdown or github (the summary and, with --layers, the layer table)")
    est.add_argument("--mode", choices=options.MODES, default=options.MODES[0],
                     help="inference (default) or training: adds one training step's memory and backward FLOPs")
    _add_training_options(est)
    _add_checkpoint_options(est)
    _add_device_options(est)
    _add_profile_option(est)
    _add_routing_option(est)
    est.set_defaults(run=_estimate)

    fit = sub.add_parser("fit", help="the largest batch whose peak fits a memory budget")
    fit.add_argument("model", help="a registered name (burden list) or package.module:factory")
    fit.add_argument("--memory", required=True, metavar="SIZE",
                     help="the budget: 24GiB (2^30 bytes), 24GB (10^9), 24G (GiB) or a number of bytes")
    fit.add_argument("--input", default=None, metavar="SIZE", help="image input size, as in estimate")
    fit.add_argument("--inputs", default=None, metavar="SPEC",
                     help="the model's inputs, as in estimate; their leading dimension is the batch the search sets")
    _add_seq_option(fit)
    fit.add_argument("--dtype", default=None, metavar="DTYPE",
                     help=f"{', '.join(options.DTYPE_NAMES)}: bytes per value (default: the model's own)")
    fit.add_argument("--mode", choices=options.MODES, default="training",
                     help="training (default: one step, forward, backward and optimizer state) or inference")
    _add_training_options(fit)
    _add_checkpoint_options(fit)
    _add_device_options(fit)
    fit.add_argument("--device-profile", default=None, metavar="NAME",
                     help="with --target cuda: the GPU (a data sheet such as h100, or a measured profile), whose "
                          "compute capability picks the kernels and the cuBLAS workspace, and whose CUDA context "
                          "is set aside from the budget (default: an H100 and a 512 MiB context)")
    _add_routing_option(fit)
    _add_generate_options(fit, "the largest batch that fits, or with --batch the longest prompt")
    fit.add_argument("--batch", default=None, type=_positive_int, metavar="N",
                     help="with --generate: the batch, to find the longest prompt instead")
    fit.add_argument("--cache", default="dynamic", choices=("dynamic", "static"),
                     help="with --generate: the KV cache, as in burden generate")
    fit.add_argument("--format", choices=("text", "json"), default="text",
                     help="text (default) or json (exact integers: budget_bytes, max_batch, peak_bytes, ...)")
    fit.set_defaults(run=_fit)

    gen = sub.add_parser("generate", help="a language model's generate(): KV cache, prefill and decode, tokens/s")
    gen.add_argument("model", help="a Hugging Face config: a config.json, a folder holding one, or hf:ORG/NAME "
                                   "(only the config is read, never weights); or package.module:factory")
    gen.add_argument("--prompt", required=True, type=_whole, metavar="N", help="tokens in each prompt")
    gen.add_argument("--new-tokens", required=True, type=_whole, metavar="N",
                     help="tokens generated for each prompt")
    gen.add_argument("--batch", default=1, type=_positive_int, metavar="N", help="prompts at once (default 1)")
    gen.add_argument("--dtype", default=None, metavar="DTYPE",
                     help=f"{', '.join(options.DTYPE_NAMES)}: the dtype the model runs in (default: the config's own)")
    gen.add_argument("--cache", default="dynamic", choices=("dynamic", "static"),
                     help="dynamic (default: the cache class the model picks) or static (preallocated to the "
                          "longest context)")
    gen.add_argument("--convention", default=options.DEFAULT_CONVENTION, metavar="NAME",
                     help="FLOP convention, as in estimate")
    gen.add_argument("--target", default="cpu", choices=("cpu", "cuda"),
                     help="how the peaks count bytes, as in estimate (cuda: as torch.cuda.max_memory_allocated)")
    _add_profile_option(gen, "time to first token, time per token, tokens/s and each layer's bound")
    _add_routing_option(gen)
    gen.add_argument("--layers", action="store_true",
                     help="with --device-profile: also each kind of layer's time and bound in each phase")
    gen.add_argument("--format", choices=("text", "json", "html"), default="text",
                     help="text (default), json (exact integers: kv_cache_bytes, prefill_peak_bytes, decode_flops, "
                          "...) or html (a self-contained page)")
    gen.set_defaults(run=_generate)

    cmp_ = sub.add_parser("compare", help="one table across models (the reference table's shape)")
    cmp_.add_argument("models", nargs="*", metavar="MODEL", help="models to compare")
    cmp_.add_argument("--all", action="store_true", help="every registered model")
    _add_analysis_options(cmp_)
    cmp_.add_argument("--fit", default=None, metavar="SIZE",
                      help="rank the models by the largest batch whose training step (Adam) fits in SIZE (24GiB)")
    _add_profile_option(cmp_, "each model's predicted time and samples/s")
    cmp_.add_argument("--bench", default=None, choices=("cpu", "cuda"), metavar="DEVICE",
                      help="also run each model on DEVICE (cpu or cuda) and add its measured time, samples/s and "
                           "efficiency (as burden bench)")
    cmp_.add_argument("--format", default="github",
                      help="github or markdown (default), latex, html, csv, json or any tabulate format")
    cmp_.set_defaults(run=_compare)

    scl = sub.add_parser("scale", help="feature-extraction burden of a trunk over input sizes")
    scl.add_argument("model", help="a registered name, or package.module:factory with --trunk")
    scl.add_argument("--scales", default=options.DEFAULT_SCALES,
                     help=f"start:stop:step or a list (default {options.DEFAULT_SCALES})")
    scl.add_argument("--batch", default=options.DEFAULT_SCALE_BATCH, type=_positive_int, metavar="N",
                     help=f"batch size (default {options.DEFAULT_SCALE_BATCH})")
    scl.add_argument("--base", default=options.DEFAULT_SCALE_BASE, type=_positive_int, metavar="PIXELS",
                     help=f"size at scale 1 (default {options.DEFAULT_SCALE_BASE})")
    scl.add_argument("--trunk", default=None, metavar="MODULE_PATH",
                     help="module whose output is the feature map (default: the last stage, before pooling)")
    scl.add_argument("--dtype", default=None, help="bytes per value as in estimate (default: the model's own)")
    scl.add_argument("--convention", default=options.DEFAULT_CONVENTION, metavar="NAME",
                     help="FLOP convention, as in estimate")
    scl.add_argument("--format", default="github",
                     help="github or markdown (default), json or any tabulate format")
    scl.set_defaults(run=_scale)

    rep = sub.add_parser("report", help="self-contained HTML pages per model")
    rep.add_argument("models", nargs="*", metavar="MODEL", help="models to report on")
    rep.add_argument("--all", action="store_true", help="every registered model, plus index.html and README.md")
    rep.add_argument("--out", default="reports", metavar="DIR", help="output folder (default reports/)")
    rep.add_argument("--input", default=options.DEFAULT_INPUT, metavar="SIZE", help="input size, as in estimate")
    rep.add_argument("--convention", default=options.DEFAULT_CONVENTION, metavar="NAME",
                     help="FLOP convention, as in estimate")
    rep.add_argument("--batch", default=1, type=_positive_int, metavar="N", help="batch size (default 1)")
    rep.add_argument("--dtype", default=None, metavar="DTYPE",
                     help=f"{', '.join(options.DTYPE_NAMES)} (default: the model's own)")
    rep.add_argument("--mode", default=options.MODES[0], choices=options.MODES,
                     help="training adds a training step to each page (default inference)")
    rep.add_argument("--optimizer", default=None, metavar="NAME",
                     help=f"the training step's optimizer, with --mode training (default {options.DEFAULT_OPTIMIZER})")
    rep.add_argument("--fit", default=None, metavar="SIZE",
                     help="add what fits in this much memory (24GiB, as burden fit --memory) to each page")
    rep.add_argument("--chart-depth", default=None, type=_positive_int, metavar="N",
                     help="module depth of the profile charts' bars (default: the deepest with at most 60 bars)")
    _add_profile_option(rep, "a roofline chart and the per-layer time and bound")
    rep.set_defaults(run=_report)

    ben = sub.add_parser("bench", help="time the real model (random weights) beside its roofline bound")
    ben.add_argument("model", help="a registered name (burden list) or package.module:factory")
    ben.add_argument("--input", default=None, metavar="SIZE", help="image input size, as in estimate")
    ben.add_argument("--inputs", default=None, metavar="SPEC", help="the model's inputs, as in estimate")
    _add_seq_option(ben)
    ben.add_argument("--batch", default=None, type=_positive_int, metavar="N", help="batch size (default 1)")
    ben.add_argument("--dtype", default=None, metavar="DTYPE",
                     help=f"{', '.join(options.DTYPE_NAMES)}: the dtype the model runs in (default: its own)")
    ben.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where it runs (default cpu)")
    ben.add_argument("--device-profile", default=None, metavar="NAME",
                     help="the profile whose roofline it is compared with (default: 'local' on a CPU once "
                          "calibrated, the GPU's data sheet on cuda)")
    ben.add_argument("--min-time", default=1.0, type=_seconds, metavar="SECONDS",
                     help="time blocks of passes for at least this long (default 1)")
    ben.add_argument("--no-modules", dest="per_module", action="store_false",
                     help="leave out the per-module times (forward hooks)")
    _add_generate_options(ben, "time to first token and tokens/s, timed beside burden generate's roofline "
                               "(2 new tokens or more)")
    ben.add_argument("--format", choices=("text", "json"), default="text",
                     help="text (default) or json (median_seconds, samples_per_second, efficiency, modules...)")
    ben.set_defaults(run=_bench)

    cal = sub.add_parser("calibrate", help="measure this machine's peak FLOP/s and bandwidth as a device profile")
    cal.add_argument("--name", default="local", help="the profile's name (default local)")
    cal.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="what to measure (default cpu)")
    cal.add_argument("--dtype", default=None, metavar="DTYPE[,DTYPE...]",
                     help="dtypes whose peaks to measure (default float32, bfloat16, float16; tf32 on cuda too)")
    cal.add_argument("--threads", default=None, type=_counts, metavar="N[,N...]",
                     help="CPU thread counts to measure with (default 1 and all of this process's)")
    cal.add_argument("--quick", action="store_true", help="small problems only: a rough profile in seconds")
    cal.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    cal.set_defaults(run=_calibrate)

    prf = sub.add_parser("profiles", help="the device profiles: data sheets and measured ones")
    prf.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or json")
    prf.set_defaults(run=_profiles)

    cnv = sub.add_parser("conventions", help="the counting conventions and their rules")
    cnv.set_defaults(run=_conventions)

    chk = sub.add_parser("check", help="each convention beside fvcore's and PyTorch's own counts")
    chk.add_argument("model", help="a registered name or package.module:factory")
    chk.add_argument("--input", default=None, metavar="SIZE", help="input size, as in estimate")
    chk.add_argument("--batch", default=1, type=_positive_int, metavar="N", help="batch size (default 1)")
    chk.set_defaults(run=_check)

    lst = sub.add_parser("list", help="the registered models")
    lst.set_defaults(run=_list)
    return parser


def _model_names(args: argparse.Namespace) -> list[str]:
    from .models import list_models

    if args.all and args.models:
        raise InputSpecError("give model names or --all, not both")
    names = list_models() if args.all else list(args.models)
    if not names:
        raise InputSpecError("name at least one model, or --all")
    return names


def _note(fmt: str, text: str) -> str:
    """A line naming the rules under a table, as a comment where the table is meant to be pasted."""
    if fmt.startswith("latex"):
        return f"% {text}"
    if fmt in ("html", "unsafehtml"):
        return f"<!-- {text} -->"
    return text


def _compare(args: argparse.Namespace) -> int:
    from .api import compare
    from .render.text import comparison_csv

    c = compare(_model_names(args), **_input_options(args), dtype=args.dtype, convention=args.convention,
                memory=args.memory, device=args.device, fit_memory=args.fit, device_profile=args.device_profile,
                bench_device=args.bench)
    fmt = _table_format(args.format)
    if fmt == "json":
        print(c.to_json())
    elif fmt == "csv":
        print(comparison_csv(c), end="")
    else:
        print(c.table(fmt=fmt))
        e = c.estimates[0]
        print(_note(fmt, f"burden {e.convention} convention (memory: {e.memory_convention}), "
                                 f"batch {e.batch}, {e.dtype}"
                         + (f"; ranked by the largest batch whose training step (Adam, input batch included) "
                            f"fits in {args.fit}" if args.fit else "")
                         + (f"; predicted time: a roofline lower bound on {e.latency.device}" if e.latency else "")
                         + (f"; measured on {c.benches[0].device_name}" if c.benches else "")))
    return 0


def _scale(args: argparse.Namespace) -> int:
    from .api import scale

    t = scale(args.model, args.scales, batch_size=args.batch, trunk=args.trunk, base=args.base, dtype=args.dtype,
              convention=args.convention)
    fmt = _table_format(args.format)
    if fmt == "json":
        print(t.to_json())
    else:
        print(t.table(fmt=fmt))
        print(_note(fmt, f"burden {t.convention} convention, {t.dtype}, trunk {t.trunk}"))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .reports import write_reports

    if args.optimizer is not None and args.mode != "training":
        raise InputSpecError("--optimizer sets the optimizer of a training step: add --mode training")
    written = write_reports(_model_names(args), args.out, input_size=args.input, convention=args.convention,
                            index=args.all, batch_size=args.batch, dtype=args.dtype, mode=args.mode,
                            optimizer=args.optimizer, chart_depth=args.chart_depth, fit_memory=args.fit,
                            device_profile=args.device_profile)
    for path in written:
        print(path)
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from .api import estimate
    from .render.text import summary_table as text_summary_table

    e = estimate(args.model, **_input_options(args), dtype=args.dtype, convention=args.convention,
                 memory=args.memory, device=args.device, mode=args.mode, **_training_options(args),
                 check_memory=args.check_memory,
                 progress=lambda line: print(line, file=sys.stderr, flush=True), checkpoint=args.checkpoint,
                 checkpoint_depth=args.checkpoint_depth, amp=args.amp, target=args.target,
                 **_parallel_options(args), device_profile=args.device_profile, routing=args.routing)
    layers = args.layers or args.depth is not None or args.leaves
    if args.format == "json":
        print(e.to_json())
    elif args.format == "csv":
        print(e.layers_csv(depth=args.depth, leaves=args.leaves), end="")
    elif args.format == "text":
        print(e.summary())
        if layers:
            print()
            print(e.table(fmt="simple", depth=args.depth, leaves=args.leaves))
    else:
        print(text_summary_table(e, _table_format(args.format)))
        if layers:
            print()
            print(e.table(fmt=_table_format(args.format), depth=args.depth, leaves=args.leaves))
    return 0


def _no_inputs_with_generate(args: argparse.Namespace) -> None:
    if args.input is not None or args.inputs is not None or args.seq is not None:
        raise InputSpecError("--generate sets the inputs by --prompt and --batch: leave out --input, --inputs "
                             "and --seq")


def _fit_generate(args: argparse.Namespace) -> int:
    from .api import fit_generate

    if args.new_tokens is None or (args.prompt is None and args.batch is None):
        raise InputSpecError("--generate needs --new-tokens, and --prompt to find the largest batch or --batch to "
                             "find the longest prompt")
    _no_inputs_with_generate(args)
    f = fit_generate(args.model, args.memory, args.prompt, args.new_tokens, batch_size=args.batch, dtype=args.dtype,
                     cache=args.cache, target=args.target, device_profile=args.device_profile,
                     routing=args.routing)
    print(f.to_json() if args.format == "json" else f.summary())
    return 0


def _fit(args: argparse.Namespace) -> int:
    from .api import fit

    if args.generate:
        return _fit_generate(args)
    if args.prompt is not None or args.new_tokens is not None or args.batch is not None:
        raise InputSpecError("--prompt, --new-tokens and --batch size a generation: add --generate")

    if args.inputs is not None and args.input is not None:
        raise InputSpecError("--inputs gives every input's shape: leave out --input")
    args.batch = None  # the search sets the batch
    sizes = _input_options(args)
    sizes.pop("batch_size", None)
    f = fit(args.model, args.memory, **sizes, mode=args.mode, **_training_options(args), dtype=args.dtype,
            device_profile=args.device_profile, checkpoint=args.checkpoint, checkpoint_depth=args.checkpoint_depth,
            amp=args.amp, target=args.target, **_parallel_options(args), routing=args.routing)
    print(f.to_json() if args.format == "json" else f.summary())
    return 0


def _generate(args: argparse.Namespace) -> int:
    from .api import generate

    if args.layers and args.device_profile is None:
        raise InputSpecError("--layers gives each layer's time and bound: add --device-profile")
    g = generate(args.model, args.prompt, args.new_tokens, batch_size=args.batch, dtype=args.dtype,
                 convention=args.convention, cache=args.cache, target=args.target,
                 device_profile=args.device_profile, routing=args.routing)
    if args.format == "json":
        print(g.to_json())
    elif args.format == "html":
        print(g.to_html(), end="")
    else:
        print(g.summary())
        if args.layers:
            print()
            print(g.layers(fmt="simple"))
    return 0


def _bench_generate(args: argparse.Namespace) -> int:
    from .api import bench_generate

    if args.prompt is None or args.new_tokens is None:
        raise InputSpecError("--generate needs --prompt and --new-tokens")
    _no_inputs_with_generate(args)
    b = bench_generate(args.model, args.prompt, args.new_tokens, batch_size=args.batch or 1, dtype=args.dtype,
                       device=args.device, device_profile=args.device_profile, min_run_time=args.min_time)
    print(b.to_json() if args.format == "json" else b.summary())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .api import bench

    if args.generate:
        return _bench_generate(args)
    if args.prompt is not None or args.new_tokens is not None:
        raise InputSpecError("--prompt and --new-tokens size a generation: add --generate")
    b = bench(args.model, **_input_options(args), dtype=args.dtype, device=args.device,
              device_profile=args.device_profile, min_run_time=args.min_time, per_module=args.per_module)
    print(b.to_json() if args.format == "json" else b.summary())
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    import json

    from .api import calibrate
    from .devices import profile_folder, to_dict
    from .render.text import profiles_text

    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()] if args.dtype else None
    say = None if args.format == "json" else (lambda line: print(line, file=sys.stderr, flush=True))
    profile = calibrate(args.name, device=args.device, dtypes=dtypes, threads=args.threads, quick=args.quick,
                        progress=say)
    if args.format == "json":
        print(json.dumps(to_dict(profile), indent=2))
    else:
        print(profiles_text([profile]))
        print(f"stored in {profile_folder() / (profile.name + '.json')}; use it with --device-profile {profile.name}")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    import json

    from .devices import all_profiles, to_dict
    from .render.text import profiles_text

    profiles = all_profiles()
    print(json.dumps([to_dict(p) for p in profiles], indent=2) if args.format == "json" else profiles_text(profiles))
    return 0


def _conventions(args: argparse.Namespace) -> int:
    from .render.text import conventions_text

    print(conventions_text())
    return 0


def _check(args: argparse.Namespace) -> int:
    from .check import check
    from .render.text import check_report

    report = check(args.model, args.input, batch_size=args.batch)
    print(check_report(report))
    return 0 if report.ok else 1


def _list(args: argparse.Namespace) -> int:
    from .catalog import MODELS  # the catalog, not the builders: no torch import

    width = max(len(n) for n in MODELS)
    for name, card in MODELS.items():
        print(f"{name.ljust(width)}  {card.summary}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except InternalError as exc:  # burden's own bug, not the user's input
        print(f"burden: {exc}", file=sys.stderr)
        return 1
    except BurdenError as exc:
        print(f"burden: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("burden: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug in burden or in the user's model code: still one line
        if os.environ.get("BURDEN_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"burden: internal error: {type(exc).__name__}: {first} (set BURDEN_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
