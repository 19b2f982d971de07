"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests run on CPU; JAX must never grab an accelerator's memory eagerly.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# XLA's CPU backend with its classic fusion emitters instead of the MLIR ones: the suite's
# many small fits spend most of their time compiling, and these compile 40% faster (their
# programs run up to a quarter slower; benchmarks/README.md, "Fifth suite-speed session").
# Notebook kernels and CLI subprocesses inherit it. An XLA_FLAGS that names the option wins.
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false"
    ).strip()
# Programs that took at least 0.2 s to compile go into the run's persistent compilation
# cache (bayes_align_cache_dir below); JAX reads this when it is imported.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _restore_xla_flags():
    """``bayes-align fit --chains N`` declares N host devices in ``XLA_FLAGS`` for the
    process (the CLI's own process in real use); inside a test worker that setting must not
    reach later subprocesses (notebook kernels, the install test's demo)."""
    before = os.environ.get("XLA_FLAGS")
    yield
    if before is None:
        os.environ.pop("XLA_FLAGS", None)
    else:
        os.environ["XLA_FLAGS"] = before


@pytest.fixture(scope="session", autouse=True)
def bayes_align_cache_dir(tmp_path_factory) -> Iterator[Path]:
    """``BAYES_ALIGN_CACHE_DIR`` for the whole run (both xdist workers, notebook kernels and
    CLI subprocesses inherit it): SmolLM2's GGUF is dequantised once per run
    (bayes_align.scoring.dequantised), and no test writes to the user's own cache.

    The persistent compilation cache is on in that folder (``BAYES_ALIGN_COMPILATION_CACHE``;
    docs/inference.md), for programs that took at least 0.2 s to compile: a program that
    another process of the run (the other worker, a CLI subprocess, a notebook kernel)
    compiled is read back instead of compiled again. Tests that count compilations count
    those reads too (tests/test_inference.py)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, shared by the workers
    folder = root / "bayes_align_cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BAYES_ALIGN_CACHE_DIR", str(folder))
        patch.setenv("BAYES_ALIGN_COMPILATION_CACHE", "1")
        yield folder


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it lives beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def naep_dir(shared_data_dir: Path) -> Path:
    folder = shared_data_dir / "naep-llm"
    if not folder.is_dir():
        pytest.skip(f"NAEP data folder {folder} is absent")
    return folder


# ------------------------------------------------------------------ tiny shared fits
# Fits that several test files use, built once per session (per xdist worker). They are
# structural fixtures (layouts, reports, round trips), not accuracy studies: 30 persons per
# group and short chains. Tests that need a statistical claim build their own design.
TINY_GROUPS = ("human", "lm_a", "lm_b")
#: settings of every tiny NUTS fit here; a test that refits the same shapes with these
#: settings reuses the compiled program (bayes_align.infer.nuts._NUTS_PROGRAMS)
TINY_NUTS = dict(method="nuts", chains=2, draws=60, warmup=60, progress_bar=False, check=False,
                 seed=0)
TINY_SVI = dict(method="svi", draws=100, max_steps=800, progress_bar=False, seed=0)


@pytest.fixture(scope="session")
def tiny_nuts_options() -> dict:
    """The settings of the tiny NUTS fits (a copy)."""
    return dict(TINY_NUTS)


@pytest.fixture(scope="session")
def tiny_svi_options() -> dict:
    """The settings of the tiny SVI fits (a copy)."""
    return dict(TINY_SVI)


@pytest.fixture(scope="session")
def split_counts():
    """:func:`split_persons_and_counts`, for test files."""
    return split_persons_and_counts


def split_persons_and_counts(data, aggregated_groups, reference_group=None):
    """``data``'s groups other than ``aggregated_groups`` as persons, those groups as counts
    of correct answers per (item, group) (their persons summed up)."""
    from bayes_align import AggregatedData, ResponseData

    frame = data.to_frame()
    frame["group"] = frame["group"].astype(str)
    aggregated = frame["group"].isin(aggregated_groups)
    persons = ResponseData.from_long(frame[~aggregated],
                                     reference_group=reference_group or data.reference_group)
    return persons, AggregatedData.from_frame(correct_counts(frame[aggregated]),
                                              reference_group=None)


def correct_counts(frame):
    """``n_correct`` and ``n_total`` per (item, group) of a long binary frame, in order of
    appearance."""
    return (frame.groupby(["item", "group"], observed=True, sort=False)["response"]
            .agg(n_correct="sum", n_total="size").reset_index())


def _quiet_fit(data, **options):
    import warnings

    from bayes_align import fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny fits: convergence advice is expected
        return fit(data, **options)


@pytest.fixture(scope="session")
def tiny_data():
    """90 persons (30 per group: human, lm_a, lm_b) x 8 items, 2PL, 2 DIF items per focal
    group."""
    from bayes_align import simulate

    data, _ = simulate(n_persons=90, n_items=8, groups=TINY_GROUPS, n_dif_items=2, irt="2pl",
                       seed=0)
    return data


@pytest.fixture(scope="session")
def tiny_mixed_data(tiny_data):
    """``tiny_data`` with the reference as persons and the two LM groups as counts."""
    from bayes_align import combine

    return combine(*split_persons_and_counts(tiny_data, ["lm_a", "lm_b"]))


@pytest.fixture(scope="session")
def tiny_aggregated_data(tiny_data):
    """``tiny_data`` with every group as counts (the reference's included)."""
    from bayes_align import AggregatedData

    return AggregatedData.from_frame(correct_counts(tiny_data.to_frame()), reference_group="human")


@pytest.fixture(scope="session")
def tiny_1pl_nuts(tiny_data):
    """1PL without DIF (the invariant model)."""
    return _quiet_fit(tiny_data, model="1pl", dif="none", **TINY_NUTS)


@pytest.fixture(scope="session")
def tiny_2pl_nuts(tiny_data):
    """2PL with normal DIF."""
    return _quiet_fit(tiny_data, model="2pl", **TINY_NUTS)


@pytest.fixture(scope="session")
def tiny_2pl_svi(tiny_data):
    return _quiet_fit(tiny_data, model="2pl", **TINY_SVI)


@pytest.fixture(scope="session")
def tiny_grm_data():
    """45 persons (15 per group) x 4 graded items with 3 categories, 2 DIF items."""
    from bayes_align import simulate

    data, _ = simulate(n_persons=45, n_items=4, n_dif_items=2, irt="grm", n_categories=3, seed=2)
    return data


@pytest.fixture(scope="session")
def tiny_grm_nuts(tiny_grm_data):
    return _quiet_fit(tiny_grm_data, model="grm", **TINY_NUTS)


@pytest.fixture(scope="session")
def tiny_aggregated_svi(tiny_aggregated_data):
    return _quiet_fit(tiny_aggregated_data, model="1pl", **TINY_SVI)


@pytest.fixture(scope="session")
def tiny_mixed_nuts(tiny_mixed_data):
    return _quiet_fit(tiny_mixed_data, model="2pl", **TINY_NUTS)
