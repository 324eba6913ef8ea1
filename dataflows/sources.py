"""Pick the input source named by the settings, and write what it knows up front (ground truth)."""

from __future__ import annotations

from pathlib import Path

from bytewax.inputs import Source

from connectors.event_files import event_files
from connectors.file_source import FileSource
from connectors.simulator import SimulatorConfig, SimulatorSource, simulate, write_ground_truth
from connectors.simulator.truth import Simulation
from dataflows.formats import with_format
from dataflows.kafka_wiring import check_kafka_topics, kafka_input
from dataflows.replay import replay_source
from dataflows.settings import Settings
from schemas.event import RawRecord
from schemas.payloads.registry import PayloadRegistry
from state.catalog import Catalog, load_catalog
from state.durations import to_ms


def simulator_config(settings: Settings) -> SimulatorConfig:
    """The simulation the settings describe; its event-time policy matches the pipeline's."""
    return SimulatorConfig(
        seed=settings.source.sim_seed,
        instances=settings.source.sim_instances,
        partitions=settings.source.sim_partitions,
        rate=settings.source.sim_rate,
        allowed_lateness_ms=to_ms(settings.time.allowed_lateness),
        buckets=settings.buckets,
        max_future_skew_ms=settings.time.max_future_skew_ms,
    )


def make_source(settings: Settings, catalog: Catalog) -> Source[RawRecord]:
    """The source `settings.source.kind` names (for `python -m bytewax.run`: nothing ran before)."""
    if settings.source.kind == "archive":
        return replay_source(settings, catalog)
    if settings.source.kind == "kafka":
        return kafka_input(settings)
    if settings.source.kind == "file":
        return file_source(settings, catalog)
    return simulator_source(settings, simulate(simulator_config(settings), catalog))


def simulator_source(settings: Settings, simulation: Simulation) -> SimulatorSource:
    return SimulatorSource(simulation.partitions, speed=settings.source.sim_speed)


def _catalog(settings: Settings) -> Catalog:
    """The run's definitions with their calendars (`--calendars`, else those beside them)."""
    return load_catalog(settings.definitions, settings.calendars)


def prepare_source(settings: Settings) -> tuple[Source[RawRecord], Path | None]:
    """Build the source once for a CLI run; returns it and the ground-truth folder, if any."""
    if settings.source.kind == "archive":
        return replay_source(settings, _catalog(settings)), None
    if settings.source.kind == "kafka":
        return _checked_kafka_input(settings)
    if settings.source.kind == "file":
        return file_source(settings, _catalog(settings)), None
    simulation = simulate(simulator_config(settings), _catalog(settings))
    truth_dir = settings.out / "ground_truth"
    write_ground_truth(simulation, settings.out)
    return simulator_source(settings, simulation), truth_dir


def file_source(settings: Settings, catalog: Catalog) -> FileSource:
    """The event files of `settings.source.files`, checked up front (a missing file, a wrong
    format: a `ConfigError` naming it). Keys need only the routes, not the payload models."""
    rules = with_format(catalog.decode_rules(PayloadRegistry(), settings.source.max_event_bytes),
                        settings, catalog)
    return FileSource(event_files(settings.source.files), rules, settings.source.file_partitions,
                      settings.source.arrival_field)


def _checked_kafka_input(settings: Settings) -> tuple[Source[RawRecord], Path | None]:
    """Fail now, with a clear message, when the cluster or a topic is missing; use the ground
    truth `flowkeeper produce --out` left in `--out`, if any."""
    check_kafka_topics(settings)
    source = kafka_input(settings)
    truth_dir = settings.out / "ground_truth"
    return source, truth_dir if (truth_dir / "instances.parquet").exists() else None
