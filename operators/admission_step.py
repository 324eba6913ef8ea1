"""The admission step: one Bytewax key per input partition. It decodes the partition's records in
partition order and stamps each with the partition's event-time frontier (`state.admission`),
then hands every shard of the partition its slice. Its key, and its output's keys, are chosen to
stay on the worker that reads the partition (`operators.locality`), so records never move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from operators.locality import CountMoved, ReadGroup, probe_workers, to_this_worker
from schemas.decode import DecodeRules
from schemas.event import RawRecord
from state.admission import NEVER, Admission, Admitted

ShardSlice = tuple[str, list[Admitted]]
"""A shard's name and its admitted records (and ticks) from one admission call."""


class AdmissionLogic(StatefulBatchLogic[tuple[str, list[RawRecord]], list[ShardSlice],
                                        dict[str, Any]]):
    """Bytewax glue around one partition's `Admission`; its snapshot is the frontier and the
    records held back for stamps far ahead of it. `vouch`: the wall clock's trusted event time on
    a live stream (`--idle-grace`), else None; `lateness_ms`: the run's allowed lateness."""

    def __init__(self, rules: DecodeRules, buckets: int, resume: dict[str, Any] | None,
                 vouch: Callable[[], int] | None = None, lateness_ms: int = 0) -> None:
        self.admission = Admission(rules, buckets, NEVER, rules.max_future_skew_ms, vouch,
                                   lateness_ms)
        if resume is not None:
            self.admission.restore(resume)

    def on_batch(self, values: list[tuple[str, list[RawRecord]]]
                 ) -> tuple[Iterable[list[ShardSlice]], bool]:
        records = (values[0][1] if len(values) == 1
                   else [record for _, group in values for record in group])
        return [list(self.admission.admit(records).items())], False

    def on_eof(self) -> tuple[Iterable[list[ShardSlice]], bool]:
        groups = self.admission.finish()
        return ([list(groups.items())] if groups else []), False

    def snapshot(self) -> dict[str, Any]:
        return self.admission.snapshot()


def group_by_partition(records: list[RawRecord]) -> list[tuple[str, list[RawRecord]]]:
    """One source batch as one (partition, records in order) item per partition it holds (one,
    for the sources here: they read a batch from one partition)."""
    groups: dict[str, list[RawRecord]] = {}
    for record in records:
        name = str(record.partition)
        group = groups.get(name)
        if group is None:
            groups[name] = [record]
        else:
            group.append(record)
    return list(groups.items())


def admit(step_id: str, records: Stream[RawRecord], rules: DecodeRules, buckets: int,
          saved: Mapping[str, str], saved_shards: Mapping[str, str],
          vouch: Callable[[], int] | None = None, lateness_ms: int = 0
          ) -> Stream[tuple[str, ReadGroup[ShardSlice]]]:
    """Admit every partition's records on the worker that read them, and key each shard's slice
    to that worker for the shard step. `saved`, `saved_shards`: the keys the partitions and the
    shards have state under in the recovery folder, by name; `vouch`, `lateness_ms` as
    `AdmissionLogic`'s."""
    probe_workers(f"{step_id}_worker_probe", records.flow())
    grouped = op.flat_map_batch(f"{step_id}_group", records,
                                lambda batch: to_this_worker(group_by_partition(batch), saved))
    slices = op.stateful_batch(
        step_id, grouped,
        lambda resume: CountMoved(AdmissionLogic(rules, buckets, resume, vouch, lateness_ms),
                                  lambda named: len(named[1])))
    return op.flat_map(f"{step_id}_to_shards", slices,
                       lambda key_slices: to_this_worker(key_slices[1], saved_shards))
