"""Every causal language model that transformers ships, analysed on meta from its default config.

For each model type in ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``: the default config
(``AutoConfig.for_model``, weights in bfloat16), the model built on the meta device (no weight is
ever made or read), and three analyses, each on its own:

- **inference**: ``burden.estimate(model, seq=128, convention="torch", device="meta")``;
- **training**: the same with ``mode="training"`` (the ids as labels, the model's own loss);
- **generate**: ``generate()`` with its KV cache, a prompt of 128 tokens and 4 new ones.

Each analysis ends "ok", with a *stated reason* (a ``BurdenError`` that names what the model
needs, or a config that transformers cannot build), or with a *raw exception*: anything else,
burden's ``InternalError`` included, is a bug to fix. Every model runs in a fresh process with a
timeout, so that one hang or crash does not stop the run; records go to a JSON-lines file as they
finish and the Markdown summary is rewritten after each.

    python benches/hf_zoo.py                      # all 200 types (about 15 minutes on 2 cores)
    python benches/hf_zoo.py --ci                 # a fixed subset of ~15; exit 1 on a regression
    python benches/hf_zoo.py --types llama,bart   # some types; their records replace earlier ones
    python benches/hf_zoo.py --worker llama --record /tmp/llama.json   # one type, in this process
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from zoo import _machine, _table, _verdict, burden_tree  # noqa: E402  (the other zoo's helpers)

ROOT = HERE.parent
RESULTS = HERE / "results"

SEQ, NEW_TOKENS = 128, 4
TIMEOUT_S = 900  # a default config is a full-size model: dozens of layers, three traces and two generate() runs
WORKER_RSS_LIMIT = 9 * 2**30
ANALYSES = ("inference", "training", "generate")
OK, STATED, RAW = "ok", "stated", "raw"
# A varied subset: dense decoders, mixtures of experts, encoder-decoders, state spaces and hybrids,
# models that read their masks' and positions' values (BART, Marian), a router read with .tolist()
# (JetMoE: balanced routing), generated ids read through a Python-list index (BigBird), and two
# repaired configs (DBRX; MusicGen's decoder, one row per codebook).
CI_TYPES = ("llama", "gpt2", "mistral", "mixtral", "qwen2_moe", "gemma3_text", "bart", "marian", "deepseek_v3",
            "falcon", "phi3", "mamba", "jamba", "bloom", "gpt_neox", "jetmoe", "big_bird", "dbrx", "musicgen")
# Why a type is not analysed, where it is not burden's doing: each checked by hand (the same failure
# on the CPU with real tensors and a small config, or outside any trace). The table shows the
# reason beside the error, so that a new failure, or a changed one, stands out.
NOT_BURDENS = {
    "gemma3n": "its vision tower needs timm, which this environment does not have",
    "gemma4_assistant": "the default config fails its own validation (hidden_size_per_layer_input)",
    "musicgen": "training: its loss wants labels of (batch, tokens, codebooks), not the ids (the same on the CPU); "
                "generate: burden's own limit, left alone: it runs generate() for one new token, and MusicGen's "
                "delay pattern needs room for prompt + codebooks - 1",
    "musicgen_melody": "as musicgen",
    "qwen4_exp": "the default config has no token budget for its sparse attention indexer",
    "qwen4_exp_text": "the default config has no token budget for its sparse attention indexer",
    "reformer": "training: its axial position embeddings need a sequence of exactly 64 x 64 tokens; generate: its "
                "LSH attention reads values (the same need on the CPU; far too big for the CPU fallback here)",
    "bamba": "the default config has no attention layer, and transformers' mask code asks the cache for one "
             "(the same on the CPU)",
    "granitemoehybrid": "the default config has no attention layer, and transformers' mask code asks the cache for "
                        "one (the same on the CPU)",
    "blt": "BltModel builds its cache from the top config, which has no num_hidden_layers (the same outside any trace)",
    "gemma4_unified_assistant": "a draft model: it needs inputs_embeds and shared_kv_states from its target model",
    "xmod": "it needs lang_ids (or set_default_language()), an input it names",
    "git": "training: its loss skips the image tokens (197 positions), more than the 128 given, without pixel_values "
           "(the same on the CPU)",
}


@dataclass(frozen=True)
class Repair:
    """A default config that transformers cannot build, or whose model cannot run, made whole with the
    fewest values, each the one the model's own code or release uses. The record and the table name it."""

    why: str
    fix: Callable[[Any], Any]  # the config -> the config to build (the same one, changed, or a part of it)
    model_class: str | None = None  # where AutoModelForCausalLM cannot take the fixed config
    rows: Callable[[Any], int] = lambda config: 1  # input rows for one sample


