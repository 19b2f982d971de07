"""``naep_alignment``: one subset's LMs ranked by posterior alignment (synthetic folders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bayes_align.naep import load_naep
from bayes_align.naep_alignment import naep_alignment

N_ITEMS = 30


def _write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def two_grade_folder(tmp_path_factory) -> Path:
    """30 items at grades 4 and 8 with 1PL student shares; three LMs:

    ``Mirror`` reproduces the students' option shares exactly (logits = log shares, the
    same in every presentation order), ``Shuffled`` has the students' shares of a random
    other item, ``Noise`` has random logits; plus a ``UniformBaseline``.
    """
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("naep")
    ids = [f"I{i:02d}" for i in range(N_ITEMS)]
    _write_jsonl(root / "items" / "naep-civics-items.jsonl", [
        {"item_id": i, "stem": "?", "options": list("abcd"), "correct_option_index": 0} for i in ids
    ])
    difficulty = rng.normal(0, 1.2, N_ITEMS)
    shares = {}
    for grade, shift in ((4, 0.0), (8, -0.7)):
        p_key = 1 / (1 + np.exp(difficulty + shift))  # P(correct | theta = 0), roughly
        wrong = rng.dirichlet(np.ones(3) * 3, N_ITEMS) * (1 - p_key)[:, None]
        shares[grade] = np.column_stack([p_key, wrong])
    _write_jsonl(root / "items" / "naep-civics-response-distributions.jsonl", [
        {"item_id": i, "grade": g, "response_distribution": shares[g][n].tolist()}
        for g in (4, 8) for n, i in enumerate(ids)
    ])
    # LM logits are per item, not per grade: Mirror copies the grade-4 shares
    mirror = np.log(shares[4])
    shuffled = np.log(shares[4][rng.permutation(N_ITEMS)])
    lms = {
        "Mirror": np.repeat(mirror[:, None, :], 4, axis=1),
        "Shuffled": np.repeat(shuffled[:, None, :], 4, axis=1),
        "Noise": rng.normal(0, 1.5, (N_ITEMS, 4, 4)),
        "UniformBaseline": np.zeros((N_ITEMS, 4, 4)),
    }
    for name, logits in lms.items():
        _write_jsonl(root / "llm-responses" / f"naep-civics-responses-{name}.jsonl", [
            {"item_id": i, "logits": logits[n].tolist()} for n, i in enumerate(ids)
        ])
    return root


@pytest.fixture(scope="module")
def grade4(two_grade_folder):
    naep = load_naep(two_grade_folder)
    return naep_alignment(naep, "civics-4", temperature="raw", seed=0)


def test_mirror_lm_ranks_first_and_baselines_are_left_out(grade4):
    ranking = grade4.ranking
    assert list(ranking["model"])[0] == "Mirror"
    assert set(ranking["model"]) == {"Mirror", "Shuffled", "Noise"}
    mirror = ranking.set_index("model").loc["Mirror"]
    # an LM that answers like the students has r near 1; its interval excludes the others' means
    assert mirror["alignment_r"] > 0.9
    assert (ranking.loc[ranking["model"] != "Mirror", "alignment_r"] < mirror["r_low"]).all()
    assert ((ranking["r_low"] <= ranking["alignment_r"]) & (ranking["alignment_r"] <= ranking["r_high"])).all()
    # the classical number is the same subset's CTT r at the same temperature (Mirror: exact)
    assert mirror["classical_ctt_r"] == pytest.approx(1.0, abs=1e-9)


def test_result_carries_its_inputs(grade4):
    np.testing.assert_array_equal(grade4.temperature, np.ones((3, 1)))
    assert grade4.subset == "civics-4"
    assert grade4.data.n_items == N_ITEMS and grade4.data.n_groups == 4
    assert grade4.fit.idata.attrs["kind"] == "aggregated"


@pytest.mark.filterwarnings("ignore:SVI did not converge")
def test_optimized_temperature_per_lm(two_grade_folder):
    from bayes_align.classical import optimize_temperature

    naep = load_naep(two_grade_folder)
    result = naep_alignment(naep, "civics-8", max_steps=400, draws=50)
    part = naep.select(["civics-8"], models=naep.language_models)
    expected = optimize_temperature(part.logits, part.human_probs, part.subset_idx, 1)
    np.testing.assert_allclose(result.temperature, expected)
    assert result.temperature.shape == (3, 1) and not np.allclose(result.temperature, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "pass subset="),
        ({"subset": "civics-12"}, "unknown subset 'civics-12'"),
        ({"subset": "civics-4", "likelihood": "nominal", "irt": "3pl"}, "supports irt '1pl' or '2pl'"),
        ({"subset": "civics-4", "temperature": -1.0}, "positive number"),
        ({"subset": "civics-4", "temperature": "hot"}, "positive number"),
    ],
)
def test_bad_input_is_refused_before_fitting(two_grade_folder, kwargs, message):
    naep = load_naep(two_grade_folder)
    with pytest.raises(ValueError, match=message):
        naep_alignment(naep, **kwargs)


#: naep_alignment's economics ranking (SVI, seed 0) computed by the separate aggregated
#: model stack that the single model layer replaced (bayes_align 0.1.0 before the
#: rebuild): the rebuild must not change it.
PREVIOUS_ECONOMICS_RANKING = [
    "Phi-4-14B", "Qwen2.5-14B", "Qwen2.5-72B", "Qwen2.5-32B", "Qwen2.5-0.5B", "Phi-3-14B",
    "Llama-3.3-70B", "Qwen2.5-3B", "Qwen2.5-7B", "OLMo-2-7B", "Phi-3-3.8B", "Llama-3.1-8B",
    "Llama-3.2-3B", "Llama-3.1-70B", "OLMo-2-13B", "Qwen2.5-1.5B", "Phi-3-7B", "Llama-3.2-1B",
]


@pytest.mark.shared
def test_economics_ranking_unchanged_by_the_single_model_layer(naep_dir):
    from scipy import stats

    result = naep_alignment(load_naep(naep_dir, "economics"), seed=0)
    now = list(result.ranking["model"])
    assert sorted(now) == sorted(PREVIOUS_ECONOMICS_RANKING)
    rho = stats.spearmanr([PREVIOUS_ECONOMICS_RANKING.index(m) for m in now], range(len(now))).statistic
    assert rho >= 0.95, rho
