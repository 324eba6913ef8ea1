"""The shard snapshot codec: a shard as versioned plain data, every row named, and the migrations
from older versions.

No pickled classes: plain values survive code moves and upgrades. A shard may hold millions of
instances, tombstones and timers, so each is a row (a tuple), not a dict; the snapshot names the
fields of each kind of row once (`rows`, and `layouts` for instances, `state.snapshot`), and
restoring maps values to fields by those names. A new field with a default therefore needs no new
version: older snapshots lack it and restore it with its default. A saved field this code lacks,
or a missing one without a default, stops the restore with a `SnapshotError`; then bump
`SNAPSHOT_VERSION` and add a step to `migrate_snapshot`.

Version 6 (this code): `clock` (frontier, watermark, by name), `metrics` (the fact clock and the
open metrics windows, `state.metric_windows`), `arrivals`, the named `rows` layouts, `buffered`
events and `timers` as rows, `instances` (`state.snapshot`), the key table's maps and the
`followed` late events as rows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from itertools import chain
from operator import attrgetter
from typing import Any

from schemas.errors import SnapshotError
from schemas.event import Event
from state.catalog import Catalog
from state.corrections import Followed, Stated, what_if_event
from state.dedupe import seen_from_dict
from state.durations import parse_duration_ms
from state.key_table import KeyTable, Tombstone
from state.machine import COUNT_KEYS, deadline_ref
from state.metric_windows import MetricWindows
from state.scheduler import EVENT, EVICT, Buffered, Scheduler, Timer
from state.shard_clock import ShardClock
from state.snapshot import encode_instance, layouts, readers

SNAPSHOT_VERSION = 6
Data = dict[str, Any]
Row = Sequence[Any]

_EVENT_FIELDS = ("event_id", "type", "time_ms", "workflow_type", "instance_id", "source",
                 "partition", "offset", "arrived_ms", "body_crc", "sequence", "trace_id")
_FOLLOWED_EVENT = ("workflow_type", "instance_id", "event_id", "type", "time_ms", "sequence")
# The fields of each kind of row this code writes, and the defaults of those that may be absent.
ROWS: dict[str, tuple[str, ...]] = {
    "buffered": ("arrival", "out_of_order", *_EVENT_FIELDS),
    "timer": ("due_ms", "kind", "arrival", "key", "ref"),
    "tombstone": tuple(f.name for f in fields(Tombstone)),
    "followed": (*_FOLLOWED_EVENT, "before", "after", "would_have_sent", "would_not_have_sent",
                 "revision", "due_ms"),
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "buffered": {"sequence": None, "trace_id": None},
    "timer": {"ref": None},
    "tombstone": {f.name: f.default for f in fields(Tombstone) if f.default is not MISSING},
    "followed": {"due_ms": None},
}
_tombstone_row = attrgetter(*ROWS["tombstone"])


def row_reader(kind: str, saved: Sequence[str]) -> Callable[[Row], Row]:
    """Reads rows of `kind` written with the field names `saved` into this code's field order."""
    current, defaults = ROWS[kind], _DEFAULTS[kind]
    saved = tuple(saved)
    unknown = [name for name in saved if name not in current]
    missing = [name for name in current if name not in saved and name not in defaults]
    if unknown or missing:
        msg = (f"{kind} rows in this snapshot have the fields {list(saved)}: unknown to this code "
               f"{unknown}, lacking {missing} (no default); add a migration step in "
               "state.shard_snapshot.migrate_snapshot")
        raise SnapshotError(msg)
    if saved == current:
        return lambda row: row
    position = {name: i for i, name in enumerate(saved)}
    return lambda row: tuple(row[position[name]] if name in position else defaults[name]
                             for name in current)


def encode(name: str, clock: ShardClock, metrics: MetricWindows, keys: KeyTable,
           scheduler: Scheduler, followed: dict[str, list[Followed]]) -> Data:
    """A shard's parts as plain data. Immutable tuples are shared, not copied; instances are
    rows named once per kind, so a million open instances unpickle and restore in seconds."""
    return {
        "version": SNAPSHOT_VERSION, "name": name, "clock": clock.snapshot(),
        "metrics": {"fact_clock": metrics.clock, "windows": metrics.snapshot()},
        "arrivals": scheduler.arrivals, "rows": ROWS, "layouts": layouts(),
        "buffered": [(e.arrival, e.out_of_order, *attrgetter(*_EVENT_FIELDS)(e.event))
                     for e in scheduler.events],
        "timers": [tuple(t) for t in scheduler.timers],
        "instances": {k: encode_instance(i) for k, i in keys.instances.items()},
        "history": dict(keys.history),
        "finished": sorted(keys.finished),
        "tombstones": {k: _tombstone_row(t) for k, t in keys.tombstones.items()},
        "seen": {k: v if isinstance(v, tuple) else dict(v) for k, v in keys.seen.items()},
        "early_counts": dict(keys.early_counts),
        "followed": {k: [(*attrgetter(*_FOLLOWED_EVENT)(f.late), f.stated.before, f.stated.after,
                          f.stated.would_have_sent, f.stated.would_not_have_sent, f.revision,
                          f.due_ms) for f in v] for k, v in followed.items()},
    }


