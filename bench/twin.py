"""The consumer a user would write by hand instead of flowkeeper: the peer `make bench` compares
every variant with (`pipeline / twin`), so the project is never measured only against itself.

What a careful user writes for order fulfilment in an afternoon: a pydantic model of the
CloudEvents envelope, one `model_validate_json` per record, dedupe by event id in a set, and one
dict per instance moved through the definition's transition table. No outputs, no reordering, no
event-time deadlines, no ledger: that is the work flowkeeper adds, and the ratio prices it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError

from schemas.event import RawRecord
from state.definition import StateMachine


class TwinEnvelope(BaseModel):
    """The envelope as a user would model it: the CloudEvents attributes, data as a dict."""

    specversion: str
    id: str = Field(min_length=1)
    source: str
    type: str
    time: str
    subject: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class TwinConsumer:
    """Per-instance state driven by one definition's transition table (`on` of each state)."""

    def __init__(self, definition: StateMachine) -> None:
        self.initial = definition.initial
        self.start = frozenset(definition.start)
        self.id_field = definition.instance_id.data_field
        self.table = {(name, event_type): target for name, state in definition.states.items()
                      for event_type, target in state.on.items()}
        self.seen: set[str] = set()
        self.instances: dict[str, dict[str, Any]] = {}
        self.rejected = self.duplicates = self.invalid = 0

    def consume(self, record: RawRecord) -> None:
        try:
            event = TwinEnvelope.model_validate_json(record.value)
        except ValidationError:
            self.rejected += 1
            return
        if event.id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(event.id)
        key = str(event.data.get(self.id_field) if self.id_field else event.subject)
        instance = self.instances.get(key)
        if instance is None:
            if event.type in self.start:
                self.instances[key] = {"state": self.initial, "started": event.time, "events": 1}
            else:
                self.invalid += 1
            return
        instance["events"] += 1
        target = self.table.get((instance["state"], event.type))
        if target is None:
            self.invalid += 1
        else:
            instance["state"] = target
            instance["updated"] = event.time
