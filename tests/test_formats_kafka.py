"""Each format through a real topic (Tansu): `produce --format` writes the simulated stream as a
service would (plain JSON, outbox messages with key and headers, Confluent-framed Avro), and
`run --source kafka --format` reaches the verdicts of its CloudEvents form."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import duckdb
import pytest
import yaml
from starlette.testclient import TestClient

from analysis.output_diff import compare_outputs
from connectors.simulator.truth import Simulation
from console.app import create_app
from console.reader import RunReader
from dataflows.cli import main
from dataflows.formats import archive_rules
from dataflows.settings import BUNDLED_DEFINITIONS
from state.catalog import load_catalog
from tests.kafka_broker import Broker
from tests.test_avro import SCHEMA, SCHEMA_ID, Registry, avro_spec, registry_server
from tests.test_formats import (
    SETTINGS,
    cloudevents_verdicts,  # noqa: F401 (the module's fixture, shared)
    formats_yaml,
    run_flow,
    simulation,  # noqa: F401 (the module's fixture, shared)
    verdicts,
)


def avro_files(folder: Path) -> tuple[Path, Path]:
    """`formats.yaml` with the Avro format beside the JSON ones, and the schema as a `.avsc`."""
    formats = folder / "formats.yaml"
    entries = formats_yaml()
    entries["formats"]["shop_avro"] = avro_spec().model_dump(exclude_defaults=True)
    formats.write_text(yaml.safe_dump(entries))
    schema = folder / f"{SCHEMA_ID}.avsc"
    schema.write_text(json.dumps(SCHEMA))
    return formats, schema


@pytest.mark.broker
@pytest.mark.parametrize(("name", "workers"), [("shop", 1), ("outbox", 2), ("shop_avro", 2)])
def test_a_topic_in_each_format_reaches_the_cloudevents_verdicts(
        broker: Broker, simulation: Simulation,  # noqa: F811
        cloudevents_verdicts: dict[str, list[str]], tmp_path: Path,  # noqa: F811
        name: str, workers: int) -> None:
    """`produce --format` then `run --source kafka --format` (Avro schemas from the test
    registry): the same outcomes, commands and dispositions as the CloudEvents run."""
    formats, schema = avro_files(tmp_path)
    topic = broker.topic(f"format-{name}", partitions=SETTINGS.source.sim_partitions)
    with registry_server(Registry({SCHEMA_ID: SCHEMA})) as registry:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["produce", "--topic", topic, "--kafka-brokers", broker.address,
                         "--sim-instances", str(SETTINGS.source.sim_instances),
                         "--sim-seed", str(SETTINGS.source.sim_seed),
                         "--out", str(tmp_path / "truth"), "--format", name,
                         "--formats", str(formats), "--avro-schema", str(schema)]) == 0
        settings = SETTINGS.with_flags(source="kafka", kafka_brokers=broker.address,
                                       kafka_topic=topic, kafka_tail=False, format=name,
                                       formats=formats, schema_registry_url=registry.url,
                                       out=tmp_path / "out")
        got = verdicts(run_flow(settings, None, workers))
    for table in ("outcomes", "commands", "ledger"):
        assert got[table] == cloudevents_verdicts[table], table


@pytest.mark.broker
def test_an_avro_run_replays_identical_without_the_registry(
        broker: Broker, tmp_path: Path) -> None:
    """An Avro run from a topic saves each schema it fetched in OUT/avro_schemas: with the
    registry gone, `replay` (no registry flags) verifies identical, dead letters too; `inspect`
    and the console decode an instance's Avro records again without flags, and the console
    shows the dead letters' raw values."""
    formats, schema = avro_files(tmp_path)
    topic = broker.topic("avro-replay", partitions=SETTINGS.source.sim_partitions)
    got, replayed = tmp_path / "got", tmp_path / "replayed"
    printed = io.StringIO()
    with registry_server(Registry({SCHEMA_ID: SCHEMA})) as registry, \
            contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        assert main(["produce", "--topic", topic, "--kafka-brokers", broker.address,
                     "--sim-instances", "120", "--out", str(tmp_path / "truth"),
                     "--format", "shop_avro", "--formats", str(formats),
                     "--avro-schema", str(schema)]) == 0, printed.getvalue()
        assert main(["run", "--out", str(got), "--source", "kafka", "--kafka-topic", topic,
                     "--kafka-brokers", broker.address, "--no-kafka-tail", "--commands-topic", "",
                     "--format", "shop_avro", "--formats", str(formats),
                     "--schema-registry-url", registry.url]) == 0, printed.getvalue()
    assert json.loads((got / "avro_schemas" / f"{SCHEMA_ID}.avsc").read_text()) == SCHEMA
    assert not list((got / "avro_schemas").glob(".*"))  # no temporary file left
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["replay", str(got), "--out", str(replayed)]) == 0
    tables = ("outcomes", "commands", "transitions", "ledger", "dead_letters")
    for diff in compare_outputs(got, replayed, tables):
        assert diff.identical, (diff.table, diff.differences[:3])
    conn = duckdb.connect(str(got / "flowkeeper.duckdb"), read_only=True)
    try:
        instance, workflow = conn.execute("SELECT instance_id, workflow_type FROM outcomes "
                                          "ORDER BY instance_id LIMIT 1").fetchone() or ("", "")
        applied = conn.execute("SELECT count(*) FROM ledger WHERE disposition = 'applied'"
                               ).fetchone()
    finally:
        conn.close()
    assert applied is not None and applied[0] > 500
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["inspect", str(instance), "--out", str(got), "--json"]) == 0
    events = [e for e in json.loads(printed.getvalue())["timeline"] if e["kind"] == "event"]
    assert events and all(e["trace_id"] for e in events)  # decoded from the Avro again
    catalog = load_catalog(BUNDLED_DEFINITIONS)
    flags = argparse.Namespace(out=got, format=None, formats=None,
                               definitions=BUNDLED_DEFINITIONS)
    web = TestClient(create_app(RunReader(got, catalog, "auto"), archive_rules(flags, catalog)))
    answer = web.get(f"/api/instances/{workflow}/{instance}")
    assert answer.status_code == 200, answer.text[:300]
    timeline = answer.json()["timeline"]
    assert [e for e in timeline if e["kind"] == "event"] == events
    page = web.get("/dead-letters", params={"reason": "mapping_failed"}).text
    assert "<summary>value: " in page and "not Avro in Confluent" in page