def _setting(**values: Any) -> Callable[[Any], Any]:
    """A fix that sets config attributes (``a__b`` for ``config.a.b``); a callable value is given the config."""
    def fix(config: Any) -> Any:
        for name, value in values.items():
            target = config
            *path, leaf = name.split("__")
            for part in path:
                target = getattr(target, part)
            setattr(target, leaf, value(config) if callable(value) else value)
        return config
    return fix


_HEAD_DIM = ("the default config leaves head_dim None: hidden_size / num_attention_heads, as Llama derives it",
             _setting(head_dim=lambda c: c.hidden_size // c.num_attention_heads))
_MUSIC = Repair("AutoModelForCausalLM is given the composite config: its decoder's config, to the causal-LM class, "
                "with one row per codebook", lambda c: c.decoder, "MusicgenForCausalLM", lambda c: c.num_codebooks)
REPAIRS: dict[str, Repair] = {
    "hunyuan_v1_dense": Repair(*_HEAD_DIM),
    "hunyuan_v1_moe": Repair(*_HEAD_DIM),
    "ministral": Repair(*_HEAD_DIM),
    "nemotron": Repair("the default config leaves num_key_value_heads None: num_attention_heads (no GQA), the "
                       "config's own documented default",
                       _setting(num_key_value_heads=lambda c: c.num_attention_heads)),
    "reformer": Repair("ReformerModelWithLMHead asserts is_decoder=True, which the default config does not set",
                       _setting(is_decoder=True)),
    "dbrx": Repair("the default attention config has no rope_theta and clip_qkv None, which the model clamps with: "
                   "the config's rope_theta and DBRX's clip_qkv 8",
                   _setting(attn_config__rope_theta=lambda c: c.rope_parameters["rope_theta"],
                            attn_config__clip_qkv=8.0)),
    "deepseek_v2": Repair("the default config leaves num_experts_per_tok None (topk(k=None)): DeepSeek-V2's 6",
                          _setting(num_experts_per_tok=6)),
    "dots1": Repair("the default config leaves the experts None (torch.empty(None, ...)): dots.llm1's 128 routed, "
                    "6 per token, 2 shared", _setting(n_routed_experts=128, num_experts_per_tok=6, n_shared_experts=2)),
    "lfm2_moe": Repair("the default config leaves layer_types None: every layer full attention, as LFM2's own "
                       "config defaults", _setting(layer_types=lambda c: ["full_attention"] * c.num_hidden_layers)),
    "cohere_compass_text": Repair("the default config has no RoPE parameters for its 'full_attention' layers: "
                                  "the default RoPE, theta 10000",
                                  _setting(rope_parameters={"full_attention": {"rope_type": "default",
                                                                               "rope_theta": 10000.0}})),
    "blenderbot": Repair("the causal LM sizes its cache by encoder_layers (2) for a decoder of 24 layers (the same "
                         "on the CPU): encoder_layers = decoder_layers",
                         _setting(encoder_layers=lambda c: c.decoder_layers)),
    "xlnet": Repair("in bfloat16 its einsum mixes float32 and bfloat16 tensors (the same on the CPU): float32",
                    _setting(dtype="float32")),
    "musicgen": _MUSIC,
    "musicgen_melody": Repair(_MUSIC.why, _MUSIC.fix, "MusicgenMelodyForCausalLM", _MUSIC.rows),
}

WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
              "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def list_types() -> list[str]:
    """Every model type that has a causal language model class, sorted."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


# --- the worker: one model type in its own process ---------------------------------------------

def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "")[:400]


def classify(exc: BaseException) -> dict[str, Any]:
    """An exception as an outcome: a BurdenError but InternalError states a reason; the rest are raw."""
    from burden.errors import BurdenError, InternalError

    stated = isinstance(exc, BurdenError) and not isinstance(exc, InternalError)
    origin = exc.__cause__ if isinstance(exc, InternalError) and exc.__cause__ is not None else exc
    out = {"outcome": STATED if stated else RAW, "error": type(exc).__name__, "message": one_line(exc)}
    if not stated:
        out["traceback"] = "".join(traceback.format_exception(origin)[-10:])[-4000:]
    return out


def build(model_type: str) -> tuple[Any, int]:
    """The default config's causal language model on meta, in bfloat16 (unless its repair says otherwise)
    and eval mode, and the input rows that make one sample."""
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(model_type)
    config.dtype = torch.bfloat16
    repair = REPAIRS.get(model_type)
    if repair is not None:
        config = repair.fix(config)
    dtype = getattr(torch, config.dtype) if isinstance(config.dtype, str) else config.dtype
    config.dtype = dtype
    maker = getattr(transformers, repair.model_class) if repair and repair.model_class else None
    with torch.device("meta"):
        model = (maker._from_config(config, dtype=dtype) if maker
                 else transformers.AutoModelForCausalLM.from_config(config, dtype=dtype))
    return model.eval(), repair.rows(config) if repair else 1


def estimate(model: Any, rows: int, mode: str) -> dict[str, Any]:
    import burden

    e = burden.estimate(model, seq=SEQ, batch_size=rows, convention="torch", device="meta", mode=mode)
    figures = {"flops": e.flops, "peak_bytes": e.peak_bytes, "notes": list(e.notes)}
    if e.training is not None:
        figures["training_peak_bytes"] = e.training.training_peak_bytes
    return figures


def generate(model: Any, rows: int) -> dict[str, Any]:
    import burden

    g = burden.generate(model, SEQ, NEW_TOKENS, batch_size=rows)
    return {"kv_cache_bytes": g.kv_cache_bytes, "peak_bytes": g.peak_bytes, "prefill_flops": g.prefill.flops,
            "decode_flops": g.decode.flops if g.decode is not None else None, "notes": list(g.notes)}


RUNS: dict[str, Callable[[Any, int], dict[str, Any]]] = {"inference": partial(estimate, mode="inference"),
                                                    "training": partial(estimate, mode="training"),
                                                    "generate": generate}


def with_assumptions(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``fn()``, and the assumptions (``burden.routing``) that its traces' reads rested on: every
    trace's known values are watched while it runs."""
    from burden import values
    from burden.patching import replaced

    made: list[Any] = []
    original = values.KnownValues.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    with replaced(values.KnownValues, "__init__", init):
        result = fn()
    return result, sorted({note for known in made for note in known.assumptions})


class Worker:
    """Builds one type's model and runs the analyses, saving the record after each, so that a
    timeout or a crash still leaves what was found before it."""

    def __init__(self, model_type: str, record_path: Path) -> None:
        self.path = record_path
        self.rec: dict[str, Any] = {"type": model_type, "stage": "start", "seconds": {}}

    def save(self, stage: str) -> None:
        self.rec["stage"] = stage
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.rec, default=str))
        tmp.replace(self.path)

    def timed(self, key: str, fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
        start = time.perf_counter()
        try:
            value, result = fn(), {"outcome": OK}
        except Exception as exc:  # noqa: BLE001 - every exception is a finding
            value, result = None, classify(exc)
        self.rec["seconds"][key] = round(time.perf_counter() - start, 2)
        return value, result

    def run(self, analyses: tuple[str, ...] = ANALYSES) -> None:
        import torch

        self.rec["burden_tree"] = burden_tree()
        torch.manual_seed(0)
        if self.rec["type"] in REPAIRS:
            self.rec["repair"] = REPAIRS[self.rec["type"]].why
        made, built = self.timed("build", lambda: build(self.rec["type"]))
        if made is None:
            # transformers' own failure to make the model from its default config: not burden's
            self.rec["build"] = {**built, "outcome": STATED, "reason": "the config cannot build"}
            self.save("done")
            return
        model, rows = made
        self.rec["class"] = type(model).__name__
        self.rec["params"] = sum(p.numel() for p in model.parameters())
        self.save("built")
        for name in analyses:
            found, result = self.timed(name, lambda: with_assumptions(lambda: RUNS[name](model, rows)))
            figures, assumed = found or ({}, [])
            self.rec[name] = {**result, **figures, "assumed": assumed}
            self.save(name)
        self.save("done")


# --- the parent: a fresh process per type ------------------------------------------------------

@dataclass
class Running:
    model_type: str
    proc: subprocess.Popen
    record: Path
    log: Path
    started: float
    peak_rss: int = 0


def _start(model_type: str, scratch: Path, analyses: tuple[str, ...]) -> Running:
    record, log = scratch / f"{model_type}.json", scratch / f"{model_type}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", model_type, "--record", str(record),
           "--analyses", ",".join(analyses)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                env={**os.environ, **WORKER_ENV})
    return Running(model_type, proc, record, log, time.monotonic())


