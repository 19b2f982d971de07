"""Expression methods (parsers), steering, the paper's templates, and ``score``'s
orchestration through a scripted backend (no LM needed)."""

from __future__ import annotations

import glob
import json
from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
import pytest

from bayes_align.scoring import (
    Backend,
    CacheMismatchError,
    FewShot,
    Item,
    LabelScores,
    Persona,
    Prompt,
    PromptTemplate,
    bag_of_words_similarity,
    load_template_folder,
    option_probabilities,
    option_table,
    parse_sequence,
    parse_verbalized,
    score,
    to_long_frame,
)

LABELS = ("A", "B", "C", "D")
OPTIONS = ("Top priority", "Some priority", "No priority", "Refused")


# ---------------------------------------------------------------- sequence parser
@pytest.mark.parametrize(
    ("text", "counts", "status", "detail"),
    [
        ("A B A C D A", [3, 1, 1, 1], "ok", ""),
        ("A, B, A, C, D, A", [3, 1, 1, 1], "ok", ""),
        ("ABACDA", [3, 1, 1, 1], "ok", ""),  # glued, as GPT-4 often writes
        ("1. A 2. B 3. A 4. C 5. D 6. A", [3, 1, 1, 1], "ok", ""),  # numbered list
        ("Here are the answers: A B A C D A. Hope this helps!", [3, 1, 1, 1], "partial",
         "other word(s) around the answers"),
        ("A B A", [2, 1, 0, 0], "partial", "3 answers instead of 6"),
        ("A B A C D A B B", [3, 3, 1, 1], "partial", "8 answers instead of 6"),
        ("A B A C D A then B B", [3, 1, 1, 1], "partial", "2 label(s) outside the answer sequence"),
        ("ABACEA", [3, 1, 1, 0], "partial", "1 answer letter(s) that are not options"),
    ],
)
def test_parse_sequence(text, counts, status, detail):
    result = parse_sequence(text, LABELS, n_expected=6)
    counts = np.asarray(counts, dtype=float)
    np.testing.assert_allclose(result.probs, counts / counts.sum())
    assert result.status == status and detail in result.detail


@pytest.mark.parametrize("text", ["", "I cannot answer that.", "a b a c"])  # lower case is prose
def test_parse_sequence_failure_is_reported(text):
    result = parse_sequence(text, LABELS, n_expected=6)
    assert result.status == "failed" and np.isnan(result.probs).all() and result.detail


def test_parse_sequence_with_word_and_number_labels():
    yes_no = parse_sequence("yes, no, yes, yes", ("yes", "perhaps", "no"), 4)
    np.testing.assert_allclose(yes_no.probs, [0.75, 0, 0.25])
    likert = parse_sequence("1 2 2 5 4", ("1", "2", "3", "4", "5"), 5)
    np.testing.assert_allclose(likert.probs, [0.2, 0.4, 0, 0.2, 0.2])


