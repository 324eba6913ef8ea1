"""Test-only crash points: `FLOWKEEPER_CRASH_AFTER=name:N` kills this process with SIGKILL the
N-th time execution passes `crash_point(name)`. Inert unless that variable is set.

Random kills almost never land in the instant after a file rename or a commit, which is where
exactly-once sinks break; these hooks put the kill exactly there.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_PASSED: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Die here if the environment asks for it (a real SIGKILL: no cleanup, no flush)."""
    wanted = os.environ.get("FLOWKEEPER_CRASH_AFTER")
    if not wanted:
        return
    target, _, count = wanted.partition(":")
    if target != name:
        return
    _PASSED[name] += 1
    if _PASSED[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
