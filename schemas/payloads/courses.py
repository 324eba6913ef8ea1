"""Payloads of the course registration saga (`definitions/course_registration.yaml`).

The instance id is the CloudEvents `subject` (the registration id), so payloads carry the business
data only. All types are at version 1.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.payloads.registry import Upcaster

Id = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
CourseCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,6}-?[0-9]{3,4}[A-Z]?$")]
Term = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-(spring|summer|autumn|winter)$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Cents = Annotated[int, Field(gt=0, le=100_000_000)]  # at most one million in major units
Note = Annotated[str, StringConstraints(max_length=500)]


class Payload(BaseModel):
    """Unknown fields are rejected and payloads never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistrationRequested(Payload):
    student_id: Id
    course: CourseCode
    term: Term
    fee_cents: Cents
    currency: Currency


class SeatReserved(Payload):
    course: CourseCode
    seat_hold_id: Id
    seats_left: int = Field(ge=0, le=10_000)


class NoSeatsLeft(Payload):
    course: CourseCode
    capacity: int = Field(ge=0, le=10_000)
    waitlist_position: int | None = Field(default=None, ge=1, le=10_000)


class SeatReleased(Payload):
    course: CourseCode
    seat_hold_id: Id


class TuitionReminderSent(Payload):
    """The mailer's receipt for our reminder command; the definition ignores it."""

    channel: Literal["email", "sms", "push"]


class PaymentConfirmed(Payload):
    payment_id: Id
    amount_cents: Cents
    currency: Currency


class TuitionRefunded(Payload):
    payment_id: Id
    refund_id: Id
    amount_cents: Cents
    currency: Currency


class RegistrationConfirmed(Payload):
    enrollment_id: Id
    student_id: Id
    course: CourseCode


class RegistrationWithdrawn(Payload):
    student_id: Id
    reason: Note = ""


MODELS: dict[tuple[str, int], type[BaseModel]] = {
    ("RegistrationRequested", 1): RegistrationRequested,
    ("SeatReserved", 1): SeatReserved,
    ("NoSeatsLeft", 1): NoSeatsLeft,
    ("SeatReleased", 1): SeatReleased,
    ("TuitionReminderSent", 1): TuitionReminderSent,
    ("PaymentConfirmed", 1): PaymentConfirmed,
    ("TuitionRefunded", 1): TuitionRefunded,
    ("RegistrationConfirmed", 1): RegistrationConfirmed,
    ("RegistrationWithdrawn", 1): RegistrationWithdrawn,
}
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
