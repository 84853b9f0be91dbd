"""The wheel ships every module of the package, and an installed wheel imports every callback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

CALLBACKS = ("EquivarianceCallback", "SeparabilityCallback", "RepresentativeInterpretationCallback")


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel . --no-deps --no-build-isolation`` on a copy of the sources (setuptools would
    otherwise leave build/ and *.egg-info in the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(
        ROOT / "glassbox", src / "glassbox", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("glassbox-*.whl")
    return wheel


def test_every_package_has_an_init():
    missing = [
        str(d.relative_to(ROOT))
        for d in [ROOT / "glassbox", *(ROOT / "glassbox").rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
        if not (d / "__init__.py").is_file()
    ]
    assert missing == []


def test_wheel_contains_every_module(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "glassbox").rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert len(modules) > 50
    missing = [m for m in modules if m not in names]
    assert missing == [], f"modules missing from {wheel.name}: {missing}"
    assert "glassbox/callbacks/__init__.py" in names and "glassbox/api.py" in names


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_imports_every_callback(tmp_path):
    """A fresh venv that sees the dependencies already installed here (system site packages of
    this environment via a .pth file; no network), ``pip install`` of the wheel, then imports."""
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # the dependencies (torch, lightning, e2cnn, ...) come from this environment, glassbox does not
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "deps.pth").write_text("\n".join(deps) + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    code = (
        "import glassbox, glassbox.callbacks as c; "
        f"print(glassbox.__file__); print([getattr(c, n).__name__ for n in {CALLBACKS!r}]); "
        "print(glassbox.load_run.__module__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # not the checkout's copy
    run = subprocess.run(
        [str(py), "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith(site) and "/work" not in lines[0].replace(site, "")
    assert lines[1] == str(list(CALLBACKS)) and lines[2] == "glassbox.api"
