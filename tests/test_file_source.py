"""A user's own event files as input (`flowkeeper run --source file PATH...`): every row accounted
for at `file:<name>/<row>`, the same verdicts from every format, any worker count and a replay of
the archive, the same partitions as `produce --file` into Kafka, exact resume after kill -9,
clear errors, and bounded memory on a file larger than the memory allowed."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from analysis.output_diff import compare_outputs
from connectors.event_files import columnar_event, time_ms
from connectors.partitioner import partition_of
from connectors.simulator import SimulatorConfig, simulate
from dataflows.cli import main
from dataflows.settings import BUNDLED_DEFINITIONS
from schemas.decode import instance_id_of
from schemas.payloads.registry import PayloadRegistry
from state.catalog import load_catalog
from tests.crash_kit import parquet_rows
from tests.demo_kit import run_command as run
from tests.kafka_broker import Broker

VERDICTS = ("outcomes", "commands", "transitions", "anomalies", "corrections")
BAD_LINES = [b"this is not json", b"\xff\xfe{\"broken", b'{"specversion": "1.0"}']


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    """A simulated stream (duplicates, reordering, late events, bad payloads) as JSON lines in
    arrival order: the structured-mode records that are JSON objects."""
    simulation = simulate(SimulatorConfig(seed=11, instances=300, partitions=3),
                          load_catalog(BUNDLED_DEFINITIONS))
    records = sorted(simulation.records(), key=lambda r: (r.arrived_ms, r.partition, r.offset))
    kept = []
    for record in records:
        try:
            parsed = json.loads(record.value)
        except ValueError:
            continue
        if not record.headers and isinstance(parsed, dict) and b"\n" not in record.value:
            kept.append(record.value)
    return kept


def write_lines(path: Path, lines: list[bytes]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.writelines(line + b"\n" for line in lines)
    return path


def query(out: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def same(got: Path, want: Path, tables: tuple[str, ...]) -> None:
    for diff in compare_outputs(want, got, tables):
        assert (diff.identical and diff.recorded > 0) or diff.recorded == diff.replayed == 0, (
            diff.table, diff.differences[:3])


@pytest.fixture(scope="module")
def jsonl_run(lines: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("jsonl")
    path = write_lines(folder / "events.jsonl", lines)
    out = folder / "out"
    run(out, "--source", "file", str(path), "--file-partitions", "3")
    return out


def test_every_row_is_accounted_for_at_its_file_and_line(lines: list[bytes],
                                                         tmp_path: Path) -> None:
    """Bad lines among good ones: each non-blank line is one ledger row at `file:<name>`, its
    line number as the offset; the bad ones are dead letters with their bytes; blank lines are
    not events."""
    mixed = [*lines[:50], *BAD_LINES, b"", b"   ", *lines[50:]]
    path = write_lines(tmp_path / "mixed.ndjson", mixed)
    out = tmp_path / "out"
    summary = run(out, "--source", "file", str(path))
    rows = query(out, 'SELECT source, "offset", disposition FROM ledger')
    numbered = {n for n, line in enumerate(mixed, start=1) if line.strip()}
    assert {(source, offset) for source, offset, _ in rows} == {
        ("file:mixed.ndjson", n) for n in numbered}
    assert len(rows) == len(numbered)
    dead = dict(query(out, 'SELECT "offset", raw_value FROM dead_letters '
                           "WHERE source = 'file:mixed.ndjson'"))
    for n, line in enumerate(BAD_LINES, start=51):
        assert dead[n] == line
    dispositions = Counter(d for _, _, d in rows)
    assert sum(dispositions.values()) == len(numbered)
    assert {"applied", "duplicate", "late", "dead_lettered"} <= set(dispositions)
    assert f"processed {len(numbered):,} records" in summary


def columnar(lines: list[bytes]) -> list[dict[str, Any]]:
    """The events as rows with a column per attribute, `data` as JSON text."""
    rows = []
    for line in lines:
        event = json.loads(line)
        rows.append({**{k: str(v) for k, v in event.items() if k != "data"},
                     "data": json.dumps(event["data"])})
    return rows


def write_format(folder: Path, name: str, lines: list[bytes]) -> Path:
    path = folder / name
    if name.endswith(".jsonl.zst"):
        with pa.output_stream(str(path), compression="zstd") as f:
            f.write(b"".join(line + b"\n" for line in lines))
    elif name.endswith(".jsonl.gz"):
        write_lines(path, lines)
    elif name.endswith(".csv.gz"):
        table = pa.Table.from_pylist(columnar(lines))
        with pa.output_stream(str(path), compression="gzip") as f:
            pa_csv.write_csv(table, f)
    elif name == "text_data.parquet":
        pq.write_table(pa.Table.from_pylist(columnar(lines)), path, row_group_size=500)
    else:  # a lake export: `time` a timestamp column, `data` a struct of every type's members
        events = [json.loads(line) for line in lines]
        for event in events:
            event["time"] = pa.scalar(time_ms(event["time"]), pa.timestamp("ms", "UTC")).as_py()
        pq.write_table(pa.Table.from_pylist(events), path, row_group_size=500)
    return path


@pytest.mark.parametrize("name", ["events.jsonl.gz", "events.jsonl.zst", "events.csv.gz",
                                  "text_data.parquet", "struct_data.parquet"])
def test_every_format_gives_the_same_verdicts(lines: list[bytes], jsonl_run: Path,
                                              tmp_path: Path, name: str) -> None:
    """The same events as compressed JSON lines, CSV and Parquet (data as text or as a struct,
    time as a timestamp column) reach the same outcomes, commands, transitions, anomalies and
    corrections as the plain JSON lines, with the same dispositions row by row."""
    reference = jsonl_run
    if name == "struct_data.parquet":  # a struct column has one type: v1 orders list SKUs as text
        lines = [line for line in lines if struct_fits(json.loads(line)["data"])]
        reference = tmp_path / "reference"
        jsonl = write_lines(tmp_path / "subset.jsonl", lines)
        run(reference, "--source", "file", str(jsonl), "--file-partitions", "3")
    path = write_format(tmp_path, name, lines)
    out = tmp_path / "out"
    run(out, "--source", "file", str(path), "--file-partitions", "3")
    same(out, reference, VERDICTS)
    ledger = 'SELECT "offset", partition, disposition FROM ledger ORDER BY "offset"'
    assert query(out, ledger) == query(reference, ledger)


def struct_fits(data: dict[str, Any]) -> bool:
    return all(isinstance(item, dict) for item in data.get("items") or [])


def test_worker_counts_file_order_and_replay_give_identical_outputs(
        lines: list[bytes], jsonl_run: Path, tmp_path: Path) -> None:
    """Split into two files: 2 workers equal 1; the files named in the other order are read in
    name order all the same; the run's archive replays identical; and the instances end as in
    the one-file run."""
    half = len(lines) // 2
    first = write_lines(tmp_path / "a-first.jsonl.gz", lines[:half])
    second = write_lines(tmp_path / "b-second.jsonl", lines[half:])
    one, two = tmp_path / "one", tmp_path / "two"
    run(one, "--source", "file", str(first), str(second), "--file-partitions", "3")
    run(two, "--source", "file", str(second), str(first), "--file-partitions", "3",
        "--workers", "2")
    same(two, one, (*VERDICTS, "metrics", "ledger"))
    replayed = tmp_path / "replayed"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["replay", str(two), "--out", str(replayed), "--workers", "2"]) == 0
    same(replayed, one, (*VERDICTS, "metrics", "ledger"))
    same(one, jsonl_run, VERDICTS)


@pytest.mark.broker
def test_produce_file_then_a_kafka_run_reaches_the_file_run(broker: Broker, lines: list[bytes],
                                                            jsonl_run: Path,
                                                            tmp_path: Path) -> None:
    """`produce --file` puts each record in the partition the file source gives it (Kafka's
    default partitioner), so consuming the topic reaches exactly the file run's verdicts."""
    path = write_lines(tmp_path / "events.jsonl", lines)
    topic = broker.topic("from-file", partitions=3)
    kafka = ["--kafka-brokers", broker.address]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["produce", "--topic", topic, "--file", str(path), *kafka]) == 0
    out = tmp_path / "out"
    run(out, "--source", "kafka", "--kafka-topic", topic, "--no-kafka-tail",
        "--commands-topic", "", *kafka)
    same(out, jsonl_run, (*VERDICTS, "metrics"))
    partitions = 'SELECT partition, count(*) FROM ledger GROUP BY ALL ORDER BY ALL'
    assert query(out, partitions) == query(jsonl_run, partitions)


