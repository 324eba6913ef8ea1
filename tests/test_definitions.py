"""The bundled workflow definitions, their payload models, and the loader's error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.decode import decode
from schemas.errors import DefinitionError
from schemas.event import Event, RawRecord
from schemas.payloads.bundled import bundled_registry
from schemas.payloads.loans import ApplicationSubmitted
from schemas.payloads.orders import LineItem, OrderPlaced
from schemas.payloads.registry import PayloadRegistry
from state.catalog import MAX_FILE_BYTES, Catalog, load_catalog, load_definition
from state.definition import StateMachine

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"
BUNDLED = {"order_fulfilment", "course_registration", "loan_application", "media_pipeline"}

# A realistic payload for every registered (event type, version).
SAMPLES: dict[tuple[str, int], dict[str, Any]] = {
    ("OrderPlaced", 1): {"order_id": "ord-1001", "customer_id": "cus-77", "total": 59.9,
                         "items": ["SKU-RED-M", "SKU-RED-M", "MUG-01"]},
    ("OrderPlaced", 2): {"order_id": "ord-1002", "customer_id": "cus-77", "total_cents": 5990,
                         "currency": "EUR", "items": [{"sku": "SKU-RED-M", "quantity": 2}]},
    ("PaymentAuthorized", 1): {"order_id": "ord-1002", "payment_id": "pay-9", "amount_cents": 5990,
                               "currency": "EUR", "method": "card"},
    ("PaymentDeclined", 1): {"order_id": "ord-1002", "payment_id": "pay-9",
                             "reason": "insufficient_funds"},
    ("PaymentRefunded", 1): {"order_id": "ord-1002", "refund_id": "ref-3", "amount_cents": 5990,
                             "currency": "EUR"},
    ("InventoryReserved", 1): {"order_id": "ord-1002", "reservation_id": "res-5",
                               "warehouse_id": "ams-1",
                               "items": [{"sku": "SKU-RED-M", "quantity": 2}]},
    ("InventoryUnavailable", 1): {"order_id": "ord-1002", "missing_skus": ["SKU-RED-M"]},
    ("InventoryReleased", 1): {"order_id": "ord-1002", "reservation_id": "res-5"},
    ("OrderShipped", 1): {"order_id": "ord-1002", "shipment_id": "shp-1", "carrier": "PostNL",
                          "tracking_number": "3SABCD1234567", "expected_delivery": "2024-05-03"},
    ("OrderDelivered", 1): {"order_id": "ord-1002", "shipment_id": "shp-1",
                            "signed_by": "J. Jansen"},
    ("OrderCancelled", 1): {"order_id": "ord-1002", "cancelled_by": "customer",
                            "reason": "ordered the wrong size"},
    ("OrderViewed", 1): {"order_id": "ord-1002", "session_id": "sess-abc"},
    ("RegistrationRequested", 1): {"student_id": "stu-42", "course": "CS-101",
                                   "term": "2024-autumn", "fee_cents": 45000, "currency": "USD"},
    ("SeatReserved", 1): {"course": "CS-101", "seat_hold_id": "hold-8", "seats_left": 3},
    ("NoSeatsLeft", 1): {"course": "CS-101", "capacity": 120, "waitlist_position": 4},
    ("SeatReleased", 1): {"course": "CS-101", "seat_hold_id": "hold-8"},
    ("TuitionReminderSent", 1): {"channel": "email"},
    ("PaymentConfirmed", 1): {"payment_id": "tp-1", "amount_cents": 45000, "currency": "USD"},
    ("TuitionRefunded", 1): {"payment_id": "tp-1", "refund_id": "tr-1", "amount_cents": 45000,
                             "currency": "USD"},
    ("RegistrationConfirmed", 1): {"enrollment_id": "enr-2024-17", "student_id": "stu-42",
                                   "course": "CS-101"},
    ("RegistrationWithdrawn", 1): {"student_id": "stu-42", "reason": "schedule clash"},
    ("ApplicationSubmitted", 1): {"application_id": "app-7", "applicant_id": "cust-3",
                                  "requested_amount": "25000.50", "term_years": 5,
                                  "purpose": "car"},
    ("ApplicationSubmitted", 2): {"application_id": "app-8", "applicant_id": "cust-3",
                                  "amount_cents": 2_500_000, "currency": "EUR", "term_months": 18,
                                  "purpose": "renovation"},
    ("DocumentUploaded", 1): {"application_id": "app-8", "document_id": "doc-1", "kind": "payslip"},
    ("CreditCheckPassed", 1): {"application_id": "app-8", "bureau": "Experian", "score": 712},
    ("CreditCheckFailed", 1): {"application_id": "app-8", "bureau": "Experian", "score": 410,
                               "reason": "score_too_low"},
    ("ReviewApproved", 1): {"application_id": "app-8", "reviewer_id": "uw-12",
                            "approved_cents": 2_000_000, "currency": "EUR", "annual_rate_bp": 425},
    ("ReviewRejected", 1): {"application_id": "app-8", "reviewer_id": "uw-12",
                            "reason": "income cannot be verified"},
    ("ContractSigned", 1): {"application_id": "app-8", "contract_id": "ctr-1",
                            "signature_method": "qualified_e_signature"},
    ("ContractVoided", 1): {"application_id": "app-8", "contract_id": "ctr-1"},
    ("LoanDisbursed", 1): {"application_id": "app-8", "contract_id": "ctr-1",
                           "amount_cents": 2_000_000, "currency": "EUR",
                           "iban": "NL91ABNA0417164300"},
    ("DisbursementFailed", 1): {"application_id": "app-8", "contract_id": "ctr-1",
                                "reason": "account_closed"},
    ("ApplicationWithdrawn", 1): {"application_id": "app-8"},
    ("AssetUploaded", 1): {"asset_id": "ast-1", "uploader_id": "usr-5", "filename": "launch.mov",
                           "content_type": "video/quicktime", "size_bytes": 734_003_200,
                           "source_uri": "s3://uploads/ast-1/launch.mov"},
    ("TranscodeCompleted", 1): {"asset_id": "ast-1", "renditions": [
        {"profile": "720p", "uri": "s3://renditions/ast-1/720p.mp4", "bitrate_kbps": 3500},
        {"profile": "1080p", "uri": "s3://renditions/ast-1/1080p.mp4", "bitrate_kbps": 6000}]},
    ("TranscodeFailed", 1): {"asset_id": "ast-1", "profile": "2160p",
                             "error": "ffmpeg exited with code 1"},
    ("ThumbnailCreated", 1): {"asset_id": "ast-1", "thumbnails": ["s3://thumbs/ast-1/0.jpg"]},
    ("ThumbnailFailed", 1): {"asset_id": "ast-1", "error": "no decodable frame"},
    ("MetadataExtracted", 1): {"asset_id": "ast-1", "duration_ms": 93_000, "width": 1920,
                               "height": 1080, "codec": "h264"},
    ("RenditionsDeleted", 1): {"asset_id": "ast-1", "deleted": 2},
    ("ThumbnailsDeleted", 1): {"asset_id": "ast-1", "deleted": 1},
    ("ProcessingProgress", 1): {"asset_id": "ast-1", "branch": "transcode", "percent": 40},
    ("UploadCancelled", 1): {"asset_id": "ast-1", "cancelled_by": "usr-5"},
    ("AssetPublished", 1): {"asset_id": "ast-1", "public_url": "https://cdn.example.com/v/ast-1",
                            "channels": ["web", "mobile"]},
    ("PublishRejected", 1): {"asset_id": "ast-1", "policy": "copyright", "reviewer_id": "mod-2"},
}

# For every sample, one field set to a value its model must refuse.
BAD: dict[tuple[str, int], tuple[str, Any]] = {
    ("OrderPlaced", 1): ("total", -5.0),
    ("OrderPlaced", 2): ("currency", "eur"),
    ("PaymentAuthorized", 1): ("amount_cents", 0),
    ("PaymentDeclined", 1): ("reason", "because"),
    ("PaymentRefunded", 1): ("currency", "EURO"),
    ("InventoryReserved", 1): ("items", []),
    ("InventoryUnavailable", 1): ("missing_skus", ["sku with spaces"]),
    ("InventoryReleased", 1): ("reservation_id", ""),
    ("OrderShipped", 1): ("expected_delivery", "next week"),
    ("OrderDelivered", 1): ("signed_by", "x" * 129),
    ("OrderCancelled", 1): ("cancelled_by", "warehouse"),
    ("OrderViewed", 1): ("order_id", ""),
    ("RegistrationRequested", 1): ("term", "fall 2024"),
    ("SeatReserved", 1): ("seats_left", -1),
    ("NoSeatsLeft", 1): ("waitlist_position", 0),
    ("SeatReleased", 1): ("course", "computer science"),
    ("TuitionReminderSent", 1): ("channel", "pigeon"),
    ("PaymentConfirmed", 1): ("amount_cents", -45000),
    ("TuitionRefunded", 1): ("refund_id", "a" * 65),
    ("RegistrationConfirmed", 1): ("enrollment_id", " "),
    ("RegistrationWithdrawn", 1): ("reason", "x" * 501),
    ("ApplicationSubmitted", 1): ("requested_amount", "100.005"),
    ("ApplicationSubmitted", 2): ("term_months", 3),
    ("DocumentUploaded", 1): ("kind", "selfie"),
    ("CreditCheckPassed", 1): ("score", 900),
    ("CreditCheckFailed", 1): ("reason", ""),
    ("ReviewApproved", 1): ("annual_rate_bp", -1),
    ("ReviewRejected", 1): ("reason", ""),
    ("ContractSigned", 1): ("signature_method", "emoji"),
    ("ContractVoided", 1): ("contract_id", "ctr 1"),
    ("LoanDisbursed", 1): ("iban", "not-an-iban"),
    ("DisbursementFailed", 1): ("reason", "unknown"),
    ("ApplicationWithdrawn", 1): ("application_id", None),
    ("AssetUploaded", 1): ("content_type", "application/x-msdownload"),
    ("TranscodeCompleted", 1): ("renditions", [{"profile": "8k", "uri": "s3://x/y",
                                                "bitrate_kbps": 1}]),
    ("TranscodeFailed", 1): ("error", ""),
    ("ThumbnailCreated", 1): ("thumbnails", ["s3://thumbs/x.jpg"] * 21),
    ("ThumbnailFailed", 1): ("asset_id", "../etc/passwd"),
    ("MetadataExtracted", 1): ("width", 0),
    ("RenditionsDeleted", 1): ("deleted", -2),
    ("ThumbnailsDeleted", 1): ("deleted", "many"),
    ("ProcessingProgress", 1): ("percent", 101),
    ("UploadCancelled", 1): ("cancelled_by", ""),
    ("AssetPublished", 1): ("public_url", "http://cdn.example.com/v/ast-1"),
    ("PublishRejected", 1): ("policy", "vibes"),
}


Bundled = tuple[Catalog, PayloadRegistry]


@pytest.fixture(scope="module")
def bundled() -> Bundled:
    return load_catalog(DEFINITIONS), bundled_registry()


def _machine(catalog: Catalog, workflow: str) -> StateMachine:
    definition = catalog.latest(workflow)
    assert isinstance(definition, StateMachine)
    return definition


# -- the bundled definitions and payloads ------------------------------------------------------


def test_bundled_definitions_load_together(bundled: Bundled) -> None:
    """The four bundled definitions load from one folder: checks pass, no event type is shared."""
    catalog, _ = bundled
    assert set(catalog.definitions) == BUNDLED
    assert all(isinstance(d, StateMachine) for d in catalog.all())


def test_on_keys_survive_yaml(bundled: Bundled) -> None:
    """The YAML key `on:` is read as text, so the bundled transitions are really there."""
    catalog, _ = bundled
    orders = _machine(catalog, "order_fulfilment")
    assert orders.states["awaiting_payment"].on["PaymentAuthorized"] == "reserving_inventory"


def test_bundled_deadlines_and_compensations(bundled: Bundled) -> None:
    """The bundled files carry the escalations, `from:` deadline and branches they document."""
    catalog, _ = bundled
    orders = _machine(catalog, "order_fulfilment").states
    assert [(d.after_ms, d.command, d.goto) for d in orders["awaiting_payment"].deadlines] == [
        (15 * 60_000, "SendPaymentReminder", None), (30 * 60_000, "CancelOrder", "timed_out")]
    assert orders["lost_in_transit"].compensates is False
    loans = _machine(catalog, "loan_application").states
    offer = loans["contract_signing"].deadlines[-1]
    assert (offer.from_event, offer.after_ms, offer.goto) == (
        "ApplicationSubmitted", 14 * 86_400_000, "offer_expired")
    media = _machine(catalog, "media_pipeline").states["processing"]
    assert media.parallel is not None
    assert set(media.parallel) == {"transcode", "thumbnail", "metadata"}


def test_registry_covers_exactly_the_bundled_event_types(bundled: Bundled) -> None:
    """Every consumed event type has a payload model, none is orphaned, no upcaster is missing."""
    catalog, registry = bundled
    consumed = set().union(*(d.event_types() for d in catalog.all()))
    assert {event_type for event_type, _ in registry.models} == consumed
    assert registry.check_complete() == []


def test_bundled_registry_is_fresh_each_call() -> None:
    """Registering a type in one bundled registry leaves the next one untouched."""
    first = bundled_registry()
    first.register("Extra", 1, OrderPlaced)
    assert not bundled_registry().knows("Extra")


def test_payloads_carry_the_instance_id_field(bundled: Bundled) -> None:
    """Where the instance id comes from data, every newest payload model requires that field."""
    catalog, registry = bundled
    for definition in catalog.all():
        id_field = definition.instance_id.data_field
        if id_field is None:
            continue
        for event_type in definition.event_types():
            model = registry.models[(event_type, registry.latest(event_type))]
            assert model.model_fields[id_field].is_required(), (event_type, id_field)


def test_every_registered_version_has_samples() -> None:
    """The good and bad samples below cover every registered (type, version) pair."""
    registered = set(bundled_registry().models)
    assert set(SAMPLES) == registered
    assert set(BAD) == registered


@pytest.mark.parametrize("key", sorted(SAMPLES), ids=lambda k: f"{k[0]}-v{k[1]}")
def test_payload_model_accepts_a_realistic_sample(key: tuple[str, int]) -> None:
    """A realistic payload validates against its own version's model."""
    model = bundled_registry().models[key]
    model.model_validate(SAMPLES[key])


