"""Exchange rates: ČNB and BNR formats parsed from fixtures, fetching through httpx.MockTransport.

No test touches the network. The fixtures under tests/fixtures/rates/ have the shape of the banks'
published files (header, columns, namespace, multipliers, an empty BNR rate); their values are
illustrative, and every expectation below is computed by hand from them.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.exchange_rates import (
    BnrRates,
    CnbRates,
    ExchangeRateActivities,
    FixedRates,
    RateForInvoiceInput,
    RateFormatError,
    RateNotPublished,
    RateSourceUnavailable,
    fixing_on,
    parse_bnr_xml,
    parse_cnb_daily,
)
from policy.commerce import commerce_rules, convert_invoice

FIXTURES = Path(__file__).parent.parent / "fixtures" / "rates"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# ----------------------------------------------------------------------------- ČNB


def test_cnb_daily_fixing_is_parsed_per_unit() -> None:
    fixing = parse_cnb_daily(fixture("cnb_denni_kurz_2025-01-03.txt"))
    assert (fixing.bank, fixing.home_currency, fixing.fixing_date) == ("ČNB", "CZK", date(2025, 1, 3))
    assert len(fixing.rates) == 31
    assert fixing.rate("EUR") == Decimal("25.205")  # EMU|euro|1|EUR|25,205
    assert fixing.rate("HUF") == Decimal("0.06084")  # 100 HUF = 6,084 CZK
    assert fixing.rate("IDR") == Decimal("0.0015")  # 1000 IDR = 1,500 CZK
    assert fixing.rate("czk") == Decimal(1)


def test_cnb_english_file_is_parsed_too() -> None:
    fixing = parse_cnb_daily(fixture("cnb_daily_english_2025-01-03.txt"))
    assert fixing.fixing_date == date(2025, 1, 3) and fixing.rate("EUR") == Decimal("25.205")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "header and column lines are missing"),
        ("2025-01-03 #2\nzemě|měna|množství|kód|kurz\nEMU|euro|1|EUR|25,205\n", "does not start with a date"),
        ("03.01.2025 #2\nzemě|kód|kurz\nEMU|EUR|25,205\n", "unexpected column line"),
        ("03.01.2025 #2\nzemě|měna|množství|kód|kurz\nEMU|euro|1|EUR\n", "line 3: expected 5 fields"),
        ("03.01.2025 #2\nzemě|měna|množství|kód|kurz\nEMU|euro|1|EUR|n/a\n", "'n/a' is not a number"),
        ("03.01.2025 #2\nzemě|měna|množství|kód|kurz\nEMU|euro|0|EUR|25,205\n", "not a positive rate"),
        ("03.01.2025 #2\nzemě|měna|množství|kód|kurz\nEMU|euro|1|EURO|25,205\n", "not a currency code"),
        ("03.01.2025 #2\nzemě|měna|množství|kód|kurz\n", "has no rates"),
    ],
)
def test_a_bad_cnb_file_is_a_format_error(text: str, message: str) -> None:
    with pytest.raises(RateFormatError, match=message):
        parse_cnb_daily(text.encode())


def test_cnb_file_in_another_encoding_is_a_format_error() -> None:
    with pytest.raises(RateFormatError, match="not UTF-8"):
        parse_cnb_daily("03.01.2025 #2\nzemě|měna|množství|kód|kurz\n".encode("cp1250"))


def test_a_currency_missing_from_the_fixing_is_not_published() -> None:
    with pytest.raises(RateNotPublished, match="no rate for XYZ"):
        parse_cnb_daily(fixture("cnb_denni_kurz_2025-01-03.txt")).rate("XYZ")


# ----------------------------------------------------------------------------- BNR


def test_bnr_daily_file_is_parsed_per_unit_and_skips_empty_rates() -> None:
    [fixing] = parse_bnr_xml(fixture("bnr_nbrfxrates_2025-01-03.xml"))
    assert (fixing.bank, fixing.home_currency, fixing.fixing_date) == ("BNR", "RON", date(2025, 1, 3))
    assert fixing.rate("EUR") == Decimal("4.9742")
    assert fixing.rate("CZK") == Decimal("0.1974")
    assert fixing.rate("HUF") == Decimal("0.012037")  # multiplier 100: 1.2037 RON per 100 HUF
    assert "XDR" not in fixing.rates  # <Rate currency="XDR"></Rate>


def test_bnr_yearly_file_gives_the_fixing_valid_on_each_day() -> None:
    fixings = parse_bnr_xml(fixture("bnr_nbrfxrates2025_excerpt.xml"))
    assert [f.fixing_date for f in fixings] == [date(2025, 1, 3), date(2025, 1, 6), date(2025, 1, 7)]
    assert fixing_on(fixings, date(2025, 1, 6)).rate("CZK") == Decimal("0.1977")
    # Saturday and Sunday use Friday's fixing
    assert fixing_on(fixings, date(2025, 1, 4)).fixing_date == date(2025, 1, 3)
    assert fixing_on(fixings, date(2025, 1, 5)).fixing_date == date(2025, 1, 3)
    with pytest.raises(RateNotPublished, match="no fixing on or before 2025-01-02"):
        fixing_on(fixings, date(2025, 1, 2))


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<DataSet", "not XML"),
        (b'<DataSet xmlns="http://example.com"/>', "not DataSet"),
        (b'<DataSet xmlns="http://www.bnr.ro/xsd"><Body/></DataSet>', "has no Cube"),
        (
            b'<DataSet xmlns="http://www.bnr.ro/xsd"><Body><Cube date="3.1.2025"/></Body></DataSet>',
            "is not YYYY-MM-DD",
        ),
        (
            b'<DataSet xmlns="http://www.bnr.ro/xsd"><Body><Cube date="2025-01-03">'
            b'<Rate currency="EUR">4,97</Rate></Cube></Body></DataSet>',
            "'4,97' is not a number",
        ),
    ],
)
def test_a_bad_bnr_file_is_a_format_error(xml: bytes, message: str) -> None:
    with pytest.raises(RateFormatError, match=message):
        parse_bnr_xml(xml)


# ----------------------------------------------------------------------------- fetching (mocked transport)


def transport(routes: dict[str, bytes], seen: list[httpx.URL]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        body = routes.get(request.url.path)
        return httpx.Response(200, content=body) if body is not None else httpx.Response(404)

    return httpx.MockTransport(handle)


async def test_cnb_asks_for_the_day_and_caches_it() -> None:
    seen: list[httpx.URL] = []
    routes = {"/denni_kurz.txt": fixture("cnb_denni_kurz_2025-01-03.txt")}
    async with httpx.AsyncClient(transport=transport(routes, seen)) as client:
        rates = CnbRates(client, url="https://cnb.test/denni_kurz.txt")
        assert await rates.rate("EUR", date(2025, 1, 4)) == Decimal("25.205")  # Saturday: Friday's fixing
        quote = await rates.quote("RON", date(2025, 1, 4))
    assert quote.fixing_date == date(2025, 1, 3) and quote.rate == Decimal("5.068")
    assert [str(url) for url in seen] == ["https://cnb.test/denni_kurz.txt?date=04.01.2025"]


async def test_cnb_answer_dated_after_the_day_is_refused() -> None:
    seen: list[httpx.URL] = []
    routes = {"/denni_kurz.txt": fixture("cnb_denni_kurz_2025-01-03.txt")}
    async with httpx.AsyncClient(transport=transport(routes, seen)) as client:
        with pytest.raises(RateNotPublished, match="fixing of 2025-01-03 for 2025-01-02"):
            await CnbRates(client, url="https://cnb.test/denni_kurz.txt").rate("EUR", date(2025, 1, 2))


async def test_bnr_reads_the_yearly_archive_and_falls_back_to_last_year_in_early_january() -> None:
    seen: list[httpx.URL] = []
    routes = {
        "/files/xml/years/nbrfxrates2025.xml": fixture("bnr_nbrfxrates2025_excerpt.xml"),
        "/files/xml/years/nbrfxrates2024.xml": fixture("bnr_nbrfxrates2024_excerpt.xml"),
    }
    async with httpx.AsyncClient(transport=transport(routes, seen)) as client:
        rates = BnrRates(client, base_url="https://bnr.test/")
        assert await rates.rate("CZK", date(2025, 1, 7)) == Decimal("0.1979")
        # Jan 1-2 have no 2025 fixing yet: Dec 31's from the 2024 archive
        quote = await rates.quote("CZK", date(2025, 1, 2))
        assert (quote.fixing_date, quote.rate) == (date(2024, 12, 31), Decimal("0.1973"))
        await rates.rate("EUR", date(2025, 1, 6))  # cached: no third request
    assert [url.path for url in seen] == [
        "/files/xml/years/nbrfxrates2025.xml",
        "/files/xml/years/nbrfxrates2024.xml",
    ]


async def test_an_unreachable_bank_is_a_source_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(RateSourceUnavailable, match="ConnectError"):
            await BnrRates(client, base_url="https://bnr.test").rate("CZK", date(2025, 1, 6))
    async with httpx.AsyncClient(transport=transport({}, [])) as client:
        with pytest.raises(RateSourceUnavailable, match="HTTP 404"):
            await CnbRates(client, url="https://cnb.test/missing.txt").rate("EUR", date(2025, 1, 6))


# ----------------------------------------------------------------------------- activity


async def test_rate_for_invoice_records_bank_fixing_and_margin() -> None:
    bnr = FixedRates("RON", {"CZK": Decimal("0.1974")}, fixing_date=date(2025, 1, 3))
    activities = ExchangeRateActivities({"RON": bnr})
    hostico = commerce_rules("hostico")
    request = RateForInvoiceInput(
        invoice_currency=hostico.invoice_currency,
        price_currency="CZK",
        day=date(2025, 1, 4),
        margin_percent=hostico.invoice_rate_margin_percent,
    )
    rate = await ActivityEnvironment().run(activities.rate_for_invoice, request)
    assert (rate.bank, rate.fixing_date, rate.central_bank_rate) == (
        "fixed",
        date(2025, 1, 3),
        Decimal("0.1974"),
    )
    assert rate.applied_rate == Decimal("0.201348")  # 0.1974 x 1.02
    assert bnr.asked == [("CZK", date(2025, 1, 4))]
    # the invoice of 1200.00 CZK: 1200 x 0.201348 = 241.6176 -> 241.62 RON
    assert convert_invoice(Decimal("1200.00"), rate.central_bank_rate, rate.margin_percent)[0] == Decimal(
        "241.62"
    )


async def test_same_currency_needs_no_bank() -> None:
    activities = ExchangeRateActivities({})
    request = RateForInvoiceInput(invoice_currency="czk", price_currency="CZK", day=date(2025, 1, 4))
    rate = await ActivityEnvironment().run(activities.rate_for_invoice, request)
    assert (rate.bank, rate.applied_rate) == ("none", Decimal(1))


@pytest.mark.parametrize(
    ("sources", "currency", "error_type", "non_retryable"),
    [
        ({}, "CZK", "RateNotPublished", True),
        ({"RON": FixedRates("RON", {})}, "CZK", "RateNotPublished", True),
    ],
)
async def test_rate_errors_become_application_errors(
    sources: dict[str, FixedRates], currency: str, error_type: str, non_retryable: bool
) -> None:
    activities = ExchangeRateActivities(sources)
    request = RateForInvoiceInput(invoice_currency="RON", price_currency=currency, day=date(2025, 1, 4))
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities.rate_for_invoice, request)
    assert (caught.value.type, caught.value.non_retryable) == (error_type, non_retryable)


async def test_an_unreachable_bank_is_retried_by_the_activity() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        activities = ExchangeRateActivities({"RON": BnrRates(client, base_url="https://bnr.test")})
        request = RateForInvoiceInput(invoice_currency="RON", price_currency="CZK", day=date(2025, 1, 6))
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(activities.rate_for_invoice, request)
    assert (caught.value.type, caught.value.non_retryable) == ("RateSourceUnavailable", False)


def test_a_source_must_quote_in_the_invoice_currency() -> None:
    with pytest.raises(ValueError, match="quotes in CZK"):
        ExchangeRateActivities({"RON": FixedRates("CZK", {})})


# ----------------------------------------------------------------------------- credit conversion


async def test_a_czk_price_becomes_eur_credit_at_the_cnb_rate_rounded_once() -> None:
    from activities.exchange_rates import ConvertAmountInput, ExchangeRateActivities, FixedRates

    cnb = FixedRates("CZK", {"EUR": Decimal("25.205")}, fixing_date=date(2025, 1, 3))
    activities = ExchangeRateActivities({"CZK": cnb})
    request = ConvertAmountInput(
        amount=Decimal("1200.00"), from_currency="CZK", to_currency="EUR", day=date(2025, 1, 4)
    )
    converted = await ActivityEnvironment().run(activities.convert_amount, request)
    assert (converted.amount, converted.currency, converted.bank) == (Decimal("47.61"), "EUR", "fixed")
    assert converted.rate == 1 / Decimal("25.205") and converted.fixing_date == date(2025, 1, 3)
    assert cnb.asked == [("EUR", date(2025, 1, 4))]


async def test_conversion_asks_the_target_currency_s_bank_when_the_source_has_none() -> None:
    from activities.exchange_rates import ConvertAmountInput, ExchangeRateActivities, FixedRates

    bnr = FixedRates("RON", {"EUR": Decimal("4.9743")})
    activities = ExchangeRateActivities({"RON": bnr})
    env = ActivityEnvironment()
    to_ron = ConvertAmountInput(
        amount=Decimal("10.00"), from_currency="EUR", to_currency="RON", day=date(2025, 1, 6)
    )
    assert (await env.run(activities.convert_amount, to_ron)).amount == Decimal("49.74")
    same = to_ron.model_copy(update={"to_currency": "EUR"})
    assert (await env.run(activities.convert_amount, same)).amount == Decimal("10.00")
    nowhere = to_ron.model_copy(update={"from_currency": "USD", "to_currency": "GBP"})
    with pytest.raises(ApplicationError) as caught:
        await env.run(activities.convert_amount, nowhere)
    assert caught.value.type == "RateNotPublished" and caught.value.non_retryable