def test_a_file_cut_short_dead_letters_the_rest_and_keeps_what_it_read(
        lines: list[bytes], tmp_path: Path) -> None:
    """A gzip file cut off mid-way: the rows before the cut are read, and the cut itself is one
    dead letter saying where the file became unreadable."""
    whole = gzip.compress(b"".join(line + b"\n" for line in lines))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    run(out, "--source", "file", str(path), "--file-partitions", "2")
    [(offset, message)] = query(out, "SELECT \"offset\", message FROM dead_letters "
                                     "WHERE reason = 'source_error'")
    assert 0 < offset < len(lines)
    assert f"cut.jsonl.gz: unreadable from row {offset} on" in message
    assert query(out, 'SELECT max("offset"), count(*) FROM ledger') == [(offset, offset)]


def test_arrival_times_come_from_the_named_field(lines: list[bytes], tmp_path: Path) -> None:
    """--arrival-field names the attribute holding each record's arrival: the ledger records it,
    and an event stamped hours after its arrival is dead-lettered by the skew guard."""
    events = [json.loads(line) for line in lines[:20]]
    for event in events:
        event["arrivedat"] = event["time"]
    events[5]["time"] = "2027-06-01T00:00:00Z"  # far after its arrival: a broken clock
    path = write_lines(tmp_path / "arrivals.jsonl", [json.dumps(e).encode() for e in events])
    out = tmp_path / "out"
    run(out, "--source", "file", str(path), "--arrival-field", "arrivedat")
    arrived = dict(query(out, 'SELECT "offset", epoch_ms(arrived_at) FROM ledger'))
    assert arrived == {n: time_ms(e["arrivedat"]) for n, e in enumerate(events, start=1)}
    [(reason,)] = query(out, 'SELECT reason FROM dead_letters WHERE "offset" = 6')
    assert reason == "time_out_of_range"


