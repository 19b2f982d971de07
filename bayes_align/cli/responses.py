"""The response-file options every command that reads long-format responses shares."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_response_arguments(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    """``responses`` (a file) and the column, reference and kind options."""
    parser.add_argument(
        "responses", type=Path, help="CSV, TSV or Parquet file, one row per response"
    )
    parser.add_argument("--reference", default="human", help="label of the reference (human) group")
    parser.add_argument("--person-col", default="person", help="person id column")
    parser.add_argument("--item-col", default="item", help="item id column")
    parser.add_argument("--group-col", default="group", help="group column")
    parser.add_argument("--response-col", default="response", help="response column")
    if weights:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--weight-col",
            default=None,
            help="column of positive counts for aggregated rows (default: 'weight' when present)",
        )
        group.add_argument("--no-weight", action="store_true", help="ignore a column named 'weight'")
    parser.add_argument(
        "--kind",
        choices=("auto", "binary", "soft", "ordinal"),
        default="auto",
        help="response kind (auto: inferred from the values)",
    )


def read_response_data(args: argparse.Namespace):
    """The ResponseData the options of :func:`add_response_arguments` describe."""
    import bayes_align as ba

    weight = None
    if getattr(args, "no_weight", False):
        weight = False
    elif getattr(args, "weight_col", None):
        weight = args.weight_col
    return ba.ResponseData.from_long(
        args.responses,
        person=args.person_col,
        item=args.item_col,
        group=args.group_col,
        response=args.response_col,
        weight=weight,
        reference_group=args.reference,
        kind=None if args.kind == "auto" else args.kind,
    )
