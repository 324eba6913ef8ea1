"""Each format through a real topic (Tansu): `produce --format` writes the simulated stream as a
service would (plain JSON, outbox messages with key and headers, Confluent-framed Avro), and
`run --source kafka --format` reaches the verdicts of its CloudEvents form."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

from connectors.simulator.truth import Simulation
from dataflows.cli import main
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


@pytest.mark.broker
@pytest.mark.parametrize(("name", "workers"), [("shop", 1), ("outbox", 2), ("shop_avro", 2)])
def test_a_topic_in_each_format_reaches_the_cloudevents_verdicts(
        broker: Broker, simulation: Simulation,  # noqa: F811
        cloudevents_verdicts: dict[str, list[str]], tmp_path: Path,  # noqa: F811
        name: str, workers: int) -> None:
    """`produce --format` then `run --source kafka --format` (Avro schemas from the test
    registry): the same outcomes, commands and dispositions as the CloudEvents run."""
    formats = tmp_path / "formats.yaml"
    entries = formats_yaml()
    entries["formats"]["shop_avro"] = avro_spec().model_dump(exclude_defaults=True)
    formats.write_text(yaml.safe_dump(entries))
    schema = tmp_path / f"{SCHEMA_ID}.avsc"
    schema.write_text(json.dumps(SCHEMA))
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
                                       formats=formats, schema_registry_url=registry.url)
        got = verdicts(run_flow(settings, None, workers))
    for table in ("outcomes", "commands", "ledger"):
        assert got[table] == cloudevents_verdicts[table], table
