"""Execute ``notebooks/distributional_alignment.ipynb`` (skipped without ``../shared/data``).

The executed copy goes to a temporary folder; with ``BAYES_ALIGN_SAVE_NOTEBOOK=1`` it
replaces the notebook in ``notebooks/`` (outputs saved), written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "distributional_alignment.ipynb"

pytestmark = pytest.mark.shared


def test_distributional_alignment_notebook(shared_data_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if not (shared_data_dir / "opinionqa" / "lm-results").is_dir():
        pytest.skip(f"{shared_data_dir / 'opinionqa'} is absent or incomplete")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    client = nbclient.NotebookClient(notebook, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert not errors, errors
    executed = tmp_path / NOTEBOOK.name
    nbformat.write(notebook, executed)
    if os.environ.get("BAYES_ALIGN_SAVE_NOTEBOOK") == "1":
        from bayes_align.files import atomic_path

        with atomic_path(NOTEBOOK) as temporary:
            nbformat.write(notebook, temporary)
