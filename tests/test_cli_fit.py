"""CLI round trip: bayes-align fit -> alignment -> dif -> compare, with CSV/JSON outputs."""

from __future__ import annotations

import json
import os
import warnings

import pandas as pd
import pytest

from bayes_align.cli import main


@pytest.fixture(scope="module")
def tiny_cli(tiny_nuts_options):
    """conftest's tiny NUTS settings as CLI options (without --model)."""
    o = tiny_nuts_options
    return ["--method", o["method"], "--chains", str(o["chains"]),
            "--draws", str(o["draws"]), "--warmup", str(o["warmup"]), "--seed", str(o["seed"]),
            "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def responses_csv(tmp_path_factory, tiny_data):
    """conftest's session data (90 persons in 3 groups x 8 items, 2 DIF items per focal
    group), renamed columns."""
    frame = tiny_data.to_frame().drop(columns="weight")
    frame = frame.rename(columns={"person": "respondent", "response": "answer"})
    path = tmp_path_factory.mktemp("cli") / "responses.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fitted(responses_csv, tiny_cli, tiny_2pl_nuts, tiny_1pl_nuts):
    """Two tiny NUTS fits through the CLI, saved as NetCDF: the 2PL with DIF and the 1PL
    without. Same models, settings and shapes as conftest's session fits, so the CLI reuses
    the programs compiled for those (requested here so that they exist)."""
    folder = responses_csv.parent
    outputs = {}
    with pytest.MonkeyPatch.context() as patch:
        # `fit --chains 2` declares 2 XLA host devices in XLA_FLAGS (too late for this
        # process's JAX); keep the variable as it was for later tests' subprocesses
        patch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
        _fit_both(responses_csv, folder, tiny_cli, outputs)
    return outputs


def _fit_both(responses_csv, folder, tiny_cli, outputs):
    for dif, model in (("normal", "2pl"), ("none", "1pl")):
        out = folder / f"{dif}.nc"
        argv = ["fit", str(responses_csv), "--reference", "human", "--person-col", "respondent",
                "--response-col", "answer", "--dif", dif, "--model", model, "--out", str(out), *tiny_cli]  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 2 x 60 draws: ESS advice is expected
            assert main(argv) == 0
        outputs[dif] = out


def test_fit_saves_a_reloadable_fit(fitted, capsys):
    from bayes_align import load_fit

    reloaded = load_fit(fitted["normal"])
    assert reloaded.method == "nuts" and reloaded.reference_group == "human"
    assert reloaded.idata.posterior["dif_shift"].sizes["focal_group"] == 2


def test_alignment_command_writes_csv_and_json(fitted, tmp_path, capsys):
    csv, js = tmp_path / "align.csv", tmp_path / "align.json"
    assert main(["alignment", str(fitted["normal"]), "--csv", str(csv), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "Posterior alignment with reference 'human'" in printed
    assert "Ranking of focal groups by pearson" in printed
    table = pd.read_csv(csv)
    assert list(table.columns) == ["group", "metric", "mean", "sd", "hdi_low", "hdi_high"]
    assert set(table["group"]) == {"lm_a", "lm_b"} and len(table) == 8
    assert len(json.loads(js.read_text())) == 8


def test_dif_command_writes_table(fitted, tmp_path, capsys):
    csv, js = tmp_path / "dif.csv", tmp_path / "dif.json"
    argv = ["dif", str(fitted["normal"]), "--rope", "0.3", "--prob", "0.8",
            "--csv", str(csv), "--json", str(js)]  # fmt: skip
    assert main(argv) == 0
    assert "pairs flagged" in capsys.readouterr().out
    table = pd.read_csv(csv)
    for column in ["item", "group", "mean", "hdi_low", "hdi_high", "prob_abs_gt_rope",
                   "category", "flagged"]:  # fmt: skip
        assert column in table.columns
    assert len(table) == 8 * 2
    records = json.loads(js.read_text())
    assert records[0]["item"] == table["item"].iloc[0]


def test_compare_command(fitted, tmp_path, capsys):
    csv = tmp_path / "compare.csv"
    argv = ["compare", str(fitted["normal"]), str(fitted["none"]), "--names", "dif",
            "invariant", "--csv", str(csv)]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "PSIS-LOO model comparison" in printed and "The data" in printed
    assert set(pd.read_csv(csv)["model"]) == {"dif", "invariant"}


def test_errors_are_reported_not_raised(fitted, responses_csv, tiny_cli, tmp_path, capsys):
    assert main(["dif", str(tmp_path / "missing.nc")]) == 2
    assert "no saved fit" in capsys.readouterr().err
    # An invariant fit has no dif_shift: the DIF screen says what to do.
    assert main(["dif", str(fitted["none"])]) == 2
    assert "dif='normal'" in capsys.readouterr().err
    # A misnamed column names the column and the way out.
    argv = ["fit", str(responses_csv), "--out", str(tmp_path / "x.nc"), *tiny_cli]
    assert main(argv) == 2
    assert "person='person'" in capsys.readouterr().err
    assert main(["compare", str(fitted["normal"]), str(fitted["normal"])]) == 2
    assert "unique" in capsys.readouterr().err


def test_declare_chain_devices_one_host_device_per_chain(monkeypatch):
    from bayes_align.cli.fit_commands import declare_chain_devices

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    declare_chain_devices(4)
    assert "--xla_force_host_platform_device_count=4" in os.environ["XLA_FLAGS"]
    assert "--xla_cpu_enable_fast_math=false" in os.environ["XLA_FLAGS"]
    # a device count the user set already wins
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    declare_chain_devices(8)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
