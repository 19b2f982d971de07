"""Personas: simulated respondents whose attributes are rendered into the prompt.

A persona is an id, a mapping of attributes (gender, age, education, party, trait level,
...) and the preamble text ``template.format(**attributes)``. A persona set is either a
full grid of attribute values (:func:`persona_grid`) or one persona per row of a table of
real respondents (:func:`personas_from_frame`), so the LM population can mirror the human
sample. Where the preamble goes (system or user turn) is set by the prompt template.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .typed import ConfigError, from_mapping

__all__ = ["Persona", "persona_grid", "personas_from_frame", "load_personas"]


@dataclass(frozen=True)
class Persona:
    """One simulated respondent: ``persona_id``, ``attributes`` and the rendered ``text``."""

    persona_id: str
    text: str
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        payload = json.dumps([self.persona_id, self.text], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render_persona(persona_id: str, template: str, attributes: Mapping[str, Any]) -> Persona:
    """``Persona`` whose text is ``template.format(**attributes)``.

    Raises ValueError naming the persona and the attributes the template needs but lacks.
    """
    missing = [name for name in _template_fields(template) if name not in attributes]
    if missing:
        raise ValueError(
            f"Persona {persona_id!r} lacks attribute(s) {missing} used by the persona template "
            f"{template!r}; its attributes are {sorted(attributes)}."
        )
    return Persona(str(persona_id), template.format(**attributes), dict(attributes))


def persona_grid(template: str, id_format: str | None = None, **values: Sequence[Any]) -> list[Persona]:
    """Every combination of attribute values (a full factorial grid).

    >>> persona_grid("You are a {gender} person.", gender=["male", "female"])  # doctest: +SKIP

    ``id_format`` defaults to ``"attr=value|attr=value"``.
    """
    if not values:
        raise ValueError("persona_grid needs at least one attribute with its values.")
    names = list(values)
    personas = []
    for combo in itertools.product(*(list(values[n]) for n in names)):
        attributes = dict(zip(names, combo, strict=True))
        pid = (
            id_format.format(**attributes)
            if id_format
            else "|".join(f"{n}={v}" for n, v in attributes.items())
        )
        personas.append(render_persona(pid, template, attributes))
    return _check_unique(personas)


def personas_from_frame(
    df: pd.DataFrame, template: str, id_column: str | None = None
) -> list[Persona]:
    """One persona per row (e.g. the demographics of the real human respondents).

    ``id_column`` defaults to the DataFrame index; every other column is an attribute.
    """
    if id_column is not None and id_column not in df.columns:
        raise ValueError(f"No id column {id_column!r}; columns are {list(df.columns)}.")
    ids = df[id_column] if id_column is not None else pd.Series(df.index, index=df.index)
    attribute_frame = df.drop(columns=[id_column]) if id_column is not None else df
    records = attribute_frame.to_dict(orient="records")
    personas = [
        render_persona(str(pid), template, attrs)
        for pid, attrs in zip(ids.tolist(), records, strict=True)
    ]
    return _check_unique(personas)


def _check_unique(personas: list[Persona]) -> list[Persona]:
    ids = pd.Series([p.persona_id for p in personas])
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"Duplicate persona ids {dup[:10]}; persona ids must be unique.")
    return personas


@dataclass(frozen=True)
class _PersonaFile:
    """The fields of a persona YAML (checked by :func:`~bayes_align.scoring.typed.from_mapping`)."""

    template: str
    grid: Any = None
    table: str | None = None
    id_column: str | None = None
    id_format: str | None = None
    personas: Any = None


_SCALAR = (str, int, float, bool)


def _check_persona_file(spec: _PersonaFile, where: str) -> None:
    forms = [k for k in ("grid", "table", "personas") if getattr(spec, k) is not None]
    if len(forms) != 1:
        raise ConfigError(
            f"{where}: needs exactly one of 'grid', 'table' or 'personas'; found {forms}."
        )
    if spec.grid is not None:
        if not isinstance(spec.grid, Mapping) or not spec.grid:
            raise ConfigError(f"{where}: field 'grid' must map attribute names to lists of values.")
        for name, values in spec.grid.items():
            if not isinstance(values, list) or not values or not all(
                isinstance(v, _SCALAR) for v in values
            ):
                raise ConfigError(
                    f"{where}: field 'grid.{name}' must be a non-empty list of values "
                    f"(strings or numbers), got {values!r}."
                )
    if spec.personas is not None:
        if not isinstance(spec.personas, list) or not spec.personas:
            raise ConfigError(f"{where}: field 'personas' must be a non-empty list of mappings.")
        for number, entry in enumerate(spec.personas, start=1):
            if not isinstance(entry, Mapping) or not all(
                isinstance(v, _SCALAR) for v in entry.values()
            ):
                raise ConfigError(
                    f"{where}: field 'personas' entry {number} must map attribute names to "
                    f"values (strings or numbers), got {entry!r}."
                )
    if spec.id_column is not None and spec.table is None:
        raise ConfigError(f"{where}: field 'id_column' applies only to the 'table' form.")
    if spec.id_format is not None and spec.grid is None:
        raise ConfigError(f"{where}: field 'id_format' applies only to the 'grid' form.")


def load_personas(source: str | Path | Mapping[str, Any]) -> list[Persona]:
    """Personas from YAML (or the equivalent mapping); every field is type-checked.

    Grid form::

        template: "You are a {gender} respondent with {anger} anger."
        grid: {gender: [male, female], anger: [low, high]}

    Table form (path relative to the YAML file)::

        template: "You are a {age}-year-old {gender}."
        table: respondents.csv
        id_column: person_id

    Explicit list form::

        template: "You are {name}."
        personas: [{id: p1, name: Ann}, {id: p2, name: Bob}]
    """
    base = Path(".")
    where = "Persona set <mapping>"
    if not isinstance(source, Mapping):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"Persona file {path} does not exist.")
        base = path.parent
        where = f"Persona file {path}"
        source = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(source, Mapping):
            raise ConfigError(f"{where} must hold a YAML mapping (template + grid/table/personas).")
    spec = from_mapping(_PersonaFile, source, where)
    _check_persona_file(spec, where)
    template = spec.template
    if spec.grid is not None:
        return persona_grid(template, id_format=spec.id_format, **spec.grid)
    if spec.table is not None:
        table = Path(spec.table)
        table = table if table.is_absolute() else base / table
        if not table.is_file():
            raise ValueError(f"{where}: persona table {table} does not exist.")
        frame = pd.read_csv(table, dtype=str, keep_default_na=False)
        return personas_from_frame(frame, template, id_column=spec.id_column)
    frame = pd.DataFrame(list(spec.personas))
    id_column = "id" if "id" in frame.columns else None
    return personas_from_frame(frame, template, id_column=id_column)
