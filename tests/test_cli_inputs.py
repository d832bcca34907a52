"""Any model and any input from the command line: model files, modules in the current directory,
token and multi-input models, per-layer exports."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "tiny_lm.py"
# TinyLM by hand: embedding 1000 x 128; per encoder layer the attention's in-projection
# 3 x 128 x 128 + 3 x 128 and out-projection 128 x 128 + 128, the MLP 128 x 512 + 512 and
# 512 x 128 + 128, two layer norms 2 x 256; a final layer norm 256; the head is tied to the embedding
TINY_LM_PARAMS = 1000 * 128 + 2 * (3 * 128 * 128 + 3 * 128 + 128 * 128 + 128 + 128 * 512 + 512 + 512 * 128 + 128
                                   + 2 * 256) + 256


def console_script() -> str:
    """The installed ``burden`` command (not ``python -m``, which puts the current directory on the
    path by itself)."""
    found = shutil.which("burden", path=str(Path(sys.executable).parent))
    assert found, "the burden console script is not installed beside this python"
    return found


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([console_script(), *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("where, model", [
    ("repo", "./examples/tiny_lm.py:build"),
    ("elsewhere", f"{EXAMPLE}:build"),
    ("examples", "tiny_lm:build"),  # a module in the current directory, as python -m finds it
])
def test_a_token_model_from_any_directory(where, model, tmp_path):
    cwd = {"repo": REPO, "elsewhere": tmp_path, "examples": EXAMPLE.parent}[where]
    done = run("estimate", model, "--inputs", "2x128:int64", "--format", "json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    e = json.loads(done.stdout)
    assert e["params"] == TINY_LM_PARAMS
    assert e["batch"] == 2 and e["input"] == [128]
    head = next(layer for layer in e["layers"] if layer["name"] == "head")
    assert head["params"] == 0 and head["shared_params"] == 1000 * 128  # tied to the embedding


def test_keyword_inputs(tmp_path):
    model = tmp_path / "two_inputs.py"
    model.write_text(
        "import torch\nfrom torch import nn\n"
        "class Two(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.emb = nn.Embedding(10, 4)\n"
        "    def forward(self, input_ids, attention_mask):\n"
        "        return self.emb(input_ids) * attention_mask.unsqueeze(-1)\n"
        "def build():\n    return Two()\n")
    done = run("estimate", f"{model}:build", "--inputs", "input_ids=3x5:int64,attention_mask=3x5", "--format",
               "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    e = json.loads(done.stdout)
    # by hand: the lookup is a copy (0 FLOPs); the mask product is 3 x 5 x 4 multiplies
    assert e["params"] == 40 and e["flops"] == 60


@pytest.mark.parametrize("args, message", [
    (("--inputs", "2x128:int64", "--input", "224"), "leave out --input and --batch"),
    (("--inputs", "2x128:int99"), "unknown dtype"),
    (("--inputs", "2x0"), "zero dimension"),
    (("--input", "16"), "--inputs"),  # a token model given an image: the error points to --inputs
])
def test_input_mistakes_are_one_line_errors(args, message):
    done = run("estimate", "./examples/tiny_lm.py:build", *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_per_layer_csv_has_exact_integers():
    done = run("estimate", "se_resnet50", "--layers", "--depth", "1", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["name"] for r in rows] == ["", "stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    assert int(rows[0]["params"]) == 28_141_144  # the reference table's count (the Caffe files')
    assert sum(int(r["flops"]) for r in rows[1:]) + int(rows[0]["self_flops"]) == int(rows[0]["flops"])
    fc = rows[-1]
    assert fc["details"] == "2048->1000" and int(fc["params"]) == 2048 * 1000 + 1000


def test_leaves_and_markdown():
    done = run("estimate", "se_resnet50", "--leaves", "--format", "markdown")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| figure") and any(line.startswith("| stem.conv1.conv ") for line in lines)
    assert not any(line.startswith("| layer1 ") for line in lines)  # a module with submodules
    conv = next(line for line in lines if line.startswith("| stem.conv1.conv "))
    assert "k7 s2 p3 3->64" in conv


def test_optimizer_needs_training():
    done = run("estimate", "se_resnet50", "--optimizer", "sgd")
    assert done.returncode == 2 and "--mode training" in done.stderr
