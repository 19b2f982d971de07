"""What to fit: the model (:class:`ModelSpec`) and its prior scales (:class:`Priors`).

Both are frozen, hashable and JSON round-trippable: they key the compiled samplers and
are stored in ``idata.attrs`` (``model_spec``, ``priors``) so that :func:`load_fit`
restores them. The math they parameterise is in :mod:`bayes_align.model.joint`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

IRT_MODELS = ("1pl", "2pl", "3pl", "grm")
DIF_PRIORS = ("normal", "horseshoe", "none")
IDENTIFICATIONS = ("sum_to_zero", "anchors")
#: How aggregated option counts enter: key vs not (``binary``) or every option (``nominal``).
LIKELIHOODS = ("binary", "nominal")


@dataclass(frozen=True)
class ModelSpec:
    """Which joint IRT model to fit.

    irt : "1pl" | "2pl" | "3pl" | "grm" (graded response model for ordered categories).
    dif : "normal" (hierarchical normal, one scale per focal group) | "horseshoe"
        (regularized horseshoe per focal group) | "none" (measurement invariance).
    dif_discrimination : also fit non-uniform DIF on the log-discrimination.
    identification : "sum_to_zero" (a group's DIF shifts sum to zero over items) or
        "anchors" (the shifts of the ``anchors`` items are fixed at zero).
    anchors : item labels assumed DIF-free (identification="anchors").
    n_options : answer options per item for the 3PL guessing prior (default 4).
    likelihood : aggregated rows only: "binary" (count of the key out of the row total)
        or "nominal" (counts of every option; the key keeps the binary curve, the wrong
        answers split by a nested logit). Graded rows (irt="grm") count ordered categories.
    distractor_slopes, distractor_dif : nominal only: distractor slopes on ability (off by
        default) and distractor DIF per focal group (on by default).
    aggregated_sd : ability sd of aggregated focal groups: fixed at this value (default 1,
        the reference's), or None to estimate it (weakly identified by aggregates).
    n_nodes : Gauss-Hermite nodes of the ability integral of aggregated rows.
    """

    irt: str = "2pl"
    dif: str = "normal"
    dif_discrimination: bool = False
    identification: str = "sum_to_zero"
    anchors: tuple[str, ...] = field(default_factory=tuple)
    n_options: int | None = None
    likelihood: str = "binary"
    distractor_slopes: bool = False
    distractor_dif: bool = True
    aggregated_sd: float | None = 1.0
    n_nodes: int = 21

    def __post_init__(self) -> None:
        object.__setattr__(self, "irt", str(self.irt).lower())
        object.__setattr__(self, "anchors", tuple(str(a) for a in self.anchors))
        _check_choice("irt", self.irt, IRT_MODELS)
        _check_choice("dif", self.dif, DIF_PRIORS)
        _check_choice("identification", self.identification, IDENTIFICATIONS)
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        for name in ("dif_discrimination", "distractor_slopes", "distractor_dif"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if self.identification == "anchors" and not self.anchors:
            raise ValueError("identification='anchors' needs at least one anchor item label.")
        if self.anchors and self.identification != "anchors":
            object.__setattr__(self, "identification", "anchors")
        if self.dif_discrimination and self.irt == "1pl":
            raise ValueError("dif_discrimination needs a model with discriminations (2pl/3pl/grm).")
        if self.n_options is not None and not (isinstance(self.n_options, int) and self.n_options >= 2):
            raise ValueError(f"n_options must be an integer of at least 2, got {self.n_options!r}.")
        if self.likelihood == "nominal" and self.irt not in ("1pl", "2pl"):
            raise ValueError(
                "likelihood='nominal' supports irt='1pl' or '2pl' (the key keeps the binary "
                f"curve; a guessing floor or graded steps have no place in it), got {self.irt!r}."
            )
        if self.aggregated_sd is not None and not (
            isinstance(self.aggregated_sd, (int, float)) and math.isfinite(self.aggregated_sd)
            and self.aggregated_sd >= 0
        ):
            raise ValueError(f"aggregated_sd must be >= 0 or None, got {self.aggregated_sd!r}.")
        if not (isinstance(self.n_nodes, int) and self.n_nodes >= 1):
            raise ValueError(f"n_nodes must be a positive integer, got {self.n_nodes!r}.")

    @property
    def has_discrimination(self) -> bool:
        return self.irt != "1pl"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls(**_known_fields(cls, json.loads(text), "model_spec"))


@dataclass(frozen=True)
class Priors:
    """Every prior scale of the model (the math is in :mod:`bayes_align.model.joint`).

    difficulty : sd of ``difficulty ~ Normal(0, sd)``.
    log_discrimination : sd of ``log(discrimination) ~ Normal(0, sd)``.
    guessing_strength : ``guessing ~ Beta(s / K, s (1 - 1 / K))`` (3PL, K options).
    step_log_gap : sd of the log gaps between consecutive graded steps.
    group_mean : sd of a focal group's mean ability ``~ Normal(0, sd)``.
    group_sd : scale of a focal group's ability sd ``~ HalfNormal(scale)``.
    dif_scale : scale of a focal group's DIF scale ``~ HalfNormal(scale)`` (dif="normal").
    dif_discrimination_scale : ``HalfNormal`` scale of the non-uniform DIF scale.
    horseshoe_expected_dif : prior guess of the share of DIF items (dif="horseshoe").
    horseshoe_slab_scale, horseshoe_slab_df : slab of the regularized horseshoe.
    distractor_intercept : sd of the distractor intercepts (nominal).
    distractor_slope : sd of the distractor slopes (nominal, distractor_slopes=True).
    dif_distractor_scale : ``HalfNormal`` scale of a group's distractor DIF (nominal).
    item_prior_sd : sd around published item parameters (``AggregatedData.item_prior``).
    """

    difficulty: float = 2.0
    log_discrimination: float = 0.5
    guessing_strength: float = 20.0
    step_log_gap: float = 1.0
    group_mean: float = 2.0
    group_sd: float = 1.0
    dif_scale: float = 1.0
    dif_discrimination_scale: float = 0.5
    horseshoe_expected_dif: float = 0.2
    horseshoe_slab_scale: float = 1.5
    horseshoe_slab_df: float = 4.0
    distractor_intercept: float = 2.0
    distractor_slope: float = 1.0
    dif_distractor_scale: float = 1.0
    item_prior_sd: float = 0.25

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"prior {f.name} must be a number, got {value!r}.")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"prior {f.name} must be a positive finite number, got {value!r}.")
            object.__setattr__(self, f.name, float(value))
        if not self.horseshoe_expected_dif < 1:
            raise ValueError("horseshoe_expected_dif must be a share in (0, 1).")

    @classmethod
    def coerce(cls, value: Priors | dict[str, float] | None) -> Priors:
        """A Priors from None (the defaults), a Priors, or a mapping of fields."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict) or hasattr(value, "items"):
            return cls().replace(**dict(value))
        raise ValueError(f"priors must be a bayes_align.Priors or a mapping, got {type(value).__name__}")

    def replace(self, **changes: float) -> Priors:
        """A copy with some scales changed (unknown names are refused)."""
        return Priors(**{**asdict(self), **_known_fields(Priors, changes, "Priors")})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Priors:
        return cls(**_known_fields(cls, json.loads(text), "priors"))

    @classmethod
    def parse(cls, assignments: list[str] | tuple[str, ...]) -> Priors:
        """From ``["dif_scale=0.5", ...]`` (the CLI's ``--prior``)."""
        values: dict[str, float] = {}
        for text in assignments:
            name, sep, value = str(text).partition("=")
            if not sep:
                raise ValueError(f"--prior takes NAME=VALUE (e.g. dif_scale=0.5), got {text!r}.")
            try:
                values[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"--prior {name.strip()}: {value!r} is not a number.") from None
        return cls().replace(**values)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _known_fields(cls: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; known: {sorted(known)}.")
    if "anchors" in values:
        values = {**values, "anchors": tuple(values["anchors"])}
    return dict(values)