def _finish(run: Running, killed: str | None) -> dict[str, Any]:
    """The worker's record, completed with its wall time and, if it did not finish, how it ended."""
    try:
        rec = json.loads(run.record.read_text())
    except (OSError, ValueError):
        rec = {"type": run.model_type, "stage": "start", "seconds": {}}
    rec["wall_s"] = round(time.monotonic() - run.started, 1)
    rec["peak_rss"] = run.peak_rss
    if killed or rec.get("stage") != "done":
        tail = run.log.read_text(errors="replace")[-1500:] if run.log.exists() else ""
        rec["died"] = {"how": killed or f"exit {run.proc.returncode}", "stage": rec.get("stage"), "log_tail": tail}
    return rec


def run_pool(types: list[str], jobs: int, analyses: tuple[str, ...], on_record: Callable[[dict], None]) -> None:
    """Each type in a fresh process, ``jobs`` at a time, with a timeout and an RSS cap."""
    todo, running = list(reversed(types)), []
    with tempfile.TemporaryDirectory(prefix="hf-zoo-") as tmp:
        try:
            while todo or running:
                while todo and len(running) < jobs:
                    running.append(_start(todo.pop(), Path(tmp), analyses))
                time.sleep(0.2)
                for run in list(running):
                    killed = _verdict(run, TIMEOUT_S, WORKER_RSS_LIMIT)
                    if killed:
                        os.killpg(run.proc.pid, 9)
                    elif run.proc.poll() is None:
                        continue
                    run.proc.wait()
                    running.remove(run)
                    on_record(_finish(run, killed))
        finally:  # interrupted: no worker outlives the run
            for run in running:
                os.killpg(run.proc.pid, 9)


