"""The HTML report of a person-level, an aggregated and a mixed fit (tiny fits), its CLI,
and the page opened in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayes_align as ba
from bayes_align.report import (
    Classical,
    analyse,
    classical_numbers,
    dif_with_mantel_haenszel,
    divergent_items,
    figure_data_uri,
    render_report,
)

# the tiny SVI fits stop before their convergence test is met, which does not matter here
pytestmark = pytest.mark.filterwarnings("ignore:SVI did not converge")


def _figures(page: str) -> set[str]:
    return set(re.findall(r'<figure id="fig-([a-z]+)-', page))


# The data and the three fits are conftest's session fixtures (shared with the inference
# and predictive tests): 90 persons (3 groups of 30) x 8 items, 2 DIF items per focal group.
@pytest.fixture(scope="module")
def responses(tiny_data) -> ba.ResponseData:
    return tiny_data


@pytest.fixture(scope="module")
def person_fit(tiny_2pl_svi):
    """2PL by SVI (100 draws, at most 800 steps)."""
    return tiny_2pl_svi


@pytest.fixture(scope="module")
def aggregated_fit(tiny_aggregated_svi):
    """Every group as counts per item, 1PL by SVI."""
    return tiny_aggregated_svi


@pytest.fixture(scope="module")
def mixed_fit(tiny_mixed_nuts):
    """The reference as persons, the two LM groups as counts; 2PL by NUTS (2 x 60 draws)."""
    return tiny_mixed_nuts


@pytest.fixture(scope="module")
def classical(responses) -> Classical:
    return classical_numbers(responses, model="2pl")


def test_person_level_svi_report(person_fit, classical):
    analysis = analyse(person_fit, "persons", classical=classical)
    assert "posterior_predictive" not in person_fit.idata.groups()  # the caller's fit is untouched
    page = render_report([analysis])
    assert {"alignment", "compare", "dif", "curves", "ppc", "loss"} <= _figures(page)
    assert "trace" not in _figures(page) and analysis.diagnostics is None
    assert "Approximate posterior" in page and "SVI" in page
    assert "Mantel-Haenszel" in page and "<th>classical</th>" in page
    # every (group, item) cell of the data is in the predictive check, weighted by persons
    table = analysis.predictive
    assert len(table) == 3 * 8 and np.allclose(table["n"], 30)
    frame = person_fit.data  # observed means recomputed from the data
    for _, row in table.sample(4, random_state=0).iterrows():
        g, i = frame.groups.index(row["group"]), frame.items.index(row["item"])
        mask = (frame.group_idx == g) & (frame.item_idx == i)
        assert row["observed"] == pytest.approx(frame.response[mask].mean())


def test_aggregated_report(aggregated_fit):
    assert aggregated_fit.idata.attrs["kind"] == "aggregated"
    analysis = analyse(aggregated_fit, "aggregated")
    page = render_report([analysis])
    assert {"alignment", "compare", "dif", "curves", "ppc"} <= _figures(page)
    assert "(aggregated)" in page and "No classical numbers were given" in page
    table = analysis.predictive
    assert len(table) == 3 * 8 and np.allclose(table["n"], 30)  # weighted by the row totals
    rows = aggregated_fit.data
    shares = rows.n_correct / rows.n_total
    observed = table.set_index(["group", "item"])["observed"]
    for r in range(rows.n_rows):
        key = (rows.groups[rows.row_group[r]], rows.items[rows.row_item[r]])
        assert observed[key] == pytest.approx(shares[r])


def test_mixed_nuts_report(mixed_fit, classical):
    assert mixed_fit.idata.attrs["kind"] == "mixed"
    analysis = analyse(mixed_fit, "mixed", classical=classical)
    page = render_report([analysis], commands=["bayes-align report fit.nc --out r.html"],
                         timings={"fit": 1.0})
    assert {"alignment", "compare", "dif", "curves", "ppc", "trace", "rank"} <= _figures(page)
    assert "R-hat: max" in page and "Divergences:" in page
    assert "(persons)" in page and "(aggregated)" in page
    assert "bayes-align report fit.nc --out r.html" in page and "numpyro" in page
    # the model fits data simulated from it: most item means inside their 90% interval
    assert analysis.predictive["inside"].mean() >= 0.8
    assert analysis.predictive.attrs["draws"] == 120


def test_render_report_refuses_bad_input(person_fit):
    with pytest.raises(ValueError, match="at least one"):
        render_report([])
    analysis = analyse(person_fit, "same")
    with pytest.raises(ValueError, match="unique"):
        render_report([analysis, analysis])


def test_dif_with_mantel_haenszel_adds_classical_columns(person_fit, classical):
    dif = dif_with_mantel_haenszel(ba.dif_screen(person_fit, scale="logit"),
                                   classical.mantel_haenszel)
    assert {"mh_log_odds_ratio", "mh_delta", "mh_category"} <= set(dif.columns)
    assert len(dif) == 8 * 2 and dif["mh_log_odds_ratio"].notna().all()
    with pytest.raises(ValueError, match="lacks the columns"):
        dif_with_mantel_haenszel(dif, pd.DataFrame({"item": [], "group": []}))


def test_divergent_items_ranks_by_absolute_shift():
    dif = pd.DataFrame({"item": ["a", "b", "a", "b"], "group": ["g", "g", "h", "h"],
                        "mean": [0.1, -0.9, 0.5, 0.2]})
    assert divergent_items(dif, ["g"], n=1) == ["b"]
    assert divergent_items(dif, ["h"], n=2) == ["a", "b"]
    assert divergent_items(dif, ["nobody"]) == []


def test_figure_data_uri_is_png():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    assert figure_data_uri(fig).startswith("data:image/png;base64,iVBORw0KGgo")


def test_classical_numbers_need_a_focal_group(responses):
    only_reference = responses.subset_groups(["human"])
    with pytest.raises(ValueError, match="only the reference group"):
        classical_numbers(only_reference)


# ------------------------------------------------------------------------------ the CLI
def test_report_command(mixed_fit, responses, tmp_path: Path, capsys):
    from bayes_align.cli import main

    fit_file = mixed_fit.to_netcdf(tmp_path / "mixed.nc")
    csv = tmp_path / "responses.csv"
    responses.to_frame().to_csv(csv, index=False)
    out = tmp_path / "report.html"
    assert main(["report", str(fit_file), "--responses", str(csv), "--out", str(out),
                 "--draws", "50"]) == 0
    page = out.read_text(encoding="utf-8")
    assert {"alignment", "dif", "ppc", "trace", "rank"} <= _figures(page)
    assert "<th>classical</th>" in page and "Mantel-Haenszel" in page
    capsys.readouterr()

    assert main(["report", str(fit_file), "--out", str(out)]) == 2  # exists, no --overwrite
    error = capsys.readouterr().err.strip()
    assert error.startswith("bayes-align: error:") and "--overwrite" in error
    assert len(error.splitlines()) == 1
    assert out.read_text(encoding="utf-8") == page  # never a lost file

    strangers = responses.to_frame().astype({"group": str})
    strangers["group"] = strangers["group"].replace("lm_b", "lm_z")
    strangers.to_csv(csv, index=False)
    assert main(["report", str(fit_file), "--responses", str(csv), "--out",
                 str(tmp_path / "other.html")]) == 2
    error = capsys.readouterr().err.strip()
    assert "'lm_z'" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "other.html").exists()


@pytest.mark.parametrize("which", ["person_fit", "aggregated_fit"])
def test_report_command_on_person_level_and_aggregated_fits(which, request, tmp_path: Path):
    from bayes_align.cli import main

    fit = request.getfixturevalue(which)
    fit_file = fit.to_netcdf(tmp_path / f"{which}.nc")
    out = tmp_path / "report.html"
    assert main(["report", str(fit_file), "--out", str(out), "--draws", "50"]) == 0
    page = out.read_text(encoding="utf-8")
    assert {"alignment", "compare", "dif", "ppc", "loss"} <= _figures(page)
    assert "Approximate posterior" in page
    kind = "aggregated" if which == "aggregated_fit" else "persons"
    assert f"({kind})" in page


# ------------------------------------------------------------------------------ Chromium
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_opens_in_headless_chromium(mixed_fit, classical, tmp_path: Path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = tmp_path / "report.html"
    page.write_text(render_report([analyse(mixed_fit, "mixed", classical=classical)]),
                    encoding="utf-8")
    dom = render_in_chromium(browser, page, tmp_path / "profile")
    n_images = len(re.findall(r"<img ", dom))
    assert n_images == 7  # alignment, compare, dif, curves, ppc, trace, rank
    assert f'data-figures-loaded="{n_images}"' in dom


def render_in_chromium(browser: str, page: Path, profile: Path) -> str:
    """The DOM of ``page`` after load, from headless Chromium; fails on a JavaScript error."""
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "Uncaught" in line]
    assert not errors, errors
    return result.stdout
