"""examples/paper.ipynb: it runs top to bottom on a real Jupyter kernel, and what each cell shows
is what burden computes for the same model in this process.

The notebook is committed with its outputs (small, text and HTML only), so that it reads as a
worked example on GitHub; the test executes it afresh every time. To refresh the committed
outputs after a change to burden's figures or views:

    python tests/test_notebook.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import burden
from burden.render.units import fmt_bytes, fmt_count, fmt_flops

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "examples" / "paper.ipynb"
MAX_NOTEBOOK_BYTES = 100_000
CELL_TIMEOUT_S = 180  # per cell; the whole notebook runs in seconds
STARTUP_TIMEOUT_S = 120  # for the kernel to start and answer
SE_RESNET50_PARAMS = "28,141,144"  # the reference table's figure
COMPARED = ("se_resnet50", "se_resnext50_32x4d", "se_resnet101")
TAGS = ("imports", "estimate", "rich", "compare", "custom-model", "custom", "training", "generate")
PROBE = "kernel-probe"


# --------------------------------------------------------------------------------------------
# running the notebook


def execute(nb: Any, *, probe: bool) -> Any:
    """Run ``nb`` in place on a fresh ``python3`` kernel (this interpreter, see below), with the
    notebook's folder as the working directory. With ``probe``, a last cell (not part of the
    committed notebook) reports which interpreter and which burden the kernel ran.

    jupyter_client starts the ``python3`` kernel with ``sys.executable`` when the kernelspec is
    ipykernel's own, or names plain ``python``; the probe checks that this held. IPython's profile
    and the connection files go to a temporary folder, not the user's home."""
    import tempfile

    import nbclient
    import nbformat

    if probe:
        nb.cells.append(nbformat.v4.new_code_cell(
            "import sys, burden\nprint(sys.prefix)\nprint(burden.__file__)", id=PROBE, metadata={"tags": [PROBE]}))
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, startup_timeout=STARTUP_TIMEOUT_S,
                                     kernel_name="python3", record_timing=False,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    with tempfile.TemporaryDirectory(prefix="burden-nb-") as scratch, pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPYTHONDIR", os.path.join(scratch, "ipython"))
        mp.setenv("JUPYTER_RUNTIME_DIR", os.path.join(scratch, "runtime"))
        mp.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # debugpy's note on frozen modules, on stderr
        client.execute()
    return nb


def write_outputs() -> None:
    """Execute the notebook and save it with its outputs: what ``python tests/test_notebook.py`` does."""
    import nbformat

    nb = execute(nbformat.read(NOTEBOOK, as_version=4), probe=False)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK} ({NOTEBOOK.stat().st_size:,} bytes)")


@pytest.fixture(scope="module")
def executed() -> Any:
    """The notebook, executed now. A missing nbclient or ipykernel skips (they come with the
    ``test`` extras); a kernel that cannot start, or a cell that fails, fails with the reason."""
    pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # run from a clean slate, whatever the committed file holds
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    try:
        execute(nb, probe=True)
    except (nbclient.exceptions.CellExecutionError, nbclient.exceptions.CellTimeoutError) as err:
        pytest.fail(f"a cell of {NOTEBOOK.name} failed on the Jupyter kernel:\n{err}", pytrace=False)
    except Exception as err:  # the kernel: no kernelspec, no start within the timeout, died
        pytest.fail(f"the Jupyter kernel (python3, {sys.executable}) could not run {NOTEBOOK.name}: "
                    f"{type(err).__name__}: {err}. Is ipykernel installed in this environment "
                    f"(pip install -e '.[test]')?", pytrace=False)
    return nb


# --------------------------------------------------------------------------------------------
# figures computed here, in the test process


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    """What the notebook's cells must show, computed by burden in this process."""
    namespace: dict[str, Any] = {"torch": torch, "nn": nn}
    exec(cell_by_tag(read_committed(), "custom-model")["source"], namespace)  # the notebook's own class
    tagger = namespace["TinyTagger"]()
    return {
        "estimate": burden.estimate("se_resnet50", (3, 224, 224)),
        "compare": burden.compare(list(COMPARED), (3, 224, 224)),
        "tagger_module": tagger,
        "custom": burden.estimate(tagger, inputs=burden.TensorSpec(2, 128, dtype=torch.long)),
        "training": burden.estimate("se_resnet50", (3, 224, 224), batch_size=8, mode="training",
                                    optimizer="adamw"),
    }