# --- outcomes and the summary ------------------------------------------------------------------

def outcome(rec: dict[str, Any], analysis: str) -> str:
    """ok, stated or raw for one analysis of a record; a worker that died is raw (a hang or a crash)."""
    if "build" in rec:
        return STATED
    if analysis in rec:
        return rec[analysis]["outcome"]
    return RAW if "died" in rec else "not run"


def analysed(rec: dict[str, Any]) -> bool:
    return outcome(rec, "inference") == OK


def _cell(rec: dict[str, Any], analysis: str) -> str:
    if "build" in rec:
        return "config cannot build"
    result = rec.get(analysis)
    if result is None:
        return f"**died** ({rec['died']['how']})" if "died" in rec else "not run"
    if result["outcome"] == OK:
        return "ok, routing assumed" if result.get("assumed") else OK
    text = f"{result['error']}: {result['message']}"
    return text if result["outcome"] == STATED else f"**raw** {text}"


def _params(rec: dict[str, Any]) -> str:
    n = rec.get("params")
    return "" if n is None else f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def summarise(records: dict[str, dict[str, Any]], runs: list[dict[str, Any]], planned: int) -> str:
    recs = [records[t] for t in sorted(records)]
    counts = [[a] + [sum(outcome(r, a) == o for r in recs) for o in (OK, STATED, RAW)] for a in ANALYSES]
    died = [r for r in recs if "died" in r]
    rows = [[r["type"], r.get("class", ""), _params(r)] + [_cell(r, a) for a in ANALYSES]
            + [f"{r.get('wall_s', sum(r.get('seconds', {}).values())):.0f}"] for r in recs]
    unbuilt = [[r["type"], f"{r['build']['error']}: {r['build']['message']}", NOT_BURDENS.get(r["type"], "**?**")]
               for r in recs if "build" in r]
    stopped = [[r["type"], a, _cell(r, a), NOT_BURDENS.get(r["type"], "**?**")] for r in recs if "build" not in r
               for a in ANALYSES if outcome(r, a) != OK]
    repaired = [[r["type"], r["repair"]] for r in recs if "repair" in r]
    assumed = {n: sorted({r["type"] for r in recs for a in ANALYSES if n in (r.get(a) or {}).get("assumed", [])})
               for n in sorted({n for r in recs for a in ANALYSES for n in (r.get(a) or {}).get("assumed", [])})}
    timed = [[r["ended"], r["types"], r["jobs"], f"{r['wall_s'] / 60:.1f}"] for r in runs]
    parts = [
        "# Every causal language model in transformers, on meta\n\n",
        f"Generated by `python benches/hf_zoo.py`. Machine: {_machine()}. {len(recs)} of {planned} types "
        f"done. Each type's default config (`AutoConfig.for_model`), weights in bfloat16, built on meta; batch 1, "
        f"{SEQ} tokens (`convention='torch'`, `device='meta'`); generate: a prompt of {SEQ} and {NEW_TOKENS} new "
        f"tokens. One fresh process per type (timeout {TIMEOUT_S} s).\n\n",
        f"**Analysed on meta (inference ok): {sum(analysed(r) for r in recs)} of {len(recs)}**, "
        f"{sum(analysed(r) and 'repair' in r for r in recs)} of them after a stated repair of their default config "
        f"(below); configs that cannot build: {len(unbuilt)}; workers that died: {len(died)}.\n\n",
        _table(["analysis", OK, "stated reason", "raw exception"], counts),
        "\n## Runs that made these records\n\n", _table(["ended", "types", "at a time", "wall time (min)"], timed),
        "\n## Assumptions the analyses rested on\n\n",
        "".join(f"- {n} (`burden/routing.py`): {', '.join(types)}\n" for n, types in assumed.items()) or "none\n",
        "\n## Default configs repaired before the build\n\n", _table(["type", "what and why"], repaired),
        "\n## Configs transformers cannot build\n\n", _table(["type", "error", "why"], unbuilt),
        "\n## Analyses that did not end ok\n\n", _table(["type", "analysis", "outcome", "why"], stopped),
        "\n## Every type\n\n",
        _table(["type", "class", "params", *ANALYSES, "seconds"], rows),
        f"\nburden trees (digest of `burden/**/*.py`): "
        + ", ".join(sorted({r.get('burden_tree', '?') for r in recs})) + ".\n",
    ]
    return "".join(parts)


