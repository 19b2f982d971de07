"""The CLI tried as users try it: careless paths, odd labels, bad arguments, damaged files.

Every user error must print one line on stderr (``bayes-align: error: ...``, no
traceback) and exit 2, before any work and without touching a file; ``--debug`` shows
the traceback; an interrupted fit leaves the previous output intact. See
docs/robustness.md for the table of input classes and the tests that cover them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayes_align as ba
from bayes_align.cli import build_parser, main

MAP = ["--model", "1pl", "--method", "map", "--quiet"]


def run(capsys, *argv) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(result, *fragments) -> None:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("bayes-align: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def responses(tmp_path_factory) -> Path:
    """60 persons in 2 groups x 6 items, labels as users write them."""
    data, _ = ba.simulate(
        n_persons=60, n_items=6, groups=("human", "lm"), n_dif_items=1, irt="1pl", seed=3
    )
    frame = data.to_frame().drop(columns="weight")
    item_names = dict(zip(data.items, ["007", "7", "7.0", "NA", "null", " x"], strict=True))
    frame["item"] = frame["item"].astype(str).map(item_names)
    path = tmp_path_factory.mktemp("data") / "responses.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fit_file(responses) -> Path:
    out = responses.parent / "fit.nc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        argv = ["fit", str(responses), "--out", str(out), "--model", "1pl", "--method", "svi",
                "--draws", "100", "--quiet"]  # fmt: skip
        assert main(argv) == 0
    return out


# ------------------------------------------------------------------- data read as written
def test_labels_are_kept_exactly_as_written(fit_file):
    items = ba.load_fit(fit_file).idata.posterior["difficulty"]["item"].to_numpy().astype(str)
    assert sorted(items) == sorted(["007", "7", "7.0", "NA", "null", " x"])


def test_weight_column_is_used_or_refused_never_dropped(responses, tmp_path, capsys):
    frame = pd.read_csv(responses, dtype=str, keep_default_na=False)
    doubled = pd.concat([frame, frame], ignore_index=True).assign(weight="0.5")
    path = tmp_path / "weighted.csv"
    doubled.to_csv(path, index=False)
    data = ba.ResponseData.from_long(path)
    assert data.has_weights and data.n_obs == 2 * len(frame)
    code, out, _ = run(capsys, "fit", path, "--out", tmp_path / "w.nc", *MAP)
    assert code == 0 and "weights: column 'weight'" in out
    # ignoring the weights turns the repeated rows into duplicates, which are named
    assert_user_error(
        run(capsys, "fit", path, "--no-weight", "--out", tmp_path / "x.nc", *MAP),
        "Duplicate (person, item) responses",
    )
    bad = doubled.assign(weight=["0"] + ["1"] * (len(doubled) - 1))
    bad.to_csv(path, index=False)
    assert_user_error(
        run(capsys, "fit", path, "--out", tmp_path / "x.nc", *MAP),
        "Weight column 'weight' must be a positive finite count; rows 2",
    )


def test_empty_cells_and_missing_words_name_the_lines(responses, tmp_path, capsys):
    lines = responses.read_text().splitlines()
    lines[3] = "," + lines[3].split(",", 1)[1]  # empty person cell on line 4
    path = tmp_path / "holes.csv"
    path.write_text("\n".join(lines) + "\n")
    assert_user_error(
        run(capsys, "fit", path, "--out", tmp_path / "x.nc", *MAP),
        "Column 'person' (person) is empty or missing in rows 4",
        "line numbers",
    )
    lines = responses.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ",NA"
    path.write_text("\n".join(lines) + "\n")
    assert_user_error(
        run(capsys, "fit", path, "--out", tmp_path / "x.nc", *MAP),
        "Response column 'response' is NaN, infinite or not numeric in rows 6",
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\xff\xfe\x00p\x00e", "is not UTF-8"),
        (b"person,item,group,response\na,b,human,1,9\n", "more cells than the header"),
        (b"person,person,group,response\na,b,human,1\n", "appear more than once"),
        (b"person;item;group;response\na;b;human;1\n", "person='person'"),
    ],
)
def test_unreadable_response_files(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    assert_user_error(run(capsys, "fit", path, "--out", tmp_path / "x.nc", *MAP), message)


def test_response_file_of_unknown_type_or_missing(tmp_path, capsys):
    xlsx = tmp_path / "responses.xlsx"
    xlsx.write_bytes(b"PK")
    assert_user_error(run(capsys, "fit", xlsx, "--out", tmp_path / "x.nc"), "save them as CSV")
    assert_user_error(
        run(capsys, "fit", tmp_path / "nope.csv", "--out", tmp_path / "x.nc"), "does not exist"
    )
    assert_user_error(run(capsys, "fit", tmp_path, "--out", tmp_path / "x.nc"), "is a folder")


# ------------------------------------------------------------------------ files are sacred
def test_fit_output_paths_checked_before_work(responses, fit_file, tmp_path, capsys):
    before = responses.read_bytes(), fit_file.read_bytes()
    assert_user_error(
        run(capsys, "fit", responses, "--out", responses, "--overwrite", *MAP),
        "wrong extension",
    )
    assert_user_error(run(capsys, "fit", responses, "--out", fit_file, *MAP), "--overwrite")
    assert_user_error(run(capsys, "fit", responses, "--out", tmp_path, *MAP), "is a folder")
    started = time.perf_counter()
    assert_user_error(
        run(capsys, "fit", tmp_path / "missing.csv", "--out", fit_file, *MAP), "--overwrite"
    )
    assert time.perf_counter() - started < 5  # refused before reading or fitting
    assert (responses.read_bytes(), fit_file.read_bytes()) == before
    # a missing output folder is created
    code, out, _ = run(capsys, "fit", responses, "--out", tmp_path / "new" / "deep" / "f.nc", *MAP)
    assert code == 0 and (tmp_path / "new" / "deep" / "f.nc").is_file()


def test_overwrite_replaces_the_fit(responses, tmp_path, capsys):
    out = tmp_path / "fit.nc"
    out.write_bytes(b"old")
    code, _, _ = run(capsys, "fit", responses, "--out", out, "--overwrite", *MAP)
    assert code == 0 and ba.load_fit(out).method == "map"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.nc"]  # no temporary left
    assert_user_error(run(capsys, "dif", out), "single draw")  # a MAP fit has no DIF posterior


def test_table_outputs_checked_before_loading(fit_file, tmp_path, capsys):
    csv = tmp_path / "table.csv"
    csv.write_text("keep me")
    for command in (["alignment", fit_file], ["dif", fit_file], ["compare", fit_file, fit_file,
                                                                  "--names", "a", "b"]):  # fmt: skip
        assert_user_error(run(capsys, *command, "--csv", csv), "exists; pass --overwrite")
        assert_user_error(run(capsys, *command, "--json", tmp_path / "t.csv"), "must end in .json")
        assert_user_error(
            run(capsys, *command, "--csv", tmp_path / "a.csv", "--json", tmp_path / "a.csv"),
            "must end in .json",
        )
        assert_user_error(run(capsys, *command, "--csv", fit_file), "wrong extension")
    assert csv.read_text() == "keep me"
    code, _, _ = run(capsys, "dif", fit_file, "--csv", csv, "--json", tmp_path / "d.json",
                     "--overwrite")  # fmt: skip
    assert code == 0 and "item" in pd.read_csv(csv, dtype=str).columns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "table.csv"]


def test_output_equal_to_an_input_is_refused(fit_file, tmp_path, capsys):
    renamed = tmp_path / "fit.csv"  # a fit renamed by hand, then given as the table output
    renamed.write_bytes(fit_file.read_bytes())
    link = tmp_path / "link.csv"
    link.symlink_to(renamed)
    for output in (renamed, link):
        assert_user_error(
            run(capsys, "alignment", renamed, "--csv", output, "--overwrite"), "also an input"
        )
    assert renamed.read_bytes() == fit_file.read_bytes()


# ----------------------------------------------------------------------- damaged fit files
def test_files_that_are_not_fits_say_so(fit_file, responses, tmp_path, capsys):
    as_nc = tmp_path / "responses.nc"
    as_nc.write_bytes(responses.read_bytes())
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(fit_file.read_bytes()[: fit_file.stat().st_size // 2])
    plain = tmp_path / "plain.nc"
    import xarray as xr

    xr.Dataset({"x": ("a", np.arange(3))}).to_netcdf(plain, engine="h5netcdf")
    for path in (as_nc, truncated, plain):
        for command in ("alignment", "dif"):
            assert_user_error(run(capsys, command, path), "not a bayes_align fit")
    assert_user_error(run(capsys, "dif", tmp_path / "none.nc"), "no saved fit at")
    assert_user_error(run(capsys, "dif", tmp_path), "is a folder, not a saved fit")


# ------------------------------------------------------------------- arguments and designs
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--chains", "0", "--method", "nuts"], "chains must be a whole number >= 1, got 0"),
        (["--draws", "0"], "draws must be a whole number >= 1"),
        (["--warmup", "-5"], "warmup must be a whole number >= 0"),
        (["--reference", "nobody"], "Reference group 'nobody' is not among the groups"),
    ],
)
def test_bad_fit_arguments_refused_before_fitting(responses, tmp_path, capsys, arguments, message):
    started = time.perf_counter()
    argv = ["fit", responses, "--out", tmp_path / "x.nc", "--model", "1pl", "--quiet", *arguments]
    assert_user_error(run(capsys, *argv), message)
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "x.nc").exists()


def test_designs_the_model_cannot_fit(responses, tmp_path, capsys):
    frame = pd.read_csv(responses, dtype=str, keep_default_na=False)
    humans = tmp_path / "humans.csv"
    frame[frame["group"] == "human"].to_csv(humans, index=False)
    assert_user_error(run(capsys, "fit", humans, "--out", tmp_path / "x.nc", *MAP), "one group only")
    ordinal = tmp_path / "ordinal.csv"
    frame.assign(response=np.resize(["0", "1", "2"], len(frame))).to_csv(ordinal, index=False)
    assert_user_error(
        run(capsys, "fit", ordinal, "--out", tmp_path / "x.nc", *MAP),
        "have more than 2 response categories",
    )
    soft = tmp_path / "soft.csv"
    frame.assign(response=np.resize(["0.25", "0.5", "1"], len(frame))).to_csv(soft, index=False)
    assert_user_error(
        run(capsys, "fit", soft, "--out", tmp_path / "x.nc", "--model", "grm", "--method", "map"),
        "graded response model",
    )
    assert not (tmp_path / "x.nc").exists()


# ------------------------------------------------------------ NAEP and demo commands' paths
def test_classical_and_naep_alignment_paths(tmp_path, capsys):
    missing = tmp_path / "no-naep"
    assert_user_error(run(capsys, "classical", "--data", missing), "does not exist")
    assert_user_error(
        run(capsys, "naep-alignment", "--data", missing, "--subject", "econ"), "does not exist"
    )
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_user_error(run(capsys, "classical", "--data", missing, "--out", afile), "is a file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "classical.csv").write_text("keep")
    (out / "naep_alignment.csv").write_text("keep")
    assert_user_error(run(capsys, "classical", "--data", missing, "--out", out), "--overwrite")
    assert_user_error(
        run(capsys, "naep-alignment", "--data", missing, "--subject", "e", "--out", out),
        "--overwrite",
    )
    assert (out / "classical.csv").read_text() == "keep"
    assert_user_error(
        run(capsys, "naep-alignment", "--data", missing, "--subject", "e", "--human-n", "0"),
        "--human-n must be a positive",
    )
    assert_user_error(
        run(capsys, "naep-alignment", "--data", missing, "--subject", "e", "--irt", "3pl",
            "--likelihood", "nominal"),  # fmt: skip
        "--likelihood nominal supports",
    )


def test_demo_paths_and_arguments(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_user_error(run(capsys, "demo", "--out", afile), "is a file")
    out = tmp_path / "demo"
    out.mkdir()
    (out / "report.html").write_text("keep")
    assert_user_error(run(capsys, "demo", "--out", out), "report.html exists; pass --overwrite")
    assert_user_error(run(capsys, "demo", "--out", tmp_path / "d2", "--chains", "0"), "chains")
    assert (out / "report.html").read_text() == "keep"


# ------------------------------------------------------------------------- the error style
def test_every_command_has_overwrite_and_debug():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"fit", "alignment", "dif", "compare", "score", "classical", "naep-alignment",
            "demo"} <= set(commands)  # fmt: skip
    for name, command in commands.items():
        flags = {flag for action in command._actions for flag in action.option_strings}
        assert {"--overwrite", "--debug"} <= flags, name


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (KeyError("answer"), "missing key or column 'answer'"),
        (FileNotFoundError(2, "No such file or directory", "t.yaml"), "No such file or directory: t.yaml"),
        (ModuleNotFoundError("No module named 'torch'", name="torch"), "needs the package 'torch'"),
        (ValueError("first line\n  second line"), "first line | second line"),
        ("yaml", "while scanning"),
    ],
)
def test_user_error_classes_print_one_line(monkeypatch, capsys, error, text):
    import yaml

    from bayes_align.cli import fit_commands

    def handler(args):
        if error == "yaml":
            yaml.safe_load("key: 'unclosed")
        raise error

    monkeypatch.setattr(fit_commands, "_run_dif", handler)
    assert_user_error(run(capsys, "dif", "x.nc"), text)


def test_bugs_are_not_hidden(monkeypatch):
    from bayes_align.cli import fit_commands

    def handler(args):
        raise TypeError("a bug")

    monkeypatch.setattr(fit_commands, "_run_dif", handler)
    with pytest.raises(TypeError, match="a bug"):
        main(["dif", "x.nc"])


def test_debug_shows_the_traceback(tmp_path):
    for argv in (["--debug", "dif", str(tmp_path / "x.nc")], ["dif", str(tmp_path / "x.nc"), "--debug"]):
        with pytest.raises(FileNotFoundError):
            main(argv)


def test_installed_entry_point_prints_one_line(tmp_path):
    """The real process: one line and status 2; with --debug the traceback."""
    argv = [sys.executable, "-m", "bayes_align", "dif", str(tmp_path / "missing.nc")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"bayes-align: error: no saved fit at {tmp_path / 'missing.nc'}; create one with "
        "'bayes-align fit'"
    ]
    done = subprocess.run([*argv, "--debug"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" in done.stderr


# ---------------------------------------------------------------------- interrupted writes
DRIVER = """
import signal, sys, time
from pathlib import Path
import arviz as az

