"""The command `python -m bytewax.run "dataflows.bytewax_main:flow()"`: the dataflow with settings
from `FLOWKEEPER_*` variables, under Bytewax's own runner (`dataflows.bytewax_run`).

`dataflows.pipeline.build_flow` is a library function and raises a `ConfigError` when a setting
disagrees with bytewax.run's flags; here, as in the `flowkeeper` commands, that becomes one line
naming both and exit status 2.

The dataflow writes Parquet only: `flowkeeper load-duckdb --out OUT --follow` beside it (or
without `--follow` after it) fills the DuckDB file from the committed files.
"""

from __future__ import annotations

import sys

from bytewax.dataflow import Dataflow

from dataflows.pipeline import build_flow
from schemas.errors import ConfigError


def flow() -> Dataflow:
    """The dataflow, or one `flowkeeper: error: ...` line and exit status 2."""
    try:
        return build_flow()
    except ConfigError as e:
        print(f"flowkeeper: error: {e}", file=sys.stderr)
        sys.exit(2)
