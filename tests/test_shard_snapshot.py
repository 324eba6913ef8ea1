"""The shard snapshot codec (`state.shard_snapshot`): a snapshot of an older version (v4,
checked in, written by the code before the split; v5, before the metrics windows moved into the
shard) restores and continues exactly; open metrics windows round-trip; every kind of
row (buffered events, timers, tombstones, followed corrections) is restored by field name, so a
reordered or missing field with a default restores right and an unknown one stops the restore."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest

from schemas.errors import SnapshotError
from state.catalog import Catalog
from state.shard import SNAPSHOT_VERSION, Shard
from state.shard_snapshot import ROWS
from state.table_rows import TableRows
from tests.engine_kit import CASES, ORDER_V1, Harness, write_catalog
from tests.snapshot_kit import LATENESS_MS, V4_PREFIX, V4_REST

Snapshot = dict[str, Any]
COLLECTIONS = {"buffered": "buffered", "timer": "timers"}  # the rest are keyed by instance


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return write_catalog(tmp_path_factory.mktemp("defs"), ORDER_V1, CASES)


@pytest.fixture
def data(catalog: Catalog) -> Snapshot:
    """A snapshot of this version with every kind of row and open metrics windows (the v4
    fixture's events, fed to this code)."""
    snapshot = Harness(catalog, LATENESS_MS).feed(*V4_PREFIX).shard.snapshot()
    assert all(snapshot[name] for name in ("buffered", "timers", "tombstones", "followed"))
    assert snapshot["metrics"]["windows"]
    return snapshot


def restore(catalog: Catalog, data: Snapshot) -> Shard:
    shard = Harness(catalog, LATENESS_MS).shard
    return Shard.restore(data, catalog, shard.rules, shard.config)


def rows_of(data: Snapshot, kind: str) -> list[tuple[Any, ...]]:
    if kind in COLLECTIONS:
        return list(data[COLLECTIONS[kind]])
    if kind == "followed":
        return [row for rows in data["followed"].values() for row in rows]
    return list(data["tombstones"].values())


def relaid(data: Snapshot, kind: str, names: list[str],
           value: Any = lambda name, fields: fields[name]) -> Snapshot:
    """`data` as code whose rows of `kind` have the fields `names` would have written it."""
    out = copy.deepcopy(data)
    saved = data["rows"][kind]
    out["rows"] = {**data["rows"], kind: tuple(names)}

    def row(old: tuple[Any, ...]) -> tuple[Any, ...]:
        fields = dict(zip(saved, old, strict=True))
        return tuple(value(name, fields) for name in names)

    if kind in COLLECTIONS:
        out[COLLECTIONS[kind]] = [row(r) for r in data[COLLECTIONS[kind]]]
    elif kind == "followed":
        out["followed"] = {k: [row(r) for r in rows] for k, rows in data["followed"].items()}
    else:
        out["tombstones"] = {k: row(r) for k, r in data["tombstones"].items()}
    return out


def without_metrics(snapshot: Snapshot) -> Snapshot:
    return {**snapshot, "metrics": {**snapshot["metrics"], "windows": []}}


def tables(*harnesses: Harness) -> dict[str, list[dict[str, Any]]]:
    """Each table's rows but `metrics` (windows open at a migrated snapshot were Bytewax's)."""
    return {table: rows for table, rows in Harness.joined(*harnesses).items()
            if table != "metrics"}


def test_a_v4_snapshot_restores_and_continues_like_one_pass(catalog: Catalog) -> None:
    """The checked-in v4 snapshot (with a tombstone, a followed correction and events held back)
    migrates to this version, and the rest of the events give exactly the table rows of an
    uninterrupted run (its metrics windows were Bytewax's state then: none are open)."""
    fixture = Path(__file__).parent / "fixtures" / "shard_snapshot_v4.repr"
    v4 = ast.literal_eval(fixture.read_text())
    assert v4["version"] == 4 and v4["followed"] and v4["tombstones"]
    one_pass = Harness(catalog, LATENESS_MS).feed(*V4_PREFIX, *V4_REST).drain()
    prefix = Harness(catalog, LATENESS_MS).feed(*V4_PREFIX)
    resumed = Harness(catalog, LATENESS_MS)
    resumed.shard = restore(catalog, v4)
    assert resumed.shard.snapshot() == without_metrics(prefix.shard.snapshot())
    resumed.offset = len(V4_PREFIX)
    resumed.feed(*V4_REST).drain()
    assert tables(prefix, resumed) == tables(one_pass)
    assert any(table == "corrections" for table, _ in resumed.out.rows)  # the followed one
    assert resumed.shard.snapshot()["version"] == SNAPSHOT_VERSION == 6


def test_a_v5_snapshot_keeps_its_fact_clock_and_opens_no_window(catalog: Catalog,
                                                                data: Snapshot) -> None:
    """A v5 snapshot (fact clock beside the watermark, no windows) restores with that fact clock
    and no open window: later facts are stamped no earlier than before the snapshot."""
    clock = data["metrics"]["fact_clock"]
    v5 = {k: v for k, v in data.items() if k != "metrics"}
    v5 |= {"version": 5, "clock": {**data["clock"], "fact_clock": clock}}
    restored = restore(catalog, v5)
    assert restored.metrics.clock == clock > 0 and not restored.metrics.open
    assert restored.snapshot() == without_metrics(data)


def test_open_metrics_windows_round_trip_with_their_quantiles(catalog: Catalog) -> None:
    """After every record, the open windows (counts, gauge, latency sketch) restore to the same
    snapshot, and closing them gives the `metrics` rows of closing the windows never snapshotted."""
    events = [*V4_PREFIX, *V4_REST]
    sketched = 0
    for cut in range(1, len(events) + 1):
        fed = Harness(catalog, LATENESS_MS).feed(*events[:cut])
        snapshot = fed.shard.snapshot()
        sketched += any(window[4] for window in snapshot["metrics"]["windows"])
        restored = Harness(catalog, LATENESS_MS)
        restored.shard = restore(catalog, snapshot)
        assert restored.shard.snapshot() == snapshot
        fed.out.tables = TableRows(fed.out.shard)  # only what closing the windows adds
        fed.shard.close_metrics(fed.out)
        restored.shard.close_metrics(restored.out)
        assert restored.out.rows == fed.out.rows
        assert len(fed.out.rows) == len(snapshot["metrics"]["windows"])
    assert sketched  # some cut left a window with step latencies open


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_rows_saved_in_another_order_restore_by_name(catalog: Catalog, data: Snapshot,
                                                     kind: str) -> None:
    """Rows written with their fields reversed come back into the right fields."""
    reversed_data = relaid(data, kind, list(data["rows"][kind])[::-1])
    assert rows_of(reversed_data, kind) != rows_of(data, kind)  # positional would corrupt
    assert restore(catalog, reversed_data).snapshot() == data


def test_a_tombstone_field_the_snapshot_lacks_takes_its_default(catalog: Catalog,
                                                                data: Snapshot) -> None:
    """A snapshot from before tombstones kept the trace id restores them with None."""
    names = [n for n in data["rows"]["tombstone"] if n != "trace_id"]
    restored = restore(catalog, relaid(data, "tombstone", names)).snapshot()
    assert all(row[-1] is None for row in restored["tombstones"].values())
    assert restored["followed"] == data["followed"]


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_a_row_field_this_code_lacks_stops_the_restore(catalog: Catalog, data: Snapshot,
                                                       kind: str) -> None:
    """A field unknown to this code is an error naming it, never silently dropped."""
    extra = relaid(data, kind, [*data["rows"][kind], "colour"],
                   lambda name, fields: fields.get(name, "red"))
    with pytest.raises(SnapshotError, match=f"{kind} rows .*colour"):
        restore(catalog, extra)


def test_a_missing_field_without_a_default_stops_the_restore(catalog: Catalog,
                                                             data: Snapshot) -> None:
    """A timer row without its due time cannot be restored: the error says which field."""
    names = [n for n in data["rows"]["timer"] if n != "due_ms"]
    with pytest.raises(SnapshotError, match="due_ms"):
        restore(catalog, relaid(data, "timer", names))
