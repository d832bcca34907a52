"""The README and docs/ are true to the code: every link resolves, and every code block runs.

- Links: every relative link in README.md and docs/*.md names a file or folder that exists, and an
  anchor that one of the target's headings makes (GitHub's rule: lowercase, punctuation removed,
  spaces to '-', a repeated heading numbered).
- ```python blocks run, each in a fresh namespace, in a scratch directory of the page's own.
- ```console, ```sh and ```bash blocks: every `$ burden ...` line runs through the command line's
  `main()` in that directory and exits with 0. Where the block shows output, the lines it shows
  (`...` stands for lines left out) are lines of the real output: every one on the pinned torch
  (2.13), the first on other releases, whose kernels may give other figures.
- The quick start's install commands are exempt by their content (`python3 -m venv`, `pip install`,
  `git clone`); the `burden` command they end with runs as any other.
- ```text blocks are not run: they are synopses or recorded runs that cannot be reproduced here.
  Every `burden ...` line in one names only options its command has.
- docs/architecture.md's table of modules is checked against the imports in the source.

A page's blocks share its scratch directory and run in the page's order (the serving page writes the
configs its commands read); a block run alone first runs the Python blocks above it. The directory
holds a link to the repository's `examples/`, as a clone's root does.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TAGS = {"python", "console", "sh", "bash", "text"}
INSTALL = ("python3 -m venv ", "python -m venv ", ". .venv/bin/activate", "pip install ", "git clone ")
PINNED = torch.__version__.startswith("2.13.")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    page: Path
    index: int  # among the page's blocks
    tag: str
    text: str
    line: int  # where it starts in the page

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}:{self.tag or 'untagged'}"


def _blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [Block(page, i, m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1)
            for i, m in enumerate(FENCE.finditer(text))]


BLOCKS = [b for page in PAGES for b in _blocks(page)]


def test_the_pages_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/cli.md", "docs/python.md", "docs/memory.md", "docs/speed.md", "docs/conventions.md",
            "docs/validation.md", "docs/serving.md", "docs/architecture.md"} <= names
    assert any(b.tag == "python" for b in BLOCKS) and any(b.tag == "console" for b in BLOCKS)


def test_the_readme_is_short_and_keeps_the_quick_start():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    # CI (.ci/run) runs the README's test command; both set-up commands are what a fresh clone runs
    assert ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e . && "
            "burden estimate se_resnet152 --input 224\n") in readme
    assert ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
            "pip install -e '.[test]' && python -m pytest -q\n") in readme


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_every_block_has_a_known_tag(block):
    assert block.tag in TAGS, f"{block.id}: tag the block as one of {sorted(TAGS)}"


# --- links ---------------------------------------------------------------------------------------------

def _prose(text: str) -> str:
    """The page without its code: fenced blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub makes for the page's headings."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(page: Path) -> list[str]:
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", _prose(page.read_text(encoding="utf-8")))


def test_anchor_rule():
    page = ROOT / "docs" / "memory.md"
    assert {"will-it-fit", "the-cuda-target", "known-differences-from-a-real-run"} <= _anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    links = [link for link in _links(page) if not re.match(r"^[a-z]+:", link)]
    assert links or page.name == "architecture.md"
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link}: no {target}"
        assert ROOT in target.parents or target == ROOT, f"{page.name}: {link} leaves the repository"
        if anchor:
            assert target.suffix == ".md", f"{page.name}: {link}: an anchor in a file that is not Markdown"
            assert anchor in _anchors(target), f"{page.name}: {link}: no heading makes #{anchor} in {target.name}"


# --- running the blocks ----------------------------------------------------------------------------------

_done: dict[Path, set[int]] = {}
_dirs: dict[Path, Path] = {}


