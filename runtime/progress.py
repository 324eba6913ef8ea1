"""Process-wide run counters for the command line's progress line (not part of any output)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

COUNTERS = ("records", "dead_letters", "moved", "restored_shards", "restored_instances",
            "restore_seconds")


@dataclass
class Progress:
    """Records read, dead letters, and open instances per shard of this process; `moved`: records
    the shard step ran on another worker than the one that read them (see `operators.locality`)."""

    records: int = 0
    dead_letters: int = 0
    moved: int = 0
    open_by_shard: dict[str, int] = field(default_factory=dict)
    restored_shards: int = 0
    restored_instances: int = 0
    restore_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Start counting a new run (a process may run several, as tests and notebooks do)."""
        with self.lock:
            self.records = self.dead_letters = self.moved = self.restored_shards = 0
            self.restored_instances, self.restore_seconds = 0, 0.0
            self.open_by_shard.clear()

    def restored(self, instances: int, seconds: float) -> None:
        """Count one shard rebuilt from a recovery snapshot."""
        with self.lock:
            self.restored_shards += 1
            self.restored_instances += instances
            self.restore_seconds += seconds

    def add(self, shard: str, records: int, dead_letters: int, open_instances: int) -> None:
        with self.lock:
            self.records += records
            self.dead_letters += dead_letters
            self.open_by_shard[shard] = open_instances

    def add_moved(self, records: int) -> None:
        with self.lock:
            self.moved += records

    def snapshot(self) -> dict[str, float]:
        """The counters as plain numbers, for a local cluster's process to report (`set_sums`)."""
        with self.lock:
            counters = {name: float(getattr(self, name)) for name in COUNTERS}
            return {**counters, "open_instances": float(sum(self.open_by_shard.values()))}

    def set_sums(self, snapshots: Sequence[Mapping[str, float]]) -> None:
        """Make this process's counters the sums of its cluster's processes' `snapshot`s (the
        command that started them prints them)."""
        with self.lock:
            for name in COUNTERS:
                total = sum(snap.get(name, 0.0) for snap in snapshots)
                setattr(self, name, total if name == "restore_seconds" else int(total))
            self.open_by_shard = {f"process {i}": int(snap.get("open_instances", 0.0))
                                  for i, snap in enumerate(snapshots)}

    @property
    def open_instances(self) -> int:
        with self.lock:
            return sum(self.open_by_shard.values())


PROGRESS = Progress()
