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


def load_personas(source: str | Path | Mapping[str, Any]) -> list[Persona]:
    """Personas from YAML (or the equivalent mapping).

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
    if not isinstance(source, Mapping):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"Persona file {path} does not exist.")
        base = path.parent
        source = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(source, Mapping):
            raise ValueError(f"{path} must hold a YAML mapping (template + grid/table/personas).")
    template = source.get("template")
    if not isinstance(template, str):
        raise ValueError("The persona set needs a 'template' string, e.g. 'You are a {gender}.'")
    forms = [k for k in ("grid", "table", "personas") if k in source]
    if len(forms) != 1:
        raise ValueError(
            f"The persona set needs exactly one of 'grid', 'table' or 'personas'; found {forms}."
        )
    if "grid" in source:
        return persona_grid(template, id_format=source.get("id_format"), **source["grid"])
    if "table" in source:
        table = Path(source["table"])
        table = table if table.is_absolute() else base / table
        if not table.is_file():
            raise ValueError(f"Persona table {table} does not exist.")
        frame = pd.read_csv(table)
        return personas_from_frame(frame, template, id_column=source.get("id_column"))
    frame = pd.DataFrame(list(source["personas"]))
    id_column = "id" if "id" in frame.columns else None
    return personas_from_frame(frame, template, id_column=id_column)
