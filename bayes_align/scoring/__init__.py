"""LM scoring: items, prompt templates, personas, LM configs, ``score`` and ``to_responses``.

``torch``/``transformers`` are imported only when a model is loaded or scored, so the
item/template/persona/response helpers work without the ``lm`` extra.
"""

from .cache import CacheMismatchError, ScoreCache
from .generate import generate, parse_choice
from .items import Item, items_from_csv, items_from_frame, items_from_jsonl, load_items
from .lm import LM, LMConfig, load_lm, load_lm_config
from .personas import Persona, load_personas, persona_grid, personas_from_frame
from .responses import option_probabilities, to_long_frame, to_responses
from .score import LabelTokenError, option_orders, score
from .templates import PromptTemplate, load_template

__all__ = [
    "CacheMismatchError",
    "Item",
    "LM",
    "LMConfig",
    "LabelTokenError",
    "Persona",
    "PromptTemplate",
    "ScoreCache",
    "items_from_csv",
    "items_from_frame",
    "items_from_jsonl",
    "load_items",
    "load_lm",
    "load_lm_config",
    "load_personas",
    "load_template",
    "generate",
    "option_orders",
    "option_probabilities",
    "parse_choice",
    "persona_grid",
    "personas_from_frame",
    "score",
    "to_long_frame",
    "to_responses",
]