@pytest.fixture
def scratch(tmp_path_factory, monkeypatch):
    """The page's scratch directory, the working directory while a block runs."""
    def enter(page: Path) -> Path:
        if page not in _dirs:
            folder = tmp_path_factory.mktemp(page.stem)
            (folder / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
            _dirs[page] = folder
        monkeypatch.chdir(_dirs[page])
        monkeypatch.setenv("BURDEN_HOME", str(_dirs[page] / "burden-home"))  # no profile of the user's
        monkeypatch.setenv("COLUMNS", "80")  # the width the text views wrap to
        return _dirs[page]

    return enter


def _run_python(block: Block) -> None:
    code = compile(block.text, f"{block.page.name}:{block.line}", "exec")
    exec(code, {"__name__": "__docs__"})
    _done.setdefault(block.page, set()).add(block.index)


def _prepare(block: Block, scratch) -> None:
    """Enter the page's directory and run the page's Python blocks above this one that have not run."""
    scratch(block.page)
    if block.page.name == "serving.md":
        pytest.importorskip("transformers")
    for earlier in _blocks(block.page)[: block.index]:
        if earlier.tag == "python" and earlier.index not in _done.get(block.page, set()):
            _run_python(earlier)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.tag == "python"], ids=lambda b: b.id)
def test_python_block_runs(block, scratch, capsys):
    _prepare(block, scratch)
    _run_python(block)


def _commands(block: Block) -> list[tuple[str, list[str]]]:
    """Each command of a console/sh block with the output lines shown under it."""
    runs: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            runs.append((line[2:], []))
        elif block.tag == "console" and runs:
            runs[-1][1].append(line)
        elif line.strip():
            runs.append((line, []))  # a sh block: every line is a command
    return runs


def _burden_commands(command: str) -> list[str]:
    """The `burden ...` commands of one line; install steps (by their content) are exempt."""
    found = []
    for part in (p.strip() for p in command.split("&&")):
        if part.startswith("burden "):
            found.append(part)
        elif part == "python -m pytest -q":
            continue  # the README's test command: CI runs it
        else:
            assert part.startswith(INSTALL), f"not a burden command, nor an install step: {part}"
    return found


SHELL_BLOCKS = [b for b in BLOCKS if b.tag in ("console", "sh", "bash")]


def test_every_shell_block_is_checked():
    assert SHELL_BLOCKS
    for block in SHELL_BLOCKS:
        for command, _ in _commands(block):
            _burden_commands(command)


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.id)
def test_shell_block_runs(block, scratch, capsys):
    from burden.cli import main

    _prepare(block, scratch)
    for command, shown in _commands(block):
        for line in _burden_commands(command):
            capsys.readouterr()
            code = main(shlex.split(line)[1:])
            out, err = capsys.readouterr()
            assert code == 0, f"{line}: exit {code}: {err}"
            printed = [row.rstrip() for row in out.splitlines()]
            expected = [row.rstrip() for row in shown if row.strip() and row.strip() != "..."]
            for row in expected if PINNED else expected[:1]:
                assert row in printed, f"{line}: the page shows a line the command does not print:\n{row}"


def _subcommand_options() -> dict[str, set[str]]:
    import argparse

    from burden.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}


def _synopses(text: str) -> list[str]:
    """Each `burden ...` command of a text block, with its continuation lines, comments cut."""
    found: list[str] = []
    for line in text.splitlines():
        line = line.split("  #", 1)[0]
        if line.startswith(("burden ", "$ burden ")):
            found.append(line.removeprefix("$ "))
        elif found and line.startswith(" ") and line.strip().startswith("["):
            found[-1] += " " + line.strip()
    return found


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.tag == "text"], ids=lambda b: b.id)
def test_text_block_commands_exist(block):
    options = _subcommand_options()
    for synopsis in _synopses(block.text):
        command = synopsis.split()[1]
        assert command in options, f"{block.id}: no command burden {command}"
        unknown = set(re.findall(r"--[a-z][a-z0-9-]*", synopsis)) - options[command]
        assert not unknown, f"{block.id}: burden {command} has no {sorted(unknown)}"


# --- what the pages say about the code ----------------------------------------------------------------------

