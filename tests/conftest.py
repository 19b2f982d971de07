"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run on CPU; JAX must never grab an accelerator's memory eagerly.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it lives beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def naep_dir(shared_data_dir: Path) -> Path:
    folder = shared_data_dir / "naep-llm"
    if not folder.is_dir():
        pytest.skip(f"NAEP data folder {folder} is absent")
    return folder
