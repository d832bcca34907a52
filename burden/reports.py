"""``burden report``: a self-contained HTML page per model, and for a set of models an index page
and a README with the comparison table, each model linking to its page.

The output depends only on the models, the settings and burden's version: no timestamps, so the
same command gives byte-identical files. The repository's ``reports/`` folder is regenerated with
``burden report --all --out reports/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from .options import DEFAULT_CONVENTION

DEFAULT_INPUT = (3, 224, 224)


def report_filename(name: str) -> str:
    """The page's file name for a model name: ``se_resnet50.html``; characters that do not belong
    in a file name (``pkg.mod:factory``) become ``_``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return f"{stem}.html"


def _registered(name: str) -> bool:
    from .models import list_models

    return name in list_models()


def _command(names: Sequence[str], size: tuple[int, ...], convention: str, out: Path) -> str:
    """The command line that writes the same set of files into a folder of the same name."""
    from .models import list_models

    parts = ["burden report"]
    parts += ["--all"] if list(names) == list_models() else list(names)
    if size != DEFAULT_INPUT:
        parts += ["--input", "x".join(str(d) for d in size)]
    if convention != DEFAULT_CONVENTION:
        parts += ["--convention", convention]
    return " ".join(parts + ["--out", f"{out.name}/" if out.name else "."])


def write_reports(names: Iterable[str], out_dir: str | os.PathLike[str], *, input_size: Any = 224,
                  convention: str = DEFAULT_CONVENTION, index: bool = False) -> list[Path]:
    """Write ``<out_dir>/<model>.html`` for each model, and with ``index`` also ``index.html`` and
    ``README.md`` (the comparison table, linking the pages). Returns the paths written, in order.

    Each page holds the estimate at ``input_size`` with batch 1, and for a registered model the
    feature-extraction table (``burden.scale`` with its defaults: batch 128, scales 0.5 to 3 of
    224 pixels, the registered trunk). Every argument is checked before the first file is written,
    and every file is written atomically.
    """
    from .api import estimate, scale
    from .conventions import get_convention
    from .errors import InputSpecError
    from .inputs import parse_input_size
    from .models import model_entry
    from .render.html import estimate_page, index_markdown, index_page, write_text_atomic

    names = list(dict.fromkeys(names))  # a model named twice is written once
    if not names:
        raise InputSpecError("name at least one model")
    size = parse_input_size(input_size)
    get_convention(convention)
    for name in names:
        if ":" not in name:
            model_entry(name)  # an unknown name fails now, with suggestions, before anything is written
    files = [report_filename(n) for n in names]
    clash = {f for f in files if files.count(f) > 1}
    if clash:
        raise InputSpecError(f"two models would share the report file {sorted(clash)[0]}")
    if index and "index.html" in files:
        raise InputSpecError("a model's report would overwrite index.html")

    out = Path(out_dir)
    written: list[Path] = []
    estimates = []
    for name, filename in zip(names, files):
        e = estimate(name, size, convention=convention)
        table = scale(name, convention=convention) if _registered(name) else None
        written.append(write_text_atomic(out / filename, estimate_page(e, scale=table)))
        estimates.append(e)
    if index:
        command = _command(names, size, convention, out.resolve())
        written.append(write_text_atomic(out / "index.html", index_page(estimates, files, command=command)))
        written.append(write_text_atomic(out / "README.md", index_markdown(estimates, files, command=command)))
    return written
