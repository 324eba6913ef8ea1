"""The replay source on hand-made archives: order, duplicates, resume, pacing and filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.archive_format import archive_table
from connectors.archive_source import ArchiveSource, ReplayFilter
from connectors.parquet_sink import ParquetWriter
from schemas.errors import ConfigError
from schemas.event import RawRecord
from schemas.payloads.registry import PayloadRegistry
from state.catalog import load_catalog

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
DEFINITIONS = Path(__file__).resolve().parents[1] / "definitions"


def record(partition: int, offset: int, arrived_ms: int, event_type: str = "OrderPlaced",
           key: str = "o1", source: str = "sim") -> RawRecord:
    """A structured-mode record with a header, as a source would read it."""
    value = json.dumps({"specversion": "1.0", "id": f"{partition}-{offset}", "type": event_type})
    return RawRecord(source, partition, offset, value.encode(), key.encode(), (("h", b"\x00\x01"),),
                     arrived_ms)


def write(archive: Path, records: list[RawRecord], batch_rows: int = 1000) -> None:
    """Archive records the way the pipeline does: through the Parquet sink."""
    sink = ParquetWriter.standalone(archive.parent, batch_rows)
    sink.write_batch([("archive", archive_table(records))])
    sink.close()


def drain(source: ArchiveSource, part: str, resume: int | None = None) -> list[RawRecord]:
    """Every record one source partition yields."""
    partition = source.build_part("input", part, resume)
    found: list[RawRecord] = []
    while True:
        try:
            found += partition.next_batch()
        except StopIteration:
            return found


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return tmp_path / "out" / "archive"


def test_yields_each_partition_in_offset_order_across_days_and_files(archive: Path) -> None:
    """Records spread over two days and several small files come back per partition in offset
    order, equal to what was archived, one source partition per archived partition."""
    records = [record(p, o, T0 + o * DAY // 2) for p in (0, 3) for o in range(7)]
    write(archive, records, batch_rows=2)
    source = ArchiveSource(archive.parent)
    assert source.list_parts() == ["sim/0", "sim/3"]
    assert drain(source, "sim/3") == [r for r in records if r.partition == 3]
    assert {p.name for p in archive.glob("date=*/*")} == {"partition=0", "partition=3"}


def test_rows_written_twice_are_yielded_once(archive: Path) -> None:
    """A second copy of rows (a resumed run rewrote them into new files) changes nothing."""
    records = [record(0, o, T0 + o) for o in range(10)]
    write(archive, records[:6])
    write(archive, records[4:])
    assert drain(ArchiveSource(archive), "sim/0") == records


def test_sources_sharing_a_partition_number_are_separate_parts(archive: Path) -> None:
    """Two topics with a partition 0 each replay as two parts, each in its own offset order."""
    records = [record(0, o, T0 + o, source=s) for o in range(4) for s in ("a", "b")]
    write(archive, records)
    source = ArchiveSource(archive)
    assert source.list_parts() == ["a/0", "b/0"]
    assert drain(source, "b/0") == [r for r in records if r.source == "b"]


def test_batches_are_bounded_and_resume_continues_at_the_snapshot(archive: Path) -> None:
    """Batches hold at most `batch_size` records; a partition rebuilt from a snapshot goes on
    with the next offset."""
    records = [record(0, o, T0 + o) for o in range(25)]
    write(archive, records)
    source = ArchiveSource(archive, batch_size=10)
    partition = source.build_part("input", "sim/0", None)
    first = list(partition.next_batch())
    assert len(first) == 10
    assert drain(source, "sim/0", partition.snapshot()) == records[10:]


def test_paced_replay_follows_arrival_times_at_speed(archive: Path) -> None:
    """At 10x, records that arrived 1 s apart are due 100 ms apart on the injected clock, and
    `next_awake` says when the next one is due."""
    write(archive, [record(0, o, T0 + o * 1000) for o in range(3)])
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    source = ArchiveSource(archive, speed=10.0, clock=lambda: now[0])
    partition = source.build_part("input", "sim/0", None)
    assert [r.offset for r in partition.next_batch()] == [0]
    assert partition.next_awake() == now[0] + timedelta(milliseconds=100)
    assert list(partition.next_batch()) == []
    now[0] += timedelta(milliseconds=250)
    assert [r.offset for r in partition.next_batch()] == [1, 2]


def test_filters_by_arrival_time_instance_and_workflow(archive: Path) -> None:
    """Time range, record keys and workflow types (routed from the event type) each narrow the
    replay; unreadable records have no workflow and are left out by a workflow filter."""
    records = [record(0, 0, T0, key="o1"), record(0, 1, T0 + DAY, key="o2"),
               record(0, 2, T0 + 2 * DAY, "RegistrationRequested", key="s1"),
               RawRecord("sim", 0, 3, b"not json", b"o1", arrived_ms=T0 + 2 * DAY)]
    write(archive, records)
    rules = load_catalog(DEFINITIONS).decode_rules(PayloadRegistry())

    def offsets(replay_filter: ReplayFilter) -> list[int]:
        source = ArchiveSource(archive, replay_filter=replay_filter)
        return [r.offset for r in drain(source, "sim/0")]

    assert offsets(ReplayFilter(since_ms=T0 + DAY, until_ms=T0 + 2 * DAY)) == [1]
    assert offsets(ReplayFilter(instances=frozenset({"o1"}))) == [0, 3]
    assert offsets(ReplayFilter(workflows=frozenset({"order_fulfilment"}), rules=rules)) == [0, 1]


def test_a_folder_without_an_archive_is_a_clear_error(tmp_path: Path) -> None:
    """Pointing a replay at a folder with no archive names what it looked for and how to get one."""
    with pytest.raises(ConfigError, match=r"no input archive there .*import-log"):
        ArchiveSource(tmp_path)
