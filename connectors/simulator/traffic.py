"""`simulate`: instance plans become records (envelopes, payloads, arrival times, faults,
partitions), and the oracle says what the engine must make of them.

Arrival is event time plus a delay of at most a quarter of the allowed lateness, so no record is
late by accident: every accepted record's event time is at or before its arrival, so the
watermark at any arrival is at least `allowed_lateness_ms` behind it. Out-of-order pairs stay
within lateness the same way; the one deliberately late event of a `late_after_timeout` instance
is placed right after the first record of its shard that moves the watermark past the deadline
it missed (dropped, and the instance relabelled `timed_out`, if no record ever does).
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from connectors.partitioner import partition_of
from connectors.simulator.config import SimulatorConfig
from connectors.simulator.oracle import Arrival, Meta, arrivals, judge
from connectors.simulator.payloads import ID_PREFIX, Facts, sample
from connectors.simulator.scenarios import Blueprint, InstancePlan, Planned, plan_instance
from connectors.simulator.truth import Simulation, TruthInstance, TruthRecord
from connectors.simulator.wire import cloudevent, stamp, to_bytes
from schemas.decode import MAX_TIME_MS, DecodeRules
from schemas.errors import ConfigError
from schemas.event import RawRecord
from schemas.payloads.bundled import bundled_registry
from schemas.payloads.registry import PayloadRegistry
from state.catalog import Catalog
from state.definition import StateMachine
from state.durations import parse_duration_ms

SOURCE = "simulator"
UNKNOWN_TYPES = ("LoyaltyPointsAwarded", "InvoiceArchived", "SurveyCompleted", "CacheInvalidated")
DUPLICATE_AFTER_MS = (200, 60_000)
FUTURE_AHEAD_MS = (60_000, 3 * 3_600_000)
_ROLE_FAULTS = {"after_end": ("after_end",), "late": ("late_after_timeout",)}


@dataclass(slots=True)
class Draft:
    """A record before it has an offset; a partition is sorted by `order` (arrival first)."""

    partition: int
    order: tuple[int, int, int, int]
    key: bytes
    value: bytes
    meta: Meta


@dataclass
class _Context:
    """What one instance's records share: where they go, who sends them and how."""

    rng: random.Random
    plan: InstancePlan
    definition: StateMachine
    config: SimulatorConfig
    registry: PayloadRegistry
    versions: dict[str, tuple[int, int]]  # event type -> (oldest, newest) registered version
    rules: DecodeRules
    counter: Iterator[int]
    facts: Facts
    trace_id: str
    old_version: bool
    sequenced: bool

    @property
    def key(self) -> bytes:
        return self.plan.instance_id.encode()

    @property
    def partition(self) -> int:
        return partition_of(self.key, self.config.partitions)

    def delay(self) -> int:
        """Milliseconds between an event's stamp and its arrival: never none, since an arrival
        equal to the stamp reads as a copy of it (`state.admission`), not a measurement."""
        return self.rng.randint(0, self.config.allowed_lateness_ms // 4) + 1

    def meta(self, **fields: Any) -> Meta:
        return Meta(self.plan.workflow, self.plan.instance_id, **fields)

    def draft(self, arrival_ms: int, value: bytes, meta: Meta) -> Draft:
        return Draft(self.partition, (arrival_ms, next(self.counter), 0, 0), self.key, value, meta)

    def version(self, event_type: str) -> int:
        """The newest payload version, or the oldest for an instance on an old producer."""
        oldest, newest = self.versions.get(event_type, (1, 1))
        return oldest if self.old_version else newest

    def envelope(self, event_type: str, text: str, version: int, sequence: int | None = None,
                 data: dict[str, Any] | None = None) -> dict[str, Any]:
        id_field = self.definition.instance_id.data_field
        payload = data if data is not None else sample(event_type, version, self.facts, id_field)
        return cloudevent(
            event_id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            source=f"/simulator/{self.plan.workflow}", event_type=event_type, time=text,
            data=payload, version=version,
            traceparent=f"00-{self.trace_id}-{self.rng.getrandbits(64) | 1:016x}-01",
            subject=self.plan.instance_id if id_field is None else None, sequence=sequence)


def simulate(config: SimulatorConfig, catalog: Catalog,
             registry: PayloadRegistry | None = None) -> Simulation:
    """Records and ground truth for `config`: pure, and the same for the same seed."""
    registry = registry if registry is not None else bundled_registry()
    rules = catalog.decode_rules(registry, max_future_skew_ms=config.max_future_skew_ms)
    definitions = _definitions(config, catalog)
    counter = itertools.count()
    plans, drafts, lates = [], [], []
    for plan, context in _instances(config, definitions, registry, rules, counter):
        plans.append(plan)
        made, late = _drafts(context)
        drafts += made
        if late is not None:
            lates.append((context, late))
    _place_late(config, drafts, lates)
    partitions = _partitions(config, drafts)
    found = arrivals([[(d.key, d.meta) for d in part] for part in partitions],
                     config.allowed_lateness_ms, config.buckets)
    verdicts, dispositions = judge(found, {d.workflow: d for d in definitions})
    truth_instances = []
    for plan in plans:
        v = verdicts[f"{plan.workflow}/{plan.instance_id}"]
        truth_instances.append(TruthInstance(plan.workflow, plan.instance_id, plan.scenario,
                                             v.outcome, v.final_state, v.commands,
                                             v.expects_correction))
    records = [[RawRecord(SOURCE, p, offset, d.value, d.key, (), d.order[0])
                for offset, d in enumerate(part)] for p, part in enumerate(partitions)]
    truth_records = [_truth_record(a, d) for a, d in zip(found, dispositions, strict=True)]
    return Simulation(config, records, truth_instances, truth_records)


def _definitions(config: SimulatorConfig, catalog: Catalog) -> list[StateMachine]:
    names = config.workflows if config.workflows is not None else sorted(catalog.definitions)
    found = []
    for name in names:
        if name not in catalog.definitions:
            known = sorted(catalog.definitions)
            raise ConfigError(f"workflow {name!r} is not in the catalog; name one of {known}")
        definition = catalog.latest(name)
        if isinstance(definition, StateMachine):
            found.append(definition)
        elif config.workflows is not None:
            msg = f"workflow {name!r} is case tracking; the simulator plays state machines only"
            raise ConfigError(msg)
    if not found:
        msg = "no state-machine workflow to simulate; load one or name it in 'workflows'"
        raise ConfigError(msg)
    return found


def _instances(config: SimulatorConfig, definitions: list[StateMachine],
               registry: PayloadRegistry, rules: DecodeRules,
               counter: Iterator[int]) -> Iterator[tuple[InstancePlan, _Context]]:
    """Instance n starts after an exponential gap (a Poisson process at `rate` per second) and
    draws everything else from its own generator, so instances do not shift one another."""
    gaps = random.Random(config.seed)
    blueprints = [Blueprint(d) for d in definitions]
    versions: dict[str, tuple[int, int]] = {}
    for event_type, version in registry.models:
        oldest, newest = versions.get(event_type, (version, version))
        versions[event_type] = (min(oldest, version), max(newest, version))
    start_ms = config.start_ms
    for n in range(config.instances):
        rng = random.Random(f"{config.seed}/{n}")
        blueprint = rng.choice(blueprints)
        definition = blueprint.definition
        prefix = ID_PREFIX.get(definition.workflow, definition.workflow[:3])
        instance_id = f"{prefix}-{n:06d}-{rng.getrandbits(16):04x}"
        plan = plan_instance(rng, blueprint, instance_id, start_ms, config)
        context = _Context(rng, plan, definition, config, registry, versions, rules, counter,
                           Facts(rng, instance_id, start_ms), f"{rng.getrandbits(128) | 1:032x}",
                           rng.random() < config.faults.old_version,
                           rng.random() < config.habits.sequence)
        yield plan, context
        start_ms += int(gaps.expovariate(config.rate) * 1000)


def _drafts(ctx: _Context) -> tuple[list[Draft], Draft | None]:
    """The instance's event records (its late one apart, unplaced) and its fault records."""
    plan = ctx.plan
    timeline = sorted([*plan.events, *([plan.late] if plan.late else [])], key=lambda p: p.time_ms)
    sequence = {id(p): n for n, p in enumerate(timeline, 1)} if ctx.sequenced else {}
    arrival = {id(p): p.time_ms + ctx.delay() for p in plan.events}
    if plan.tight is not None:
        earlier, later = plan.tight
        lead = ctx.rng.randint(1, max(1, ctx.config.allowed_lateness_ms // 4))
        arrival[id(earlier)] = later.time_ms + lead
        arrival[id(later)] = later.time_ms + ctx.rng.randint(0, lead - 1)
    drafts = [_event_draft(ctx, p, arrival[id(p)], sequence.get(id(p))) for p in plan.events]
    late = _event_draft(ctx, plan.late, 0, sequence.get(id(plan.late))) if plan.late else None
    drafts += _duplicate(ctx, drafts) + _dead_letters(ctx)
    return drafts, late


def _event_draft(ctx: _Context, planned: Planned, arrival_ms: int, sequence: int | None) -> Draft:
    version = ctx.version(planned.type)
    envelope = ctx.envelope(planned.type, planned.stamp, version, sequence)
    faults: tuple[str, ...] = _ROLE_FAULTS.get(planned.role, ())
    if version < ctx.versions.get(planned.type, (1, 1))[1]:
        faults += ("old_version",)
    if ctx.plan.tight is not None and any(planned is p for p in ctx.plan.tight):
        faults += ("out_of_order",)
    meta = ctx.meta(event_id=envelope["id"], type=planned.type, time_ms=planned.time_ms,
                    sequence=sequence, faults=faults)
    return ctx.draft(arrival_ms, to_bytes(envelope), meta)


def _duplicate(ctx: _Context, drafts: list[Draft]) -> list[Draft]:
    """The same bytes once more, a little later (a producer retry)."""
    if not drafts or ctx.rng.random() >= ctx.config.faults.duplicate:
        return []
    original = ctx.rng.choice(drafts)
    again = original.order[0] + ctx.rng.randint(*DUPLICATE_AFTER_MS)
    meta = replace(original.meta, faults=(*original.meta.faults, "duplicate"))
    return [ctx.draft(again, original.value, meta)]


def _dead_letters(ctx: _Context) -> list[Draft]:
    """Records the decoder must refuse, each at a random moment of the instance's life."""
    faults = ctx.config.faults
    makers = [(faults.malformed_json, _malformed), (faults.payload_invalid, _invalid_payload),
              (faults.unknown_type, _unknown_type), (faults.future_stamped, _future_stamped)]
    if ctx.config.max_future_skew_ms is None:  # nothing is too far ahead: it would be accepted
        makers.pop()
    found = []
    for share, make in makers:
        if ctx.rng.random() < share:
            at = ctx.rng.randint(ctx.plan.start_ms, ctx.plan.ended_ms)
            draft = make(ctx, at, at + ctx.delay())
            if draft is not None:
                found.append(draft)
    return found


def _some_type(ctx: _Context) -> str:
    return ctx.rng.choice([p.type for p in ctx.plan.events])


def _malformed(ctx: _Context, at: int, arrival: int) -> Draft:
    """A valid event cut short: a prefix of a JSON object never closes it."""
    event_type = _some_type(ctx)
    value = to_bytes(ctx.envelope(event_type, stamp(at)[0], ctx.version(event_type)))
    cut = value[: ctx.rng.randint(len(value) // 3, len(value) - 1)]
    return ctx.draft(arrival, cut, ctx.meta(event_id=None, dead_reason="malformed_json",
                                            faults=("malformed_json",)))


def _invalid_payload(ctx: _Context, at: int, arrival: int) -> Draft | None:
    """A registered type whose data breaks its model: a required field gone, or an unknown one."""
    event_type = _some_type(ctx)
    version = ctx.version(event_type)
    model = ctx.registry.models.get((event_type, version))
    if model is None:
        return None
    data = sample(event_type, version, ctx.facts, ctx.definition.instance_id.data_field)
    required = sorted(n for n, f in model.model_fields.items() if f.is_required() and n in data)
    if required and ctx.rng.random() < 0.5:
        del data[ctx.rng.choice(required)]
    elif model.model_config.get("extra") == "forbid":
        data["internal_note"] = "left in by a debugging build"
    else:
        return None
    envelope = ctx.envelope(event_type, stamp(at)[0], version, data=data)
    meta = ctx.meta(event_id=envelope["id"], dead_reason="payload_invalid",
                    faults=("payload_invalid",))
    return ctx.draft(arrival, to_bytes(envelope), meta)


def _unknown_type(ctx: _Context, at: int, arrival: int) -> Draft | None:
    """A type no loaded definition routes (impossible when one accepts `events: any`)."""
    unknown = [t for t in UNKNOWN_TYPES if ctx.rules.route(t) is None]
    if not unknown:
        return None
    envelope = ctx.envelope(ctx.rng.choice(unknown), stamp(at)[0], 1,
                            data={"reference": ctx.plan.instance_id})
    meta = ctx.meta(event_id=envelope["id"], dead_reason="unknown_type", faults=("unknown_type",))
    return ctx.draft(arrival, to_bytes(envelope), meta)


def _future_stamped(ctx: _Context, _at: int, arrival: int) -> Draft:
    """An event from a host whose clock runs hours ahead: beyond the future-skew bound (or, for
    a huge bound, at the end of the accepted range, which is refused for the same reason)."""
    assert ctx.config.max_future_skew_ms is not None
    event_type = _some_type(ctx)
    ahead = ctx.config.max_future_skew_ms + ctx.rng.randint(*FUTURE_AHEAD_MS)
    text = stamp(min(arrival + ahead, MAX_TIME_MS))[0]
    envelope = ctx.envelope(event_type, text, ctx.version(event_type))
    meta = ctx.meta(event_id=envelope["id"], dead_reason="time_out_of_range",
                    faults=("future_stamped",))
    return ctx.draft(arrival, to_bytes(envelope), meta)


def _partitions(config: SimulatorConfig, drafts: list[Draft]) -> list[list[Draft]]:
    partitions: list[list[Draft]] = [[] for _ in range(config.partitions)]
    for draft in drafts:
        partitions[draft.partition].append(draft)
    for part in partitions:
        part.sort(key=lambda d: d.order)
    return partitions


def _place_late(config: SimulatorConfig, drafts: list[Draft],
                lates: list[tuple[_Context, Draft]]) -> None:
    """Each late event goes right after the first record that takes its partition's watermark
    past the deadline it missed: the deadline has fired, the instance has not been evicted."""
    partitions = _partitions(config, drafts)
    found = arrivals([[(d.key, d.meta) for d in part] for part in partitions],
                     config.allowed_lateness_ms, config.buckets)
    movers: dict[int, tuple[list[int], list[Draft]]] = {}  # partition -> watermarks, records
    for arrival in found:
        if arrival.watermark_after > arrival.watermark_before:
            marks, records = movers.setdefault(arrival.partition, ([], []))
            marks.append(arrival.watermark_after)
            records.append(partitions[arrival.partition][arrival.offset])
    for ctx, late in lates:
        deadline = ctx.plan.late_deadline_ms
        assert deadline is not None
        marks, records = movers.get(late.partition, ([], []))
        at = bisect.bisect_right(marks, deadline)
        retention = parse_duration_ms(ctx.definition.retention)
        if at == len(marks) or marks[at] > deadline + retention:  # no mover, or it evicts too
            ctx.plan.scenario, ctx.plan.late = "timed_out", None
            continue
        trigger = records[at]
        late.order = (trigger.order[0], trigger.order[1], 1, next(ctx.counter))
        drafts.append(late)


def _truth_record(arrival: Arrival, disposition: str) -> TruthRecord:
    meta = arrival.meta
    return TruthRecord(SOURCE, arrival.partition, arrival.offset, meta.event_id, disposition,
                       meta.dead_reason, meta.workflow_type, meta.instance_id,
                       ",".join(meta.faults) or None)
