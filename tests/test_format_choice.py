"""A format per file and per topic (`--format PATTERN=NAME,...,DEFAULT`): a run reading files or
topics of different formats reaches what each reaches alone, a replay reads every record as the
run did, and a choice that cannot work stops the run with one line."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import duckdb
import pytest
import yaml

from analysis.output_diff import compare_outputs
from connectors.format_writer import FormatWriter
from connectors.simulator.truth import Simulation
from dataflows.cli import main
from dataflows.formats import RUN_FORMAT_FILE, run_choice
from dataflows.settings import Settings
from schemas.errors import ConfigError
from schemas.format_choice import FormatChoice, parse_choice
from tests.kafka_broker import Broker
from tests.test_formats import (
    RULES,
    SETTINGS,
    cli_run,
    cloudevents_verdicts,  # noqa: F401 (the module's fixture, shared)
    formats_file,  # noqa: F401 (the module's fixture, shared)
    run_flow,
    simulation,  # noqa: F401 (the module's fixture, shared)
    spec_of,
    verdicts,
    write_jsonl,
)

TABLES = ("outcomes", "commands", "transitions", "anomalies", "corrections")


def test_the_first_matching_pattern_chooses_and_the_rest_read_the_default() -> None:
    """Patterns match a file's or a topic's name in order; other sources read the default."""
    choice = parse_choice("shop-*.jsonl=shop, shop-old.jsonl=outbox ,orders.*=outbox,cloudevents")
    assert choice == FormatChoice("cloudevents", (("shop-*.jsonl", "shop"),
                                                  ("shop-old.jsonl", "outbox"),
                                                  ("orders.*", "outbox")))
    assert choice.name_for("file:shop-old.jsonl") == "shop"
    assert choice.name_for("kafka:orders.eu") == "outbox"
    assert choice.name_for("file:cloud.jsonl") == "cloudevents"
    assert parse_choice(choice.text()) == choice
    assert parse_choice("shop") == FormatChoice("shop")
    assert parse_choice("a.jsonl=shop").default == "cloudevents"
    assert choice.unmatched(["file:shop-1.jsonl", "kafka:orders.eu"]) == ["shop-old.jsonl"]


def test_the_choice_comes_from_the_environment_too(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """`FLOWKEEPER_SOURCE__FORMAT` takes the same list as `--format`, checked the same way."""
    monkeypatch.setenv("FLOWKEEPER_SOURCE__FORMAT", "b.jsonl=shop,cloudevents")
    settings = Settings.from_flags(source="file", files=[Path("a.jsonl"), Path("b.jsonl")],
                                   out=tmp_path)
    assert run_choice(settings) == FormatChoice("cloudevents", (("b.jsonl", "shop"),))
    with pytest.raises(ConfigError, match=r"'b\.jsonl' matches no file this run reads"):
        run_choice(settings.with_flags(files=[Path("a.jsonl")]))


@pytest.mark.parametrize(("text", "named"), [
    ("shop,outbox", "two defaults"),
    ("=shop", "neither NAME nor PATTERN=NAME"),
    ("a=shop,a=outbox", "chooses twice for 'a'"),
    ("a.jsonl=", "neither NAME nor PATTERN=NAME"),
])
def test_a_malformed_choice_is_one_clear_error(text: str, named: str) -> None:
    """Two defaults, an empty pattern or name, a pattern chosen twice: a `ConfigError` naming it."""
    with pytest.raises(ConfigError, match=named):
        parse_choice(text)


def ledger(out: Path) -> list[tuple[str, int, str]]:
    """Every record's disposition by its file and row."""
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        return conn.execute('SELECT source, "offset", disposition FROM ledger '
                            'ORDER BY source, "offset"').fetchall()
    finally:
        conn.close()


def split_files(simulation: Simulation, folder: Path, shop: bool) -> list[Path]:  # noqa: F811
    """The workload's JSON records as two files by instance (`a.jsonl`, `b.jsonl`), `b` in the
    `shop` format when `shop` is set."""
    records = [r for r in sorted(simulation.records(), key=lambda r: (r.arrived_ms, r.offset))
               if not r.headers and b"\n" not in r.value]
    writer = FormatWriter(spec_of("shop"), RULES)
    folder.mkdir()
    first = [r for r in records if (r.key or b"")[-1:] in b"02468"]
    second = [r for r in records if (r.key or b"")[-1:] not in b"02468"]
    assert first and second
    return [write_jsonl(folder / "a.jsonl", first, lambda r: r),
            write_jsonl(folder / "b.jsonl", second, writer.write if shop else lambda r: r)]


