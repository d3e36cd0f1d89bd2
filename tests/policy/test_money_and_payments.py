"""Money, variable symbols, period prices and the decision on one incoming payment (SPEC §3)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from policy.money import Money, VariableSymbol, normalize_variable_symbol, to_money
from policy.payments import (
    PAYABLE_AFTER_DELETION,
    InvoicePurpose,
    InvoiceRecord,
    InvoiceState,
    PaymentResult,
    decide_payment,
)
from policy.pricing import price_for_period, round_money, yearly_price_from

# ----------------------------------------------------------------------------- to_money


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1200", "1200.00"),
        ("1200.5", "1200.50"),
        ("0.01", "0.01"),
        ("91.58", "91.58"),
        (Decimal("500"), "500.00"),
        (7, "7.00"),
        ("1E+3", "1000.00"),
    ],
)
def test_to_money_accepts_exact_amounts(value: object, expected: str) -> None:
    amount = to_money(value)
    assert isinstance(amount, Decimal)
    assert str(amount) == expected
    assert amount.as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1200.0, "must not be a float"),
        (0.1, "must not be a float"),
        (float("nan"), "must not be a float"),
        ("1.005", "more than 2 decimal places"),
        ("0.001", "more than 2 decimal places"),
        (Decimal("99.999"), "more than 2 decimal places"),
        ("NaN", "not a finite amount"),
        ("sNaN", "not a finite amount"),
        ("Infinity", "not a finite amount"),
        ("-inf", "not a finite amount"),
        (Decimal("Infinity"), "not a finite amount"),
        ("twelve", "not a decimal amount"),
        ("", "not a decimal amount"),
        ("1,50", "not a decimal amount"),
        (None, "not a decimal amount"),
    ],
)
def test_to_money_refuses(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        to_money(value)


def test_to_money_refuses_an_amount_too_big_to_hold_hellers_with_a_value_error() -> None:
    with pytest.raises(ValueError):
        to_money("1E+40")


class Priced(BaseModel):
    amount: Money


def test_money_field_validates_and_serialises_as_a_string() -> None:
    assert Priced(amount="110").amount == Decimal("110.00")
    assert Priced(amount=Decimal("110.00")).model_dump_json() == '{"amount":"110.00"}'
    with pytest.raises(ValidationError, match="float"):
        Priced(amount=110.0)
    with pytest.raises(ValidationError, match="2 decimal places"):
        Priced(amount="110.001")


# ----------------------------------------------------------------------------- variable symbols


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("12345678", "12345678"),
        ("0012345678", "12345678"),
        ("1234567890", "1234567890"),
        ("  0000000042 ", "42"),
        ("0", "0"),
        ("0000000000", "0"),
        ("00001234567890", "1234567890"),  # zero padding beyond 10 places is still the same VS
    ],
)
def test_variable_symbol_normalised(value: str, canonical: str) -> None:
    assert normalize_variable_symbol(value) == canonical


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("12345678901", "at most 10 digits"),
        ("99999999999", "at most 10 digits"),
        ("", "digits only"),
        ("12 34", "digits only"),
        ("12-34", "digits only"),
        ("-1234", "digits only"),
        ("+1234", "digits only"),
        ("1234a", "digits only"),
        ("1.5", "digits only"),
        ("١٢٣٤", "digits only"),  # Arabic-Indic digits
        ("１２３４", "digits only"),  # fullwidth digits
        ("12³", "digits only"),  # superscript three
        ("٠012345", "digits only"),
    ],
)
def test_variable_symbol_refused(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_variable_symbol(value)


class Paid(BaseModel):
    variable_symbol: VariableSymbol


def test_variable_symbol_field() -> None:
    assert Paid(variable_symbol="0012345678").variable_symbol == "12345678"
    with pytest.raises(ValidationError):
        Paid(variable_symbol="１２３")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=9_999_999_999), st.integers(min_value=0, max_value=10))
def test_variable_symbol_padding_never_matters(number: int, zeros: int) -> None:
    padded = "0" * zeros + str(number)
    assert normalize_variable_symbol(padded) == str(number)
    assert normalize_variable_symbol(str(number).zfill(10)) == str(number)


# ----------------------------------------------------------------------------- pricing


@pytest.mark.parametrize(
    ("yearly", "period", "surcharge", "price"),
    [
        ("1200.00", "P1M", "10", "110.00"),  # 1200 / 12 = 100, + 10 %
        ("999.00", "P1M", "10", "91.58"),  # 999 / 12 = 83.25, * 1.1 = 91.575 -> half up 91.58
        ("1000.00", "P1M", "10", "91.67"),  # 83.333… * 1.1 = 91.666…
        ("12.00", "P1M", "0", "1.00"),
        ("1200.00", "P3M", "10", "330.00"),
        ("999.00", "P2M", "10", "183.15"),  # 2 * 91.575 rounded once, not twice (183.16)
        ("1200.00", "P1Y", "10", "1200.00"),  # yearly: no surcharge
        ("999.90", "P2Y", "10", "1999.80"),
        ("1200.00", "P1Y1M", "10", "1310.00"),
        ("0.00", "P1M", "10", "0.00"),
    ],
)
def test_price_for_period(yearly: str, period: str, surcharge: str, price: str) -> None:
    result = price_for_period(Decimal(yearly), period, Decimal(surcharge))
    assert result == Decimal(price)
    assert result.as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("price", "period", "surcharge", "yearly"),
    [
        ("110.00", "P1M", "10", "1200.00"),
        ("91.58", "P1M", "10", "999.05"),  # 91.58 * 12 / 1.1 = 999.054…: a monthly price loses hellers
        ("330.00", "P3M", "10", "1200.00"),
        ("1200.00", "P1Y", "10", "1200.00"),
        ("2400.00", "P2Y", "10", "1200.00"),
        ("1999.80", "P2Y", "10", "999.90"),
        ("1310.00", "P1Y1M", "10", "1200.00"),
    ],
)
def test_yearly_price_from(price: str, period: str, surcharge: str, yearly: str) -> None:
    assert yearly_price_from(Decimal(price), period, Decimal(surcharge)) == Decimal(yearly)


def test_round_money_is_half_up() -> None:
    assert round_money(Decimal("0.005")) == Decimal("0.01")
    assert round_money(Decimal("0.0049")) == Decimal("0.00")
    assert round_money(Decimal("2.675")) == Decimal("2.68")  # a float would give 2.67
    assert round_money(Decimal("-0.005")) == Decimal("-0.01")


HELLERS = st.integers(min_value=1, max_value=10_000_000).map(lambda n: Decimal(n) / 100)


@settings(max_examples=300, deadline=None)
@given(HELLERS, st.sampled_from(["P1M", "P2M", "P3M", "P6M"]), st.sampled_from(["0", "10", "25"]))
def test_price_survives_a_round_trip_through_the_yearly_price(
    price: Decimal, period: str, surcharge: str
) -> None:
    """What the customer was charged is charged again: price -> yearly -> price is exact.

    (This holds for periods that cost less than a year; for P1Y1M one heller of the yearly price
    is worth more than a heller of the period price, so not every price has a yearly price.)
    """
    percent = Decimal(surcharge)
    yearly = yearly_price_from(price, period, percent)
    assert price_for_period(yearly, period, percent) == price


@settings(max_examples=300, deadline=None)
@given(HELLERS, st.sampled_from(["P1M", "P3M", "P1Y1M"]))
def test_yearly_price_round_trip_is_within_rounding(yearly: Decimal, period: str) -> None:
    percent = Decimal("10")
    back = yearly_price_from(price_for_period(yearly, period, percent), period, percent)
    # one heller of a monthly price is worth 12 / 1.1 = 10.9 hellers a year
    assert abs(back - yearly) <= Decimal("0.06")


@settings(max_examples=200, deadline=None)
@given(HELLERS, st.integers(min_value=1, max_value=10))
def test_yearly_periods_are_exact_multiples(yearly: Decimal, years: int) -> None:
    period = f"P{years}Y"
    price = price_for_period(yearly, period, Decimal("10"))
    assert price == yearly * years
    assert yearly_price_from(price, period, Decimal("10")) == yearly


@settings(max_examples=200, deadline=None)
@given(HELLERS.filter(lambda amount: amount >= 1))
def test_monthly_costs_more_than_a_twelfth_with_a_surcharge(yearly: Decimal) -> None:
    monthly = price_for_period(yearly, "P1M", Decimal("10"))
    assert monthly * 12 >= yearly
    assert monthly == round_money(yearly / 12 * Decimal("1.1"))


# ----------------------------------------------------------------------------- decide_payment


def invoice(
    variable_symbol: str,
    amount: str = "1200.00",
    *,
    status: InvoiceState = InvoiceState.OPEN,
    purpose: InvoicePurpose = InvoicePurpose.RENEWAL,
    cancel_reason: str | None = None,
) -> InvoiceRecord:
    return InvoiceRecord(
        variable_symbol=variable_symbol,
        amount=Decimal(amount),
        issued_on=date(2027, 5, 31),
        due_on=date(2027, 6, 30),
        purpose=purpose,
        period="P1Y",
        status=status,
        cancel_reason=cancel_reason,
    )


OPEN = invoice("2027000002")
CANCELLED = invoice("2027000001", status=InvoiceState.CANCELLED, cancel_reason="billing details changed")
PAID = invoice("2026000001", status=InvoiceState.PAID)
HISTORY = [PAID, CANCELLED, OPEN]


def test_payment_of_the_open_invoice_is_applied() -> None:
    decision = decide_payment("2027000002", Decimal("1200.00"), HISTORY, service_gone=False)
    assert decision.result is PaymentResult.APPLIED
    assert decision.invoice == OPEN
    assert "2027000002" in decision.reason


def test_amount_compares_by_value_not_by_representation() -> None:
    decision = decide_payment("2027000002", Decimal("1200"), HISTORY, service_gone=False)
    assert decision.result is PaymentResult.APPLIED


def test_invoice_record_keeps_the_canonical_variable_symbol() -> None:
    assert invoice("0012345678").variable_symbol == "12345678"
    decision = decide_payment("12345678", Decimal("1200.00"), [invoice("0012345678")], service_gone=False)
    assert decision.result is PaymentResult.APPLIED


@pytest.mark.parametrize(
    ("variable_symbol", "amount", "reason", "with_invoice"),
    [
        ("9999999999", "1200.00", "unknown variable symbol 9999999999", None),
        (
            "2027000001",
            "1200.00",
            "stale variable symbol 2027000001: invoice cancelled (billing details changed)",
            CANCELLED,
        ),
        ("2026000001", "1200.00", "stale variable symbol 2026000001: invoice already paid", PAID),
        ("2027000002", "1199.99", "amount 1199.99 does not match invoice amount 1200.00", OPEN),
        ("2027000002", "1200.01", "does not match", OPEN),
        ("2027000002", "2400.00", "does not match", OPEN),
    ],
    ids=["unknown-vs", "cancelled-vs", "paid-vs", "underpaid", "overpaid-by-a-heller", "paid-twice-in-one"],
)
def test_payment_held_for_the_billing_department(
    variable_symbol: str, amount: str, reason: str, with_invoice: InvoiceRecord | None
) -> None:
    decision = decide_payment(variable_symbol, Decimal(amount), HISTORY, service_gone=False)
    assert decision.result is PaymentResult.HELD
    assert reason in decision.reason
    assert decision.invoice == with_invoice


def test_cancelled_invoice_without_reason_says_reissued() -> None:
    stale = invoice("5", status=InvoiceState.CANCELLED)
    decision = decide_payment("5", Decimal("1200.00"), [stale], service_gone=False)
    assert decision.result is PaymentResult.HELD
    assert "(reissued)" in decision.reason


def test_no_invoices_at_all_is_held() -> None:
    decision = decide_payment("123", Decimal("1.00"), [], service_gone=False)
    assert decision.result is PaymentResult.HELD


@pytest.mark.parametrize("variable_symbol", ["2027000002", "2027000001", "9999999999"])
def test_payment_for_a_deleted_service_is_returned(variable_symbol: str) -> None:
    decision = decide_payment(variable_symbol, Decimal("1200.00"), HISTORY, service_gone=True)
    assert decision.result is PaymentResult.RETURNED
    assert "returned" in decision.reason


@pytest.mark.parametrize("service_gone", [False, True])
@pytest.mark.parametrize("seen", list(PaymentResult))
def test_duplicate_delivery_is_acknowledged_once(seen: PaymentResult, service_gone: bool) -> None:
    decision = decide_payment(
        "2027000002", Decimal("1200.00"), HISTORY, service_gone=service_gone, already_seen=seen
    )
    assert decision.result is PaymentResult.DUPLICATE
    assert seen.value in decision.reason
    assert decision.invoice is None


@pytest.mark.parametrize("purpose", sorted(PAYABLE_AFTER_DELETION))
def test_restore_invoice_paid_after_deletion_is_applied(purpose: InvoicePurpose) -> None:
    restore = invoice("2027000003", "1700.00", purpose=purpose)
    cancelled_renewal = invoice("2027000002", status=InvoiceState.CANCELLED, cancel_reason="service deleted")
    invoices = [cancelled_renewal, restore]
    decision = decide_payment("2027000003", Decimal("1700.00"), invoices, service_gone=True)
    assert decision.result is PaymentResult.APPLIED
    assert decision.invoice == restore
    # the wrong amount for a restore is held, not returned: the invoice exists and is open
    wrong = decide_payment("2027000003", Decimal("1200.00"), invoices, service_gone=True)
    assert wrong.result is PaymentResult.HELD
    # the old renewal VS after deletion is returned
    late = decide_payment("2027000002", Decimal("1200.00"), invoices, service_gone=True)
    assert late.result is PaymentResult.RETURNED


def test_paid_restore_invoice_after_deletion_is_returned_not_applied_twice() -> None:
    restore = invoice("2027000003", "1700.00", purpose=InvoicePurpose.RESTORE, status=InvoiceState.PAID)
    decision = decide_payment("2027000003", Decimal("1700.00"), [restore], service_gone=True)
    assert decision.result is PaymentResult.RETURNED


def test_the_latest_invoice_with_a_reused_symbol_decides() -> None:
    older = invoice("77", status=InvoiceState.CANCELLED)
    newer = invoice("77", "1300.00")
    decision = decide_payment("77", Decimal("1300.00"), [older, newer], service_gone=False)
    assert decision.result is PaymentResult.APPLIED
    assert decision.invoice == newer


INVOICE_STATES = st.sampled_from(list(InvoiceState))
PURPOSES = st.sampled_from(list(InvoicePurpose))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=6),
            INVOICE_STATES,
            PURPOSES,
            st.integers(min_value=1, max_value=3),
        ),
        max_size=6,
    ),
    st.integers(min_value=1, max_value=7),
    st.integers(min_value=1, max_value=3),
    st.booleans(),
    st.none() | st.sampled_from(list(PaymentResult)),
)
def test_every_payment_has_exactly_one_defined_outcome(
    rows: list[tuple[int, InvoiceState, InvoicePurpose, int]],
    variable_symbol: int,
    amount: int,
    service_gone: bool,
    seen: PaymentResult | None,
) -> None:
    invoices = [
        invoice(str(vs), f"{price}00.00", status=status, purpose=purpose)
        for vs, status, purpose, price in rows
    ]
    decision = decide_payment(
        str(variable_symbol),
        Decimal(f"{amount}00.00"),
        invoices,
        service_gone=service_gone,
        already_seen=seen,
    )
    assert decision.reason
    matching = [i for i in invoices if i.variable_symbol == str(variable_symbol)]
    latest = matching[-1] if matching else None
    if seen is not None:
        assert decision.result is PaymentResult.DUPLICATE
    elif decision.result is PaymentResult.APPLIED:
        assert latest is not None and decision.invoice == latest
        assert latest.status is InvoiceState.OPEN
        assert latest.amount == Decimal(f"{amount}00.00")
        if service_gone:
            assert latest.purpose in PAYABLE_AFTER_DELETION
    elif decision.result is PaymentResult.RETURNED:
        assert service_gone
    else:
        assert decision.result is PaymentResult.HELD
        assert not (
            latest is not None
            and latest.status is InvoiceState.OPEN
            and latest.amount == Decimal(f"{amount}00.00")
        )


def test_a_payment_in_another_currency_than_its_invoice_is_held() -> None:
    invoice = InvoiceRecord(
        variable_symbol="2027000001",
        amount=Decimal("242.23"),
        issued_on=date(2027, 1, 1),
        due_on=date(2027, 1, 31),
        period="1y",
        purpose=InvoicePurpose.RENEWAL,
        currency="RON",
    )
    wrong = decide_payment("2027000001", Decimal("242.23"), [invoice], service_gone=False, currency="CZK")
    assert (wrong.result, wrong.reason) == (PaymentResult.HELD, "payment in CZK for an invoice in RON")
    right = decide_payment("2027000001", Decimal("242.23"), [invoice], service_gone=False, currency="RON")
    assert right.result is PaymentResult.APPLIED
    # An invoice without a currency is in the price currency; an unstated payment currency is not checked.
    plain = invoice.model_copy(update={"currency": None})
    czk = decide_payment("2027000001", Decimal("242.23"), [plain], service_gone=False, currency="CZK")
    assert czk.result is PaymentResult.APPLIED
    eur = decide_payment(
        "2027000001", Decimal("242.23"), [plain], service_gone=False, currency="EUR", price_currency="CZK"
    )
    assert eur.result is PaymentResult.HELD
    assert decide_payment("2027000001", Decimal("242.23"), [invoice], service_gone=False).result is (
        PaymentResult.APPLIED
    )