@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: [d / "missing.jsonl"], "missing.jsonl: does not exist"),
    (lambda d: [d], "is a folder, not a file"),
    (lambda d: [write_lines(d / "events.txt", [b"{}"])], "unknown event file format"),
    (lambda d: [write_lines(d / "plain.jsonl", [b"{}"]).rename(d / "plain.jsonl.gz")],
     "not readable as a gzip file of jsonl"),
    (lambda d: [write_lines(d / "table.parquet", [b"{}"])], "not readable as parquet"),
    (lambda d: [write_lines((d / "x").mkdir() or d / "x" / "e.jsonl", [b"{}"]),
                write_lines(d / "e.jsonl", [b"{}"])], "have the same name"),
])
def test_unusable_input_is_one_clear_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, expected: str) -> None:
    paths = [str(p) for p in make(tmp_path)]
    assert main(["run", "--source", "file", *paths, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowkeeper run: error: ") and expected in err[0]


def test_files_need_the_file_source_and_the_file_source_needs_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "e.jsonl", [b"{}"])
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "add --source file" in capsys.readouterr().err
    assert main(["run", "--source", "file", "--out", str(tmp_path / "out")]) == 2
    assert "source 'file' needs files" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_then_resume_of_a_file_run_gives_identical_outputs(
        lines: list[bytes], jsonl_run: Path, tmp_path: Path) -> None:
    """Killed right after its fifth Parquet file, then run again on the same recovery folder: the
    outputs equal an uninterrupted run's, with no row twice."""
    path = write_lines(tmp_path / "events.jsonl", lines)
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    args = [sys.executable, "-m", "dataflows.cli", "run", "--source", "file", str(path),
            "--file-partitions", "3", "--out", str(out), "--recovery-dir", str(recovery),
            "--snapshot-interval", "0.1", "--flush-seconds", "0.02",
            "--parquet-batch-rows", "100"]
    killed = subprocess.run(args, env={**os.environ, "FLOWKEEPER_CRASH_AFTER":
                                       "parquet_after_rename:5"}, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    resumed = subprocess.run(args, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert "resuming from recovery folder" in resumed.stderr.decode()
    for table in ("ledger", "outcomes", "commands", "transitions", "dead_letters", "archive"):
        rows = parquet_rows(out, table)
        assert len({r[0] for r in rows}) == len(rows), f"a {table} row twice"
    same(out, jsonl_run, (*VERDICTS, "metrics", "ledger"))


MEMORY_PROBE = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from connectors.event_files import event_files
    from connectors.file_source import FileSource
    from dataflows.settings import BUNDLED_DEFINITIONS
    from schemas.payloads.registry import PayloadRegistry
    from state.catalog import load_catalog

    rules = load_catalog(BUNDLED_DEFINITIONS).decode_rules(PayloadRegistry())
    source = FileSource(event_files([Path(sys.argv[1])]), rules, 2)
    part = source.build_part("probe", "1", None)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    records = 0
    try:
        while True:
            records += len(part.next_batch())
    except StopIteration:
        pass
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(records, grown)  # KiB
""")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["big.jsonl.gz", "big.parquet"])
def test_a_file_larger_than_the_memory_allowed_streams(tmp_path: Path, name: str) -> None:
    """A file of about 400 MB of events (small on disk) is read by one partition with less than
    64 MB of memory growth: rows are read a line or a batch at a time, never the whole file."""
    event = {"specversion": "1.0", "type": "OrderPlaced", "source": "/shop", "id": "",
             "time": "2026-01-01T00:00:00Z", "data": {"order_id": "", "pad": "x" * 4_000}}
    count = 100_000
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=1) as f:
            for n in range(count):
                event["id"] = event["data"]["order_id"] = f"ord-{n}"  # type: ignore[index]
                f.write(json.dumps(event).encode() + b"\n")
    else:
        writer: pq.ParquetWriter | None = None
        for start in range(0, count, 5_000):
            rows = pa.Table.from_pylist([
                {**event, "id": f"ord-{n}",
                 "data": json.dumps({"order_id": f"ord-{n}", "pad": "x" * 4_000})}
                for n in range(start, start + 5_000)])
            writer = writer or pq.ParquetWriter(path, rows.schema)
            writer.write_table(rows, row_group_size=1_000)
        assert writer is not None
        writer.close()
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True,
                           text=True, check=True)
    records, grown_kib = map(int, probe.stdout.split())
    assert 0 < records < count  # this partition's share
    assert grown_kib < 64 * 1024, f"memory grew {grown_kib / 1024:.0f} MB for a 400 MB file"


def test_instance_ids_and_partitions_are_found_as_the_decoder_finds_them() -> None:
    """Keys come from the subject or the definition's data field; an event the decoder would
    reject before finding its id has none and goes to partition 0; partitions are Kafka's."""
    from kafka.partitioner.default import murmur2

    rules = load_catalog(BUNDLED_DEFINITIONS).decode_rules(PayloadRegistry())
    placed = {"type": "OrderPlaced", "data": {"order_id": "ord-7"}}
    assert instance_id_of(placed, rules) == "ord-7"
    assert instance_id_of({"type": "OrderPlaced", "data": {"order_id": True}}, rules) is None
    assert instance_id_of({"type": "NoSuchType", "subject": "x"}, rules) is None
    assert partition_of(None, 8) == 0
    assert partition_of(b"ord-7", 8) == (murmur2(b"ord-7") & 0x7FFFFFFF) % 8
    row = columnar_event(3, {"type": "T", "data": "{not json", "at": "x"}, "at")
    assert row.arrival == "x" and row.value() == b'{"type":"T","data":{not json}'
    assert time_ms("2026-01-01T00:00:00.250Z") == 1_767_225_600_250
    assert time_ms(1_767_225_600_250) == time_ms("1767225600250") == 1_767_225_600_250
    assert time_ms("yesterday") is None and time_ms(True) is None


def test_the_readme_example_runs_as_pasted(tmp_path: Path) -> None:
    """The README's five lines, pasted into a shell in an empty folder, run and reach the outcome
    the README explains."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Your own event files", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert len(script.strip().splitlines()) == 5
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert query(tmp_path / "out" / "file", "SELECT outcome, timed_out_step FROM outcomes") == [
        ("compensation_failed", "reserving_inventory")]


def test_duplicates_that_differ_only_in_arrival_are_duplicates(lines: list[bytes],
                                                               tmp_path: Path) -> None:
    """The --arrival-field attribute is transport metadata: the same event delivered twice with
    two arrival stamps is a `duplicate`, while one whose content differs is still a conflicting
    duplicate (`anomalous`)."""
    events = [json.loads(line) for line in lines[:30]]
    for event in events:
        event["arrivedat"] = event["time"]
    again = {**events[10], "arrivedat": "2026-01-01T23:59:00Z"}
    changed = {**events[10], "arrivedat": "2026-01-01T23:59:30Z", "source": "/elsewhere"}
    path = write_lines(tmp_path / "redelivered.jsonl",
                       [json.dumps(e).encode() for e in [*events, again, changed]])
    out = tmp_path / "out"
    run(out, "--source", "file", str(path), "--arrival-field", "arrivedat")
    dispositions = dict(query(out, 'SELECT "offset", disposition FROM ledger WHERE "offset" > 30'))
    assert dispositions == {31: "duplicate", 32: "anomalous"}


def test_lines_that_are_no_event_arrive_with_their_neighbours(lines: list[bytes],
                                                             tmp_path: Path) -> None:
    """A line that cannot be decoded arrives with the file's line before it, and at the very start
    with the first line that has a time: never at the epoch."""
    mixed = [b"not json at the start", b"\xff\xfe", *lines[:20], b"not json inside", *lines[20:40]]
    path = write_lines(tmp_path / "mixed.jsonl", mixed)
    out = tmp_path / "out"
    run(out, "--source", "file", str(path))
    arrived = dict(query(out, 'SELECT "offset", epoch_ms(arrived_at) FROM ledger'))
    times = {n: time_ms(json.loads(line)["time"]) for n, line in enumerate(mixed, start=1)
             if line.startswith(b"{")}
    assert arrived[1] == arrived[2] == times[3]
    assert arrived[23] == times[22]
    assert min(arrived.values()) == min(times.values())
