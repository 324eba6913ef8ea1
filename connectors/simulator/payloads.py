"""Realistic sample payloads for every bundled event type and payload version.

One factory per (type, version). Values an instance reuses (the order total, the payment id, the
contract id) come from a per-instance `Facts` memo, so a refund names the payment it refunds.
Types without a factory (workflows outside the bundle) get an empty payload plus the instance id
field, which is what an unregistered type needs to decode.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Payload = dict[str, Any]

ID_PREFIX = {"order_fulfilment": "ord", "course_registration": "reg",
             "loan_application": "app", "media_pipeline": "asset"}
_SKUS = ("SKU-RED-M", "SKU-BLU-L", "MUG-01", "CAP-GRN", "BOOK-4711", "LAMP-22", "SOCK-3PK")
_COURSES = ("CS-101", "MATH201", "PHYS-110", "HIST305A", "BIO-220", "ECON1001")
_BUREAUS = ("Experian", "Equifax", "Schufa", "TransUnion")
_PROFILES = ("240p", "360p", "480p", "720p", "1080p", "2160p")
_EXTENSIONS = {"image/png": "png", "video/mp4": "mp4", "video/quicktime": "mov"}
_KBPS = {"240p": 400, "360p": 800, "480p": 1_400, "720p": 3_000, "1080p": 6_000, "2160p": 16_000}


@dataclass
class Facts:
    """Per-instance business facts, drawn once and reused by every event of the instance."""

    rng: random.Random
    instance_id: str
    start_ms: int
    memo: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, draw: Callable[[random.Random], Any]) -> Any:
        if name not in self.memo:
            self.memo[name] = draw(self.rng)
        return self.memo[name]

    def token(self, prefix: str) -> str:
        """A stable id like `pay-3fa9c1` for this instance (same prefix, same id)."""
        return str(self.get(f"id:{prefix}", lambda r: f"{prefix}-{r.getrandbits(32):08x}"))


def sample(event_type: str, version: int, facts: Facts, id_field: str | None) -> Payload:
    """A payload of `event_type` at `version` that validates against its registered model."""
    factory = FACTORIES.get((event_type, version))
    data = factory(facts) if factory is not None else {}
    if id_field is not None:
        data[id_field] = facts.instance_id
    return data


# -- orders ---------------------------------------------------------------------------------

def _lines(f: Facts) -> list[dict[str, Any]]:
    def draw(r: random.Random) -> list[dict[str, Any]]:
        skus = r.sample(_SKUS, r.randint(1, 3))
        return [{"sku": s, "quantity": r.randint(1, 4)} for s in skus]
    return list(f.get("lines", draw))


def _order_cents(f: Facts) -> int:
    return int(f.get("order_cents", lambda r: r.randint(499, 250_000)))


def _order_placed_v1(f: Facts) -> Payload:
    items = [line["sku"] for line in _lines(f) for _ in range(line["quantity"])]
    return {"order_id": f.instance_id, "customer_id": f.token("cus"),
            "total": _order_cents(f) / 100, "items": items}


def _order_placed(f: Facts) -> Payload:
    return {"order_id": f.instance_id, "customer_id": f.token("cus"),
            "total_cents": _order_cents(f), "currency": "EUR", "items": _lines(f)}


def _payment_authorized(f: Facts) -> Payload:
    method = f.get("method", lambda r: r.choice(["card", "paypal", "bank_transfer", "gift_card"]))
    return {"order_id": f.instance_id, "payment_id": f.token("pay"),
            "amount_cents": _order_cents(f), "currency": "EUR", "method": method}


def _payment_declined(f: Facts) -> Payload:
    reason = f.rng.choice(["insufficient_funds", "card_expired", "fraud_suspected",
                           "authentication_failed", "other"])
    return {"order_id": f.instance_id, "payment_id": f.token("pay"), "reason": reason}


def _payment_refunded(f: Facts) -> Payload:
    return {"order_id": f.instance_id, "refund_id": f.token("ref"),
            "amount_cents": _order_cents(f), "currency": "EUR"}


def _inventory_reserved(f: Facts) -> Payload:
    warehouse = f.get("warehouse", lambda r: r.choice(["ams-1", "fra-2", "mad-1"]))
    return {"order_id": f.instance_id, "reservation_id": f.token("res"),
            "warehouse_id": warehouse, "items": _lines(f)}


def _inventory_unavailable(f: Facts) -> Payload:
    return {"order_id": f.instance_id, "missing_skus": [_lines(f)[0]["sku"]]}


def _inventory_released(f: Facts) -> Payload:
    return {"order_id": f.instance_id, "reservation_id": f.token("res")}


def _order_shipped(f: Facts) -> Payload:
    eta = datetime.fromtimestamp(f.start_ms / 1000, tz=UTC) + timedelta(days=f.rng.randint(2, 6))
    return {"order_id": f.instance_id, "shipment_id": f.token("shp"),
            "carrier": f.rng.choice(["DHL", "PostNL", "UPS", "GLS"]),
            "tracking_number": f.token("trk").upper(), "expected_delivery": eta.date().isoformat()}


def _order_delivered(f: Facts) -> Payload:
    signed = f.rng.choice([None, "J. Jansen", "neighbour", "front desk"])
    return {"order_id": f.instance_id, "shipment_id": f.token("shp"), "signed_by": signed}


def _order_cancelled(f: Facts) -> Payload:
    return {"order_id": f.instance_id, "cancelled_by": "customer",
            "reason": f.rng.choice(["", "changed my mind", "found it cheaper", "ordered twice"])}


def _order_viewed(f: Facts) -> Payload:
    return {"order_id": f.instance_id, "session_id": f"ses-{f.rng.getrandbits(32):08x}"}


# -- courses (the instance id is the subject) -----------------------------------------------

def _course(f: Facts) -> str:
    return str(f.get("course", lambda r: r.choice(_COURSES)))


def _fee(f: Facts) -> int:
    return int(f.get("fee", lambda r: r.choice([45_000, 60_000, 75_000, 120_000])))


def _registration_requested(f: Facts) -> Payload:
    term = f.get("term", lambda r: f"2026-{r.choice(['spring', 'summer', 'autumn'])}")
    return {"student_id": f.token("stu"), "course": _course(f), "term": term,
            "fee_cents": _fee(f), "currency": "EUR"}


def _seat_reserved(f: Facts) -> Payload:
    return {"course": _course(f), "seat_hold_id": f.token("hold"),
            "seats_left": f.rng.randint(0, 80)}


def _no_seats_left(f: Facts) -> Payload:
    return {"course": _course(f), "capacity": f.rng.choice([30, 60, 120]),
            "waitlist_position": f.rng.choice([None, f.rng.randint(1, 40)])}


def _seat_released(f: Facts) -> Payload:
    return {"course": _course(f), "seat_hold_id": f.token("hold")}


def _tuition_reminder_sent(f: Facts) -> Payload:
    return {"channel": f.rng.choice(["email", "sms", "push"])}


def _payment_confirmed(f: Facts) -> Payload:
    return {"payment_id": f.token("pay"), "amount_cents": _fee(f), "currency": "EUR"}


def _tuition_refunded(f: Facts) -> Payload:
    return {"payment_id": f.token("pay"), "refund_id": f.token("ref"),
            "amount_cents": _fee(f), "currency": "EUR"}


def _registration_confirmed(f: Facts) -> Payload:
    return {"enrollment_id": f.token("enr"), "student_id": f.token("stu"), "course": _course(f)}


def _registration_withdrawn(f: Facts) -> Payload:
    return {"student_id": f.token("stu"),
            "reason": f.rng.choice(["", "schedule conflict", "took another course"])}


# -- loans ----------------------------------------------------------------------------------

def _loan_cents(f: Facts) -> int:
    return int(f.get("loan_cents", lambda r: r.randrange(500_000, 50_000_000, 100)))


def _years(f: Facts) -> int:
    return int(f.get("years", lambda r: r.choice([1, 2, 3, 5, 10, 20, 30])))


def _purpose(f: Facts) -> str:
    return str(f.get("purpose", lambda r: r.choice(["home", "car", "education", "renovation",
                                                    "business", "other"])))


def _application_submitted_v1(f: Facts) -> Payload:
    cents = _loan_cents(f)
    return {"application_id": f.instance_id, "applicant_id": f.token("cus"),
            "requested_amount": f"{cents // 100}.{cents % 100:02d}", "term_years": _years(f),
            "purpose": _purpose(f)}


def _application_submitted(f: Facts) -> Payload:
    return {"application_id": f.instance_id, "applicant_id": f.token("cus"),
            "amount_cents": _loan_cents(f), "currency": "EUR", "term_months": _years(f) * 12,
            "purpose": _purpose(f)}


def _document_uploaded(f: Facts) -> Payload:
    return {"application_id": f.instance_id, "document_id": f"doc-{f.rng.getrandbits(32):08x}",
            "kind": f.rng.choice(["id_card", "payslip", "bank_statement", "tax_return", "other"])}


def _bureau(f: Facts) -> str:
    return str(f.get("bureau", lambda r: r.choice(_BUREAUS)))


def _credit_check_passed(f: Facts) -> Payload:
    return {"application_id": f.instance_id, "bureau": _bureau(f), "score": f.rng.randint(620, 850)}


def _credit_check_failed(f: Facts) -> Payload:
    return {"application_id": f.instance_id, "bureau": _bureau(f),
            "score": f.rng.choice([None, f.rng.randint(300, 580)]),
            "reason": f.rng.choice(["score_too_low", "default_on_record", "identity_mismatch",
                                    "no_history"])}


def _review_approved(f: Facts) -> Payload:
    return {"application_id": f.instance_id, "reviewer_id": f.token("uw"),
            "approved_cents": _loan_cents(f), "currency": "EUR",
            "annual_rate_bp": f.rng.randint(250, 1_200)}


def _review_rejected(f: Facts) -> Payload:
    return {"application_id": f.instance_id, "reviewer_id": f.token("uw"),
            "reason": f.rng.choice(["debt-to-income ratio too high", "insufficient collateral",
                                    "incomplete documents"])}


def _contract_signed(f: Facts) -> Payload:
    return {"application_id": f.instance_id, "contract_id": f.token("ctr"),
            "signature_method": f.rng.choice(["qualified_e_signature", "wet_ink"])}


def _contract_voided(f: Facts) -> Payload:
    return {"application_id": f.instance_id, "contract_id": f.token("ctr")}


def _loan_disbursed(f: Facts) -> Payload:
    iban = f"NL{f.rng.randint(10, 99)}BANK{f.rng.randint(0, 10**10 - 1):010d}"
    return {"application_id": f.instance_id, "contract_id": f.token("ctr"),
            "amount_cents": _loan_cents(f), "currency": "EUR", "iban": iban}


def _disbursement_failed(f: Facts) -> Payload:
    return {"application_id": f.instance_id, "contract_id": f.token("ctr"),
            "reason": f.rng.choice(["account_closed", "iban_invalid", "compliance_hold", "other"])}


def _application_withdrawn(f: Facts) -> Payload:
    return {"application_id": f.instance_id,
            "reason": f.rng.choice(["", "found a better rate", "purchase fell through"])}


# -- media ----------------------------------------------------------------------------------

def _profiles(f: Facts) -> list[str]:
    return list(f.get("profiles", lambda r: sorted(r.sample(_PROFILES, r.randint(1, 4)),
                                                   key=_PROFILES.index)))


def _asset_uploaded(f: Facts) -> Payload:
    kind = f.get("kind", lambda r: r.choice(sorted(_EXTENSIONS)))
    name = f"{f.token('clip')}.{_EXTENSIONS[kind]}"
    return {"asset_id": f.instance_id, "uploader_id": f.token("usr"), "filename": name,
            "content_type": kind, "size_bytes": f.rng.randint(10_000, 8 * 1024**3),
            "source_uri": f"s3://uploads/{f.instance_id}/{name}"}


def _transcode_completed(f: Facts) -> Payload:
    renditions = [{"profile": p, "uri": f"s3://renditions/{f.instance_id}/{p}.mp4",
                   "bitrate_kbps": _KBPS[p]} for p in _profiles(f)]
    return {"asset_id": f.instance_id, "renditions": renditions}


def _transcode_failed(f: Facts) -> Payload:
    return {"asset_id": f.instance_id, "profile": f.rng.choice([None, *_profiles(f)]),
            "error": f.rng.choice(["codec not supported", "worker out of memory", "corrupt input"])}


def _thumbnail_created(f: Facts) -> Payload:
    count = int(f.get("thumbs", lambda r: r.randint(1, 6)))
    thumbnails = [f"https://cdn.example.com/{f.instance_id}/thumb-{i}.jpg" for i in range(count)]
    return {"asset_id": f.instance_id, "thumbnails": thumbnails}


def _thumbnail_failed(f: Facts) -> Payload:
    return {"asset_id": f.instance_id, "error": f.rng.choice(["no decodable frame", "timeout"])}


def _metadata_extracted(f: Facts) -> Payload:
    return {"asset_id": f.instance_id, "duration_ms": f.rng.randint(1_000, 3_600_000),
            "width": 1920, "height": 1080, "codec": f.rng.choice(["h264", "hevc", "prores"])}


def _renditions_deleted(f: Facts) -> Payload:
    return {"asset_id": f.instance_id, "deleted": len(_profiles(f))}


def _thumbnails_deleted(f: Facts) -> Payload:
    return {"asset_id": f.instance_id, "deleted": int(f.get("thumbs", lambda r: r.randint(1, 6)))}


def _processing_progress(f: Facts) -> Payload:
    branch = f.rng.choice(["transcode", "thumbnail", "metadata"])
    return {"asset_id": f.instance_id, "branch": branch, "percent": f.rng.randint(0, 100)}


def _upload_cancelled(f: Facts) -> Payload:
    return {"asset_id": f.instance_id, "cancelled_by": f.token("usr")}


def _asset_published(f: Facts) -> Payload:
    channels = f.rng.sample(["web", "mobile", "partner_feed"], f.rng.randint(1, 3))
    return {"asset_id": f.instance_id, "public_url": f"https://media.example.com/a/{f.instance_id}",
            "channels": channels}


def _publish_rejected(f: Facts) -> Payload:
    return {"asset_id": f.instance_id,
            "policy": f.rng.choice(["copyright", "explicit_content", "quality", "other"]),
            "reviewer_id": f.rng.choice([None, f.token("mod")])}


FACTORIES: dict[tuple[str, int], Callable[[Facts], Payload]] = {
    ("OrderPlaced", 1): _order_placed_v1,
    ("OrderPlaced", 2): _order_placed,
    ("PaymentAuthorized", 1): _payment_authorized,
    ("PaymentDeclined", 1): _payment_declined,
    ("PaymentRefunded", 1): _payment_refunded,
    ("InventoryReserved", 1): _inventory_reserved,
    ("InventoryUnavailable", 1): _inventory_unavailable,
    ("InventoryReleased", 1): _inventory_released,
    ("OrderShipped", 1): _order_shipped,
    ("OrderDelivered", 1): _order_delivered,
    ("OrderCancelled", 1): _order_cancelled,
    ("OrderViewed", 1): _order_viewed,
    ("RegistrationRequested", 1): _registration_requested,
    ("SeatReserved", 1): _seat_reserved,
    ("NoSeatsLeft", 1): _no_seats_left,
    ("SeatReleased", 1): _seat_released,
    ("TuitionReminderSent", 1): _tuition_reminder_sent,
    ("PaymentConfirmed", 1): _payment_confirmed,
    ("TuitionRefunded", 1): _tuition_refunded,
    ("RegistrationConfirmed", 1): _registration_confirmed,
    ("RegistrationWithdrawn", 1): _registration_withdrawn,
    ("ApplicationSubmitted", 1): _application_submitted_v1,
    ("ApplicationSubmitted", 2): _application_submitted,
    ("DocumentUploaded", 1): _document_uploaded,
    ("CreditCheckPassed", 1): _credit_check_passed,
    ("CreditCheckFailed", 1): _credit_check_failed,
    ("ReviewApproved", 1): _review_approved,
    ("ReviewRejected", 1): _review_rejected,
    ("ContractSigned", 1): _contract_signed,
    ("ContractVoided", 1): _contract_voided,
    ("LoanDisbursed", 1): _loan_disbursed,
    ("DisbursementFailed", 1): _disbursement_failed,
    ("ApplicationWithdrawn", 1): _application_withdrawn,
    ("AssetUploaded", 1): _asset_uploaded,
    ("TranscodeCompleted", 1): _transcode_completed,
    ("TranscodeFailed", 1): _transcode_failed,
    ("ThumbnailCreated", 1): _thumbnail_created,
    ("ThumbnailFailed", 1): _thumbnail_failed,
    ("MetadataExtracted", 1): _metadata_extracted,
    ("RenditionsDeleted", 1): _renditions_deleted,
    ("ThumbnailsDeleted", 1): _thumbnails_deleted,
    ("ProcessingProgress", 1): _processing_progress,
    ("UploadCancelled", 1): _upload_cancelled,
    ("AssetPublished", 1): _asset_published,
    ("PublishRejected", 1): _publish_rejected,
}
