"""NAEP loader (synthetic folder) and the classical table on the real NAEP data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats

from bayes_align.classical import classical_table, optimize_temperature, wide
from bayes_align.naep import load_naep


def _write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _tiny_folder(root: Path, drop_item_for: str | None = None) -> Path:
    """Two items (item B at grades 4 and 8), two LMs and a baseline."""
    items = [
        {"item_id": "A", "stem": "?", "options": ["a", "b", "c", "d"], "correct_option_index": 0},
        {"item_id": "B", "stem": "?", "options": ["a", "b", "c", "d"], "correct_option_index": 2},
    ]
    dists = [
        {"item_id": "A", "grade": 4, "response_distribution": [0.5, 0.2, 0.2, 0.05]},  # sums to 0.95
        {"item_id": "B", "grade": 4, "response_distribution": [0.1, 0.1, 0.7, 0.1]},
        {"item_id": "B", "grade": 8, "response_distribution": [0.05, 0.05, 0.85, 0.05]},
    ]
    params = [
        {"subject": "civics", "year": 2001, "grade": 4, "scale": "s", "item_id": "A", "a": 1.0, "b": 0.0, "c": 0.2, "irt_model": "3pl"},
        {"subject": "civics", "year": 2010, "grade": 4, "scale": "s", "item_id": "A", "a": 2.0, "b": 0.5, "c": 0.25, "irt_model": "3pl"},
    ]
    _write_jsonl(root / "items" / "naep-civics-items.jsonl", items)
    _write_jsonl(root / "items" / "naep-civics-response-distributions.jsonl", dists)
    _write_jsonl(root / "items" / "naep-parameters.jsonl", params)
    for model in ("LM1", "LM2", "UniformBaseline"):
        rows = [
            {"item_id": item, "logits": (np.arange(16).reshape(4, 4) * (model != "UniformBaseline")).tolist()}
            for item in ("A", "B", "EXTRA")
            if not (model == drop_item_for and item == "B")
        ]
        _write_jsonl(root / "llm-responses" / f"naep-civics-responses-{model}.jsonl", rows)
    return root


def test_loader_on_synthetic_folder(tmp_path):
    naep = load_naep(_tiny_folder(tmp_path))
    assert naep.subsets == ("civics-4", "civics-8")
    assert naep.models == ("LM1", "LM2", "UniformBaseline")
    assert naep.baselines == ("UniformBaseline",)
    assert naep.logits.shape == (3, 3, 4, 4)  # item B appears once per grade
    np.testing.assert_allclose(naep.human_probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(naep.human_total[0], 0.95)
    np.testing.assert_allclose(naep.human_key_prob()[0], 0.5 / 0.95)
    # latest year's 3PL is used; rows without parameters are NaN
    assert naep.irt_a[0] == 2.0 and np.isnan(naep.irt_a[1])
    np.testing.assert_allclose(naep.theta0_prob()[0], 0.25 + 0.75 * special.expit(-1.7 * 2.0 * 0.5))
    sub = naep.select(["civics-8"], ["LM2"])
    assert sub.logits.shape == (1, 1, 4, 4) and sub.subset_idx.tolist() == [0]


def test_loader_names_missing_items(tmp_path):
    with pytest.raises(ValueError, match=r"LM2.*no logits for items \['B'\]"):
        load_naep(_tiny_folder(tmp_path, drop_item_for="LM2"))
    with pytest.raises(ValueError, match="no items file for subject"):
        load_naep(_tiny_folder(tmp_path / "x"), subjects="history")


@pytest.fixture(scope="module")
def naep_all(naep_dir):
    return load_naep(naep_dir)


def test_real_data_shapes(naep_all):
    assert naep_all.subsets == ("economics-12", "history-4", "history-8", "history-12")
    assert naep_all.n_models == 20 and len(naep_all.language_models) == 18
    counts = np.bincount(naep_all.subset_idx)
    assert counts.tolist() == [93, 89, 92, 76]
    assert naep_all.human_total.min() > 0.9  # shares omit omitted responses


def test_real_classical_table(naep_all):
    table = classical_table(naep_all)
    ctt = wide(table, "ctt_r")
    assert ctt.shape == (4, 18)  # baselines left out of correlations
    assert wide(table, "kl").shape == (4, 20)
    # Temperature scaling can only lower the mean KL (T = 1 is feasible).
    kl, kl_opt = wide(table, "kl"), wide(table, "kl_optimized")
    assert (kl_opt.to_numpy() <= kl.to_numpy() + 1e-12).all()
    # Human facility and NAEP's 3PL at theta = 0 agree closely: a check on the join.
    assert (wide(table, "theta0_r").loc[:, "Human"] > 0.9).all()
    # One number checked against scipy directly.
    naep = naep_all.select(["economics-12"], ["Phi-4-14B"])
    temps = optimize_temperature(naep.logits, naep.human_probs)
    probs = naep.model_probs(temps)[0]
    ref = stats.pearsonr(naep.human_key_prob(), probs[np.arange(naep.n_rows), naep.key])
    np.testing.assert_allclose(ctt.loc["economics-12", "Phi-4-14B"], ref.statistic, rtol=1e-10)
    acc = wide(table, "accuracy")
    assert (acc["UniformBaseline"] == 0.25).all() and (acc["OracleBaseline"] == 1.0).all()


def test_cli_classical_writes_long_csv_and_figures(tmp_path, capsys):
    import pandas as pd

    from bayes_align.cli import main

    folder = _tiny_folder(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["classical", "--data", str(folder), "--out", str(out)]) == 0
    table = pd.read_csv(out / "classical.csv")
    assert list(table.columns) == ["subset", "model", "metric", "value", "p_value"]
    # with 1-2 items per subset correlations are undefined and left out
    assert set(table["metric"]) == {"temperature", "kl", "kl_optimized", "tv", "tv_optimized", "accuracy"}
    for name in ("kl.png", "temperature.png"):
        assert (out / name).stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "civics-4" in printed and "skipped ctt_correlation.png" in printed


def test_aggregated_data_from_real_naep(naep_all):
    from bayes_align.aggregated import AggregatedData

    econ = naep_all.select(["economics-12"])
    data = AggregatedData.from_naep(econ, human_n=2000, model_n=100)
    assert data.n_items == 93 and data.n_groups == 19 and data.groups[0] == "human"
    np.testing.assert_allclose(data.share()[:93], econ.human_key_prob())
    with pytest.raises(ValueError, match="one \\(subject, grade\\) subset"):
        AggregatedData.from_naep(naep_all, human_n=2000, model_n=100)


def test_cli_naep_alignment_smoke(tmp_path, capsys):
    """End to end on a synthetic 8-item folder: ranks both LMs with intervals."""
    import pandas as pd

    from bayes_align.cli import main

    rng = np.random.default_rng(0)
    ids = [f"I{i}" for i in range(8)]
    root = tmp_path / "data"
    _write_jsonl(root / "items" / "naep-econ-items.jsonl", [
        {"item_id": i, "stem": "?", "options": ["a", "b", "c", "d"], "correct_option_index": 0} for i in ids
    ])
    shares = rng.dirichlet(np.ones(4), size=8)
    _write_jsonl(root / "items" / "naep-econ-response-distributions.jsonl", [
        {"item_id": i, "grade": 12, "response_distribution": s.round(2).tolist()} for i, s in zip(ids, shares, strict=True)
    ])
    for model in ("LM1", "LM2"):
        _write_jsonl(root / "llm-responses" / f"naep-econ-responses-{model}.jsonl", [
            {"item_id": i, "logits": rng.normal(0, 2, (4, 4)).tolist()} for i in ids
        ])
    out = tmp_path / "out"
    assert main(["naep-alignment", "--data", str(root), "--subject", "econ", "--out", str(out)]) == 0
    ranking = pd.read_csv(out / "naep_alignment.csv")
    assert set(ranking["model"]) == {"LM1", "LM2"}
    assert (ranking["r_low"] <= ranking["alignment_r"]).all() and (ranking["alignment_r"] <= ranking["r_high"]).all()
    assert "classical_ctt_r" in ranking.columns
