"""Fatal output errors: say clearly what failed and stop, instead of a bare Rust panic.

An exception raised inside a Bytewax sink aborts the process with only "thread caused
non-unwinding panic" on stderr. For errors an operator can fix (a full disk, a read-only
folder), the dataflow prints one line naming the path and the fix, then exits with EX_IOERR.
Recovery then resumes cleanly once the cause is gone.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

EX_IOERR = 74


def exit_with_message(error: Exception) -> NoReturn:
    """Print `flowkeeper: error: ...` and end the process at once (outputs stay as they were)."""
    print(f"flowkeeper: error: {error}", file=sys.stderr, flush=True)
    os._exit(EX_IOERR)