@pytest.mark.parametrize("key", sorted(BAD), ids=lambda k: f"{k[0]}-v{k[1]}")
def test_payload_model_rejects_a_bad_sample(key: tuple[str, int]) -> None:
    """A payload with one field out of bounds fails validation, and the error names that field."""
    model = bundled_registry().models[key]
    field, value = BAD[key]
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**SAMPLES[key], field: value})
    assert {str(e["loc"][0]) for e in caught.value.errors()} == {field}


@pytest.mark.parametrize("key", sorted(SAMPLES), ids=lambda k: f"{k[0]}-v{k[1]}")
def test_payload_model_rejects_unknown_fields(key: tuple[str, int]) -> None:
    """Payload models forbid extra fields, so a misspelt producer field is caught, not dropped."""
    model = bundled_registry().models[key]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate({**SAMPLES[key], "unexpected": 1})


# -- upcasting ---------------------------------------------------------------------------------


def test_order_placed_v1_upcasts_to_v2() -> None:
    """A v1 OrderPlaced comes out as v2: float euros to exact cents, repeated SKUs to quantities."""
    payload = bundled_registry().validate("OrderPlaced", 1, SAMPLES[("OrderPlaced", 1)])
    assert payload == OrderPlaced(
        order_id="ord-1001", customer_id="cus-77", total_cents=5990, currency="EUR",
        items=(LineItem(sku="SKU-RED-M", quantity=2), LineItem(sku="MUG-01", quantity=1)),
    )


