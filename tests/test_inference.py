"""fit / run_inference / diagnostics / save-load on tiny data (few draws: structure, not accuracy).

The 2PL, 1PL and GRM NUTS fits and the 2PL SVI fit are conftest's session fixtures (built
once per worker and shared with the report and predictive tests); the compile-once tests
refit other data of the same shapes with their settings and check that nothing compiles."""

from __future__ import annotations

import json
import warnings

import arviz as az
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest

from bayes_align import fit, load_fit, simulate
from bayes_align.data import ResponseData
from bayes_align.diagnostics import ConvergenceWarning, check_convergence
from bayes_align.inference import run_inference
from bayes_align.results import Fit, as_idata

# one chain and 50 iterations: each model variant below compiles its own program anyway
TINY = dict(chains=1, draws=20, warmup=30, progress_bar=False, check=False)


@pytest.fixture
def tiny(tiny_data):
    """conftest's session data: 90 persons (3 groups of 30) x 8 items, 2 DIF items."""
    return tiny_data


@pytest.fixture
def tiny_2pl(tiny_2pl_nuts):
    return tiny_2pl_nuts


def _flipped(data: ResponseData) -> ResponseData:
    """The same design with every binary response flipped (same shapes, other data)."""
    return ResponseData.from_indices(
        person_idx=data.person_idx, item_idx=data.item_idx, person_group=data.person_group,
        response=1.0 - data.response, persons=data.persons, items=data.items,
        groups=data.groups, reference_group=data.reference_group, kind="binary", warn=False,
    )


def _check_layout(fit_: Fit, data: ResponseData, expected: set[str]):
    post = fit_.posterior
    assert set(post.data_vars) == expected
    assert post.sizes["chain"] >= 1 and post.sizes["draw"] >= 1
    assert list(post["difficulty"].dims[2:]) == ["item"]
    assert list(post.coords["item"].values) == list(data.items)
    assert list(post["theta"].coords["person"].values) == list(data.persons)
    assert list(post["group_mean"].coords["group"].values) == list(data.groups)
    if "dif_shift" in expected:
        assert post["dif_shift"].dims[2:] == ("focal_group", "item")
        assert list(post.coords["focal_group"].values) == list(data.focal_groups)
    ll = fit_.idata.log_likelihood
    assert list(ll.data_vars) == ["y"]  # one variable: az.loo / az.compare defaults work
    assert ll["y"].dims[2:] == ("obs",) and ll.sizes["obs"] == data.n_obs
    assert np.isfinite(ll["y"].values).all()
    const = fit_.idata.constant_data
    for name in ("person_idx", "item_idx", "group_idx", "n_responses"):
        assert const[name].dims == ("obs",)
    assert const["person_group"].dims == ("person",)
    assert fit_.idata.observed_data["y"].dims == ("obs",)
    attrs = fit_.idata.attrs
    assert attrs["reference_group"] == data.reference_group
    assert attrs["kind"] == data.kind
    assert attrs["method"] == fit_.method
    assert "bayes_align_version" in attrs
    assert json.loads(attrs["model_spec"])["irt"] == fit_.spec.irt
    assert json.loads(attrs["priors"])["dif_scale"] == fit_.priors.dif_scale
    assert attrs["approximate"] == int(fit_.method != "nuts")


#: compilations a same-shape SVI refit may still trigger (eager guide set-up; measured: 0)
SVI_SETUP_COMPILES = 2

BASE = {"difficulty", "group_mean", "group_sd", "theta", "dif_shift", "dif_scale"}


def test_2pl_layout_and_sample_stats(tiny, tiny_2pl):
    _check_layout(tiny_2pl, tiny, BASE | {"discrimination"})
    stats = tiny_2pl.idata.sample_stats
    for name in ("diverging", "tree_depth", "lp", "energy", "step_size"):
        assert name in stats
    assert tiny_2pl.posterior["difficulty"].dtype == np.float32
    post = tiny_2pl.posterior
    np.testing.assert_array_equal(post["group_mean"].sel(group="human").values, 0.0)
    np.testing.assert_array_equal(post["group_sd"].sel(group="human").values, 1.0)


