"""The peer benchmark harness produces its table and the peers fit the same model.

Runs a cut-down ``benchmarks/run.py --quick`` (VerbAgg, 2 chains x 150 + 150, bayes_align
vs nutpie). It needs the benchmark peers (``pip install -r requirements-bench.txt``);
CI installs only the package, so there it is skipped.
"""

from __future__ import annotations

import json
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_spec("nutpie") is None or find_spec("pymc") is None,
        reason="benchmark peers (nutpie, pymc) are not installed: CI installs only the "
        "package; pip install -r requirements-bench.txt to run this",
    ),
]


def test_quick_benchmark_table_and_agreement(tmp_path):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import run

    out, raw = tmp_path / "quick.md", tmp_path / "quick.json"
    rc = run.main(
        [
            "--quick", "--workloads", "W1", "--tools", "ours,nutpie", "--parts", "nuts",
            "--ours-variants", "vectorized", "--chains", "2", "--draws", "150",
            "--warmup", "150", "--out", str(out), "--json", str(raw),
        ]
    )
    assert rc == 0
    text = out.read_text()
    assert "## W1 NUTS" in text
    assert "| nutpie (numba) |" in text
    assert "ours/peer ESS/s" in text
    assert "Machine:" in text
    res = json.loads(raw.read_text())["W1_nuts"]
    peer, ours = res["nutpie"], res["ours"]
    assert ours["min_ess"] > 20 and peer["min_ess"] > 20
    # same posterior: mean differences are within Monte-Carlo error of both runs
    assert peer["agree_z"] < 5.0, peer
    assert peer["agree_sd"] < 0.6, peer
