"""Entry points of the locality tests' subprocesses: the production dataflow and CLI, reporting
how many records moved between workers, or keyed the way they were before keys were salted.

    python -m bytewax.run "tests.locality_kit:build_flow()" ...   # prints `moved N of M` at exit
    python -m tests.locality_kit run ...                          # `flowkeeper run`, old keys
"""

from __future__ import annotations

import atexit
import sys

from bytewax.dataflow import Dataflow

import operators.locality
from dataflows import pipeline
from dataflows.cli import main
from runtime.progress import PROGRESS


def _report() -> None:
    print(f"moved {PROGRESS.moved} of {PROGRESS.records}", flush=True)


def build_flow() -> Dataflow:
    """`dataflows.pipeline:build_flow()`, printing this process's moved records when it ends."""
    atexit.register(_report)
    return pipeline.build_flow()


def unsalted(shard: str, worker: int, workers: int) -> str:
    """The key every shard had before keys were salted: its name, whichever worker it puts it on."""
    return shard


if __name__ == "__main__":
    operators.locality.routing_key = unsalted
    sys.exit(main(sys.argv[1:]))