def test_a_cloudevents_file_and_a_mapped_file_in_one_run_and_its_replay(
        simulation: Simulation, formats_file: Path, tmp_path: Path) -> None:  # noqa: F811
    """A CloudEvents file and a `shop` file read together (`--format b.jsonl=shop`) reach the
    outputs and dispositions of both files as CloudEvents; the run records its choice, its
    replay verifies identical, and `inspect` reads a mapped record's instance without flags."""
    cloud = split_files(simulation, tmp_path / "cloud", shop=False)
    mixed = split_files(simulation, tmp_path / "mixed", shop=True)
    want, got, replayed = tmp_path / "want", tmp_path / "got", tmp_path / "replayed"
    cli_run(want, "--source", "file", *map(str, cloud), "--file-partitions", "3")
    cli_run(got, "--source", "file", *map(str, mixed), "--file-partitions", "3",
            "--format", "b.jsonl=shop,cloudevents", "--formats", str(formats_file),
            "--workers", "2")
    for diff in compare_outputs(want, got, TABLES):
        assert diff.identical or diff.recorded == diff.replayed == 0, (diff.table,
                                                                       diff.differences[:3])
    assert ledger(got) == ledger(want)
    recorded = yaml.safe_load((got / RUN_FORMAT_FILE).read_text())
    assert recorded["read"] == "b.jsonl=shop,cloudevents"
    assert set(recorded["formats"]) == {"shop"}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["replay", str(got), "--out", str(replayed)]) == 0
    for diff in compare_outputs(got, replayed, (*TABLES, "ledger", "dead_letters")):
        assert diff.identical, (diff.table, diff.differences[:3])
    instance = json.loads(mixed[1].read_bytes().splitlines()[0])["instance"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["inspect", instance, "--out", str(got), "--json"]) == 0
    timeline = json.loads(printed.getvalue())["timeline"]
    assert any(e["kind"] == "event" for e in timeline)


@pytest.mark.parametrize(("choice", "named"), [
    ("b.jsonl=shopp,cloudevents", "'shopp' is neither built in nor in formats.yaml"),
    ("c*.jsonl=shop,cloudevents", "'c*.jsonl' matches no file this run reads (a.jsonl, b.jsonl)"),
])
def test_a_choice_that_cannot_work_stops_the_run_with_one_line(
        simulation: Simulation, formats_file: Path, tmp_path: Path,  # noqa: F811
        choice: str, named: str) -> None:
    """An unknown format name, or a pattern matching no file the run reads: exit 2, one line."""
    files = split_files(simulation, tmp_path / "in", shop=True)
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", "--out", str(tmp_path / "out"), "--source", "file",
                     *map(str, files), "--format", choice, "--formats", str(formats_file)]) == 2
    lines = printed.getvalue().strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines


@pytest.mark.broker
def test_two_topics_of_different_formats_read_with_one_choice(
        broker: Broker, simulation: Simulation,  # noqa: F811
        cloudevents_verdicts: dict[str, list[str]], formats_file: Path,  # noqa: F811
        tmp_path: Path) -> None:
    """One `--format` choosing per topic (`fc-shop-*=shop,cloudevents`) serves `produce` and `run`
    on a CloudEvents topic and on a `shop` topic: each reaches the CloudEvents verdicts."""
    choice = "fc-shop-*=shop,cloudevents"
    for suffix in ("cloud", "shop"):
        topic = broker.topic(f"fc-{suffix}", partitions=SETTINGS.source.sim_partitions)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["produce", "--topic", topic, "--kafka-brokers", broker.address,
                         "--sim-instances", str(SETTINGS.source.sim_instances),
                         "--sim-seed", str(SETTINGS.source.sim_seed),
                         "--out", str(tmp_path / f"truth-{suffix}"), "--format", choice,
                         "--formats", str(formats_file)]) == 0
        settings = SETTINGS.with_flags(source="kafka", kafka_brokers=broker.address,
                                       kafka_topic=topic, kafka_tail=False, format=choice,
                                       formats=formats_file)
        got = verdicts(run_flow(settings, None, 1))
        for table in ("outcomes", "commands", "ledger"):
            assert got[table] == cloudevents_verdicts[table], (suffix, table)
