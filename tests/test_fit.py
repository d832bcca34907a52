"""Will it fit? The planner's answer must be confirmed: the answer fits, the answer + 1 does not.

Oracles: hand-derived peaks for a model simple enough to add up by hand, and for the rest the
estimate at the answer and at the answer + 1 (each a trace of its own, with the input batch added,
as the planner's peaks state), never the planner's own extrapolation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import burden
from burden.cli import main
from burden.inputs import parse_memory

ROOT = Path(__file__).resolve().parent.parent


def _peak(model, n, mode="training", optimizer="adam", inputs=None, size=(3, 224, 224)):
    """The estimate's peak at batch n (the input batch included, as in every peak burden prints)."""
    if inputs is None:
        e = burden.estimate(model, size, batch_size=n, mode=mode, optimizer=optimizer)
    else:
        spec = [burden.TensorSpec(n, *s.shape[1:], dtype=s.dtype) for s in inputs]
        e = burden.estimate(model, inputs=tuple(spec), mode=mode, optimizer=optimizer)
    return e.training.training_peak_bytes if mode == "training" else e.peak_bytes


def test_a_linear_layer_by_hand():
    # inference: weights 1000 x 1000 + 1000 bias = 4,004,000 B; per sample the input (4,000 B) and the
    # output (4,000 B). 5,000,000 B leaves 996,000 B: 124 samples (992,000), not 125 (1,000,000).
    f = burden.fit(nn.Linear(1000, 1000), 5_000_000, (1000,), mode="inference")
    assert (f.max_batch, f.peak_bytes, f.next_peak_bytes) == (124, 4_996_000, 5_004_000)
    assert f.traces == 3
    assert dict(f.breakdown) == {"parameters and buffers": 4_004_000, "input batch": 496_000,
                                 "activations and temporaries": 496_000}
    assert [(p.batch, p.peak_bytes) for p in f.around] == [(b, 4_004_000 + 8_000 * b) for b in (62, 123, 124, 125, 248)]


def test_se_resnet50_training_in_8_gib_takes_three_traces():
    f = burden.fit("se_resnet50", "8GiB", mode="training", optimizer="adam")
    n = f.max_batch
    assert f.traces <= 3 and n > 1
    assert _peak("se_resnet50", n) == f.peak_bytes <= 8 * 2**30 < _peak("se_resnet50", n + 1) == f.next_peak_bytes
    assert sum(v for _, v in f.breakdown) == f.peak_bytes
    # Adam: two moments per trainable value, and a 4-byte step counter per parameter tensor
    model = burden.create_model("se_resnet50")
    params = list(model.parameters())
    assert dict(f.breakdown)["optimizer state"] == 2 * 4 * sum(p.numel() for p in params) + 4 * len(params)
    assert f.peak_phase == "backward" and f.optimizer == "Adam" and f.optimizer_impl == "single"


