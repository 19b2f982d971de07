"""Output-path checks and atomic writes (bayes_align.files)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from bayes_align.files import (
    FRAME_SUFFIXES,
    atomic_path,
    check_output,
    check_output_folder,
    write_frame,
    write_text,
)


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "fit.nc"
    assert check_output(out) == out  # absent: fine
    out.write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output(out)
    assert check_output(out, overwrite=True) == out
    assert out.read_text() == "old"  # checking never touches the file


def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path):
    data = tmp_path / "responses.csv"
    data.write_text("person,item\n")
    (tmp_path / "sub").mkdir()
    same = tmp_path / "sub" / ".." / "responses.csv"
    with pytest.raises(ValueError, match="also an input"):
        check_output(same, inputs=[data], overwrite=True)
    link = tmp_path / "link.csv"
    link.symlink_to(data)
    with pytest.raises(ValueError, match="also an input"):
        check_output(link, inputs=[None, data], overwrite=True)
    hard = tmp_path / "hard.csv"
    os.link(data, hard)
    with pytest.raises(ValueError, match="also an input"):
        check_output(hard, inputs=[data], overwrite=True)
    # two outputs of one command that coincide (neither exists yet)
    with pytest.raises(ValueError, match="also an input"):
        check_output(tmp_path / "a.csv", inputs=[tmp_path / "." / "a.csv"])


def test_folder_or_wrong_extension_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        check_output(tmp_path, suffixes=(".nc",))
    with pytest.raises(ValueError, match="must end in .nc"):
        check_output(tmp_path / "fit.csv", suffixes=(".nc",))
    assert check_output(tmp_path / "FIT.NC", suffixes=(".nc",)).name == "FIT.NC"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_output(blocker / "deeper" / "out.csv")


def test_missing_parent_folders_are_created(tmp_path):
    out = tmp_path / "a" / "b" / "table.csv"
    check_output(out)
    assert out.parent.is_dir() and not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused_before_work(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot write"):
            check_output(folder / "x.csv")
    finally:
        folder.chmod(0o700)


def test_output_folder(tmp_path):
    out = tmp_path / "results"
    assert check_output_folder(out, ["a.csv", "b.png"]).is_dir()
    (out / "b.png").write_bytes(b"png")
    with pytest.raises(FileExistsError, match="b.png exists"):
        check_output_folder(out, ["a.csv", "b.png"])
    check_output_folder(out, ["a.csv", "b.png"], overwrite=True)
    afile = tmp_path / "plain"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_output_folder(afile, ["a.csv"])


def test_atomic_path_replaces_only_on_success(tmp_path):
    out = tmp_path / "table.csv"
    out.write_text("previous")
    for failure in (RuntimeError("writer failed"), KeyboardInterrupt()):
        with pytest.raises(type(failure)):
            with atomic_path(out) as temporary:
                assert temporary.parent == out.parent and temporary.suffix == ".csv"
                temporary.write_text("half a ta")
                raise failure
        assert out.read_text() == "previous"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no leftovers
    with atomic_path(out) as temporary:
        temporary.write_text("new")
    assert out.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_atomic_path_refuses_a_writer_that_wrote_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="did not create"):
        with atomic_path(tmp_path / "x.nc"):
            pass
    assert not (tmp_path / "x.nc").exists()


@pytest.mark.parametrize("suffix", FRAME_SUFFIXES)
def test_write_frame_round_trip(tmp_path, suffix):
    frame = pd.DataFrame({"item": ["007", "NA", "é"], "mean": [0.5, -1.25, 2.0]})
    path = write_frame(frame, tmp_path / f"t{suffix}")
    if suffix in (".csv", ".tsv"):
        back = pd.read_csv(path, sep="," if suffix == ".csv" else "\t", dtype={"item": str},
                           keep_default_na=False)  # fmt: skip
    elif suffix == ".json":
        back = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    elif suffix == ".jsonl":
        back = pd.read_json(path, lines=True, dtype={"item": str})
    else:
        back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, frame)


def test_write_frame_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="cannot write a table"):
        write_frame(pd.DataFrame({"a": [1]}), tmp_path / "t.xlsx")
    assert list(tmp_path.iterdir()) == []


def test_write_text(tmp_path):
    path = write_text("héllo\n", tmp_path / "r.html")
    assert path.read_text(encoding="utf-8") == "héllo\n"
