"""Payloads of the loan application process (`definitions/loan_application.yaml`).

Every payload carries `application_id`, the instance id. `ApplicationSubmitted` v1 came from the
first web form: a decimal amount always in euros and a term in whole years; v2 has `amount_cents`,
`currency` and `term_months` (lenders now offer 18- and 30-month terms).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.payloads.registry import Upcaster

Id = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Cents = Annotated[int, Field(gt=0, le=1_000_000_000)]  # at most ten million in major units
Iban = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")]
Note = Annotated[str, StringConstraints(max_length=1000)]
Purpose = Literal["home", "car", "education", "renovation", "business", "other"]


class Payload(BaseModel):
    """Unknown fields are rejected and payloads never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ApplicationSubmittedV1(Payload):
    """The legacy form: euros with cents as a decimal, term in whole years."""

    application_id: Id
    applicant_id: Id
    requested_amount: Decimal = Field(gt=0, le=10_000_000, max_digits=10, decimal_places=2)
    term_years: int = Field(ge=1, le=40)
    purpose: Purpose


class ApplicationSubmitted(Payload):
    application_id: Id
    applicant_id: Id
    amount_cents: Cents
    currency: Currency
    term_months: int = Field(ge=6, le=480)
    purpose: Purpose


class DocumentUploaded(Payload):
    """Applicants upload papers at any time; the definition ignores these."""

    application_id: Id
    document_id: Id
    kind: Literal["id_card", "payslip", "bank_statement", "tax_return", "other"]


class CreditCheckPassed(Payload):
    application_id: Id
    bureau: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    score: int = Field(ge=300, le=850)


class CreditCheckFailed(Payload):
    application_id: Id
    bureau: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    score: int | None = Field(default=None, ge=300, le=850)
    reason: Literal["score_too_low", "default_on_record", "identity_mismatch", "no_history"]


class ReviewApproved(Payload):
    application_id: Id
    reviewer_id: Id
    approved_cents: Cents
    currency: Currency
    annual_rate_bp: int = Field(ge=0, le=5_000)  # basis points: 4.25 % is 425


class ReviewRejected(Payload):
    application_id: Id
    reviewer_id: Id
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class ContractSigned(Payload):
    application_id: Id
    contract_id: Id
    signature_method: Literal["qualified_e_signature", "wet_ink"]


class ContractVoided(Payload):
    application_id: Id
    contract_id: Id


class LoanDisbursed(Payload):
    application_id: Id
    contract_id: Id
    amount_cents: Cents
    currency: Currency
    iban: Iban


class DisbursementFailed(Payload):
    application_id: Id
    contract_id: Id
    reason: Literal["account_closed", "iban_invalid", "compliance_hold", "other"]


class ApplicationWithdrawn(Payload):
    application_id: Id
    reason: Note = ""


def application_submitted_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Euros (a decimal string in JSON) become cents; years become months."""
    return {
        "application_id": data["application_id"],
        "applicant_id": data["applicant_id"],
        "amount_cents": int(Decimal(data["requested_amount"]) * 100),
        "currency": "EUR",
        "term_months": data["term_years"] * 12,
        "purpose": data["purpose"],
    }


MODELS: dict[tuple[str, int], type[BaseModel]] = {
    ("ApplicationSubmitted", 1): ApplicationSubmittedV1,
    ("ApplicationSubmitted", 2): ApplicationSubmitted,
    ("DocumentUploaded", 1): DocumentUploaded,
    ("CreditCheckPassed", 1): CreditCheckPassed,
    ("CreditCheckFailed", 1): CreditCheckFailed,
    ("ReviewApproved", 1): ReviewApproved,
    ("ReviewRejected", 1): ReviewRejected,
    ("ContractSigned", 1): ContractSigned,
    ("ContractVoided", 1): ContractVoided,
    ("LoanDisbursed", 1): LoanDisbursed,
    ("DisbursementFailed", 1): DisbursementFailed,
    ("ApplicationWithdrawn", 1): ApplicationWithdrawn,
}
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("ApplicationSubmitted", 1): application_submitted_v1_to_v2,
}