def test_application_submitted_v1_upcasts_to_v2() -> None:
    """A v1 ApplicationSubmitted comes out as v2: decimal euros to cents, years to months."""
    v1 = SAMPLES[("ApplicationSubmitted", 1)]
    payload = bundled_registry().validate("ApplicationSubmitted", 1, v1)
    assert payload == ApplicationSubmitted(
        application_id="app-7", applicant_id="cust-3", amount_cents=2_500_050, currency="EUR",
        term_months=60, purpose="car",
    )


def test_v2_payload_is_not_upcast() -> None:
    """A payload already at the newest version validates as is."""
    payload = bundled_registry().validate("OrderPlaced", 2, SAMPLES[("OrderPlaced", 2)])
    assert isinstance(payload, OrderPlaced) and payload.total_cents == 5990


@settings(derandomize=True, database=None, max_examples=200)
@given(
    cents=st.integers(min_value=1, max_value=10_000_000_000),
    skus=st.lists(st.sampled_from(["SKU-A1", "SKU-B2", "MUG-01"]), min_size=1, max_size=50),
)
def test_order_placed_upcast_keeps_money_and_units(cents: int, skus: list[str]) -> None:
    """For any v1 order the v2 total is the same amount in cents and quantities sum to the SKUs."""
    v1 = {"order_id": "o-1", "customer_id": "c-1", "total": cents / 100, "items": skus}
    payload = bundled_registry().validate("OrderPlaced", 1, v1)
    assert isinstance(payload, OrderPlaced)
    assert payload.total_cents == cents
    assert sum(item.quantity for item in payload.items) == len(skus)
    assert [item.sku for item in payload.items] == list(dict.fromkeys(skus))


