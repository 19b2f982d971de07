"""The ``bayes-align`` command line.

Each command family lives in its own module of this package and exposes
``register(subparsers)``; this module only assembles them (list a new module in
``_COMMAND_MODULES``) and gives every command the same two options and error style:

- ``--overwrite``: replace existing output files (without it they are refused before any
  work; see :mod:`bayes_align.files`);
- ``--debug``: show the Python traceback of an error.

A user error (bad input, bad path, bad argument: ``ValueError``, ``OSError``,
``KeyError``, a YAML error, a missing optional package) is printed as one line on stderr,
``bayes-align: error: ...``, and the command exits with status 2; an interrupted command
(Ctrl-C) exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMAND_MODULES = (
    "bayes_align.cli.fit_commands",  # fit, alignment, dif, compare
    "bayes_align.cli.score_commands",  # score
    "bayes_align.cli.classical_commands",  # classical, naep-alignment
    "bayes_align.cli.demo_commands",  # demo
    "bayes_align.cli.report_commands",  # report
    "bayes_align.cli.opinion_commands",  # opinions
    "bayes_align.cli.protocol_commands",  # protocol controls | stability, finetune
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-align",
        description="Bayesian psychometric alignment of language models with human populations.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.register(subparsers)
    for command in subparsers.choices.values():
        _add_common_options(command)
    return parser


def _add_common_options(command: argparse.ArgumentParser) -> None:
    """``--overwrite`` and ``--debug`` on every command (``--debug`` also before it)."""
    for flag, options in (
        ("--overwrite", dict(action="store_true", help="replace output files that exist")),
        (
            "--debug",
            # SUPPRESS keeps a --debug given before the command name
            dict(action="store_true", default=argparse.SUPPRESS, help="show the Python traceback of an error"),
        ),
    ):
        try:
            command.add_argument(flag, **options)
        except argparse.ArgumentError:  # the command defines it itself
            pass


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean bad input rather than a bug."""
    errors: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError)
    try:
        import yaml
    except ModuleNotFoundError:  # pragma: no cover - pyyaml is a dependency
        return errors
    return (*errors, yaml.YAMLError)


def error_line(err: BaseException) -> str:
    """``err`` as the one line printed on stderr."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        message = f"{err.strerror}: {err.filename}"
    elif isinstance(err, KeyError) and len(err.args) == 1:
        message = f"missing key or column {err.args[0]!r}"
    else:
        message = str(err) or type(err).__name__
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "bayes-align: error: " + " | ".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        return int(args.handler(args) or 0)
    try:
        return int(args.handler(args) or 0)
    except user_errors() as err:
        print(error_line(err), file=sys.stderr)
        return EXIT_USER_ERROR
    except ModuleNotFoundError as err:  # an optional dependency (torch, transformers, ...)
        if err.name is None or err.name.partition(".")[0] == "bayes_align":
            raise
        print(
            f"bayes-align: error: this command needs the package {err.name!r}, which is not "
            "installed; install the optional dependencies, e.g. pip install 'bayes_align[lm]'.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            "bayes-align: interrupted; files written before are intact, no partial output "
            "was kept.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