# ---------------------------------------------------------------- verbalized parser
@pytest.mark.parametrize(
    ("text", "probs", "status", "detail"),
    [
        ('{"A": "30%", "B": "2%", "C": "45%", "D": "23%"}', [0.30, 0.02, 0.45, 0.23], "ok", ""),
        ("{'A': '45%', 'B': '30%', C: '20%', D: '5%'}", [0.45, 0.30, 0.20, 0.05], "ok", ""),
        ('{"A": 0.5, "B": 0.25, "C": 0.15, "D": 0.1}', [0.5, 0.25, 0.15, 0.1], "ok", ""),
        ("{'A':'.50','B':'.25','C':'.15','D':'.10'}", [0.5, 0.25, 0.15, 0.1], "ok", ""),
        ("Sure! Here it is:\nA: 40%\nB: 30%\nC: 20%\nD: 10%\nThese are estimates.",
         [0.4, 0.3, 0.2, 0.1], "ok", ""),
        # percentages not summing to 100
        ('{"A": "50%", "B": "30%", "C": "10%", "D": "0%"}', [5 / 9, 3 / 9, 1 / 9, 0],
         "renormalised", "summed to 90%"),
        ('{"A": 60, "B": 60, "C": 40, "D": 40}', [0.3, 0.3, 0.2, 0.2], "renormalised",
         "summed to 200%"),
        # missing options
        ('{"A": "70%", "B": "30%"}', [0.7, 0.3, 0, 0], "partial", "['C', 'D'] not given"),
        # duplicates: the first value is kept, and said so
        ("A: 40%, A: 50%, B: 30%, C: 20%, D: 10%", [0.4, 0.3, 0.2, 0.1], "partial",
         "'A' given twice (40, 50); first kept"),
        # option texts instead of letters (any case), and a key that is not an option
        ('{"top priority": 60, "Some priority": 30, "No priority": 10, "Refused": 0, "Other": 5}',
         [0.6, 0.3, 0.1, 0.0], "partial", "['Other'] are not options"),
        ("{'A': '45%', 'B': '3%', 'C': '40%', D: '11%', E: '1%'}", np.array([45, 3, 40, 11]) / 99,
         "partial", "['E'] are not options"),
        # letters and option texts mixed
        ('{"A": 50, "Some priority": 30, "C": 20, "Refused": 0}', [0.5, 0.3, 0.2, 0.0], "ok", ""),
    ],
)
def test_parse_verbalized(text, probs, status, detail):
    result = parse_verbalized(text, LABELS, OPTIONS)
    np.testing.assert_allclose(result.probs, probs, atol=1e-12)
    assert result.status == status and detail in result.detail


@pytest.mark.parametrize(
    "text", ["", "I think most people would choose A.", '{"A": 0, "B": 0, "C": 0, "D": 0}']
)
def test_parse_verbalized_failure_is_reported(text):
    result = parse_verbalized(text, LABELS, OPTIONS)
    assert result.status == "failed" and np.isnan(result.probs).all() and result.detail


@pytest.mark.shared
def test_parsers_reproduce_the_papers_own_counts(shared_data_dir):
    """On every sequence and verbalised response of the paper's LMs, the parsed
    distribution equals the paper's (to rounding), and failures are rare and reported."""
    root = shared_data_dir / "opinionqa" / "lm-results"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    for method, parse, tolerance in (
        ("sequence", lambda t, lab: parse_sequence(t, lab, 30), 0.011),
        ("express_distribution", parse_verbalized, 0.011),
    ):
        statuses: dict[str, int] = {}
        diffs = []
        for path in glob.glob(str(root / method / "*" / "*" / "*" / "*.json")):
            for entry in json.loads(open(path).read()).values():
                labels = sorted(entry.get("expected_results") or entry["avg_actual_results"])
                if not labels or not all(lab in entry["actual_results"] for lab in labels):
                    continue
                runs = zip(*(entry["actual_results"][lab] for lab in labels), strict=True)
                for text, paper in zip(entry["response"], runs, strict=True):
                    result = parse(text, labels)
                    statuses[result.status] = statuses.get(result.status, 0) + 1
                    paper = np.asarray(paper, dtype=float)
                    if result.status != "failed" and paper.sum() > 0:
                        diffs.append(np.abs(result.probs - paper / paper.sum()).max())
        total = sum(statuses.values())
        assert total > 5000, (method, statuses)
        assert statuses.get("failed", 0) / total < 0.02, (method, statuses)
        diffs = np.asarray(diffs)
        # one sequence response of the paper ("Hereare:CECC...") is counted differently
        assert np.mean(diffs > tolerance) < 0.001, (method, np.sort(diffs)[-5:])


# ---------------------------------------------------------------- templates and steering
@pytest.mark.shared
def test_the_papers_templates_load_from_their_folder(shared_data_dir):
    folder = shared_data_dir / "opinionqa" / "prompts"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    templates = load_template_folder(folder)
    assert set(templates) == {
        (m, s) for m in ("logprobs", "sequence", "verbalized") for s in ("none", "persona", "few_shot")
    }
    item = Item("q", "Do you agree?", ("Yes", "No", "Refused"))
    text = templates["verbalized", "few_shot"].render(
        None, item, (1, 2, 0), context="Question: X?\nAnswers of Democrat: 'Yes': 40%",
        method="verbalized",
    )
    assert text.startswith("Given the fields `context` and `question`")
    assert text.endswith(
        "Context: Question: X?\nAnswers of Democrat: 'Yes': 40%\nQuestion: Do you agree?\n"
        "'A'. No\n'B'. Refused\n'C'. Yes\nAnswer:"
    )
    plain = templates["logprobs", "none"].render(None, item, (0, 1, 2))
    assert plain.endswith("Question: Do you agree?\nA. Yes\nB. No\nC. Refused\nAnswer:")
    assert templates["sequence", "none"].stop == ("\n\n", "---")


