"""`SimulatorSource`: simulated partitions as a Bytewax `FixedPartitionedSource`.

One source partition per simulated partition ("0", "1", ...), emitting its records in arrival
order in batches. The resume state is the next offset, so a recovered dataflow continues exactly
after its last snapshot. Unpaced (the default) it emits as fast as the dataflow takes records.
Paced, one wall second plays `speed` seconds of arrival time: a record is due at
`wall start + (arrival - anchor) / speed`, and `next_awake` lets idle partitions sleep until then.
The anchor is the earliest arrival of all partitions on a fresh start (so partitions keep step)
and the partition's next record on a resume (so it does not replay the wait).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from schemas.errors import ConfigError
from schemas.event import RawRecord
from state.clock import Clock, utc_now


@dataclass(frozen=True, slots=True)
class _Pace:
    """Maps arrival time to the wall time a record is due."""

    wall_start: datetime
    anchor_ms: int
    speed: float

    def due(self, arrival_ms: int) -> datetime:
        micros = math.ceil((arrival_ms - self.anchor_ms) * 1000 / self.speed)
        return self.wall_start + timedelta(microseconds=max(0, micros))


class _SimulatorPartition(StatefulSourcePartition[RawRecord, int]):
    def __init__(self, records: Sequence[RawRecord], offset: int, batch_size: int,
                 pace: _Pace | None, clock: Clock) -> None:
        self._records, self._next = records, offset
        self._batch_size, self._pace, self._clock = batch_size, pace, clock

    def next_batch(self) -> list[RawRecord]:
        if self._next >= len(self._records):
            raise StopIteration
        end = min(len(self._records), self._next + self._batch_size)
        if self._pace is not None:
            pace = self._pace
            end = bisect.bisect_right(self._records, self._clock(), self._next, end,
                                      key=lambda r: pace.due(r.arrived_ms))
        batch = list(self._records[self._next:end])
        self._next = end
        return batch

    def next_awake(self) -> datetime | None:
        if self._pace is None or self._next >= len(self._records):
            return None
        return self._pace.due(self._records[self._next].arrived_ms)

    def snapshot(self) -> int:
        return self._next


class SimulatorSource(FixedPartitionedSource[RawRecord, int]):
    """Plays `partitions` (a `Simulation.partitions`); see the module docstring.

    Every worker lists every partition and Bytewax gives each to one worker. Both modes emit the
    same records in the same order per partition; only when differs.
    """

    def __init__(self, partitions: Sequence[Sequence[RawRecord]], batch_size: int = 1000,
                 speed: float | None = None, clock: Clock = utc_now) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1; got {batch_size}")
        if speed is not None and not speed > 0:
            msg = f"speed must be above 0 (60.0 plays a minute per second) or None; got {speed}"
            raise ConfigError(msg)
        self._partitions = [tuple(p) for p in partitions]
        self._batch_size, self._speed, self._clock = batch_size, speed, clock
        self._origin_ms = min((p[0].arrived_ms for p in self._partitions if p), default=0)

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(len(self._partitions))]

    def build_part(self, step_id: str, for_part: str,
                   resume_state: int | None) -> StatefulSourcePartition[RawRecord, int]:
        records = self._partitions[int(for_part)]
        offset = resume_state if resume_state is not None else 0
        pace = None
        if self._speed is not None:
            resuming = resume_state is not None and offset < len(records)
            anchor = records[offset].arrived_ms if resuming else self._origin_ms
            pace = _Pace(self._clock(), anchor, self._speed)
        return _SimulatorPartition(records, offset, self._batch_size, pace, self._clock)
