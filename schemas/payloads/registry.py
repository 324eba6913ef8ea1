"""Maps (event type, payload version) to a pydantic model, and upgrades old payloads on read.

The payload version travels in the `dataversion` CloudEvents extension attribute ("1", "2", ...);
an event without it is version 1. An *upcaster* turns a valid version-N payload dict into a
version-N+1 dict, so events archived under old code replay under new code: a payload is validated
with the model of its own version, then upcast step by step and validated with the newest model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas.errors import UnknownVersion

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class PayloadRegistry:
    """Payload models by (type, version), plus the upcasters between consecutive versions."""

    models: dict[tuple[str, int], type[BaseModel]] = field(default_factory=dict)
    upcasters: dict[tuple[str, int], Upcaster] = field(default_factory=dict)
    _latest: dict[str, int] = field(default_factory=dict)

    def register(self, event_type: str, version: int, model: type[BaseModel]) -> None:
        """Add the model of one payload version."""
        self.models[(event_type, version)] = model
        self._latest[event_type] = max(version, self._latest.get(event_type, 0))

    def register_upcaster(self, event_type: str, from_version: int, fn: Upcaster) -> None:
        """Add the function that upgrades `from_version` payloads to `from_version + 1`."""
        self.upcasters[(event_type, from_version)] = fn

    def knows(self, event_type: str) -> bool:
        """Whether any payload model is registered for this type."""
        return event_type in self._latest

    def latest(self, event_type: str) -> int:
        """The newest registered version of a type."""
        return self._latest[event_type]

    def validate(self, event_type: str, version: int, data: Any) -> BaseModel:
        """Validate `data` as `version`, upcast to the newest version, and return that model.

        Raises `UnknownVersion` or pydantic's `ValidationError`; `schemas.decode` turns both into
        dead letters.
        """
        model = self.models.get((event_type, version))
        if model is None:
            known = sorted(v for t, v in self.models if t == event_type)
            msg = f"{event_type} has no payload version {version}; known versions: {known}"
            raise UnknownVersion(msg)
        payload = model.model_validate(data)
        latest = self._latest[event_type]
        while version < latest:
            upcast = self.upcasters[(event_type, version)]
            version += 1
            payload = self.models[(event_type, version)].model_validate(
                upcast(payload.model_dump(mode="json"))
            )
        return payload

    def check_complete(self) -> list[str]:
        """Problems that would make `validate` fail for a registered version: missing upcasters."""
        problems = []
        for (event_type, version) in self.models:
            if version < self._latest[event_type] and (event_type, version) not in self.upcasters:
                problems.append(f"{event_type} v{version} has no upcaster to v{version + 1}")
        return problems
