"""What to simulate: how many instances, how fast, and how often each scenario and fault occurs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

Share = Annotated[float, Field(ge=0.0, le=1.0)]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutcomeMix(_Frozen):
    """Relative weights of what an instance's services do; normalised over what a workflow can do.

    `timed_out` is silence at a state with a `goto` deadline (the engine must fire it, whether other
    traffic moves the watermark past it or the end-of-input drain does).
    """

    completed: float = Field(default=0.70, ge=0.0)
    failed: float = Field(default=0.10, ge=0.0)
    cancelled: float = Field(default=0.08, ge=0.0)
    timed_out: float = Field(default=0.12, ge=0.0)


class Habits(_Frozen):
    """Ordinary traffic that is no fault, as per-instance probabilities."""

    slow_step: Share = 0.05  # one step slow enough to draw a reminder command, still on time
    noise: Share = 0.25  # events of the definition's `ignore` types while the instance runs
    sequence: Share = 0.10  # the instance's producers stamp the `sequence` extension


class Faults(_Frozen):
    """Per-instance probabilities of each fault; 0.0 switches one off, `Faults.none()` all of them.

    `missing_ack` applies to instances that compensate: some acknowledgements never come, so the
    instance ends `compensation_failed`. `out_of_order` needs `allowed_lateness_ms >= 20`;
    `future_stamped` needs the future-skew check on (`max_future_skew_ms` not None).
    """

    missing_ack: Share = 0.25
    duplicate: Share = 0.04  # the same bytes sent again a little later
    out_of_order: Share = 0.04  # two events of the instance swap places, within lateness
    late_after_timeout: Share = 0.03  # an on-time event arrives after its deadline fired
    after_end: Share = 0.02  # an event for an instance that already ended (anomalous)
    malformed_json: Share = 0.01
    payload_invalid: Share = 0.01
    unknown_type: Share = 0.01
    old_version: Share = 0.05  # a v1 payload (`dataversion: "1"`), upcast and applied
    future_stamped: Share = 0.01  # stamped hours ahead of its arrival: dead-lettered

    @classmethod
    def none(cls) -> Faults:
        return cls(**dict.fromkeys(cls.model_fields, 0.0))


class SimulatorConfig(_Frozen):
    """One simulation; the same config gives byte-identical records and truth.

    `allowed_lateness_ms`, `buckets` and `max_future_skew_ms` must equal the pipeline's: the truth
    of which records are late depends on them.
    """

    seed: int = 7
    instances: int = Field(default=2_000, ge=1)
    partitions: int = Field(default=4, ge=1)
    workflows: tuple[str, ...] | None = None  # None: every state-machine workflow in the catalog
    rate: float = Field(default=1.0, gt=0.0)  # instances starting per second of event time
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    allowed_lateness_ms: int = Field(default=5_000, ge=0)
    buckets: int = Field(default=16, ge=1)
    max_future_skew_ms: int | None = Field(default=3_600_000, gt=0)  # None: the check is off
    mix: OutcomeMix = OutcomeMix()
    habits: Habits = Habits()
    faults: Faults = Faults()

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("'start' needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
        if not 2000 <= value.astimezone(UTC).year < 2190:
            raise ValueError("'start' must lie in 2000..2189: the decoder refuses other years")
        return value

    @property
    def start_ms(self) -> int:
        return (self.start - _EPOCH) // timedelta(milliseconds=1)
