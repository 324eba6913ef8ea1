"""The payload registry of the workflows bundled in `definitions/`."""

from __future__ import annotations

from schemas.payloads import courses, loans, media, orders
from schemas.payloads.registry import PayloadRegistry


def bundled_registry() -> PayloadRegistry:
    """A new registry with every bundled model and upcaster; fresh each call, so a caller (or a
    test) that registers more types never changes anyone else's."""
    registry = PayloadRegistry()
    for module in (orders, courses, loans, media):
        for (event_type, version), model in module.MODELS.items():
            registry.register(event_type, version, model)
        for (event_type, version), upcast in module.UPCASTERS.items():
            registry.register_upcaster(event_type, version, upcast)
    return registry