def read_committed() -> dict[str, Any]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def cell_by_tag(nb: Any, tag: str) -> Any:
    found = [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"{NOTEBOOK.name} should have one cell tagged {tag!r}, has {len(found)}"
    cell = found[0]
    if isinstance(cell["source"], list):  # the JSON form: a list of lines
        cell = {**cell, "source": "".join(cell["source"])}
    return cell


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else value


def stdout(nb: Any, tag: str) -> str:
    return "".join(_text(o["text"]) for o in cell_by_tag(nb, tag)["outputs"]
                   if o["output_type"] == "stream" and o["name"] == "stdout")


def result(nb: Any, tag: str, mime: str) -> str:
    data = [o["data"] for o in cell_by_tag(nb, tag)["outputs"] if o["output_type"] == "execute_result"]
    assert len(data) == 1, f"the cell tagged {tag!r} should end in one expression whose value Jupyter shows"
    assert mime in data[0], f"the cell tagged {tag!r} shows {sorted(data[0])}, not {mime}"
    return _text(data[0][mime])


def training_rows(step: Any) -> list[tuple[str, int]]:
    t = step.training
    return [("parameters", step.param_bytes), ("gradients", t.gradient_bytes), ("optimizer state", t.optimizer_bytes),
            ("saved activations", t.saved_activation_bytes), ("training peak", t.training_peak_bytes),
            ("inference peak", step.peak_bytes)]


# --------------------------------------------------------------------------------------------
# the executed notebook


def test_the_kernel_is_this_environment(executed):
    prefix, burden_file = stdout(executed, PROBE).splitlines()
    assert prefix == sys.prefix, f"the kernel ran {prefix}, not this environment ({sys.prefix})"
    assert Path(burden_file).resolve() == Path(burden.__file__).resolve()


def test_every_cell_ran_cleanly(executed):
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"{cell.source!r} raised {out.get('ename')}"
            assert not (out.output_type == "stream" and out.name == "stderr"), \
                f"{cell.source!r} wrote to stderr (a reader would see it):\n{out.text}"


def test_estimate_cell_prints_the_summary(executed, figures):
    e = figures["estimate"]
    text = stdout(executed, "estimate")
    assert text == e.summary() + "\n"
    assert e.params == 28_141_144
    for figure in (SE_RESNET50_PARAMS, fmt_bytes(e.param_bytes), fmt_bytes(e.feature_bytes), fmt_flops(e.flops),
                   fmt_bytes(e.peak_bytes), "inference peak"):
        assert figure in text


def test_rich_view_is_the_estimate_html(executed, figures):
    e = figures["estimate"]
    page = result(executed, "rich", "text/html")
    assert page == e._repr_html_()
    assert result(executed, "rich", "text/plain") == repr(e)
    for figure in (SE_RESNET50_PARAMS, fmt_bytes(e.param_bytes), fmt_bytes(e.feature_bytes), fmt_flops(e.flops)):
        assert figure in page
    assert "inference peak" in page  # the words, the figure, and the features live at the peak
    assert fmt_bytes(e.peak_bytes) in page and fmt_bytes(e.peak_feature_bytes) in page
    assert "<script" not in page


def test_compare_cell_prints_a_booktabs_table(executed, figures):
    c = figures["compare"]
    text = stdout(executed, "compare")
    assert text == c.table(fmt="latex_booktabs") + "\n"
    for word in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"):
        assert word in text
    assert [e.model for e in c.estimates] == list(COMPARED)
    rows = [line for line in text.splitlines() if line.rstrip().endswith("\\\\")][1:]  # after the header
    assert len(rows) == len(COMPARED)
    for row, e in zip(rows, c.estimates):
        assert row.split("&")[0].strip() == e.model.replace("_", r"\_")
        for figure in (fmt_count(e.params), fmt_bytes(e.param_bytes), fmt_bytes(e.feature_bytes), fmt_flops(e.flops)):
            assert figure in row
    assert SE_RESNET50_PARAMS in rows[0]


def test_custom_model_cell(executed, figures):
    e, module = figures["custom"], figures["tagger_module"]
    text = stdout(executed, "custom")
    assert text == e.summary() + "\n"
    params = sum(p.numel() for p in module.parameters())
    assert e.params == params
    assert e.batch == 2 and e.input == (128,)
    for figure in (fmt_count(params), fmt_bytes(e.param_bytes), fmt_bytes(e.feature_bytes), fmt_flops(e.flops),
                   fmt_bytes(e.peak_bytes)):
        assert figure in text
    assert any(line.split() == ["batch", "2"] for line in text.splitlines())


def test_training_cell(executed, figures):
    step = figures["training"]
    assert step.training is not None and step.training.optimizer == "AdamW"
    lines = stdout(executed, "training").splitlines()
    expected = training_rows(step)
    assert len(lines) == len(expected)
    for line, (name, value) in zip(lines, expected):
        assert line.startswith(name + " ")
        assert fmt_bytes(value) in line and f"({value:,} bytes)" in line, (line, value)
    t = step.training
    assert t.optimizer_bytes > 0 and t.training_peak_bytes > step.peak_bytes


# --------------------------------------------------------------------------------------------
# the committed file


def test_generate_cell_shows_the_cache(executed):
    """The serving cell's rich view: the KV cache of its Llama config, by arithmetic on the config
    (K and V, 8 layers, 2 KV heads of 64, 1,024 + 256 - 1 tokens, batch 8, float32)."""
    html = result(executed, "generate", "text/html")
    kv = 2 * 8 * 2 * 64 * (1024 + 256 - 1) * 8 * 4
    assert f"{kv:,} B" in html and "time to first token" in html and "<script" not in html


def test_committed_notebook_is_small_and_text_only():
    raw = NOTEBOOK.read_bytes()
    assert len(raw) < MAX_NOTEBOOK_BYTES, f"{NOTEBOOK.name} is {len(raw):,} bytes"
    nb = read_committed()
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for tag in TAGS:
        cell_by_tag(nb, tag)
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error"
            mimes = set(out.get("data", {}))
            assert mimes <= {"text/plain", "text/html"}, f"an output carries {sorted(mimes)}"
            assert "execution" not in cell.get("metadata", {})  # no timings: the file changes only with its figures
    assert b"data:image" not in raw  # no embedded pictures (inline markup is fine)


def test_committed_outputs_carry_current_figures(figures):
    """The committed outputs are not stale: they carry the figures burden gives now (their wording
    may lag the renderers; ``python tests/test_notebook.py`` refreshes them)."""
    nb = read_committed()
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("outputs") for c in code if "custom-model" not in c["metadata"].get("tags", [])
               and "imports" not in c["metadata"].get("tags", [])), "refresh: python tests/test_notebook.py"
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), \
        "the outputs should come from one run, top to bottom: python tests/test_notebook.py"
    e = figures["estimate"]
    for figure in (SE_RESNET50_PARAMS, fmt_bytes(e.feature_bytes), fmt_flops(e.flops)):
        assert figure in stdout(nb, "estimate"), "stale outputs; refresh: python tests/test_notebook.py"
        assert figure in result(nb, "rich", "text/html"), "stale outputs; refresh: python tests/test_notebook.py"
    table = stdout(nb, "compare")
    for x in figures["compare"].estimates:
        assert fmt_count(x.params) in table and fmt_flops(x.flops) in table
    custom = figures["custom"]
    assert fmt_count(custom.params) in stdout(nb, "custom") and fmt_flops(custom.flops) in stdout(nb, "custom")
    text = stdout(nb, "training")
    for name, value in training_rows(figures["training"]):
        assert f"({value:,} bytes)" in text, f"stale {name}; refresh: python tests/test_notebook.py"


if __name__ == "__main__":
    write_outputs()