def _load(path: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The records (a later one of the same type wins) and the runs' lines."""
    records: dict[str, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if "run" in rec:
                    runs.append(rec["run"])
                else:
                    records[rec["type"]] = rec
    return records, runs


def regressions(records: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> list[str]:
    """Raw exceptions, and analyses that were ok in the baseline and are not now."""
    found = []
    for t, rec in sorted(records.items()):
        for a in ANALYSES:
            now = outcome(rec, a)
            if now == RAW:
                found.append(f"{t} {a}: raw: {_cell(rec, a)}")
            elif t in baseline and outcome(baseline[t], a) == OK and now != OK:
                found.append(f"{t} {a}: was ok, now {_cell(rec, a)}")
    return found


# --- the command line --------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ci", action="store_true", help="the CI subset; exit 1 on a raw exception or a regression")
    p.add_argument("--types", help="comma-separated model types (default: all)")
    p.add_argument("--analyses", default=",".join(ANALYSES), help="which analyses, comma-separated")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, help="the Markdown summary; the records go beside it as .jsonl")
    p.add_argument("--baseline", type=Path, default=RESULTS / "hf_zoo.jsonl",
                   help="records whose ok analyses must stay ok (--ci)")
    p.add_argument("--report", action="store_true", help="only rewrite the Markdown from the .jsonl")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    analyses = tuple(a for a in args.analyses.split(",") if a)
    if args.worker:
        os.environ.update(WORKER_ENV)
        Worker(args.worker, args.record or Path(tempfile.mkdtemp()) / "record.json").run(analyses)
        return 0
    os.environ.update(WORKER_ENV)
    out = args.out or RESULTS / ("hf_zoo-ci.md" if args.ci else "hf_zoo.md")
    jsonl = out.with_suffix(".jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    types = args.types.split(",") if args.types else list(CI_TYPES) if args.ci else list_types()
    everything = not args.types and not args.ci
    records, runs = ({}, []) if everything and not args.report else _load(jsonl)
    if args.report:
        out.write_text(summarise(records, runs, len(records)))
        return 0
    baseline = _load(args.baseline)[0] if args.ci else {}
    if everything:
        jsonl.write_text("")
    planned, started, done = len(set(types) | set(records)), time.monotonic(), [0]
    print(f"{len(types)} types, {args.jobs} at a time; records in {jsonl}", file=sys.stderr, flush=True)

    def on_record(rec: dict[str, Any]) -> None:
        records[rec["type"]] = rec
        done[0] += 1
        with jsonl.open("a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        out.write_text(summarise(records, runs, planned))
        cells = ", ".join(f"{a} {_cell(rec, a)[:140]}" for a in analyses)
        print(f"[{done[0]}/{len(types)}] {rec['type']} ({_params(rec)}): {cells}; {rec['wall_s']} s",
              file=sys.stderr, flush=True)

    run_pool(types, max(1, args.jobs), analyses, on_record)
    wall = time.monotonic() - started
    runs.append({"ended": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "types": len(types),
                 "jobs": max(1, args.jobs), "wall_s": round(wall, 1)})
    with jsonl.open("a") as f:
        f.write(json.dumps({"run": runs[-1]}) + "\n")
    out.write_text(summarise(records, runs, planned))
    bad = regressions({t: records[t] for t in types if t in records}, baseline)
    print(f"done in {wall / 60:.1f} min; summary in {out}" + "".join(f"\n  {b}" for b in bad),
          file=sys.stderr, flush=True)
    return 1 if args.ci and bad else 0


if __name__ == "__main__":
    sys.exit(main())
