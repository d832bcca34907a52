"""Generation with a KV cache (``burden.generate``), against oracles that share nothing with burden:

- a real ``generate()`` of small configs on the CPU, measured by the CPU allocator's own events
  (``allocator_oracle``): the cache is what the run leaves allocated besides the generated ids,
  and the peak is the allocator's;
- the FLOPs of a decode step by the hand formula 2·batch·(Linear weights) + 4·batch·layers·heads·
  head_dim·keys;
- a Llama-3-70B-shaped config's parameter count and KV cache, by arithmetic on the config.

The models are configs written here; no weights are downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import burden
from allocator_oracle import _nbytes, allocator_curve
from burden.cli import main
from burden.tokens import ordinary_token, token_inputs

transformers = pytest.importorskip("transformers")

BATCH, PROMPT, NEW = 2, 32, 16


def _small(kind: str):
    t = transformers
    common = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, vocab_size=32000)
    if kind == "llama":
        return t.LlamaConfig(intermediate_size=688, num_key_value_heads=2, **common)
    if kind == "gpt2":
        return t.GPT2Config(n_embd=256, n_layer=4, n_head=4, vocab_size=32000, n_positions=1024)
    if kind == "mistral":  # a sliding window shorter than the context: the cache keeps only the window
        return t.MistralConfig(intermediate_size=688, num_key_value_heads=2, sliding_window=16, **common)
    if kind == "mixtral":
        return t.MixtralConfig(intermediate_size=344, num_key_value_heads=2, num_local_experts=4,
                               num_experts_per_tok=2, **common)
    raise ValueError(kind)


def _real_run(model, config, cache: str) -> tuple[int, int]:
    """The cache a real ``generate()`` leaves and the peak of the whole run, by the allocator."""
    inputs = token_inputs(config, BATCH, PROMPT)
    held = _nbytes([*model.parameters(), *model.buffers(), *inputs.values()])
    options = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, eos_token_id=None,
                   pad_token_id=ordinary_token(config), return_dict_in_generate=True)
    if cache == "static":
        options["cache_implementation"] = "static"
    box = {}

    def run() -> None:
        with torch.no_grad():
            box["out"] = model.generate(**inputs, **options)

    curve, _ = allocator_curve(run)
    # what is still allocated when generate() returns: the generated ids and the cache
    return curve.end - box["out"].sequences.nbytes, held + curve.peak


@pytest.mark.parametrize("kind,cache", [("llama", "dynamic"), ("llama", "static"), ("gpt2", "dynamic"),
                                        ("mistral", "dynamic"), ("mixtral", "dynamic")])
def test_generate_against_a_real_run(kind, cache):
    config = _small(kind)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = burden.generate(model, PROMPT, NEW, batch_size=BATCH, cache=cache)
        kv, peak = _real_run(model, config, cache)
    assert g.kv_cache_bytes == kv
    assert abs(g.peak_bytes / peak - 1) < 0.02, (g.peak_bytes, peak)
    assert g.decode is not None and g.peak_bytes == max(g.prefill.peak_bytes, g.decode.peak_bytes)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())  # the model is untouched


def test_sliding_window_cache_holds_the_window():
    """Mistral's layers keep only the last ``sliding_window`` tokens: by arithmetic on the config."""
    config = _small("mistral")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    g = burden.generate(model, PROMPT, NEW, batch_size=BATCH)
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4
    assert g.kv_cache_bytes < BATCH * (PROMPT + NEW - 1) * per_token
    assert g.kv_cache_bytes >= BATCH * config.sliding_window * per_token


def test_decode_flops_equal_the_hand_formula():
    config = _small("llama")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    g = burden.generate(model, PROMPT, NEW, batch_size=BATCH, convention="torch")
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    head_dim = config.hidden_size // config.num_attention_heads
    keys = PROMPT + NEW - 1  # the last step's query attends to the cache and to itself
    hand = 2 * BATCH * linear + 4 * BATCH * config.num_hidden_layers * config.num_attention_heads * head_dim * keys
    assert g.decode.flops == hand
    # the prefill: every prompt token through every Linear except the head, which scores only the last
    prefill_linear = 2 * BATCH * PROMPT * (linear - model.lm_head.weight.numel()) + 2 * BATCH * \
        model.lm_head.weight.numel()
    attention = 4 * BATCH * config.num_hidden_layers * config.num_attention_heads * head_dim * PROMPT * PROMPT
    assert g.prefill.flops == prefill_linear + attention


