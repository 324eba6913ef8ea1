"""A shard: the instances of one slice of one input partition, on its partition's event time.

A shard sees the records of its slice in partition order, decoded and stamped by admission
(`state.admission`) with their partition's frontier. `Shard` only wires its parts:
- the clock (`state.shard_clock`): frontier, watermark (the partition's, so lateness does not
  depend on the shard count), idle advance;
- the metrics windows (`state.metric_windows`): the fact clock that stamps metric facts, the
  open one-minute windows, and the `metrics` rows of those it has passed;
- the key table (`state.key_table`): instances, their history, tombstones of evicted ones, the
  event ids each key has seen, the open-instance gauge;
- the scheduler (`state.scheduler`): buffered events and timers in event-time order;
- the engine (`state.engine`): releases what the watermark passes, starting and applying
  instances, firing deadlines, evicting and forgetting keys;
- the corrections (`state.corrections`): late events judged, and followed while a run is open
  (the engine tells them when a followed key changes);
- the snapshot codec (`state.shard_snapshot`).

Every record ends in exactly one `ledger` row: applied, ignored, anomalous, duplicate, late or
dead_lettered. Everything is a pure function of the records received and the watermarks given, so
a replay of the same partitions gives the same rows at any speed and worker count.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Any

from schemas.decode import DecodeRules
from schemas.event import DeadLetter
from state.admission import Admitted, TimeJump
from state.catalog import Catalog
from state.corrections import Corrections
from state.engine import Engine, ShardConfig
from state.key_table import DUPLICATE, NEW, KeyTable
from state.metric_windows import NEVER_CLOSES, MetricWindows
from state.output import Out
from state.scheduler import Scheduler
from state.shard_clock import END_OF_TIME, ShardClock
from state.shard_snapshot import SNAPSHOT_VERSION, decode, encode, migrate_snapshot

__all__ = ["END_OF_TIME", "SNAPSHOT_VERSION", "Shard", "ShardConfig", "migrate_snapshot"]


class Shard:
    """One shard's clock, metrics windows, key table, scheduler, engine and corrections; see the
    module docstring.

    Each public call takes the shard's fact clock into `out` and ends by folding `out`'s fact
    tallies into the metrics windows (`MetricWindows.fold`), so several calls may share one
    `Out` or each have their own."""

    def __init__(self, name: str, catalog: Catalog, rules: DecodeRules,
                 config: ShardConfig) -> None:
        self.name, self.catalog, self.rules, self.config = name, catalog, rules, config
        self.clock = ShardClock(config.allowed_lateness_ms)
        self.metrics = MetricWindows(name)
        self.keys = KeyTable()
        self.scheduler = Scheduler()
        self.corrections = Corrections(name, catalog, rules, config, self.keys, self.scheduler)
        self.engine = Engine(catalog, rules, config, self.keys, self.scheduler,
                             watched=self.corrections.followed,
                             on_change=self.corrections.follow,
                             on_forget=self.corrections.forget)

    def receive(self, admitted: Admitted, out: Out) -> None:
        """Take one admitted record of this shard's slice (or a tick), in partition order: first
        catch up with the partition's frontier before it, releasing what that makes due."""
        out.fact_clock = max(out.fact_clock, self.metrics.clock)
        self._receive(admitted, out)
        self.metrics.fold(out)

    def release(self, out: Out) -> None:
        """Release what the watermark passes and report open-instance changes: what the dataflow
        does after each record."""
        out.fact_clock = max(out.fact_clock, self.metrics.clock)
        self.engine.release(self.clock.watermark, out)
        self.keys.gauge_facts(out)
        self.metrics.fold(out)

    def take(self, items: list[Admitted], out: Out) -> None:
        """`receive` and `release` each item of a slice in order (the release only when the
        scheduler has something due, the gauge only when it changed: most records leave both)."""
        clock, keys, due = self.clock, self.keys, self.scheduler.due
        receive, release = self._receive, self.engine.release
        out.fact_clock = max(out.fact_clock, self.metrics.clock)
        for admitted in items:
            receive(admitted, out)
            if due(clock.watermark):
                release(clock.watermark, out)
            if keys.open_before:
                keys.gauge_facts(out)
        self.metrics.fold(out)

    def advance_to(self, watermark_ms: int, out: Out) -> None:
        """Move the watermark (never back), release everything now due, report the gauge.

        The dataflow calls this with wall-clock time minus a grace when a live partition is idle
        (`idle_advance`), and with `END_OF_TIME` when a bounded input ends (every pending
        deadline is then due)."""
        self.clock.advance_to(watermark_ms)
        self.release(out)

    def idle_advance(self, now: datetime, last_input: datetime, grace: timedelta,
                     out: Out) -> None:
        """On a live stream quiet for `grace`, let the watermark follow the wall clock."""
        if self.clock.idle_advance(now, last_input, grace):
            self.release(out)

    def follow_watermark(self, out: Out) -> None:
        """On a live stream, move the fact clock up to the watermark, emitting the metrics windows
        it passes: they close on event time even when no fact of this shard moves the clock.
        Facts of events behind the watermark (late ones) are then stamped in the window open."""
        self.metrics.advance_to(self.clock.watermark, out)

    def close_metrics(self, out: Out) -> None:
        """Emit every open metrics window: the input has ended."""
        self.metrics.close(NEVER_CLOSES, out)

    def wake_at(self, last_input: datetime, grace: timedelta) -> datetime | None:
        """When a live shard should next look at the wall clock (None: nothing is pending): its
        next due item, or the end of its earliest open metrics window."""
        due = self.scheduler.next_due()
        closes_at = self.metrics.closes_at
        return self.clock.wake_at(closes_at if due is None else min(due, closes_at),
                                  last_input, grace)

    @property
    def open_instances(self) -> int:
        return self.keys.open_instances

    def _receive(self, admitted: Admitted, out: Out) -> None:
        clock = self.clock
        frontier, decoded = admitted
        if frontier > clock.frontier and clock.catch_up(frontier):  # (most records: no call)
            self.engine.release(clock.watermark, out)
        if decoded is None:
            return
        if isinstance(decoded, TimeJump):
            out.row("event_time_jumps", decoded.to_row())
            return
        if isinstance(decoded, DeadLetter):
            self.engine.dead_letter(decoded, clock.frontier, out)
            return
        event = decoded
        key = sys.intern(event.instance_key)
        seen = self.keys.remember(key, event)
        if seen != NEW:
            if seen == DUPLICATE:
                self.keys.settle(event, key, "duplicate", out)
            else:
                self.engine.conflicting_duplicate(event, key, clock.watermark, out)
            return
        if event.time_ms < clock.watermark:
            self.engine.release(clock.watermark, out)
            self.corrections.late(event, key, clock.watermark, out)
            return
        self.scheduler.buffer(event, clock.observe(event.time_ms), key)

    def snapshot(self) -> dict[str, Any]:
        """Versioned plain data, every row named (`state.shard_snapshot`)."""
        return encode(self.name, self.clock, self.metrics, self.keys, self.scheduler,
                      self.corrections.followed)

    @classmethod
    def restore(cls, data: dict[str, Any], catalog: Catalog, rules: DecodeRules,
                config: ShardConfig) -> Shard:
        """Rebuild a shard from `snapshot()` output, migrating older snapshot versions."""
        data = migrate_snapshot(data)
        shard = cls(data["name"], catalog, rules, config)
        shard.clock, shard.metrics = decode(data, shard.clock, catalog, shard.keys,
                                            shard.scheduler, shard.corrections.followed)
        return shard