POOL = [
    Item("guns1", "Should gun laws be stricter?", ("Yes", "No")),
    Item("guns2", "Do stricter gun laws reduce crime?", ("Yes", "No")),
    Item("tax1", "Should taxes on the rich rise?", ("Yes", "No")),
    Item("tax2", "Do high taxes on the rich hurt growth?", ("Yes", "No")),
    Item("sky", "Is the sky blue today?", ("Yes", "No")),
]
SHARES = pd.DataFrame(
    [
        {"item": item, "group": group, "option": option, "count": count}
        for item, dem, rep in [("guns2", 70, 20), ("tax1", 80, 30), ("tax2", 25, 75), ("sky", 50, 50)]
        for group, yes in (("Democrat", dem), ("Republican", rep))
        for option, count in (("Yes", yes), ("No", 100 - yes))
    ]
)


def test_bag_of_words_similarity_is_a_cosine():
    sim = bag_of_words_similarity([p.stem for p in POOL] + [""])
    np.testing.assert_allclose(np.diag(sim)[:-1], 1.0)
    np.testing.assert_allclose(sim, sim.T)
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[2, 4] and sim[-1].max() == 0.0


def test_few_shot_examples_come_from_similar_questions_of_the_same_group():
    few = FewShot(POOL, SHARES, k=2)
    examples = few.examples(POOL[0], "Democrat")  # guns1 has no shares; it is never its own example
    assert [item.item_id for item, _ in examples][0] == "guns2"
    np.testing.assert_allclose(examples[0][1], [0.7, 0.3])
    context = few.context(POOL[0], "Republican", PromptTemplate().few_shot_format)
    assert context.splitlines()[:2] == [
        "Question: Do stricter gun laws reduce crime?", "Answers of Republican: 'Yes': 20%, 'No': 80%"
    ]
    table = FewShot(POOL, SHARES, k=1, similarity={"guns1": ["sky", "guns2"]})
    assert table.examples(POOL[0], "Democrat")[0][0].item_id == "sky"
    with pytest.raises(ValueError, match="option 'Maybe' of item 'sky'"):
        FewShot(POOL, pd.concat([SHARES, pd.DataFrame([{"item": "sky", "group": "Democrat",
                                                        "option": "Maybe", "count": 1}])]))


# ---------------------------------------------------------------- score() orchestration
class ScriptedBackend:
    """Answers from a fixed function of the prompt text; counts what it was asked."""

    name = "scripted"

    def __init__(self, answer=None, tag="v1"):
        self.answer = answer or (lambda prompt: "A B A C")
        self.tag = tag
        self.calls = 0

    def fingerprint(self) -> str:
        return f"scripted-{self.tag}"

    def uses_chat(self, template) -> bool:
        return False

    def render(self, template, messages) -> Prompt:
        return Prompt(template.render_messages(None, messages), False)

    def label_logprobs(self, prompts, labels, groups: Sequence[Hashable], batch_size=None,
                       share_prefix=True, progress=True):
        for i, (prompt, label_set) in enumerate(zip(prompts, labels, strict=True)):
            self.calls += 1
            scores = np.log(np.arange(1, len(label_set) + 1, dtype=float))  # P(label j) ~ j + 1
            missing = (len(label_set) - 1,) if "missing" in prompt.text else ()
            scores[list(missing)] = np.nan
            yield [i], [LabelScores(scores, float(np.exp(scores[~np.isnan(scores)]).sum()), missing)]

    def complete(self, prompts, n=1, temperature=1.0, max_tokens=16, stop=(), seed=0,
                 batch_size=None, progress=True):
        for i, prompt in enumerate(prompts):
            self.calls += 1
            yield [i], [[self.answer(prompt.text)] * n]


