"""The HTML report: built from a small synthetic posterior (no sampling), opened in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest

from bayes_align.alignment import alignment, compare_alignment
from bayes_align.data import ResponseData
from bayes_align.diagnostics import check_convergence
from bayes_align.dif import dif_screen, mantel_haenszel
from bayes_align.report import (
    VariantAnalysis,
    dif_with_mantel_haenszel,
    divergent_items,
    figure_data_uri,
    render_report,
)

GROUPS = ("human:F", "human:M", "lm:toy")
ITEMS = tuple(f"i{k}" for k in range(6))


def _toy_data(seed: int = 0) -> ResponseData:
    rng = np.random.default_rng(seed)
    rows = []
    for g, group in enumerate(GROUPS):
        for p in range(15):
            theta = rng.normal()
            for k, item in enumerate(ITEMS):
                eta = theta - (k - 2.5) / 2 + (0.8 if (g == 2 and k == 0) else 0.0)
                y = int(rng.random() < 1 / (1 + np.exp(eta - 0.5))) + int(
                    rng.random() < 1 / (1 + np.exp(eta + 0.5))
                )
                rows.append((f"{group}-{p}", item, group, y))
    frame = pd.DataFrame(rows, columns=["person", "item", "group", "response"])
    return ResponseData.from_long(frame, reference_group="human:F", kind="ordinal")


def _toy_idata(data: ResponseData, seed: int = 1) -> az.InferenceData:
    """A posterior with the DESIGN.md names and dims (GRM), drawn around fixed values."""
    rng = np.random.default_rng(seed)
    chains, draws = 2, 100
    n_items, focal = len(data.items), data.focal_groups
    shape = (chains, draws)
    shift_mean = np.zeros((len(focal), n_items))
    shift_mean[-1, 0] = 0.9
    steps = np.sort(rng.normal(0, 0.1, (*shape, n_items, 2)) + np.array([-0.7, 0.7]), axis=-1)
    posterior = {
        "difficulty": np.linspace(-1.5, 1.5, n_items) + 0.1 * rng.normal(size=(*shape, n_items)),
        "discrimination": np.exp(0.05 * rng.normal(size=(*shape, n_items))),
        "step": steps - steps.mean(axis=-1, keepdims=True),
        "dif_shift": shift_mean + 0.15 * rng.normal(size=(*shape, len(focal), n_items)),
        "dif_scale": np.abs(0.3 + 0.05 * rng.normal(size=(*shape, len(focal)))),
        "group_mean": np.concatenate(
            [np.zeros((*shape, 1)), 0.1 * rng.normal(size=(*shape, len(focal)))], axis=-1
        ),
        "group_sd": np.ones((*shape, len(data.groups))),
        "theta": rng.normal(size=(*shape, len(data.persons))),
    }
    idata = az.from_dict(
        posterior=posterior,
        sample_stats={"diverging": np.zeros(shape, dtype=bool)},
        coords={
            "item": list(data.items),
            "focal_group": list(focal),
            "group": list(data.groups),
            "person": list(data.persons),
            "cutpoint": [0, 1],
        },
        dims={
            "difficulty": ["item"],
            "discrimination": ["item"],
            "step": ["item", "cutpoint"],
            "dif_shift": ["focal_group", "item"],
            "dif_scale": ["focal_group"],
            "group_mean": ["group"],
            "group_sd": ["group"],
            "theta": ["person"],
        },
    )
    idata.attrs.update(
        {"reference_group": "human:F", "model_spec": '{"irt": "grm"}', "method": "nuts"}
    )
    return idata


@pytest.fixture(scope="module")
def analysis() -> VariantAnalysis:
    data = _toy_data()
    idata = _toy_idata(data)
    naive = pd.DataFrame(
        {"group": list(data.focal_groups), "pearson": [0.8, 0.5], "spearman": [0.7, 0.4]}
    )
    dif = dif_with_mantel_haenszel(dif_screen(idata, scale="logit"), mantel_haenszel(data))
    return VariantAnalysis(
        name="ordinal",
        data=data,
        idata=idata,
        alignment=alignment(idata),
        comparison=compare_alignment(idata),
        naive=naive,
        dif=dif,
        diagnostics=check_convergence(idata, warn=False),
    )


def test_dif_with_mantel_haenszel_adds_classical_columns(analysis):
    dif = analysis.dif
    assert {"mh_log_odds_ratio", "mh_delta", "mh_category"} <= set(dif.columns)
    assert len(dif) == len(ITEMS) * 2
    with pytest.raises(ValueError, match="lacks the columns"):
        dif_with_mantel_haenszel(dif, pd.DataFrame({"item": [], "group": []}))


def test_divergent_items_ranks_by_absolute_shift(analysis):
    assert divergent_items(analysis.dif, ["lm:toy"], n=1) == ["i0"]
    assert divergent_items(analysis.dif, ["nobody"]) == []


def test_figure_data_uri_is_png():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    uri = figure_data_uri(fig)
    assert uri.startswith("data:image/png;base64,iVBORw0KGgo")


def test_render_report_contents(analysis):
    html = render_report([analysis], commands=["bayes-align demo --out x"], timings={"fit": 1.0})
    for fig_id in ("data", "alignment", "compare", "dif", "curves"):
        assert f'id="fig-{fig_id}-ordinal"' in html
    assert html.count("data:image/png;base64,") == 5
    assert "Mantel-Haenszel" in html and "R-hat" in html and "Divergences: 0" in html
    assert "bayes-align demo --out x" in html
    assert "numpyro" in html  # versions listed
    with pytest.raises(ValueError, match="at least one"):
        render_report([])


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_opens_in_headless_chromium(analysis, tmp_path: Path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = tmp_path / "report.html"
    page.write_text(render_report([analysis]), encoding="utf-8")
    dom = render_in_chromium(browser, page, tmp_path / "profile")
    n_images = len(re.findall(r"<img ", dom))
    assert n_images == 5
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