def test_the_reference_table_is_the_same_in_the_readme_and_validation():
    def rows(page: str) -> list[str]:
        return [line for line in (ROOT / page).read_text(encoding="utf-8").splitlines()
                if re.match(r"^\| \w+ \| [\d,]+ \| .+ \| \d+ / \d+ / \d+ \|$", line)]

    assert len(rows("README.md")) == 7
    assert rows("README.md") == rows("docs/validation.md")


def _architecture_rows() -> list[list[str]]:
    rows = []
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            assert int(cells[0]) == len(rows) + 1
            rows.append(re.findall(r"`([\w/]+(?:\.py|/))`", cells[1]))
    return rows


def _module_rows(graph: dict[str, set[str]]) -> dict[str, int]:
    where: dict[str, int] = {}
    for number, names in enumerate(_architecture_rows(), start=1):
        for name in names:
            if name == "__init__.py":
                modules = ["burden"]
            elif name.endswith("/"):
                package = "burden." + name.rstrip("/")
                modules = [m for m in graph if m == package or m.startswith(package + ".")]
            else:
                modules = ["burden." + name[: -len(".py")]]
            for module in modules:
                assert module in graph, f"architecture.md names {name}, which is not in burden/"
                assert module not in where, f"{module} is in two rows"
                where[module] = number
    return where


def test_the_architecture_table_is_the_import_graph():
    from test_layout import import_graph

    graph = import_graph()
    where = _module_rows(graph)
    assert set(where) == set(graph), f"modules missing from docs/architecture.md: {sorted(set(graph) - set(where))}"
    upward = [f"{m} (row {where[m]}) imports {t} (row {where[t]})"
              for m, targets in graph.items() for t in targets if where[t] > where[m]]
    assert not upward, "imports from a row below:\n" + "\n".join(upward)


def test_the_first_two_rows_import_the_standard_library_only():
    """Row 1 imports no torch (so `burden --help` does not), row 2 nothing but the standard library."""
    from test_layout import import_graph

    where = _module_rows(import_graph())
    for module, number in where.items():
        if number > 2:
            continue
        path = ROOT / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", f"{module} imports {name}"


def test_the_cli_answers_without_torch():
    import subprocess

    code = "import sys; from burden.cli import main; main(['list']); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode == 0


def _table_rows(text: str, columns: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == columns and not set(line) <= set("|-: "):
            rows.append(cells)
    return rows


def _number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


def test_the_memory_table_is_the_benchmarks():
    """docs/validation.md's table of the SE networks' memory, cell by cell, from benches/results/memory.md."""
    results = {(r[0], r[1]): r for r in _table_rows((ROOT / "benches/results/memory.md").read_text(), 14)[1:]}
    doc = _table_rows((ROOT / "docs/validation.md").read_text(), 9)
    shown = [r for r in doc if (r[0], r[1]) in results]
    assert len(shown) == len(results) == 14
    for row in shown:
        source = results[(row[0], row[1])]
        assert row[2:] == [source[i] for i in (2, 4, 5, 7, 8, 9, 10)], row


def test_the_latency_table_is_the_benchmarks():
    """docs/validation.md's predicted and measured CPU times, at their rounding, from benches/results/latency-cpu.md."""
    results = {(r[0], r[1]): r for r in _table_rows((ROOT / "benches/results/latency-cpu.md").read_text(), 7)
               if r[1] in ("16", "1")}
    doc = [r for r in _table_rows((ROOT / "docs/validation.md").read_text(), 7) if r[0] != "model"]
    assert len(doc) == 31
    for row in doc:
        for batch, first in (("16", 1), ("1", 4)):
            source = results[(row[0], batch)]
            for shown, exact in zip(row[first:first + 2], source[2:4]):
                assert _number(shown) == pytest.approx(_number(exact), rel=0.005, abs=0.05), (row, batch)
            assert _number(row[first + 2]) == pytest.approx(_number(source[5]), abs=0.0051), (row, batch)