ITEMS = [Item("q1", "Agree?", ("yes", "perhaps", "no")), Item("q2", "Agree more?", ("yes", "no"))]


def test_backend_protocol_is_satisfied_by_the_scripted_backend():
    assert isinstance(ScriptedBackend(), Backend)


def test_every_method_gives_the_same_table_through_the_same_cache(tmp_path):
    frames = {}
    for method in ("logprobs", "sequence", "verbalized"):
        backend = ScriptedBackend(lambda text: "A B A C" if "letters" in text else '{"A": 60, "B": 40}')
        cache = tmp_path / f"{method}.jsonl"
        first = score(backend, ITEMS, method=method, n_samples=4, cache=cache, progress=False)
        calls = backend.calls
        again = score(backend, ITEMS, method=method, n_samples=4, cache=cache, progress=False)
        assert backend.calls == calls == 5  # 3 + 2 cyclic orders, the rerun computes nothing
        pd.testing.assert_frame_equal(first.drop(columns=["probs"]), again.drop(columns=["probs"]))
        frames[method] = option_table(first)
        if method != "logprobs":  # another method never reuses these rows
            with pytest.raises(CacheMismatchError, match="expression"):
                score(backend, ITEMS, method="logprobs" if method == "sequence" else "sequence",
                      cache=cache, progress=False)
    columns = list(frames["logprobs"].columns)
    assert all(list(f.columns) == columns for f in frames.values())
    assert {"item", "persona", "option", "probability", "method", "parse_status", "completions"} <= set(columns)
    for frame in frames.values():
        np.testing.assert_allclose(frame.groupby("item")["probability"].sum(), 1.0)
    # logprobs: P(label j) ~ j + 1, averaged over the cyclic orders -> uniform
    np.testing.assert_allclose(frames["logprobs"]["probability"], [1 / 3] * 3 + [1 / 2] * 2)
    # sequence "A B A C": position shares (1/2, 1/4, 1/4) for 3 options, averaged over orders
    np.testing.assert_allclose(frames["sequence"].query("item == 'q1'")["probability"], [1 / 3] * 3)
    q2 = frames["sequence"].query("item == 'q2'")
    assert (q2["parse_status"] == "partial 2").all()  # 'C' is no option of a 2-option item
    np.testing.assert_allclose(frames["verbalized"].query("item == 'q2'")["probability"], [0.5, 0.5])


def test_parse_failures_are_counted_not_dropped():
    backend = ScriptedBackend(lambda text: "B B B" if "A) perhaps" in text else "no idea")
    with pytest.warns(UserWarning, match="4 of 5 sequence answers .* could not be parsed"):
        scores = score(backend, ITEMS, method="sequence", n_samples=3, progress=False)
    assert scores.attrs["parse_status_counts"] == {"failed": 4, "ok": 1}
    assert scores.attrs["parse_failure_rate"] == pytest.approx(0.8)
    table = option_table(scores)
    q1 = table.query("item == 'q1'")
    assert (q1["n_orders"] == 1).all() and (q1["n_failed"] == 2).all()
    assert q1["parse_status"].iloc[0] == "failed 2, ok 1"
    # only the parsed order counts: it shows (perhaps, no, yes), so "B" is "no"
    np.testing.assert_allclose(q1["probability"], [0, 0, 1])
    assert table.query("item == 'q2'")["probability"].isna().all()
    assert q1["completions"].iloc[0] == ["no idea", "B B B", "no idea"]  # orders 0, 1, 2
    with pytest.warns(UserWarning, match="1 of 2 .* distributions are left out"):
        long = to_long_frame(scores, mode="sample", n_samples=2)
    assert set(long["item"]) == {"q1"}