def test_1pl_without_dif(tiny, tiny_1pl_nuts):
    _check_layout(tiny_1pl_nuts, tiny, {"difficulty", "group_mean", "group_sd", "theta"})
    assert tiny_1pl_nuts.spec.dif == "none" and tiny_1pl_nuts.spec.irt == "1pl"


def test_3pl_horseshoe_with_anchors(tiny):
    result = fit(tiny, model="3pl", dif="horseshoe", anchors=("item_000", "item_001"), **TINY)
    _check_layout(result, tiny, BASE | {"discrimination", "guessing"})
    shift = result.posterior["dif_shift"].sel(item=["item_000", "item_001"]).values
    np.testing.assert_array_equal(shift, 0.0)
    assert result.spec.identification == "anchors" and result.spec.dif == "horseshoe"
    guessing = result.posterior["guessing"].values
    assert np.all((guessing > 0) & (guessing < 1))


def test_soft_weighted_responses_with_discrimination_dif_in_float64():
    """Soft responses, aggregated-row weights and non-uniform DIF in one fit, in double
    precision (one compiled program for the four options)."""
    soft, _ = simulate(n_persons=45, n_items=5, n_dif_items=2, soft=True, seed=3)
    assert soft.kind == "soft"
    df = soft.to_frame()
    df["count"] = np.where(df.index % 3 == 0, 2.0, 1.0)
    data = ResponseData.from_long(df, weight="count")
    result = fit(data, model="2pl", dif_discrimination=True, float64=True, **TINY)
    extra = {"discrimination", "dif_log_discrimination", "dif_log_discrimination_scale"}
    _check_layout(result, data, BASE | extra)
    assert result.posterior["difficulty"].dtype == np.float64
    assert result.posterior["dif_log_discrimination"].dims[2:] == ("focal_group", "item")
    np.testing.assert_array_equal(result.idata.constant_data["n_responses"].values, df["count"])
    np.testing.assert_allclose(result.idata.observed_data["y"].values, df["response"])
    with pytest.raises(ValueError, match=r"\(soft\) responses cannot be fitted with the graded"):
        fit(data, model="grm", **TINY)


def test_grm_samples_with_step_dims(tiny_grm_data, tiny_grm_nuts):
    result, data = tiny_grm_nuts, tiny_grm_data
    _check_layout(result, data, BASE | {"discrimination", "step"})
    assert result.posterior["step"].dims[2:] == ("item", "cutpoint")
    assert result.posterior.sizes["cutpoint"] == 2
    np.testing.assert_allclose(result.posterior["step"].sum("cutpoint").values, 0.0, atol=1e-4)


