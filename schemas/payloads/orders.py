"""Payloads of the order fulfilment saga (`definitions/order_fulfilment.yaml`).

Every payload carries `order_id`, the instance id. Money is integer minor units plus an ISO 4217
code. `OrderPlaced` v1 came from the old shop: a float `total` always in euros and `items` as a
bare list of SKUs (one entry per unit); v2 has `total_cents`, `currency` and line items.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.payloads.registry import Upcaster

Id = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Sku = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Cents = Annotated[int, Field(gt=0, le=10_000_000_000)]  # at most 100 million in major units
Note = Annotated[str, StringConstraints(max_length=500)]


class Payload(BaseModel):
    """Unknown fields are rejected and payloads never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LineItem(Payload):
    sku: Sku
    quantity: int = Field(ge=1, le=1000)


class OrderPlacedV1(Payload):
    """The legacy shape: float euros and one SKU per unit ordered."""

    order_id: Id
    customer_id: Id
    total: float = Field(gt=0, le=100_000_000, allow_inf_nan=False)
    items: tuple[Sku, ...] = Field(min_length=1, max_length=1000)


class OrderPlaced(Payload):
    order_id: Id
    customer_id: Id
    total_cents: Cents
    currency: Currency
    items: tuple[LineItem, ...] = Field(min_length=1, max_length=100)


class PaymentAuthorized(Payload):
    order_id: Id
    payment_id: Id
    amount_cents: Cents
    currency: Currency
    method: Literal["card", "paypal", "bank_transfer", "gift_card"]


class PaymentDeclined(Payload):
    order_id: Id
    payment_id: Id
    reason: Literal[
        "insufficient_funds", "card_expired", "fraud_suspected", "authentication_failed", "other"
    ]


class PaymentRefunded(Payload):
    order_id: Id
    refund_id: Id
    amount_cents: Cents
    currency: Currency


class InventoryReserved(Payload):
    order_id: Id
    reservation_id: Id
    warehouse_id: Id
    items: tuple[LineItem, ...] = Field(min_length=1, max_length=100)


class InventoryUnavailable(Payload):
    order_id: Id
    missing_skus: tuple[Sku, ...] = Field(min_length=1, max_length=100)


class InventoryReleased(Payload):
    order_id: Id
    reservation_id: Id


class OrderShipped(Payload):
    order_id: Id
    shipment_id: Id
    carrier: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    tracking_number: Id
    expected_delivery: date | None = None


class OrderDelivered(Payload):
    order_id: Id
    shipment_id: Id
    signed_by: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None


class OrderCancelled(Payload):
    order_id: Id
    cancelled_by: Literal["customer", "support"]
    reason: Note = ""


class OrderViewed(Payload):
    """Storefront noise: the definition ignores it, but it still has to be well-formed."""

    order_id: Id
    session_id: Id


def order_placed_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Euros become cents by decimal rounding (not float truncation); repeated SKUs, quantities."""
    cents = (Decimal(str(data["total"])) * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    counts = Counter(data["items"])  # keeps first-seen order
    return {
        "order_id": data["order_id"],
        "customer_id": data["customer_id"],
        "total_cents": int(cents),
        "currency": "EUR",
        "items": [{"sku": sku, "quantity": n} for sku, n in counts.items()],
    }


MODELS: dict[tuple[str, int], type[BaseModel]] = {
    ("OrderPlaced", 1): OrderPlacedV1,
    ("OrderPlaced", 2): OrderPlaced,
    ("PaymentAuthorized", 1): PaymentAuthorized,
    ("PaymentDeclined", 1): PaymentDeclined,
    ("PaymentRefunded", 1): PaymentRefunded,
    ("InventoryReserved", 1): InventoryReserved,
    ("InventoryUnavailable", 1): InventoryUnavailable,
    ("InventoryReleased", 1): InventoryReleased,
    ("OrderShipped", 1): OrderShipped,
    ("OrderDelivered", 1): OrderDelivered,
    ("OrderCancelled", 1): OrderCancelled,
    ("OrderViewed", 1): OrderViewed,
}
UPCASTERS: dict[tuple[str, int], Upcaster] = {("OrderPlaced", 1): order_placed_v1_to_v2}
