"""The `topics`, `produce` and `tail` commands: Kafka tooling on kafka-python (the dataflow itself
reads and writes through Bytewax's connectors)."""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dataflows.settings import FLAGS, Settings

if TYPE_CHECKING:
    from connectors.kafka_produce import Outgoing
    from schemas.event import RawRecord

Handler = Callable[[argparse.Namespace], int]

CONNECTION = ("kafka_brokers", "kafka_timeout", "kafka_security_protocol", "kafka_sasl_mechanism",
              "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_ca", "kafka_ssl_cert",
              "kafka_ssl_key")
SIMULATION = ("definitions", "calendars", "out", "allowed_lateness", "max_future_skew", "buckets",
              "sim_seed", "sim_instances", "sim_partitions", "sim_rate", "arrival_field")


def _settings_flags(parser: argparse.ArgumentParser, keep: tuple[str, ...]) -> None:
    from dataflows.run_command import settings_arguments

    settings_arguments(parser, omit=[name for name in FLAGS if name not in keep])


def add_topics(sub: Any) -> Handler:
    topics = sub.add_parser("topics", help="create or describe a Kafka topic",
                            description="Create a topic, or show its partitions, replicas and "
                            "offsets (kafka-python admin client).")
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a topic")
    create.add_argument("name", help="topic name")
    create.add_argument("--partitions", type=int, default=4,
                        help="partitions: the most input workers that can share it (default 4)")
    create.add_argument("--replication", type=int, default=1, help="replication factor (default 1)")
    create.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a topic config, e.g. retention.ms=-1 (repeatable)")
    describe = actions.add_parser("describe", help="show partitions, replicas and offsets")
    describe.add_argument("name", help="topic name")
    for parser in (create, describe):
        _settings_flags(parser, CONNECTION)
    return cmd_topics


def cmd_topics(args: argparse.Namespace) -> int:
    """`topics create` or `topics describe`."""
    from connectors.kafka_admin import create_topic, describe_topic
    from dataflows.kafka_wiring import kafka_connection
    from dataflows.run_command import settings_from

    connection = kafka_connection(settings_from(args))
    if args.action == "create":
        configs = dict(_key_value(c) for c in args.config)
        create_topic(connection, args.name, args.partitions, args.replication, configs)
        print(f"created {args.name}: {args.partitions} partitions, replication {args.replication}")
        return 0
    info = describe_topic(connection, args.name)
    print(f"{info.name}: {len(info.partitions)} partitions, replication {info.replication}")
    for p in info.partitions:
        first, end = info.offsets[p["partition_index"]]
        print(f"  partition {p['partition_index']}: leader {p['leader_id']}, replicas "
              f"{p['replica_nodes']}, in sync {p['isr_nodes']}, offsets {first}..{end}")
    return 0


def _key_value(text: str) -> tuple[str, str]:
    from schemas.errors import ConfigError

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--config {text!r}: write KEY=VALUE, e.g. retention.ms=-1")
    return key, value


def add_produce(sub: Any) -> Handler:
    produce = sub.add_parser(
        "produce", help="write simulated, archived or file events into a topic",
        description="Write events into a Kafka topic. Default: the embedded simulator, each record "
        "to its simulated partition with its simulated arrival time as the Kafka timestamp, and "
        "the ground truth into --out (`flowkeeper run --source kafka --out` the same folder then "
        "reports accuracy against it; use a fresh topic). The records carry simulated timestamps "
        "(2026-01-01 on): give the topic a retention that keeps them (retention.ms=-1).")
    produce.add_argument("--topic", dest="kafka_topic", metavar="TOPIC", required=True,
                         help="the topic to write")
    what = produce.add_mutually_exclusive_group()
    what.add_argument("--file", dest="event_files", metavar="PATH", type=Path, nargs="+", help=(
        "event files, as `run --source file` reads them (.jsonl/.ndjson, optionally compressed, "
        ".csv, .parquet): each record keyed by its instance id, to the partition Kafka's default "
        "partitioner gives that key, with its arrival time (--arrival-field, else the event "
        "time) as the Kafka timestamp"))
    what.add_argument("--archive", dest="archive_dir", metavar="DIR", type=Path,
                      help="an input archive (a run's --out folder), each record to its "
                      "archived partition with its arrival time")
    produce.add_argument("--rate", type=float, default=0.0,
                         help="events per second at most (default 0: as fast as possible)")
    produce.add_argument("--binary-mode", action="store_true",
                         help="send CloudEvents attributes as ce_* headers and the data as value")
    produce.add_argument("--avro-schema", type=Path, metavar="ID.avsc", help=(
        "a --format with 'encoding: avro': the Avro schema to write with, in a file named by "
        "its schema id (e.g. 7.avsc): the id goes into each message"))
    _settings_flags(produce, CONNECTION + SIMULATION + ("format", "formats"))
    return cmd_produce