# Ctrl-C as in a terminal: a suite started in the background by a shell without job
# control runs with SIGINT ignored, and every process it starts inherits that
signal.signal(signal.SIGINT, signal.default_int_handler)

def slow_write(self, path, *args, **kwargs):  # the NetCDF writer: half a file, then hang
    Path(path).write_bytes(b"CDF half a fit")
    Path(sys.argv[1]).touch()
    # short sleeps: a signal the kernel hands to another thread (JAX's pools) does not
    # interrupt this thread's sleep; Python runs the handler when the sleep returns
    for _ in range(3000):
        time.sleep(0.1)

az.InferenceData.to_netcdf = slow_write
from bayes_align.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_fit_killed_while_writing_keeps_the_previous_fit(responses, fit_file, tmp_path, how):
    out = tmp_path / "fit.nc"
    out.write_bytes(fit_file.read_bytes())
    driver, marker = tmp_path / "driver.py", tmp_path / "writing"
    driver.write_text(DRIVER)
    argv = [sys.executable, str(driver), str(marker), "fit", str(responses), "--out", str(out),
            "--overwrite", *MAP]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the fit never reached its write"
            time.sleep(0.05)
        os.kill(process.pid, getattr(signal, how))
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert out.read_bytes() == fit_file.read_bytes()  # the previous fit, intact
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in {"fit.nc", "driver.py", "writing"})
    if how == "SIGINT":  # Ctrl-C: the partial file is removed, one line, status 130
        assert process.returncode == 130 and leftovers == []
        assert "Traceback" not in err and "interrupted" in err
    else:  # kill -9 cannot clean up: at most a hidden partial file beside the fit
        assert all(name.startswith(".fit.") and name.endswith(".partial.nc") for name in leftovers)