def _llama_70b():
    return transformers.LlamaConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672,
                                    num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                                    max_position_embeddings=131072, rope_theta=500000.0, dtype="bfloat16",
                                    tie_word_embeddings=False)


def test_llama_70b_config_at_8k(tmp_path):
    _llama_70b().save_pretrained(tmp_path)
    g = burden.generate(str(tmp_path), 8192, 1, dtype="bfloat16")
    assert g.params == 70_553_706_496
    # K and V, 80 layers, 8 KV heads of 128, 8,192 tokens, 2 bytes
    assert g.kv_cache_bytes == 2 * 80 * 8 * 128 * 8192 * 2 == 2_684_354_560
    assert g.decode is None and 2 * g.params <= g.param_bytes < 2 * g.params + 2**20  # and the rotary buffers
    assert g.peak_bytes > g.param_bytes + g.kv_cache_bytes


def _write(config, folder) -> str:
    config.save_pretrained(folder)
    return str(folder)


def test_cli_generate_json_has_exact_integers(tmp_path, capsys):
    folder = _write(_small("llama"), tmp_path)
    assert main(["generate", folder + "/config.json", "--prompt", "32", "--new-tokens", "16", "--batch", "2",
                 "--convention", "torch", "--device-profile", "h100", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("params", "kv_cache_bytes", "kv_cache_bytes_per_token", "prefill_peak_bytes", "decode_peak_bytes",
                "peak_bytes", "prefill_flops", "decode_flops", "decode_bytes_moved"):
        assert isinstance(out[key], int) and out[key] > 0, key
    assert out["kv_cache_bytes"] == 2 * 4 * 2 * 64 * 4 * 2 * 47  # K,V x layers x kv heads x dim x fp32 x batch x tokens
    assert out["kv_cache_bytes_per_token"] * 2 * 47 == out["kv_cache_bytes"]
    assert out["peak_bytes"] == max(out["prefill_peak_bytes"], out["decode_peak_bytes"])
    assert 0 < out["time_to_first_token_seconds"] and 0 < out["seconds_per_output_token"]
    assert out["tokens_per_second"] == pytest.approx(2 / out["seconds_per_output_token"])


def test_cli_generate_text_layers_and_html(tmp_path, capsys):
    folder = _write(_small("gpt2"), tmp_path)
    assert main(["generate", folder, "--prompt", "8", "--new-tokens", "4", "--device-profile", "a100",
                 "--layers"]) == 0
    text = capsys.readouterr().out
    assert "KV cache" in text and "time to first token" in text and "transformer.h.*.attn.c_attn" in text
    assert main(["generate", folder, "--prompt", "8", "--new-tokens", "4", "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and "KV cache" in page and "<script" not in page.replace(
        '<script type="application/json"', "")


@pytest.mark.parametrize("argv,words", [
    (["--prompt", "0", "--new-tokens", "4"], "1 or more"),
    (["--prompt", "4", "--new-tokens", "4", "--cache", "paged"], "invalid choice"),
    (["--prompt", "4", "--new-tokens", "4", "--layers"], "--device-profile"),
    (["--prompt", "4", "--new-tokens", "4", "--convention", "fvcore"], "convention"),
])
def test_cli_generate_bad_input_is_one_line(tmp_path, capsys, argv, words):
    folder = _write(_small("gpt2"), tmp_path)
    try:
        status = main(["generate", folder, *argv])
    except SystemExit as exc:  # argparse's own refusal
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_generate_refuses_a_model_without_generate(capsys):
    assert main(["generate", "se_resnet50", "--prompt", "4", "--new-tokens", "2"]) == 2
    assert "no generate()" in capsys.readouterr().err


def test_fit_generate_confirmed_by_generations(tmp_path, capsys):
    folder = _write(_small("llama"), tmp_path)
    budget = 96 * 2**20
    assert main(["fit", folder, "--memory", "96MiB", "--generate", "--prompt", "64", "--new-tokens", "32",
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    batch = out["max_batch"]
    assert batch >= 1
    at = burden.generate(folder, 64, 32, batch_size=batch)
    over = burden.generate(folder, 64, 32, batch_size=batch + 1)
    assert at.peak_bytes == out["peak_bytes"] <= budget < over.peak_bytes == out["next_peak_bytes"]
    # with the batch: the longest prompt
    f = burden.fit_generate(folder, "96MiB", None, 32, batch_size=2)
    assert burden.generate(folder, f.prompt, 32, batch_size=2).peak_bytes <= budget
    assert burden.generate(folder, f.prompt + 1, 32, batch_size=2).peak_bytes > budget


def test_fit_generate_on_cuda_leaves_the_context(tmp_path):
    folder = _write(_small("llama"), tmp_path)
    f = burden.fit_generate(folder, "1GiB", 64, 32, target="cuda")
    assert 0 < f.reserved_bytes and f.reserved_bytes + f.context_bytes <= 2**30 and f.context_bytes == 512 * 2**20
    assert f.peak_bytes <= f.reserved_bytes  # what is allocated sits in what is reserved
    # the next batch would need more than the card less the context, even with no limit on the cache
    nxt = burden.generate(folder, 64, 32, batch_size=f.batch + 1, target="cuda")
    assert max(nxt.prefill.reserved_bytes, nxt.decode.reserved_bytes) + nxt.context_bytes > 2**30


def test_config_sources(tmp_path, capsys):
    folder = _write(_small("gpt2"), tmp_path / "gpt2")
    by_folder = burden.estimate(folder, seq=16)
    by_file = burden.estimate(folder + "/config.json", seq=16)
    built = transformers.GPT2LMHeadModel(_small("gpt2"))
    assert by_folder.params == by_file.params == sum(t.numel() for t in [*built.parameters(), *built.buffers()])
    # a config under another name is read by its model_type
    renamed = tmp_path / "my-gpt2.json"
    renamed.write_text((tmp_path / "gpt2" / "config.json").read_text())
    assert burden.estimate(str(renamed), seq=16).params == by_folder.params
    assert main(["estimate", str(tmp_path / "nowhere.json"), "--seq", "8"]) == 2
    assert "no file or folder" in capsys.readouterr().err
    # the hub client reads HF_HUB_OFFLINE when imported: a process of its own, which never reaches the network
    run = subprocess.run([sys.executable, "-m", "burden", "estimate", "hf:nobody/no-such-model", "--seq", "8"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert run.returncode == 2 and "never weights" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_missing_transformers_names_the_extra(tmp_path, monkeypatch, capsys):
    import importlib

    folder = _write(_small("gpt2"), tmp_path)
    real = importlib.import_module

    def without(name, *args, **kwargs):
        if name == "transformers":
            raise ImportError("No module named 'transformers'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without)
    assert main(["generate", folder, "--prompt", "4", "--new-tokens", "2"]) == 2
    assert "pip install 'burden[hf]'" in capsys.readouterr().err


def test_seq_gives_token_inputs(tmp_path, capsys):
    folder = _write(_small("llama"), tmp_path)
    e = burden.estimate(folder, seq=64, batch_size=2, convention="torch", mode="training")
    assert e.input == (64,) and e.batch == 2
    assert e.training.input_bytes == 3 * 2 * 64 * 8  # input_ids, attention_mask and labels, int64
    assert burden.estimate(folder, seq=64, batch_size=2).input_bytes == 2 * 2 * 64 * 8  # no labels
    assert main(["estimate", folder]) == 2
    assert "--seq" in capsys.readouterr().err
    assert main(["fit", folder, "--seq", "64", "--memory", "1GiB", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["max_batch"] >= 1
