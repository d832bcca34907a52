"""The wheel carries the templates: build it, install it into a fresh virtual environment, and
write a report from outside the checkout, where only the installed package can be imported."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

import burden
from burden.api import estimate, scale
from burden.render.html import estimate_page

REPO = Path(__file__).resolve().parent.parent


def run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def clean_env(**extra):
    """No variable that would put the checkout on the path or change how Python starts."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "PIP_TARGET", "PIP_PREFIX")}
    env.update(PYTHONNOUSERSITE="1", **extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", out, REPO]
    try:
        import hatchling  # noqa: F401  (the build backend is here: no need to fetch it)

        cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    run(cmd, cwd=out, env=clean_env())
    [whl] = out.glob("burden-*.whl")
    return whl


def test_wheel_ships_the_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"burden/templates/{p.name}" for p in (REPO / "templates").glob("*.j2")}
    assert "burden/templates/estimate.html.j2" in templates and templates <= names
    assert "burden/reports.py" in names and "burden/render/html.py" in names
    assert not any(n.startswith(("tests/", "reports/", "templates/")) for n in names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """A fresh venv on the test interpreter, seeing its packages (torch, jinja2, ...) but not the
    checkout, with the wheel installed without dependencies."""
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=True, symlinks=os.name != "nt").create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # If the test interpreter is itself a venv, --system-site-packages reaches only the base
    # Python; list this interpreter's site-packages as plain paths. (Plain lines in a .pth add the
    # folder only: .pth files inside it, such as an editable install of burden, are not run.)
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       env=clean_env()).stdout.strip())
    # (CI's venv lives inside the checkout, so its site-packages is under REPO: keep those, drop
    # only the checkout's own source folder.)
    ours = [p for p in dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]])
            if Path(p).is_dir() and Path(p).resolve() != REPO.resolve()]
    (purelib / "zz_test_interpreter_site.pth").write_text("\n".join(ours) + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=root, env=clean_env())
    return root, env_dir, python


def test_report_from_the_installed_wheel(installed):
    root, env_dir, python = installed
    where = json.loads(run([python, "-I", "-c",
                            "import json, burden, burden.render.html as h; "
                            "print(json.dumps([burden.__file__, str(h.template_dir()), burden.__version__]))"],
                           cwd=root, env=clean_env()).stdout)
    module, templates, version = (Path(where[0]), Path(where[1]), where[2])
    assert module.resolve().is_relative_to(env_dir.resolve()), f"imported {module}, not the wheel"
    assert templates.resolve() == module.resolve().parent / "templates"  # the installed copy
    assert version == burden.__version__

    script = env_dir / ("Scripts/burden.exe" if os.name == "nt" else "bin/burden")
    proc = run([script, "report", "se_resnet50", "--out", root / "r"], cwd=root, env=clean_env())
    page_path = root / "r" / "se_resnet50.html"
    assert proc.stdout.split() == [str(page_path)]
    page = page_path.read_text(encoding="utf-8")
    assert f'<meta name="generator" content="burden {burden.__version__}">' in page
    assert 'id="layer-table"' in page and "<h2>Feature extraction at scale</h2>" in page
    # byte for byte what the checkout renders: the same templates shipped
    assert page == estimate_page(estimate("se_resnet50", 224), scale=scale("se_resnet50"))