def decode(data: Data, clock: ShardClock, catalog: Catalog, keys: KeyTable,
           scheduler: Scheduler, followed: dict[str, list[Followed]]
           ) -> tuple[ShardClock, MetricWindows]:
    """Fill a new shard's parts from `encode` output of this version (`migrate_snapshot` first);
    the restored clock and metrics windows."""
    saved = data["rows"]
    buffered, timer = row_reader("buffered", saved["buffered"]), row_reader("timer", saved["timer"])
    events = [Buffered(event.time_ms, EVENT, event.sequence if event.sequence is not None else 0,
                       row[0], event, row[1], sys.intern(event.instance_key))
              for row in map(buffered, data["buffered"])
              for event in [Event(*row[2:])]]
    scheduler.restore(events, [Timer(*timer(row)) for row in data["timers"]], data["arrivals"])
    # Every live key has seen an event; interning it here makes the unpickled key (one object
    # in every structure, as pickle keeps shared strings shared) the one new events look up.
    keys.seen = {sys.intern(k): v if isinstance(v, tuple) else dict(v)
                 for k, v in data["seen"].items()}
    read = readers(data["layouts"])
    for name, row in data["instances"].items():
        key = sys.intern(name)
        keys.restored(key, read[row[0]](key, row, catalog.get(row[1], row[2])))
    keys.history = dict(data["history"])
    keys.finished.update(data["finished"])
    for key in sorted(keys.finished - scheduler.evictions()):
        instance = keys.instances[key]
        assert instance.ended_ms is not None
        evict_at = instance.ended_ms + parse_duration_ms(instance.definition.retention)
        scheduler.schedule(evict_at, EVICT, key)
    tombstone = row_reader("tombstone", saved["tombstone"])
    keys.tombstones = {k: Tombstone(*tombstone(t)) for k, t in data["tombstones"].items()}
    keys.early_counts = dict(data["early_counts"])
    read_followed = row_reader("followed", saved["followed"])
    followed.update((sys.intern(k), [_followed(read_followed(row)) for row in rows])
                    for k, rows in data["followed"].items())
    metrics = data["metrics"]
    return (ShardClock.restore(clock.allowed_lateness_ms, data["clock"]),
            MetricWindows.restore(data["name"], metrics["fact_clock"], metrics["windows"]))


def _followed(row: Row) -> Followed:
    *event, before, after, would, would_not, revision, due_ms = row
    stated = Stated(tuple(before), tuple(after), tuple(would), tuple(would_not))
    return Followed(what_if_event(*event), stated, revision, due_ms)


def migrate_snapshot(data: Data) -> Data:
    """The migration hook: upgrade older snapshot versions to `SNAPSHOT_VERSION` step by step."""
    if data.get("version") == 1:
        data = _v1_to_v2(data)
    if data.get("version") == 2:
        data = _v2_to_v3(data)
    if data.get("version") == 3:
        data = {**data, "version": 4, "layouts": _V3_ROW_FIELDS}  # v4 names its row fields
    if data.get("version") == 4:
        data = _v4_to_v5(data)
    if data.get("version") == 5:
        data = _v5_to_v6(data)
    version = data.get("version")
    if version != SNAPSHOT_VERSION:
        msg = (f"shard snapshot version {version!r} is not supported by this code (expects "
               f"{SNAPSHOT_VERSION}); add a migration step in "
               "state.shard_snapshot.migrate_snapshot")
        raise SnapshotError(msg)
    return data


def _v5_to_v6(data: Data) -> Data:
    """v6 holds the open metrics windows, folded in the shard, and their fact clock (v5 kept the
    clock with the watermark; its windows were Bytewax's own state then, so none are open here:
    the facts of windows open at a v5 snapshot are not in their rows)."""
    clock = dict(data["clock"])
    fact_clock = clock.pop("fact_clock")
    return {**data, "version": 6, "clock": clock,
            "metrics": {"fact_clock": fact_clock, "windows": []}}


