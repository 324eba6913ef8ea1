"""`--format` and `--formats` for the commands that decode a run's archive again (`inspect`,
`console`); kept apart from `dataflows.formats` so building the command line imports nothing
heavy."""

from __future__ import annotations

import argparse
from pathlib import Path


def format_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the two flags; `dataflows.formats.archive_rules` reads them."""
    parser.add_argument("--format", default=None, metavar="NAME", help=(
        "the run's input format, or PATTERN=NAME choices per file or topic and a default NAME "
        "(default: what the run recorded in OUT/input_format.yaml, else cloudevents; README: "
        "Your own event format)"))
    parser.add_argument("--formats", type=Path, default=None, metavar="FILE", help=(
        "the formats file (default: formats.yaml beside --definitions)"))
