"""LM scoring: items, templates, personas, LM configs and backends, ``score`` (three
expression methods, three steering methods) and ``to_responses``.

``torch``/``transformers`` are imported only when a model is loaded or scored, so the
item/template/persona/response helpers and the server backend work without the ``lm``
extra.
"""

from .backends import (
    Backend,
    HTTPRequestError,
    LabelScores,
    MissingLabelError,
    Prompt,
    as_backend,
    load_backend,
)
from .cache import CacheMismatchError, ScoreCache
from .generate import generate, parse_choice
from .items import Item, items_from_csv, items_from_frame, items_from_jsonl, load_items
from .lm import LM, LMConfig, load_lm, load_lm_config
from .parsers import ParseResult, parse_sequence, parse_verbalized
from .personas import Persona, load_personas, persona_grid, personas_from_frame
from .responses import option_probabilities, option_table, to_long_frame, to_responses
from .score import METHODS, LabelTokenError, option_orders, score
from .steering import STEERING, FewShot, bag_of_words_similarity
from .templates import PromptTemplate, load_template, load_template_folder
from .typed import ConfigError

__all__ = [
    "Backend",
    "CacheMismatchError",
    "ConfigError",
    "FewShot",
    "HTTPRequestError",
    "Item",
    "LM",
    "LMConfig",
    "LabelScores",
    "LabelTokenError",
    "METHODS",
    "MissingLabelError",
    "ParseResult",
    "Persona",
    "Prompt",
    "PromptTemplate",
    "STEERING",
    "ScoreCache",
    "as_backend",
    "bag_of_words_similarity",
    "generate",
    "items_from_csv",
    "items_from_frame",
    "items_from_jsonl",
    "load_backend",
    "load_items",
    "load_lm",
    "load_lm_config",
    "load_personas",
    "load_template",
    "load_template_folder",
    "option_orders",
    "option_probabilities",
    "option_table",
    "parse_choice",
    "parse_sequence",
    "parse_verbalized",
    "persona_grid",
    "personas_from_frame",
    "score",
    "to_long_frame",
    "to_responses",
]
