"""Exchange rates: the central bank's fixing for the day an invoice is issued in another currency.

    ExchangeRateError
     ├── RateSourceUnavailable   (network, HTTP error: retried)
     ├── RateFormatError         (the bank's document cannot be read: not retried)
     └── RateNotPublished        (no fixing on or before the day, or not for this currency: not retried)

A source belongs to one central bank and quotes in its home currency: `rate(currency, day)` is how
many home-currency units one unit of `currency` cost at the fixing valid on `day` (the latest
fixing dated on or before it: weekends and holidays use the previous working day's, and so does a
day whose fixing is not published yet). The invoice currency picks the bank, as the Hostico terms
do ("RON po tečaju BNR"): RON invoices ask BNR, CZK invoices ask the ČNB.

Two real sources, each a parser of the bank's published format plus a fetch through an injected
`httpx.AsyncClient` (tests parse fixtures and never touch the network):

- `CnbRates`: ČNB `denni_kurz.txt` — `DD.MM.YYYY #n`, a column line, then
  `země|měna|množství|kód|kurz` rows with decimal commas; `kurz` is per `množství` units.
- `BnrRates`: BNR `nbrfxrates.xml` (and the yearly `nbrfxratesYYYY.xml` archive) — `<Cube date>`
  elements of `<Rate currency multiplier>`; the value is per `multiplier` units.

`FixedRates` answers from a table and records every question, for tests and the simulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Protocol

import httpx
from lxml import etree
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from policy.commerce import invoice_rate
from policy.money import Money
from policy.pricing import round_money

CNB_DAILY_URL = "https://www.cnb.cz/cs/financni-trhy/devizovy-trh/kurzy-devizoveho-trhu/kurzy-devizoveho-trhu/denni_kurz.txt"
"""Takes `?date=DD.MM.YYYY` and answers with the fixing valid on that day."""
BNR_BASE_URL = "https://www.bnr.ro"
"""`/files/xml/years/nbrfxratesYYYY.xml` holds every fixing of a year; `/nbrfxrates.xml` the latest."""
BNR_NAMESPACE = "http://www.bnr.ro/xsd"


class ExchangeRateError(Exception):
    """Root of the exchange-rate adapter's errors."""


class RateSourceUnavailable(ExchangeRateError):
    """The bank could not be reached or answered with an HTTP error; worth another attempt."""


class RateFormatError(ExchangeRateError):
    """The bank's document is not in the format this parser knows; a person must look."""


class RateNotPublished(ExchangeRateError):
    """No fixing on or before the day, or the fixing has no rate for the currency."""


class Fixing(BaseModel):
    """One day's fixing of one central bank: home-currency units per one unit of each currency."""

    bank: str
    home_currency: str
    fixing_date: date
    rates: dict[str, Decimal]

    def rate(self, currency: str) -> Decimal:
        code = currency.upper()
        if code == self.home_currency:
            return Decimal(1)
        try:
            return self.rates[code]
        except KeyError:
            raise RateNotPublished(
                f"{self.bank} fixing of {self.fixing_date} has no rate for {code}"
            ) from None


class RateQuote(BaseModel):
    """A rate with where it came from, so an invoice can record its provenance."""

    bank: str
    home_currency: str
    currency: str
    rate: Decimal
    fixing_date: date


class ExchangeRates(Protocol):
    home_currency: str

    async def rate(self, currency: str, day: date) -> Decimal: ...

    async def quote(self, currency: str, day: date) -> RateQuote: ...


# ----------------------------------------------------------------------------- ČNB


