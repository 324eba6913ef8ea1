"""`--format` and `--formats` for the commands that decode a run's archive again (`inspect`,
`console`); kept apart from `dataflows.formats` so building the command line imports nothing
heavy."""

from __future__ import annotations

import argparse
from pathlib import Path


def format_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the two flags; `dataflows.formats.archive_rules` reads them."""
    parser.add_argument("--format", default="cloudevents", metavar="NAME", help=(
        "the run's input format (default: cloudevents; README: Your own event format)"))
    parser.add_argument("--formats", type=Path, default=None, metavar="FILE", help=(
        "the formats file (default: formats.yaml beside --definitions)"))
