"""The command line: summary, per-layer table, JSON, and one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest

from burden.cli import main


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_estimate_summary(capsys):
    code, out, err = run(capsys, "estimate", "se_resnet152", "--input", "224")
    assert code == 0 and err == ""
    assert out.splitlines()[0].split() == ["model", "se_resnet152"]
    assert "3 x 224 x 224" in out and "convnet-burden" in out and "float32" in out
    assert "66,973,272" in out
    assert "255.48 MiB" in out  # 66,973,272 x 4 B / 2^20
    assert "GFLOPs" in out


@pytest.mark.parametrize("spec,api,shape", [("224", 224, [3, 224, 224]), ("224x320", (224, 320), [3, 224, 320]),
                                            ("3x160x192", (3, 160, 192), [3, 160, 192])])
def test_input_forms(capsys, spec, api, shape):
    # the command line and the API read a size the same way (a pair is an image's height and width)
    import burden

    code, out, _ = run(capsys, "estimate", "se_resnet50", "--input", spec, "--format", "json")
    assert code == 0
    cli = json.loads(out)
    assert cli["input"] == shape
    assert burden.estimate("se_resnet50", api).to_dict() == cli


def test_json_keys_and_exact_integers(capsys):
    code, out, _ = run(capsys, "estimate", "se_resnet50", "--batch", "2", "--dtype", "float16", "--format", "json")
    assert code == 0
    data = json.loads(out)
    for key in ("model", "input", "batch", "dtype", "convention", "params", "param_bytes", "feature_bytes",
                "flops", "layers", "uncounted_ops", "peak_feature_bytes", "peak_bytes", "peak_op",
                "saved_activation_bytes", "gradient_bytes", "optimizer_bytes", "training_peak_bytes",
                "backward_flops"):
        assert key in data
    # the peak holds the parameters and buffers (BN's integer counters too), the input batch and the features
    assert data["peak_bytes"] == data["held_bytes"] + data["input_bytes"] + data["peak_feature_bytes"]
    assert data["input_bytes"] == 2 * 3 * 224 * 224 * 2
    assert data["held_bytes"] == data["param_bytes"] + 8 * sum(1 for r in data["layers"] if r["type"] == "BatchNorm2d")
    assert 0 < data["peak_feature_bytes"] < data["feature_bytes"]  # buffers are freed, so less than all
    assert data["batch"] == 2 and data["dtype"] == "float16" and data["convention"] == "convnet-burden"
    assert data["params"] == 28_141_144 and data["param_bytes"] == 2 * 28_141_144
    layer = next(r for r in data["layers"] if r["name"] == "stem.conv1.conv")
    # 7x7 conv, 3 -> 64 channels, stride 2 on 224: 64 x 112 x 112 outputs, 147 multiply-adds each, batch 2
    assert layer["flops"] == 2 * 64 * 112 * 112 * 147
    assert layer["output_shape"] == [2, 64, 112, 112]
    assert layer["feature_bytes"] == 2 * 64 * 112 * 112 * 2
    assert layer["params"] == 64 * 3 * 49 and layer["type"] == "Conv2d"
    for r in data["layers"]:
        for key in ("name", "type", "output_shape", "params", "param_bytes", "feature_bytes", "flops"):
            assert key in r


def test_layers_table_with_depth(capsys):
    code, out, _ = run(capsys, "estimate", "se_resnet50", "--layers", "--depth", "1")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("name"))
    for col in ("name", "type", "output shape", "params", "param mem", "feature mem", "FLOPs", "% FLOPs"):
        assert col in header
    rows = [line.split()[0] for line in out.splitlines()[out.splitlines().index(header) + 2:]]
    assert rows == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc", "total"]


def test_training_mode(capsys):
    code, out, _ = run(capsys, "estimate", "se_resnet50", "--input", "64", "--mode", "training",
                       "--optimizer", "sgd", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["mode"] == "training" and data["optimizer"] == "SGD" and data["optimizer_bytes"] == 0
    assert data["gradient_bytes"] == 4 * 28_088_024  # parameters only: BN running stats get no gradient
    assert data["training_peak_bytes"] > data["param_bytes"] and data["backward_flops"] > data["flops"]


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert sorted(names) == sorted(["se_resnet50", "se_resnet101", "se_resnet152", "se_resnext50_32x4d",
                                    "se_resnext101_32x4d", "senet154", "se_bn_inception"])
    assert all(len(line.split(None, 1)) == 2 for line in out.strip().splitlines())


ERRORS = [
    (["estimate", "se_resnet5"], "se_resnet50"),  # unknown name: closest names suggested
    (["estimate", "senet"], "senet154"),
    (["estimate", "se_resnet50", "--input", "22a"], "malformed input size"),
    (["estimate", "se_resnet50", "--input", "224x"], "malformed input size"),
    (["estimate", "se_resnet50", "--input", "0"], "zero or negative"),
    (["estimate", "se_resnet50", "--input", "-224"], "zero or negative"),
    (["estimate", "se_resnet50", "--batch", "0"], "batch size must be positive"),
    (["estimate", "se_resnet50", "--batch", "-2"], "batch size must be positive"),
    (["estimate", "se_resnet50", "--batch", "two"], "malformed batch size"),
    (["estimate", "se_resnet50", "--input", "1"], "stem.pool"),  # too small: the layer is named
    (["estimate", "se_bn_inception", "--input", "112"], "inception_4e"),  # branches no longer line up
    (["estimate", "se_resnet50", "--input", "4x224x224"], "stem.conv1.conv"),
    (["estimate", "se_resnet50", "--dtype", "int4"], "unknown dtype"),
    (["estimate", "se_resnet50", "--convention", "nope"], "unknown convention"),
    (["estimate", "se_resnet50", "--depth", "x"], "malformed depth"),
    (["estimate", "se_resnet50", "--mode", "training", "--optimizer", "lion"], "unknown optimizer"),
    (["estimate", "se_resnet50", "--mode", "training", "--optimizer", "lbfgs"], "closure"),
    (["estimate", "se_resnet50", "--mode", "training", "--optimizer-impl", "fast"], "invalid choice"),
    (["estimate", "se_resnet50", "--mode", "training", "--optimizer", "rprop", "--optimizer-impl", "fused"],
     "no fused implementation"),
    (["estimate", "se_resnet50", "--grad-accum", "2"], "training"),
    (["estimate", "se_resnet50", "--mode", "training", "--convention", "macs"], "no backward rules"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("argv,needle", ERRORS)
def test_bad_input_is_one_line_and_status_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err


def test_entry_point_as_a_process():
    ok = subprocess.run([sys.executable, "-m", "burden", "estimate", "se_resnet50", "--format", "json"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["params"] == 28_141_144
    bad = subprocess.run([sys.executable, "-m", "burden", "estimate", "se_resnet50", "--input", "1"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("fmt,marker", [("github", "burden convnet-burden convention"),
                                        ("latex_booktabs", "% burden convnet-burden convention"),
                                        ("html", "<!-- burden convnet-burden convention")])
def test_compare_names_its_convention(capsys, fmt, marker):
    code, out, _ = run(capsys, "compare", "se_resnet50", "se_bn_inception", "--format", fmt)
    assert code == 0 and marker in out
    assert "se_bn_inception" in out or "se\\_bn\\_inception" in out


def test_compare_csv_keeps_exact_integers(capsys):
    code, out, _ = run(capsys, "compare", "se_resnet50", "--format", "csv")
    header, row = out.strip().splitlines()
    assert header.split(",")[-1] == "convention"
    assert row.split(",")[4] == "28141144" and row.split(",")[-1] == "convnet-burden"


def test_conventions_text_fits_the_terminal():
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "burden", "conventions"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    # every rule is still there, wrapped rather than cut
    from burden.conventions import get_convention

    words = " ".join(done.stdout.split())
    for what, how in get_convention("convnet-burden").rules:
        assert " ".join(how.split()) in words or how.split()[0] in words


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["conventions"], ["estimate", "--help"]])
def test_quick_commands_import_no_torch(argv):
    # the process reports what it imported; torch alone takes seconds to import
    code = ("import sys\nfrom burden.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')" % argv)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO-TORCH"
    assert len(done.stdout.strip().splitlines()) > 1  # it printed what was asked, not only the marker


def test_catalog_is_what_the_registry_builds():
    # burden list reads the catalog; burden estimate builds from the registry: they must agree
    from burden.catalog import MODELS
    from burden.models import list_models, model_entry

    assert list(MODELS) == list_models()
    for name, card in MODELS.items():
        entry = model_entry(name)
        assert (entry.summary, entry.trunk, entry.input_size) == (card.summary, card.trunk, card.input_size)
        assert entry.factory.__name__ == name


def test_rulebook_is_what_the_conventions_use():
    from burden import options, rulebook
    from burden.conventions import get_convention, get_memory_convention, list_conventions, list_memory_conventions

    assert list(rulebook.FLOPS) == list_conventions() == list(options.CONVENTIONS)
    assert list(rulebook.MEMORY) == list_memory_conventions() == list(options.MEMORY_CONVENTIONS)
    for name, words in rulebook.FLOPS.items():
        assert (get_convention(name).summary, get_convention(name).rules) == (words.summary, words.rules)
    for name, summary in rulebook.MEMORY.items():
        assert get_memory_convention(name).summary == summary


@pytest.mark.parametrize("name,choices,expected", [
    ("se_resnet5", ["se_resnet50", "se_resnet101", "senet154"], "; did you mean se_resnet50"),
    ("SENET", ["se_resnet50", "senet154"], "; did you mean senet154"),  # any case
    ("layer3.9", ["layer3.0", "layer3.1", "layer4.0"], "; did you mean layer3.1, layer3.0"),
    ("xyz", ["macs", "torch"], "; known: macs, torch"),
    ("xyz", [f"m{i}" for i in range(40)], ""),  # too many to list
])
def test_one_did_you_mean(name, choices, expected):
    from burden.suggest import did_you_mean

    assert did_you_mean(name, choices).startswith(expected)
    if not expected:
        assert did_you_mean(name, choices) == ""