def test_v1_event_decodes_into_the_order_workflow(bundled: Bundled) -> None:
    """A v1 OrderPlaced CloudEvent decodes to an order_fulfilment event keyed by its order_id."""
    catalog, registry = bundled
    body = {"specversion": "1.0", "id": "e-1", "source": "shop", "type": "OrderPlaced",
            "time": "2024-05-01T10:00:00Z", "dataversion": "1", "data": SAMPLES[("OrderPlaced", 1)]}
    record = RawRecord(source="orders", partition=0, offset=0, value=json.dumps(body).encode())
    event = decode(record, catalog.decode_rules(registry))
    assert isinstance(event, Event)
    assert (event.workflow_type, event.instance_id) == ("order_fulfilment", "ord-1001")


# -- loader error messages ---------------------------------------------------------------------

VALID = """\
workflow: shop
version: 1
instance_id: {data_field: order_id}
start: [OrderPlaced]
initial: awaiting_payment
states:
  awaiting_payment:
    on: {PaymentAuthorized: done, OrderCancelled: cancelled}
    deadlines:
      - {after: 15m, command: SendPaymentReminder}
      - {after: 30m, goto: cancelled}
  done: {outcome: completed}
  cancelled: {outcome: cancelled}
"""

BROKEN: dict[str, tuple[str, list[str]]] = {
    "unknown_key": (
        VALID.replace("    deadlines:", "    deadline:"),
        ["at states.awaiting_payment.deadline", "unknown key 'deadline'",
         "did you mean 'deadlines'?",
         "allowed keys here: calendar, compensate, compensation, deadlines, on"],
    ),
    "unknown_key_in_deadline": (
        VALID.replace("goto: cancelled}", "go_to: cancelled}"),
        ["at states.awaiting_payment.deadlines.1.go_to", "unknown key 'go_to'",
         "did you mean 'goto'?", "allowed keys here: after, calendar, command, from, goto, name"],
    ),
    "missing_initial": (
        VALID.replace("initial: awaiting_payment\n", ""),
        ["at initial", "required key 'initial' is missing", "add it"],
    ),
    "unknown_target": (
        VALID.replace("PaymentAuthorized: done", "PaymentAuthorized: shipped"),
        ["at states.awaiting_payment.on.PaymentAuthorized",
         "target 'shipped' is not a defined state",
         "name one of: awaiting_payment, cancelled, done"],
    ),
    "unknown_initial": (
        VALID.replace("initial: awaiting_payment", "initial: new"),
        ["at initial", "'new' is not defined under 'states'", "name one of"],
    ),
    "unreachable_state": (
        VALID + "  archived: {outcome: completed}\n",
        ["at states.archived", "unreachable from initial state 'awaiting_payment'",
         "add a transition to it"],
    ),
    "no_way_out": (
        VALID.replace("PaymentAuthorized: done", "PaymentAuthorized: stuck") + "  stuck: {}\n",
        ["at states.stuck", "no way out", "hang forever",
         "add 'on', a deadline with 'goto', or an 'outcome'"],
    ),
    "reminder_is_no_way_out": (
        VALID.replace("PaymentAuthorized: done", "PaymentAuthorized: stuck")
        + "  stuck:\n    deadlines: [{after: 1h, command: Nudge}]\n",
        ["at states.stuck", "no way out", "add 'on', a deadline with 'goto'"],
    ),
    "cycle_without_deadline": (
        VALID.replace("PaymentAuthorized: done", "PaymentAuthorized: checking")
        + "  checking:\n    on: {FraudCheckRequested: rechecking, FraudCheckPassed: done}\n"
        + "  rechecking:\n    on: {FraudRecheckDone: checking}\n",
        ["at states", "cycle through checking, rechecking",
         "give one of these states a deadline with 'goto'"],
    ),
    "no_terminal_reachable": (
        VALID.replace("PaymentAuthorized: done", "PaymentAuthorized: done, FraudSuspected: ping")
        + "  ping:\n    on: {Pong: pong}\n    deadlines: [{after: 1h, goto: pong}]\n"
        + "  pong:\n    on: {Ping: ping}\n",
        ["at states.ping", "no terminal state can be reached", "towards a state with an 'outcome'"],
    ),
    "bad_duration": (
        VALID.replace("after: 15m", "after: 15 minutes"),
        ["at states.awaiting_payment.deadlines.0.after", "'15 minutes' is not a duration", "15m"],
    ),
    "bad_from_event": (
        VALID.replace("{after: 30m, goto", "{after: 30m, from: OrderPlacd, goto"),
        ["at states.awaiting_payment.deadlines.1.from", "'OrderPlacd' is no event of this workflow",
         "name a type from"],
    ),
    "bad_time_zone": (
        VALID + "naive_time_zone: Mars/Olympus_Mons\n",
        ["at naive_time_zone", "'Mars/Olympus_Mons' is not an IANA time zone", "Europe/Amsterdam"],
    ),
    "bad_mode": (
        VALID + "mode: bpmn\n",
        ["at mode", "'state_machine' (the default) or 'case_tracking'"],
    ),
    "case_tracking_hint": (
        "workflow: tickets\nmode: case_tracking\nversion: 1\nevnts: [TicketOpened]\n",
        ["at evnts", "unknown key 'evnts'", "events", "end_on", "rules"],
    ),
    "duplicate_key": (
        VALID.replace("  done: {outcome: completed}",
                      "  done: {outcome: completed}\n  done: {outcome: failed}"),
        ["line 13", "the key 'done' is written twice", "merge the two into one"],
    ),
    "non_mapping": (
        "- OrderPlaced\n- PaymentAuthorized\n",
        ["at (top level)", "expected a mapping with 'workflow', 'version'", "got a list"],
    ),
    "empty_file": (
        "",
        ["at (top level)", "got an empty file"],
    ),
    "python_tag": (
        "workflow: !!python/object/apply:os.system ['echo pwned']\nversion: 1\n",
        ["at line 1, column 11", "python/object/apply:os.system",
         "tags that build objects are refused", "write plain mappings"],
    ),
    "invalid_yaml": (
        "workflow: shop\nstates: [unclosed\n",
        ["at line 3", "not valid YAML"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_definition_error_names_file_path_and_fix(case: str, tmp_path: Path) -> None:
    """A broken definition fails with a DefinitionError naming the file, the place and the fix."""
    text, fragments = BROKEN[case]
    file = tmp_path / f"{case}.yaml"
    file.write_text(text)
    with pytest.raises(DefinitionError) as caught:
        load_definition(file)
    message = str(caught.value)
    assert message.startswith(f"{file}: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_valid_base_definition_loads(tmp_path: Path) -> None:
    """The base of the broken cases is valid, so each case fails for its own reason only."""
    file = tmp_path / "shop.yaml"
    file.write_text(VALID)
    assert load_definition(file).workflow == "shop"


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """A file over the size limit is refused with the limit and a fix in the message."""
    file = tmp_path / "huge.yaml"
    file.write_text(VALID + "#" * MAX_FILE_BYTES + "\n")
    with pytest.raises(DefinitionError) as caught:
        load_definition(file)
    assert str(caught.value).startswith(f"{file}: more than {MAX_FILE_BYTES} bytes")
    assert "keep one workflow per file" in str(caught.value)


def test_event_type_in_two_workflows_is_refused(tmp_path: Path) -> None:
    """An event type in two workflows is refused, naming the second file, the place and the fix."""
    (tmp_path / "a_shop.yaml").write_text(VALID)
    other = tmp_path / "b_returns.yaml"
    other.write_text(VALID.replace("workflow: shop", "workflow: returns")
                     .replace("start: [OrderPlaced]", "start: [ReturnRequested]")
                     .replace("OrderCancelled", "ReturnCancelled"))
    with pytest.raises(DefinitionError) as caught:
        load_catalog(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{other}: at states.awaiting_payment.on.PaymentAuthorized: ")
    assert "'PaymentAuthorized' is also used by workflow 'shop'" in message
    assert "rename one of them" in message


def test_same_workflow_version_in_two_files_is_refused(tmp_path: Path) -> None:
    """Two files with the same workflow and version are refused, naming both files and the fix."""
    first, second = tmp_path / "shop.yaml", tmp_path / "shop_copy.yaml"
    first.write_text(VALID)
    second.write_text(VALID)
    with pytest.raises(DefinitionError) as caught:
        load_catalog(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{second}: at version: shop version 1 is also defined in {first}")
    assert "give one of them a new 'version'" in message


def test_two_versions_of_one_workflow_share_event_types(tmp_path: Path) -> None:
    """Two versions of one workflow may share event types; new instances start on the newest."""
    (tmp_path / "shop_v1.yaml").write_text(VALID)
    (tmp_path / "shop_v2.yaml").write_text(VALID.replace("version: 1", "version: 2"))
    assert load_catalog(tmp_path).latest("shop").version == 2