class ConstantScratch(nn.Module):
    """A forward that makes a batch-independent buffer whose shape leads with 1: at batch 1 the
    planner takes it for a per-sample one, so its first prediction is off and it must refine."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        scratch = torch.ones(1, 500_000, device=x.device)
        return self.fc(x) * scratch[:, :64]


def test_a_misjudged_prediction_is_refined_and_still_confirmed():
    budget = 3_000_000
    f = burden.fit(ConstantScratch(), budget, (64,), mode="inference")
    n = f.max_batch
    assert f.traces > 3  # the first prediction was off
    assert _peak(ConstantScratch(), n, "inference", size=(64,)) <= budget < \
        _peak(ConstantScratch(), n + 1, "inference", size=(64,))


def test_token_inputs_are_rebatched():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import tiny_lm
    finally:
        sys.path.remove(str(ROOT / "examples"))
    tokens = (burden.TensorSpec(2, 128, dtype=torch.int64),)
    f = burden.fit(tiny_lm.build(), "64MiB", inputs=tokens, optimizer="sgd")
    n = f.max_batch
    assert f.input == () and n > 1
    assert _peak(tiny_lm.build(), n, optimizer="sgd", inputs=tokens) <= 64 * 2**20 < \
        _peak(tiny_lm.build(), n + 1, optimizer="sgd", inputs=tokens)


def test_a_budget_too_small_for_batch_1_says_what_does_not_fit():
    f = burden.fit("se_resnet50", "100MiB", mode="inference")
    assert f.max_batch == 0 and f.peak_bytes == 0 and f.next_peak_bytes > 100 * 2**20
    assert "parameters" in f.notes[0] and "batch 1" in f.notes[0]


@pytest.mark.parametrize("text,nbytes", [("24GiB", 24 * 2**30), ("24GB", 24 * 10**9), ("24G", 24 * 2**30),
                                         ("512MiB", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("1000", 1000)])
def test_memory_sizes(text, nbytes):
    assert parse_memory(text) == nbytes


def test_cli_json_has_exact_integers(capsys):
    assert main(["fit", "se_bn_inception", "--memory", "2GiB", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("budget_bytes", "max_batch", "peak_bytes", "next_peak_bytes", "traces"):
        assert isinstance(out[key], int)
    assert out["budget_bytes"] == 2 * 2**30 and out["peak_bytes"] <= out["budget_bytes"] < out["next_peak_bytes"]
    assert sum(out["breakdown"].values()) == out["peak_bytes"]


@pytest.mark.parametrize("argv", [["fit", "se_resnet50", "--memory", "8XB"],
                                  ["fit", "se_resnet50", "--memory", "8GiB", "--mode", "inference",
                                   "--optimizer", "adam"],
                                  ["fit", "se_resnet50"]])
def test_cli_mistakes_are_one_line_and_status_2(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_report_pages_show_what_fits(tmp_path):
    from burden.reports import write_reports

    write_reports(["se_bn_inception"], tmp_path, fit_memory="2GiB", mode="training")
    page = (tmp_path / "se_bn_inception.html").read_text()
    f = burden.fit("se_bn_inception", "2GiB")
    assert 'id="what-fits"' in page and f'data-budget="{2 * 2**30}"' in page
    assert f"is <b>{f.max_batch:,}</b>" in page
    assert page.count('class="fit-point') == len(f.around)
    assert f"{f.peak_bytes:,} B" in page  # the exact peak, in the breakdown's words


def test_compare_ranks_by_the_largest_batch_that_fits():
    c = burden.compare(["se_resnet50", "se_bn_inception"], fit_memory="2GiB")
    batches = {f.model: f.max_batch for f in c.fits}
    assert batches == {"se_resnet50": burden.fit("se_resnet50", "2GiB").max_batch,
                       "se_bn_inception": burden.fit("se_bn_inception", "2GiB").max_batch}
    rows = [line.split("|")[1].strip() for line in c.table().splitlines()[2:]]
    assert rows == sorted(batches, key=lambda m: -batches[m])
    data = c.to_dict()
    assert data["budget_bytes"] == 2 * 2**30 and [r["max_batch"] for r in data["rows"]] == [batches[m] for m in
                                                                                            ("se_resnet50",
                                                                                             "se_bn_inception")]


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


@pytest.mark.parametrize("impl", ["single", "foreach"])
def test_the_answer_is_confirmed_by_a_real_step(impl):
    """The oracle is the CPU allocator over a real, whole training step (tests/allocator_oracle.py):
    at the answer the step stays within the budget, at the answer + 1 it does not."""
    from allocator_oracle import measure_step

    budget = 6 * 2**20
    f = burden.fit(_small_cnn(), budget, (3, 32, 32), optimizer="adam", optimizer_impl=impl)
    assert f.max_batch > 1

    def real(batch: int) -> int:
        torch.manual_seed(1)
        return measure_step(_small_cnn(), (torch.randn(batch, 3, 32, 32),),
                            optimizer=lambda ps: torch.optim.Adam(ps, foreach=impl == "foreach")).peak

    assert real(f.max_batch) <= budget < real(f.max_batch + 1)


@pytest.mark.consistency
def test_estimate_and_fit_print_the_same_peak(capsys):
    """The issue's words: `burden estimate se_resnet50 --batch B --mode training --optimizer adam` prints
    the peak `burden fit se_resnet50 --memory 8GiB --optimizer adam` prints at its answer B."""
    assert main(["fit", "se_resnet50", "--memory", "8GiB", "--optimizer", "adam", "--format", "json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    batch = fitted["max_batch"]
    assert main(["estimate", "se_resnet50", "--batch", str(batch), "--mode", "training", "--optimizer", "adam",
                 "--format", "json"]) == 0
    estimated = json.loads(capsys.readouterr().out)
    assert estimated["training_peak_bytes"] == fitted["peak_bytes"]
    assert main(["estimate", "se_resnet50", "--batch", str(batch), "--mode", "training", "--optimizer", "adam"]) == 0
    text = capsys.readouterr().out
    assert main(["fit", "se_resnet50", "--memory", "8GiB", "--optimizer", "adam"]) == 0
    shown = capsys.readouterr().out.split("peak", 1)[1].split(" at batch")[0].strip()
    assert f"training peak      {shown} in the" in text