def cmd_produce(args: argparse.Namespace) -> int:
    """Send the chosen events and print a progress bar on stderr."""
    from connectors.kafka_admin import producer
    from connectors.kafka_connection import topic_partitions
    from connectors.kafka_produce import produce
    from dataflows.kafka_wiring import kafka_connection
    from dataflows.run_command import settings_from

    settings = settings_from(args)
    connection = kafka_connection(settings)
    partitions = topic_partitions(connection, settings.kafka.topic)
    from schemas.errors import ConfigError
    from schemas.format_choice import parse_choice

    messages, total = _messages(args, settings.with_flags(format="cloudevents"),
                                len(partitions))
    # The format `--format` chooses for the topic (a default, or PATTERN=NAME per topic).
    written_in = parse_choice(settings.source.format).name_for(f"kafka:{settings.kafka.topic}")
    if written_in != "cloudevents":
        if args.binary_mode:
            raise ConfigError("--binary-mode is for CloudEvents; leave it out with --format")
        messages = _in_format(messages, settings, written_in, args.avro_schema)
    if args.binary_mode:
        messages = (m.binary() for m in messages)
    bar = ProgressBar(total)
    writer = producer(connection)
    try:
        sent = produce(writer, settings.kafka.topic, messages, rate=args.rate, on_progress=bar)
    finally:
        bar.close()
        writer.close()
    print(f"produced {sent:,} events to {settings.kafka.topic}")
    return 0


def _messages(args: argparse.Namespace, settings: Settings,
              partitions: int) -> tuple[Iterator[Outgoing], int | None]:
    """The messages to send and how many (None: not known up front)."""
    from connectors.file_source import file_records
    from connectors.kafka_produce import replayed
    from connectors.simulator import simulate, write_ground_truth
    from dataflows.sources import file_source, simulator_config
    from schemas.errors import ConfigError
    from state.catalog import load_catalog

    catalog = load_catalog(settings.definitions, settings.calendars)
    if args.event_files:
        files = settings.with_flags(source="file", files=args.event_files,
                                    file_partitions=partitions)
        return replayed(file_records(file_source(files, catalog))), None
    if args.archive_dir is not None:
        return replayed(_archived(args.archive_dir, partitions)), None
    needed = settings.source.sim_partitions
    if needed > partitions:
        raise ConfigError(f"{settings.kafka.topic!r} has {partitions} partitions; the simulation "
                          f"needs {needed}: pass --sim-partitions {partitions} or "
                          "create the topic with more")
    simulation = simulate(simulator_config(settings), catalog)
    write_ground_truth(simulation, settings.out)
    records = heapq.merge(*simulation.partitions, key=lambda r: r.arrived_ms)
    return replayed(records), sum(map(len, simulation.partitions))


