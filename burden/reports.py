"""``burden report``: a self-contained HTML page per model, and for a set of models an index page
and a README with the comparison table, each model linking to its page.

The output depends only on the models, the settings and burden's version: no timestamps, so the
same command gives byte-identical files. The repository's ``reports/`` folder is regenerated with
``burden report --all --out reports/``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .options import DEFAULT_CONVENTION

DEFAULT_INPUT = (3, 224, 224)


@dataclass(frozen=True)
class ReportSettings:
    """The settings every page of one ``burden report`` shares (``write_reports`` documents them)."""

    input_size: Any = 224
    convention: str = DEFAULT_CONVENTION
    batch_size: int = 1
    dtype: str | None = None
    mode: str = "inference"
    optimizer: str | None = None
    chart_depth: int | None = None
    fit_memory: str | int | None = None
    device_profile: str | None = None


def report_filename(name: str) -> str:
    """The page's file name for a model name: ``se_resnet50.html``; characters that do not belong
    in a file name (``pkg.mod:factory``) become ``_``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return f"{stem}.html"


def _registered(name: str) -> bool:
    from .models import list_models

    return name in list_models()


def _command(names: Sequence[str], size: tuple[int, ...], settings: ReportSettings, out: Path) -> str:
    """The command line that writes the same set of files into a folder of the same name."""
    from .models import list_models

    parts = ["burden report"]
    parts += ["--all"] if list(names) == list_models() else list(names)
    if size != DEFAULT_INPUT:
        parts += ["--input", "x".join(str(d) for d in size)]
    default = ReportSettings()
    for flag, field in (("--batch", "batch_size"), ("--dtype", "dtype"), ("--convention", "convention"),
                        ("--mode", "mode"), ("--optimizer", "optimizer"), ("--chart-depth", "chart_depth"),
                        ("--fit", "fit_memory"), ("--device-profile", "device_profile")):
        value = getattr(settings, field)
        if value != getattr(default, field):  # the command line's own default: left out
            parts += [flag, str(value)]
    return " ".join(parts + ["--out", f"{out.name}/" if out.name else "."])


def write_reports(names: Iterable[str], out_dir: str | os.PathLike[str], *, index: bool = False,
                  **settings: Any) -> list[Path]:
    """Write ``<out_dir>/<model>.html`` for each model, and with ``index`` also ``index.html`` and
    ``README.md`` (the comparison table, linking the pages). Returns the paths written, in order.

    Each page holds the estimate at ``input_size``, ``batch_size`` and ``dtype`` (default: the
    model's own), with the inference peak; ``mode="training"`` adds one training step with
    ``optimizer`` (default: burden.estimate's). ``chart_depth`` is the module depth of the profile
    charts' bars (default: the depth with at most ``MAX_BARS`` bars). For a registered model the
    page also has the feature-extraction table (``burden.scale`` with its own defaults: batch 128,
    scales 0.5 to 3 of 224 pixels, the registered trunk). Every argument is checked before the
    first file is written, and every file is written atomically. With ``fit_memory`` (a budget
    such as ``"24GiB"``), each page adds what fits: ``burden.fit`` under the same settings. With
    ``device_profile`` (inference only), each page adds the roofline: a chart of each layer's
    arithmetic intensity against the FLOP/s it would attain, and each layer's time and bound.
    ``settings`` are the fields of ``ReportSettings``, by keyword.
    """
    from .api import estimate, fit, scale
    from .conventions import get_convention
    from .errors import InputSpecError
    from .inputs import parse_input_size
    from .models import model_entry
    from .render.html import estimate_page, index_markdown, index_page, write_text_atomic

    given = ReportSettings(**settings)  # a misspelt keyword is Python's TypeError
    input_size, convention, batch_size, dtype, mode = (given.input_size, given.convention, given.batch_size,
                                                       given.dtype, given.mode)
    optimizer, chart_depth, fit_memory, device_profile = (given.optimizer, given.chart_depth, given.fit_memory,
                                                          given.device_profile)
    names = list(dict.fromkeys(names))  # a model named twice is written once
    if not names:
        raise InputSpecError("name at least one model")
    size = parse_input_size(input_size)
    get_convention(convention)
    if mode not in ("inference", "training"):
        raise InputSpecError(f"mode must be inference or training, got {mode!r}")
    if optimizer is not None and mode != "training":
        raise InputSpecError("an optimizer sets the optimizer of a training step: use mode training")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputSpecError(f"batch size must be a positive integer, got {batch_size!r}")
    if fit_memory is not None:
        from .inputs import parse_memory

        parse_memory(fit_memory)
    if device_profile is not None:
        from .devices import load

        load(device_profile)
        if mode != "inference":
            raise InputSpecError("a device profile predicts the time of an inference forward pass: leave out "
                                 "--mode training with --device-profile")
    if chart_depth is not None and (not isinstance(chart_depth, int) or chart_depth < 1):
        raise InputSpecError(f"chart depth must be 1 or more, got {chart_depth!r}")
    if optimizer is not None:
        from .optimizers import factory

        factory(optimizer)
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
        options: dict[str, Any] = {"optimizer": optimizer} if optimizer is not None else {}
        e = estimate(name, size, batch_size=batch_size, dtype=dtype, convention=convention, mode=mode,
                     device_profile=device_profile, **options)
        table = scale(name, convention=convention) if _registered(name) else None
        fits = fit(name, fit_memory, size, mode=mode, dtype=dtype, **options) if fit_memory is not None else None
        written.append(write_text_atomic(out / filename, estimate_page(e, scale=table, chart_depth=chart_depth,
                                                                       fit=fits)))
        estimates.append(e)
    if index:
        command = _command(names, size, given, out.resolve())
        written.append(write_text_atomic(out / "index.html", index_page(estimates, files, command=command)))
        written.append(write_text_atomic(out / "README.md", index_markdown(estimates, files, command=command)))
    return written