def _decimal(text: str, where: str, *, decimal_comma: bool = False) -> Decimal:
    cleaned = text.strip().replace(",", ".") if decimal_comma else text.strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise RateFormatError(f"{where}: {text!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise RateFormatError(f"{where}: {text!r} is not a positive rate")
    return value


_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def _cnb_date(text: str) -> date | None:
    """`03.01.2025` (Czech file) or `03 Jan 2025` (English file); None if it is neither."""
    parts = text.replace(".", " ").split()
    if len(parts) != 3:
        return None
    day, month_text, year = parts
    if month_text.isdigit():
        month = int(month_text)
    elif month_text.lower() in _MONTHS:
        month = _MONTHS.index(month_text.lower()) + 1
    else:
        return None
    try:
        return date(int(year), month, int(day))
    except ValueError:
        return None


def parse_cnb_daily(data: bytes) -> Fixing:
    """Parse ČNB's `denni_kurz.txt` (Czech or English column line); rates are per one unit."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RateFormatError(f"ČNB fixing is not UTF-8: {exc.reason} at byte {exc.start}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise RateFormatError("ČNB fixing: header and column lines are missing")
    header = lines[0].split("#", 1)[0].strip()
    fixing_date = _cnb_date(header)
    if fixing_date is None:
        raise RateFormatError(f"ČNB fixing: header {lines[0]!r} does not start with a date")
    columns = [c.strip().lower() for c in lines[1].split("|")]
    if columns not in (
        ["země", "měna", "množství", "kód", "kurz"],
        ["country", "currency", "amount", "code", "rate"],
    ):
        raise RateFormatError(f"ČNB fixing: unexpected column line {lines[1]!r}")
    rates: dict[str, Decimal] = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split("|")
        where = f"ČNB fixing line {number}"
        if len(fields) != 5:
            raise RateFormatError(f"{where}: expected 5 fields, got {len(fields)}: {line!r}")
        code = fields[3].strip().upper()
        if len(code) != 3 or not code.isalpha():
            raise RateFormatError(f"{where}: {fields[3]!r} is not a currency code")
        amount = _decimal(fields[2], where)
        rates[code] = _decimal(fields[4], where, decimal_comma=True) / amount
    if not rates:
        raise RateFormatError("ČNB fixing has no rates")
    return Fixing(bank="ČNB", home_currency="CZK", fixing_date=fixing_date, rates=rates)


class CnbRates:
    """ČNB's daily fixing, CZK per unit; one request per day asked, cached."""

    home_currency = "CZK"

    def __init__(self, client: httpx.AsyncClient, url: str = CNB_DAILY_URL) -> None:
        self.client = client
        self.url = url
        self._fixings: dict[date, Fixing] = {}

    async def fixing(self, day: date) -> Fixing:
        if day not in self._fixings:
            data = await _get(self.client, self.url, {"date": day.strftime("%d.%m.%Y")})
            fixing = parse_cnb_daily(data)
            if fixing.fixing_date > day:
                raise RateNotPublished(f"ČNB answered with the fixing of {fixing.fixing_date} for {day}")
            self._fixings[day] = fixing
        return self._fixings[day]

    async def quote(self, currency: str, day: date) -> RateQuote:
        fixing = await self.fixing(day)
        return _quote(fixing, currency)

    async def rate(self, currency: str, day: date) -> Decimal:
        return (await self.quote(currency, day)).rate


# ----------------------------------------------------------------------------- BNR


def parse_bnr_xml(data: bytes) -> list[Fixing]:
    """Parse a BNR `DataSet` (daily, 10-day or yearly file): one `Fixing` per `<Cube>`, oldest first.

    Values are per `multiplier` units (HUF, JPY per 100); an empty `<Rate/>` is skipped.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise RateFormatError(f"BNR fixing is not XML: {exc}") from None
    ns = {"b": BNR_NAMESPACE}
    if root.tag != f"{{{BNR_NAMESPACE}}}DataSet":
        raise RateFormatError(f"BNR fixing: root element is {root.tag!r}, not DataSet")
    home = (root.findtext("b:Body/b:OrigCurrency", namespaces=ns) or "RON").strip().upper()
    fixings: list[Fixing] = []
    for cube in root.iterfind("b:Body/b:Cube", namespaces=ns):
        try:
            fixing_date = date.fromisoformat(cube.get("date", ""))
        except ValueError:
            raise RateFormatError(f"BNR Cube date {cube.get('date')!r} is not YYYY-MM-DD") from None
        rates: dict[str, Decimal] = {}
        for element in cube.iterfind("b:Rate", namespaces=ns):
            code = (element.get("currency") or "").strip().upper()
            where = f"BNR Cube {fixing_date} rate {code or '?'}"
            if len(code) != 3 or not code.isalpha():
                raise RateFormatError(f"{where}: currency attribute is not a code")
            if not (element.text or "").strip():
                continue
            multiplier = _decimal(element.get("multiplier", "1"), where)
            rates[code] = _decimal(element.text or "", where) / multiplier
        fixings.append(Fixing(bank="BNR", home_currency=home, fixing_date=fixing_date, rates=rates))
    if not fixings:
        raise RateFormatError("BNR fixing has no Cube")
    return sorted(fixings, key=lambda f: f.fixing_date)


def fixing_on(fixings: list[Fixing], day: date) -> Fixing:
    """The fixing valid on `day`: the latest one dated on or before it."""
    valid = [f for f in fixings if f.fixing_date <= day]
    if not valid:
        raise RateNotPublished(f"no fixing on or before {day}")
    return max(valid, key=lambda f: f.fixing_date)


class BnrRates:
    """BNR's reference rates, RON per unit, from the yearly archive (the previous year's in early January)."""

    home_currency = "RON"

    def __init__(self, client: httpx.AsyncClient, base_url: str = BNR_BASE_URL) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self._years: dict[int, list[Fixing]] = {}

    async def _year(self, year: int) -> list[Fixing]:
        if year not in self._years:
            data = await _get(self.client, f"{self.base_url}/files/xml/years/nbrfxrates{year}.xml", {})
            self._years[year] = parse_bnr_xml(data)
        return self._years[year]

    async def fixing(self, day: date) -> Fixing:
        try:
            return fixing_on(await self._year(day.year), day)
        except RateNotPublished:
            return fixing_on(await self._year(day.year - 1), day)

    async def quote(self, currency: str, day: date) -> RateQuote:
        return _quote(await self.fixing(day), currency)

    async def rate(self, currency: str, day: date) -> Decimal:
        return (await self.quote(currency, day)).rate


# ----------------------------------------------------------------------------- fixed rates


class FixedRates:
    """A table of rates that never changes; records every question asked, in order."""

    def __init__(
        self, home_currency: str, rates: Mapping[str, Decimal], fixing_date: date | None = None
    ) -> None:
        self.home_currency = home_currency
        self.rates = {code.upper(): value for code, value in rates.items()}
        self.fixing_date = fixing_date
        self.asked: list[tuple[str, date]] = []

    async def quote(self, currency: str, day: date) -> RateQuote:
        self.asked.append((currency, day))
        fixing = Fixing(
            bank="fixed",
            home_currency=self.home_currency,
            fixing_date=self.fixing_date or day,
            rates=self.rates,
        )
        return _quote(fixing, currency)

    async def rate(self, currency: str, day: date) -> Decimal:
        return (await self.quote(currency, day)).rate


def _quote(fixing: Fixing, currency: str) -> RateQuote:
    return RateQuote(
        bank=fixing.bank,
        home_currency=fixing.home_currency,
        currency=currency.upper(),
        rate=fixing.rate(currency),
        fixing_date=fixing.fixing_date,
    )


async def _get(client: httpx.AsyncClient, url: str, params: dict[str, str]) -> bytes:
    try:
        response = await client.get(url, params=params)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise RateSourceUnavailable(f"{url}: HTTP {exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise RateSourceUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None
    return response.content


# ----------------------------------------------------------------------------- activity


class RateForInvoiceInput(BaseModel):
    invoice_currency: str
    price_currency: str
    day: date
    """The invoice day (provider's local date), decided by the workflow."""
    margin_percent: Decimal = Decimal(0)


class InvoiceRate(BaseModel):
    """What the invoice records: the bank, its fixing, the margin and the rate actually applied."""

    invoice_currency: str
    price_currency: str
    day: date
    bank: str
    fixing_date: date
    central_bank_rate: Decimal
    margin_percent: Decimal
    applied_rate: Decimal
    """Invoice-currency units per one price-currency unit; `policy.commerce.convert_invoice` input."""


class ConvertAmountInput(BaseModel):
    """An amount to move between currencies at the day's central bank rate (no margin): credit debits."""

    amount: Money
    from_currency: str
    to_currency: str
    day: date


class ConvertedAmount(BaseModel):
    amount: Money
    """In `to_currency`, rounded once, half up to hundredths."""
    currency: str
    rate: Decimal
    """`to_currency` units per one `from_currency` unit, exact."""
    bank: str
    fixing_date: date


class ExchangeRateActivities:
    """Receives one source per invoice currency (its central bank), keyed by that currency."""

    def __init__(self, sources: Mapping[str, ExchangeRates]) -> None:
        for code, source in sources.items():
            if source.home_currency.upper() != code.upper():
                raise ValueError(f"the source for {code} invoices quotes in {source.home_currency}")
        self.sources = {code.upper(): source for code, source in sources.items()}

    @activity.defn
    async def rate_for_invoice(self, request: RateForInvoiceInput) -> InvoiceRate:
        invoice_currency = request.invoice_currency.upper()
        price_currency = request.price_currency.upper()
        if invoice_currency == price_currency:
            return InvoiceRate(
                invoice_currency=invoice_currency,
                price_currency=price_currency,
                day=request.day,
                bank="none",
                fixing_date=request.day,
                central_bank_rate=Decimal(1),
                margin_percent=Decimal(0),
                applied_rate=Decimal(1),
            )
        source = self.sources.get(invoice_currency)
        if source is None:
            raise ApplicationError(
                f"no exchange-rate source for invoices in {invoice_currency}",
                type="RateNotPublished",
                non_retryable=True,
            )
        try:
            quote = await source.quote(price_currency, request.day)
        except ExchangeRateError as exc:
            raise _application_error(exc) from exc
        return InvoiceRate(
            invoice_currency=invoice_currency,
            price_currency=price_currency,
            day=request.day,
            bank=quote.bank,
            fixing_date=quote.fixing_date,
            central_bank_rate=quote.rate,
            margin_percent=request.margin_percent,
            applied_rate=invoice_rate(quote.rate, request.margin_percent),
        )

    @activity.defn
    async def convert_amount(self, request: ConvertAmountInput) -> ConvertedAmount:
        return await convert_with(self.sources, request)


def _rate_between(
    sources: Mapping[str, ExchangeRates], from_currency: str, to_currency: str
) -> tuple[ExchangeRates, str, bool]:
    """The source to ask, the currency to ask it for, and whether its answer must be inverted."""
    if from_currency in sources:  # e.g. CZK → EUR: the ČNB quotes CZK per EUR; invert it
        return sources[from_currency], to_currency, True
    if to_currency in sources:  # e.g. EUR → RON: the BNR quotes RON per EUR
        return sources[to_currency], from_currency, False
    raise ApplicationError(
        f"no exchange-rate source quotes {from_currency} or {to_currency}",
        type="RateNotPublished",
        non_retryable=True,
    )


async def convert_with(sources: Mapping[str, ExchangeRates], request: ConvertAmountInput) -> ConvertedAmount:
    """The conversion itself, shared by the activity and by callers outside workflows (bulk renewal)."""
    from_currency, to_currency = request.from_currency.upper(), request.to_currency.upper()
    if from_currency == to_currency:
        return ConvertedAmount(
            amount=request.amount, currency=to_currency, rate=Decimal(1), bank="none", fixing_date=request.day
        )
    source, asked, invert = _rate_between(sources, from_currency, to_currency)
    try:
        quote = await source.quote(asked, request.day)
    except ExchangeRateError as exc:
        raise _application_error(exc) from exc
    rate = 1 / quote.rate if invert else quote.rate
    amount = request.amount / quote.rate if invert else request.amount * quote.rate
    return ConvertedAmount(
        amount=round_money(amount),
        currency=to_currency,
        rate=rate,
        bank=quote.bank,
        fixing_date=quote.fixing_date,
    )


def _application_error(exc: ExchangeRateError) -> ApplicationError:
    """An unreachable bank is worth another attempt; a missing rate or unreadable document is not."""
    retryable = isinstance(exc, RateSourceUnavailable)
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=not retryable)