def test_svi_lowrank_minibatch(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 600 steps need not converge
        svi = fit(tiny, method="svi", guide="lowrank", minibatch_size=100, draws=50,
                  max_steps=600, eval_every=100, progress_bar=False)
    _check_layout(svi, tiny, BASE | {"discrimination"})
    assert svi.posterior.sizes["draw"] == 50 and svi.elbo.shape[0] <= 600


def test_save_load_round_trip(tiny, tiny_2pl, tmp_path):
    path = tiny_2pl.to_netcdf(tmp_path / "fit.nc")
    loaded = load_fit(path)
    assert loaded.spec == tiny_2pl.spec and loaded.priors == tiny_2pl.priors
    assert loaded.method == "nuts" and loaded.reference_group == "human"
    for name in tiny_2pl.posterior.data_vars:
        np.testing.assert_array_equal(loaded.posterior[name].values, tiny_2pl.posterior[name].values)
    # the file holds no pointwise log-likelihood; load_fit recomputes it from the data
    import h5py

    with h5py.File(path) as handle:
        assert "log_likelihood" not in handle
    np.testing.assert_allclose(
        loaded.idata.log_likelihood["y"].values, tiny_2pl.idata.log_likelihood["y"].values, rtol=1e-5
    )
    assert list(loaded.posterior.coords["person"].values) == list(tiny.persons)
    assert json.loads(loaded.idata.attrs["dif_unidentified"]) == []
    assert as_idata(loaded) is loaded.idata
    assert loaded.data.n_obs == tiny.n_obs
    np.testing.assert_array_equal(loaded.data.response, tiny.response)


def test_load_fit_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_fit(tmp_path / "absent.nc")
    junk = tmp_path / "junk.nc"
    junk.write_text("person,item\n")
    with pytest.raises(ValueError, match="not a bayes_align fit"):
        load_fit(junk)
    other = tmp_path / "other.nc"
    az.from_dict(posterior={"x": np.zeros((1, 3))}).to_netcdf(str(other))
    with pytest.raises(ValueError, match="not a bayes_align fit"):
        load_fit(other)


def test_map_stores_dif_unidentified_and_elbo(tmp_path):
    df = pd.DataFrame(
        {
            "person": ["a", "a", "b", "b", "c", "c", "d", "d", "c", "d"],
            "item": ["i1", "i2", "i1", "i2", "i1", "i2", "i1", "i2", "i3", "i3"],
            "group": ["human"] * 4 + ["lm"] * 6,
            "response": [0, 1, 1, 0, 1, 0, 0, 1, 1, 0],
        }
    )
    with pytest.warns(UserWarning, match="not identified"):
        data = ResponseData.from_long(df)
    result = fit(data, method="map", max_steps=300, eval_every=100, progress_bar=False)
    assert result.posterior.sizes["draw"] == 1 and result.method == "map"
    assert "sample_stats" not in result.idata.groups()
    assert json.loads(result.idata.attrs["dif_unidentified"]) == [["i3", "lm"]]
    loaded = load_fit(result.to_netcdf(tmp_path / "map.nc"))
    np.testing.assert_allclose(loaded.elbo, result.elbo, rtol=1e-6)
    assert json.loads(loaded.idata.attrs["dif_unidentified"]) == [["i3", "lm"]]


def test_fit_input_errors(tiny):
    with pytest.raises(ValueError, match="ResponseData"):
        fit(tiny.to_frame())
    for name, value in (("chains", 0), ("draws", 0), ("warmup", -1), ("draws", 2.5)):
        with pytest.raises(ValueError, match=f"{name} must be a whole number"):
            fit(tiny, **{name: value})
    with pytest.raises(ValueError, match="one group only"):
        fit(tiny.subset_groups(["human"]))
    with pytest.raises(ValueError, match="Every item"):
        fit(tiny, anchors=tiny.items)
    with pytest.raises(ValueError, match="method must be"):
        fit(tiny, method="hmc")
    with pytest.raises(ValueError, match="minibatch_size"):
        fit(tiny, method="nuts", minibatch_size=10)


def test_run_inference_generic_model():
    """run_inference works for any model that names its sites; here a normal mean."""
    y = np.array([0.5, 1.5, 1.0, 2.0])

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("obs", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    result = run_inference(
        model,
        {"y": y},
        method="nuts",
        dims={"mu": []},
        coords={"obs": np.arange(4)},
        log_likelihood_fn=lambda d: -0.5 * (y - d["mu"]) ** 2 - 0.5 * np.log(2 * np.pi),
        observed_data={"y": y},
        chains=2,
        draws=500,
        warmup=300,
        progress_bar=False,
    )
    assert abs(float(result.posterior["mu"].mean()) - y.mean()) < 0.25
    assert result.idata.log_likelihood["y"].shape == (2, 500, 4)
    assert result.diagnostics is not None and result.diagnostics.n_divergent == 0


def test_diagnostics_warn_with_advice():
    rng = np.random.default_rng(0)
    bad = az.from_dict(
        posterior={"x": rng.normal(size=(2, 100)) + np.array([[0.0], [3.0]])},
        sample_stats={"diverging": np.zeros((2, 100), bool) | (rng.random((2, 100)) < 0.05)},
    )
    with pytest.warns(ConvergenceWarning) as record:
        report = check_convergence(bad)
    text = " ".join(str(w.message) for w in record)
    assert "R-hat" in text and "target_accept" in text
    assert report.max_rhat > 1.5 and report.n_divergent > 0 and not report.ok
    good = az.from_dict(posterior={"x": rng.normal(size=(4, 500))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_convergence(good).ok


def test_minibatch_svi_matches_full_batch_svi():
    """Minibatches (drawn with replacement, scaled by n_obs / B) estimate the same ELBO:
    with 6,000 observations and B = 1,000, difficulty means agree with full-batch SVI to
    r >= 0.98 (their posterior sd is ~0.15 at 300 persons per item, far above the
    minibatch noise left after the learning-rate decay)."""
    from bayes_align import simulate

    data, _ = simulate(n_persons=300, n_items=20, groups=("human", "lm"), n_dif_items=0, seed=3)
    kwargs = dict(model="2pl", dif="none", method="svi", draws=200, max_steps=4000,
                  learning_rate=0.02, progress_bar=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        full = fit(data, minibatch_size=None, **kwargs)
        mini = fit(data, minibatch_size=1000, **kwargs)
    full_mean = full.posterior["difficulty"].mean(("chain", "draw")).values
    mini_mean = mini.posterior["difficulty"].mean(("chain", "draw")).values
    assert np.corrcoef(full_mean, mini_mean)[0, 1] >= 0.98
    assert np.max(np.abs(full_mean - mini_mean)) < 0.3


# --------------------------------------------------------------- compile once / cache
class _CompileCounter:
    """Counts the programs the process had to obtain while active (jax.monitoring): XLA
    backend compilations and reads from the persistent compilation cache, which the test
    suite turns on (conftest.py) and which would otherwise hide a recompilation."""

    active: list = []
    registered = False

    def __init__(self):
        self.count = 0

    @classmethod
    def _count(cls):
        for counter in cls.active:
            counter.count += 1

    @classmethod
    def _duration_listener(cls, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            cls._count()

    @classmethod
    def _event_listener(cls, event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            cls._count()

    def __enter__(self):
        import jax.monitoring

        if not _CompileCounter.registered:
            jax.monitoring.register_event_duration_secs_listener(
                _CompileCounter._duration_listener
            )
            jax.monitoring.register_event_listener(_CompileCounter._event_listener)
            _CompileCounter.registered = True
        _CompileCounter.active.append(self)
        return self

    def __exit__(self, *exc):
        _CompileCounter.active.remove(self)


def _counter_counts_a_compilation():
    """Positive control: the listener sees a fresh compilation (else '0' proves nothing)."""
    import jax

    with _CompileCounter() as control:
        jax.jit(lambda x: x * 3.0 + 1.0)(np.arange(7.0))
    assert control.count >= 1


def test_nuts_compiles_once_and_takes_data_as_arguments(tiny, tiny_2pl_nuts, tiny_nuts_options):
    """A second fit of other data with the same shapes and settings as conftest's session
    2PL fit reuses its compiled program (no XLA compilation at all) and still fits its own
    data (the data are not baked in)."""
    _counter_counts_a_compilation()
    with _CompileCounter() as second:
        b = fit(_flipped(tiny), model="2pl", log_likelihood=False, **tiny_nuts_options)
    assert second.count == 0
    mean_a = tiny_2pl_nuts.posterior["difficulty"].mean(("chain", "draw")).values
    mean_b = b.posterior["difficulty"].mean(("chain", "draw")).values
    # flipping every response flips the sign of the item difficulties
    assert np.corrcoef(mean_a, mean_b)[0, 1] < -0.9


def test_svi_compiles_once_per_shape(tiny, tiny_2pl_svi, tiny_svi_options):
    """Refitting other data of the same shapes by SVI with the settings of conftest's
    session SVI fit reuses the compiled optimisation and draw programs; the second fit
    still fits its own data."""
    _counter_counts_a_compilation()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with _CompileCounter() as second:
            b = fit(_flipped(tiny), model="2pl", log_likelihood=False, **tiny_svi_options)
    # the guide's eager set-up may compile a few tiny ops; the window and draw programs,
    # a dozen compilations when fresh, do not compile again
    assert second.count <= SVI_SETUP_COMPILES, second.count
    mean_a = tiny_2pl_svi.posterior["difficulty"].mean(("chain", "draw")).values
    mean_b = b.posterior["difficulty"].mean(("chain", "draw")).values
    assert np.corrcoef(mean_a, mean_b)[0, 1] < -0.9


def test_sequential_chains_match_their_vectorized_draws(tiny):
    """chain_method='sequential' runs the chains one after another through one-chain
    programs (with a progress bar: in chunks); each chain draws what it draws when
    vectorized. Short chains (30 iterations): float32 rounding differs between the one-
    and two-chain programs and NUTS amplifies it over long runs, so a long run would not
    match to 1e-4."""
    options = dict(model="1pl", dif="none", chains=2, draws=15, warmup=15, progress_bar=False,
                   check=False, log_likelihood=False, seed=5)
    vec = fit(tiny, chain_method="vectorized", **options)
    seq = fit(tiny, chain_method="sequential", **{**options, "progress_bar": True})  # chunked
    np.testing.assert_allclose(
        seq.posterior["difficulty"].values, vec.posterior["difficulty"].values, atol=1e-4
    )
    assert (seq.idata.sample_stats["n_steps"].values
            == vec.idata.sample_stats["n_steps"].values).all()


def test_default_chain_method_by_devices_and_platform(monkeypatch):
    import jax

    from bayes_align.infer.util import default_chain_method

    monkeypatch.setattr(jax, "local_device_count", lambda: 1)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert default_chain_method(4) == "sequential" and default_chain_method(1) == "sequential"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert default_chain_method(4) == "vectorized"
    monkeypatch.setattr(jax, "local_device_count", lambda: 4)
    assert default_chain_method(4) == "parallel" and default_chain_method(5) == "vectorized"


def test_run_inference_falls_back_when_an_array_must_be_concrete():
    """A model that reads an array argument's values in Python still runs (NumPyro's MCMC)."""
    y = np.array([0.5, 1.5, 1.0, 2.0])
    n_used = np.array([3])

    def model(y, n_used):
        k = int(n_used[0])  # needs a concrete value: cannot be traced
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("obs", k):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y[:k])

    result = run_inference(
        model, {"y": y, "n_used": n_used}, method="nuts", dims={"mu": []}, coords={},
        chains=1, draws=200, warmup=200, progress_bar=False, check=False,
    )
    assert abs(float(result.posterior["mu"].mean()) - y[:3].mean()) < 0.4


def _walled_model(lower):
    """``a ~ Normal(0, 3)`` restricted to ``a > lower`` by an infinite potential wall."""
    import jax.numpy as jnp

    a = numpyro.sample("a", dist.Normal(0.0, 3.0))
    numpyro.factor("wall", jnp.where(a > lower, 0.0, -jnp.inf))


def test_nuts_init_is_numpyros_first_try_or_its_search():
    """``init`` computes the point NumPyro's search draws first; when that point is not
    finite, ``init_search`` (NumPyro's loop of up to 100 tries) takes over. Either way the
    initial state is the one NumPyro's own ``NUTS.init`` returns for the same key."""
    import jax

    from bayes_align.infer import nuts
    from bayes_align.infer.util import split_arrays

    def numpyro_init(rng_key, kwargs):
        kernel = numpyro.infer.NUTS(_walled_model, max_tree_depth=5,
                                    init_strategy=numpyro.infer.init_to_uniform(radius=1.0))
        return kernel.init(rng_key, 5, None, model_args=(), model_kwargs=kwargs)

    rng_key = jax.random.PRNGKey(3)
    # the wall at -10 lets every first draw (uniform in (-1, 1)) through; at 0.7 the first
    # draw of this key is behind it (a draw passes with probability 0.15)
    for lower, first_is_valid in ((-10.0, True), (0.7, False)):
        kwargs = {"lower": np.asarray(lower)}
        arrays, static = split_arrays(kwargs)
        program = nuts._NutsProgram(nuts._NutsKey(_walled_model, static, 5, 5, 0.8, 5, ("a",), False))
        reference = numpyro_init(rng_key, kwargs)
        state, _, valid = program.init(rng_key, arrays)
        assert bool(valid) is first_is_valid
        if not first_is_valid:
            state, _, valid = program.init_search(rng_key, arrays)
            assert bool(valid)
        assert float(state.z["a"]) == float(reference.z["a"])
        assert float(state.potential_energy) == float(reference.potential_energy)
    # a fit through the compiled driver takes the search path and keeps behind the wall
    posterior, _ = nuts.run_nuts(
        _walled_model, {"lower": np.asarray(0.7)}, rng_key, keep=("a",), chains=1, draws=50,
        warmup=50, target_accept=0.8, max_tree_depth=5, chain_method="sequential",
        progress_bar=False,
    )
    assert (posterior["a"] > 0.7).all()


def _walled_two_site_model(lower):
    """``scale`` then ``a`` (model order is not name order), ``a > lower`` by a wall."""
    import jax.numpy as jnp

    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    a = numpyro.sample("a", dist.Normal(0.0, scale))
    numpyro.factor("wall", jnp.where(a > lower, 0.0, -jnp.inf))


@pytest.mark.parametrize(("method", "guide"), [("svi", "normal"), ("svi", "lowrank"),
                                               ("map", "normal")])
def test_svi_init_is_numpyros_first_try_or_its_search(method, guide):
    """The SVI state ``init`` builds from the first try of NumPyro's search (AutoNormal's
    per-site locations, the low-rank guide's raveled location, AutoDelta's constrained
    values) is the state of NumPyro's own set-up (``init_search``) for the same key; a
    first try behind the wall is reported, and the fit then starts from NumPyro's search."""
    import jax

    from bayes_align.infer import svi
    from bayes_align.infer.util import split_arrays

    rng_key = jax.random.PRNGKey(1)
    # the guide's first draws are uniform in (-0.5, 0.5): a wall at -10 lets every one
    # through; at 0.3 this key's first draw is behind it (a draw passes with probability 0.2)
    for lower, first_is_valid in ((-10.0, True), (0.3, False)):
        arrays, static = split_arrays({"lower": np.asarray(lower)})
        key = svi._SviKey(_walled_two_site_model, static, method, guide,
                          1 if guide == "lowrank" else None, 0.01, 5, 5, ("a", "scale"))
        program = svi._SviProgram(key)
        state, valid = program.init(rng_key, arrays)
        assert bool(valid) is first_is_valid
        reference, _ = program.init_search(rng_key, arrays)
        ours, theirs = program.svi.get_params(state), program.svi.get_params(reference)
        assert set(ours) == set(theirs)
        for name in theirs:
            equal = np.array_equal(np.asarray(ours[name]), np.asarray(theirs[name]))
            assert equal is first_is_valid or name.endswith(("scale", "cov_factor")), name
    # a MAP fit that barely moves (learning rate 1e-6) starts from NumPyro's search, in
    # front of the wall: from the first try, its loss would be infinite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        posterior, losses = svi.run_svi(
            _walled_two_site_model, {"lower": np.asarray(0.3)}, rng_key, keep=("a",),
            method="map", draws=1, guide="normal", rank=None, learning_rate=1e-6,
            max_steps=20, tol=1e-3, patience=1, eval_every=10, minibatch_size=None,
            progress_bar=False,
        )
    assert np.isfinite(losses).all() and float(posterior["a"].squeeze()) > 0.3


@pytest.fixture
def restore_compilation_cache():
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    cc.reset_cache()


def test_compilation_cache_writes_and_reuses_programs(tiny, tmp_path, restore_compilation_cache):
    import jax
    import jax.monitoring

    from bayes_align.infer import nuts

    hits = []

    def listener(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    jax.monitoring.register_event_listener(listener)
    cache_dir = tmp_path / "jax-cache"
    # warmup=7: settings no other fit of the session uses, so the first fit compiles
    options = dict(model="2pl", dif="none", chains=1, draws=5, warmup=7, progress_bar=False,
                   check=False, log_likelihood=False, compilation_cache=cache_dir)
    fit(tiny, **options)
    written = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert written, "no compiled program was written to the cache"
    assert jax.config.jax_compilation_cache_dir == str(cache_dir)
    # a fresh process is simulated by dropping this process's compiled programs
    nuts._NUTS_PROGRAMS.clear()
    jax.clear_caches()
    before = len(hits)
    fit(tiny, **options)
    assert len(hits) > before


def test_compilation_cache_from_the_environment(tmp_path, monkeypatch, restore_compilation_cache):
    """fit's default compilation_cache=None reads BAYES_ALIGN_COMPILATION_CACHE and turns on
    the same cache as the argument does (whose writing and reuse the test above shows)."""
    import jax

    from bayes_align.infer import util

    cache_dir = tmp_path / "env-cache"
    monkeypatch.setenv(util.COMPILATION_CACHE_ENV, str(cache_dir))
    util.maybe_enable_compilation_cache(None)
    assert jax.config.jax_compilation_cache_dir == str(cache_dir)
    monkeypatch.setenv(util.COMPILATION_CACHE_ENV, "off")
    util.maybe_enable_compilation_cache(None)  # off: left as it is
    assert jax.config.jax_compilation_cache_dir == str(cache_dir)
