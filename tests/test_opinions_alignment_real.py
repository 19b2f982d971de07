"""Posterior alignment on the paper's OpinionQA outputs (skipped when ``../shared/data`` is absent).

Persona steering, the five LMs and the three expression methods, the two POLPARTY groups
LMs were steered to (Democrat, Republican) as targets: two graded fits. The classical
finding (LMs describe a distribution better than they simulate it: the verbalised
distribution is closest in TV) holds in the posterior too, pooled over the two targets:
credibly against log-probs for the three LMs that have them (posterior differences of
0.11 to 0.23 in ``pearson`` over the runs recorded below) and against sequences for GPT-4,
GPT-3.5 and Llama-3-70B (0.05 to 0.22); the Anthropic LMs' gaps are smaller (0.02 to 0.05, near the SVI
seed-to-seed spread), so only their sign is checked. Both rankings are printed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bayes_align.distributional_alignment import distributional_alignment
from bayes_align.opinions import load_lm_results, load_opinions

pytestmark = pytest.mark.shared

METHODS = ["logprobs", "sequence", "verbalized"]
#: 300 draws of the (SVI) posterior instead of 1,000, and a learning rate of 0.05 (the
#: ELBO still converges by the default tolerance, in 1,400 to 1,600 steps instead of 1,800
#: at 0.03): the comparisons are posterior probabilities of differences of 0.04 to 0.22
#: whose sd is ~0.01-0.03, estimated to about +-0.01 from 300 independent draws, and the
#: pointwise log-likelihood (a fifth of the run time at 1,000 draws) scales with the draws.
#: Measured with these options: verbalised minus log-probs 0.11 to 0.22 and minus sequence
#: 0.05 to 0.18 for the three LMs with both (P = 1.00), Anthropic 0.04 (P = 0.99) and 0.05
#: (P = 1.00); at 0.03: 0.11 to 0.20, 0.06 to 0.16, Anthropic 0.02 (P = 0.91) and 0.05.
FIT_OPTIONS = {"draws": 300, "learning_rate": 0.05}


@pytest.fixture(scope="module")
def study(shared_data_dir: Path):
    folder = shared_data_dir / "opinionqa"
    if not (folder / "pew-disagreement-100").is_dir() or not (folder / "lm-results").is_dir():
        pytest.skip(f"OpinionQA data folder {folder} is absent or incomplete")
    human = load_opinions(folder / "pew-disagreement-100", attributes=["POLPARTY"],
                          info=folder / "pew-disagreement-500/info.csv")
    lm = load_lm_results(folder / "lm-results", human, progress=False).subset(
        methods=METHODS, steering=["persona"])
    return distributional_alignment(human, lm, progress=False, seed=0, n_boot=500,
                                    fit_options=FIT_OPTIONS)


def test_verbalized_beats_sequence_and_logprobs_in_the_posterior(study):
    summary = study.summary(by=("model", "method"))
    print("\n" + summary.sort_values(["model", "mean"]).round(3).to_string(index=False))
    comparison = study.compare(factor="method", by=("model",))
    print("\n" + comparison.round(3).to_string(index=False))
    print("\n" + study.table[["model", "method", "group", "n_items", "n_identified"]].to_string(index=False))
    assert set(study.table["group"]) == {"Democrat", "Republican"}
    # Opus' verbalised answers fail to parse on up to 25 items; an item where a condition put
    # all its mass on one answer (Llama-3-70B's log-probs: 52 to 65 items) leaves the correlation
    assert (study.table["n_items"] >= 70).all() and (study.table["n_identified"] >= 30).all()
    small_gap = {"anthropic_haiku", "anthropic_opus"}
    for model, part in comparison.groupby("model"):
        for other in ("sequence", "logprobs"):
            row = part.loc[((part["a"] == "verbalized") & (part["b"] == other))
                           | ((part["a"] == other) & (part["b"] == "verbalized"))]
            if row.empty:
                continue  # the Anthropic LMs have no log-probs
            row = row.iloc[0]
            p_verbalized = row["prob_better"] if row["a"] == "verbalized" else 1 - row["prob_better"]
            assert p_verbalized > (0.5 if model in small_gap else 0.95), (model, other, p_verbalized)
            tv_verbalized = row["tv_diff"] if row["a"] == "verbalized" else -row["tv_diff"]
            assert tv_verbalized < 0, (model, other)