def _in_format(messages: Iterator[Outgoing], settings: Settings, name: str,
               avro_schema: Path | None) -> Iterator[Outgoing]:
    """The CloudEvents messages rewritten in `--format` (`connectors.format_writer`); records
    that are no valid CloudEvent go as they are."""
    from connectors.format_writer import FormatWriter, avro_value, confluent_avro
    from connectors.kafka_produce import Outgoing
    from dataflows.formats import loaded_formats
    from schemas.errors import ConfigError
    from schemas.event import RawRecord
    from schemas.mapping import format_spec
    from schemas.payloads.bundled import bundled_registry
    from state.catalog import load_catalog

    spec = format_spec(name, loaded_formats(settings.definitions, settings.source.formats))
    schema: Any = None
    schema_id = 0
    if spec.encoding == "avro":
        if avro_schema is None or not avro_schema.stem.isdigit():
            raise ConfigError("an Avro --format needs --avro-schema ID.avsc (named by its "
                              "schema id) to write with")
        schema, schema_id = json.loads(avro_schema.read_text("utf-8")), int(avro_schema.stem)
    writer = FormatWriter(spec, load_catalog(settings.definitions).decode_rules(
        bundled_registry()))
    for m in messages:
        record = RawRecord("produce", m.partition or 0, 0, m.value, m.key, m.headers,
                           m.timestamp_ms or 0)
        written = writer.write(record)
        value = written.value
        if schema is not None and written is not record:
            value = confluent_avro(avro_value(json.loads(value), schema), schema, schema_id)
        yield Outgoing(value, written.key, written.headers, m.partition,
                       written.arrived_ms or None)


def _archived(archive: Path, partitions: int) -> Iterator[RawRecord]:
    """Every archived record in offset order per partition, partition after partition; records
    that were source errors (no message) are left out, and counted."""
    from connectors.archive_source import ArchiveSource
    from schemas.errors import ConfigError

    source, skipped = ArchiveSource(archive), 0
    for part in source.list_parts():
        if int(part.rsplit("/", 1)[1]) >= partitions:
            raise ConfigError(f"the archive has partition {part}; the topic only {partitions}")
        reader = source.build_part("produce", part, None)
        while True:
            try:
                batch = list(reader.next_batch())
            except StopIteration:
                break
            skipped += sum(1 for r in batch if r.error is not None)
            yield from (r for r in batch if r.error is None)
    if skipped:
        print(f"left out {skipped:,} archived source errors (no message to send)", file=sys.stderr)


class ProgressBar:
    """`[########........]  45%  12,345/27,400  8,120/s` on stderr, redrawn at most 4 times a
    second on a terminal, a plain line every 5 s otherwise."""

    def __init__(self, total: int | None, stream: TextIO = sys.stderr) -> None:
        self.total, self.stream = total, stream
        self.live = stream.isatty()
        self.started = self.drawn = time.monotonic()
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self.drawn >= (0.25 if self.live else 5.0):
            self.drawn = now
            self._draw(now)

    def close(self) -> None:
        self._draw(time.monotonic())
        if self.live:
            self.stream.write("\n")

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        if self.total:
            share = self.done / self.total
            filled = int(share * 30)
            text = (f"[{'#' * filled}{'.' * (30 - filled)}] {share:>4.0%}  "
                    f"{self.done:,}/{self.total:,}  {rate:,.0f}/s")
        else:
            text = f"{self.done:,} sent  {rate:,.0f}/s"
        self.stream.write(f"\r  {text}" if self.live else f"  {text}\n")
        self.stream.flush()


def add_tail(sub: Any) -> Handler:
    tail = sub.add_parser("tail", help="print the events of a topic, of one instance or all",
                          description="Pretty-print the CloudEvents on a topic (input or output, "
                          "structured or binary mode) as they arrive.")
    tail.add_argument("topic", help="the topic to read")
    tail.add_argument("--instance", help="only this instance id (record key or subject)")
    tail.add_argument("--from-beginning", action="store_true",
                      help="start at each partition's first record (default: new records only)")
    tail.add_argument("--max", type=int, default=None, help="stop after this many events")
    tail.add_argument("--timeout", type=float, default=None,
                      help="stop after this many seconds without a record (default: follow)")
    _settings_flags(tail, CONNECTION)
    return cmd_tail


def cmd_tail(args: argparse.Namespace) -> int:
    """Follow the topic until --max events or --timeout seconds of silence."""
    from connectors.kafka_admin import consumer
    from connectors.kafka_connection import topic_partitions
    from connectors.kafka_tail import follow
    from dataflows.kafka_wiring import kafka_connection
    from dataflows.run_command import settings_from

    connection = kafka_connection(settings_from(args))
    partitions = topic_partitions(connection, args.topic)
    reader = consumer(connection, args.timeout)
    try:
        follow(reader, args.topic, partitions, from_beginning=args.from_beginning,
               instance=args.instance, limit=args.max, show=lambda text: print(text, flush=True))
    finally:
        reader.close()
    return 0