# The rows of a v4 snapshot, positional then, by the names v5 gives them (fixed forever).
_V4_ROWS = {
    "buffered": ("arrival", "out_of_order", *_EVENT_FIELDS),
    "timer": ("due_ms", "kind", "arrival", "key", "ref"),
    "tombstone": ("outcome", "ended_ms", "forget_ms", "state", "version", "history", "trace_id"),
    "followed": ("workflow_type", "instance_id", "event_id", "type", "time_ms", "sequence",
                 "before", "after", "would_have_sent", "would_not_have_sent", "revision",
                 "due_ms"),
}
_V4_TOMBSTONE_DEFAULTS = ("", 0, None, None)  # older tombstones kept only the first three fields


def _v4_to_v5(data: Data) -> Data:
    """v5 names every row: the queue is split into `buffered` events (arrival, out_of_order, the
    event's fields) and `timers`; tombstone rows are complete; a followed row has the stated
    verdicts and commands as fields of their own; the clock is one named dict."""
    rest = {k: v for k, v in data.items()
            if k not in ("queue", "watermark", "frontier", "fact_clock")}
    queue = data["queue"]
    return {
        **rest, "version": 5, "rows": _V4_ROWS,
        "clock": {"frontier": data["frontier"], "watermark": data["watermark"],
                  "fact_clock": data["fact_clock"]},
        "buffered": [(e[3], e[5], *e[4]) for e in queue if e[1] == EVENT],
        "timers": [tuple(e) for e in queue if e[1] != EVENT],
        "tombstones": {k: (*t, *_V4_TOMBSTONE_DEFAULTS[len(t) - 3:])
                       for k, t in data["tombstones"].items()},
        "followed": {k: [(*row[:6], *(tuple(part) for part in row[6]), row[7], row[8])
                         for row in rows]
                     for k, rows in data.get("followed", {}).items()},  # older: none
    }


_V1_TOMBSTONE_RETENTION_MS = 86_400_000  # v1 kept no expiry; it used the default retention


def _v1_to_v2(data: Data) -> Data:
    """v2 keeps only what a what-if recomputation reads of an applied event (id, type, time,
    sequence): the instance is implied by the key, and coordinates are never re-emitted.
    Tombstones carry their own expiry, so an older timer cannot forget a newer tombstone, and
    evictions are due `retention` after the end in event time (v1 counted from when the end was
    processed), so v1's eviction timers are dropped and scheduled anew on restore."""
    history = {k: [[e[0], e[1], e[2], e[10]] for e in events]
               for k, events in data["history"].items()}
    tombstones = {k: [o, e, e + _V1_TOMBSTONE_RETENTION_MS]
                  for k, (o, e) in data["tombstones"].items()}
    queue = [entry for entry in data["queue"] if entry[1] != EVICT]  # rescheduled on restore
    return {**data, "version": 2, "history": history, "tombstones": tombstones, "queue": queue}


# The fields of a v3 instance row after (kind, workflow type, version), by their v2 names: the
# v3 layout, fixed forever (v4 snapshots name theirs).
_V3_ROW_FIELDS = {
    "machine": ("started_ms", "state", "entered_ms", "visit", "trace_id", "first_seen", "completed",
                "branches_done", "pending_acks", "outcome", "ended_ms", "timed_out_step",
                "step_durations", "path", "counts"),
    "case": ("started_ms", "last_ms", "visit", "trace_id", "activities", "end_seen", "rule_from",
             "rule_last_to", "rule_done", "outcome", "ended_ms", "counts"),
}


def _v2_to_v3(data: Data) -> Data:
    """v3 holds the shard's in-memory forms, so restoring builds little: instances are rows, not
    dicts; arrays are tuples; history (without event ids, which a what-if never reads) and a key's
    first few event ids are flat tuples; counts are tuples in `COUNT_KEYS` order; timer queue
    entries lost their constant sequence slot."""
    queue = [(*e[:4], tuple(e[4]), e[5]) if e[1] == EVENT
             else (e[0], e[1], e[3], e[4], None if e[5] is None else deadline_ref(*e[5]))
             for e in data["queue"]]
    instances = {k: (s["kind"], s["workflow_type"], s["version"],
                     *(_v2_value(f, s[f]) for f in _V3_ROW_FIELDS[s["kind"]]))
                 for k, s in data["instances"].items()}
    history = {k: tuple(chain.from_iterable(e[1:] for e in v)) for k, v in data["history"].items()}
    seen = {k: seen_from_dict(v) for k, v in data["seen"].items()}
    early_counts = {k: _v2_value("counts", v) for k, v in data["early_counts"].items()}
    return {**data, "version": 3, "queue": queue, "instances": instances, "history": history,
            "seen": seen, "early_counts": early_counts}


def _v2_value(field: str, value: Any) -> Any:
    if field == "counts":
        return tuple(value[k] for k in COUNT_KEYS)
    if field == "first_seen":
        return tuple(value.items())
    if field == "pending_acks":
        return dict(value) or None
    if field in ("rule_from", "rule_last_to"):
        return {int(k): v for k, v in value.items()}
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value
