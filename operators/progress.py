"""Process-wide run counters for the command line's progress line (not part of any output)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Progress:
    """Records read, dead letters, and open instances per shard of this process."""

    records: int = 0
    dead_letters: int = 0
    open_by_shard: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, shard: str, records: int, dead_letters: int, open_instances: int) -> None:
        with self.lock:
            self.records += records
            self.dead_letters += dead_letters
            self.open_by_shard[shard] = open_instances

    @property
    def open_instances(self) -> int:
        with self.lock:
            return sum(self.open_by_shard.values())


PROGRESS = Progress()