def test_missing_labels_are_renormalised_and_reported():
    template = PromptTemplate(instructions_after_item="missing")
    with pytest.warns(UserWarning, match="2 of 2 prompts had 2 label"):
        scores = score(ScriptedBackend(), ITEMS, template, debias=None, progress=False)
    assert (scores["n_missing_labels"] == 1).all() and (scores["parse_status"] == "partial").all()
    np.testing.assert_allclose(scores["probs"].iloc[0], [1 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(option_probabilities(scores)["probs"].iloc[1], [1.0, 0.0])


def test_steering_modes_and_cache_keys(tmp_path):
    items = POOL[:2]
    persona = [Persona("Democrat", "You are a Democrat.", {})]
    few = FewShot(POOL, SHARES, k=2)
    backend = ScriptedBackend()
    plain = score(backend, items, method="sequence", progress=False)
    steered = score(backend, items, personas=persona, method="sequence", progress=False)
    shots = score(backend, items, few_shot=few, method="sequence", progress=False)
    assert set(plain["steering"]) == {"none"} and set(steered["steering"]) == {"persona"}
    assert set(shots["steering"]) == {"few_shot"} and set(shots["persona"]) == {"Democrat", "Republican"}
    assert "You are a Democrat." in steered["prompt"].iloc[0]
    assert "Answers of Republican: 'Yes': 20%" in shots.query("persona == 'Republican'")["prompt"].iloc[0]
    assert "You are" not in shots["prompt"].iloc[0]
    keys = [set(f["cache_key"]) for f in (plain, steered, shots)]
    assert all(a.isdisjoint(b) for a, b in [(keys[0], keys[1]), (keys[1], keys[2]), (keys[0], keys[2])])
    # the few-shot data are part of the key: other shares, other rows
    other = FewShot(POOL, SHARES.assign(count=SHARES["count"].iloc[::-1].to_numpy()), k=2)
    assert set(score(backend, items, few_shot=other, method="sequence", progress=False)["cache_key"]).isdisjoint(keys[2])
    # the backend fingerprint, method settings and template are part of the key
    assert set(score(ScriptedBackend(tag="v2"), items, method="sequence", progress=False)["cache_key"]).isdisjoint(keys[0])
    assert set(score(backend, items, method="sequence", n_samples=10, progress=False)["cache_key"]).isdisjoint(keys[0])
    with pytest.raises(ValueError, match="steering='none' shows no persona"):
        score(backend, items, personas=persona, steering="none", progress=False)
    with pytest.raises(ValueError, match="Personas \\['Green'\\] have no shares"):
        score(backend, items, personas=[Persona("Green", "", {})], few_shot=few, progress=False)


def test_cli_scores_every_method_with_few_shot_steering(tmp_path, monkeypatch):
    import bayes_align.scoring as scoring
    from bayes_align.cli import main

    backend = ScriptedBackend(lambda text: '{"A": "70%", "B": "30%"}' if "JSON" in text else "A B")
    monkeypatch.setattr(scoring, "load_backend", lambda path: backend)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item_id": p.item_id, "stem": p.stem, "options": list(p.options)}) + "\n" for p in POOL))
    shares = tmp_path / "shares.csv"
    SHARES.to_csv(shares, index=False)
    similar = tmp_path / "similar.json"
    similar.write_text(json.dumps({"guns1": ["guns2", "tax1"]}))
    out = tmp_path / "verbalized.csv"
    argv = ["score", "--model", "m.yaml", "--items", str(items), "--out", str(out),
            "--method", "verbalized", "--few-shot-shares", str(shares), "--similarity", str(similar),
            "--k", "1", "--table", "options", "--no-progress"]
    assert main(argv) == 0
    table = pd.read_csv(out)
    assert set(table["steering"]) == {"few_shot"} and set(table["method"]) == {"verbalized"}
    assert set(table["persona"]) == {"Democrat", "Republican"} and len(table) == len(POOL) * 2 * 2
    np.testing.assert_allclose(table.groupby(["item", "persona"])["probability"].sum(), 1.0)
    assert main([*argv[:6], str(tmp_path / "seq.parquet"), "--method", "sequence", "--n-samples", "2",
                 "--no-progress"]) == 0
    prompts = pd.read_parquet(tmp_path / "seq.parquet")
    assert set(prompts["parse_status"]) == {"ok"} and "Write their 2 answers" in prompts["prompt"].iloc[0]
