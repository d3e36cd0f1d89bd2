"""Bank statement parsers: each incoming credit becomes a `PaymentReceived` or a `RejectedLine`.

    StatementError   the file as a whole cannot be read (not XML, not CAMT.053, not GPC): the caller
                     gets a 4xx and nothing is routed, so nothing is half-imported

Two formats, both pure functions over bytes/text so they are testable without HTTP:

* ISO 20022 CAMT.053 (`parse_camt053`), any version .001.02 to .001.08: elements are matched by
  local name, so the namespace version does not matter. Only entries with `CdtDbtInd` CRDT and
  status BOOK are payments; debits and pending/info entries are not ours to route and are skipped.
  A booked credit marked as a reversal (`RvslInd` true) is rejected for the billing department.
* Czech GPC/ABO (`parse_gpc`), the fixed-width 128-character text export of Czech banks: record
  "074" is the statement header, "075" one transaction, "076"-"079" continuation lines (ignored).
  Accounting code 2 is a credit (a payment), 1 a debit (skipped), 4/5 reversals (rejected).

Whatever a line lacks or gets wrong (no variable symbol, 11 digits, 3 decimals, a zero or huge
amount, an unknown currency) makes it a `RejectedLine` with the reason, never an exception: one bad
line must not lose the other lines of the statement.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Literal
from zoneinfo import ZoneInfo

from lxml import etree
from pydantic import ValidationError

from activities.billing import PaymentReceived
from policy.money import to_money
from starter.payment_routing import RejectedLine

ParsedLine = PaymentReceived | RejectedLine
"""One line of a statement: a payment ready to route, or a line the billing department must read."""

StatementFormat = Literal["camt053", "gpc"]

BANK_TIME_ZONE = ZoneInfo("Europe/Prague")
"""Czech statements give booking dates without a time; a date is taken as midnight in Prague."""

DEFAULT_MAX_AMOUNT = Decimal("100000000.00")
"""Larger than any hosting invoice by far; a bigger credit is surely a mistake for a person to see."""


class StatementError(ValueError):
    """The statement as a whole is unreadable; the message says why, for the HTTP answer."""


def detect_format(data: bytes) -> StatementFormat:
    """Tell CAMT.053 from GPC by content, since senders label files inconsistently."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:3]
    if head.startswith(b"<"):
        return "camt053"
    if head == b"074":
        return "gpc"
    raise StatementError(
        "unrecognised statement format: expected CAMT.053 XML (starting with '<') "
        "or a GPC/ABO text file (starting with a '074' header record)"
    )


def parse_statement(
    data: bytes, *, max_amount: Decimal = DEFAULT_MAX_AMOUNT
) -> tuple[StatementFormat, list[ParsedLine]]:
    """Detect the format and parse; raises `StatementError` for an unreadable file."""
    kind = detect_format(data)
    if kind == "camt053":
        return kind, parse_camt053(data, max_amount=max_amount)
    return kind, parse_gpc(decode_gpc(data), max_amount=max_amount)


# ---------------------------------------------------------------------------------------------
# shared checks


def _line_hash(source: str, raw: str) -> str:
    """A stable id for a line that carries none, so a re-sent file deduplicates."""
    return f"{source}:{hashlib.sha256(raw.encode()).hexdigest()[:24]}"


def checked_amount(text: str | None, max_amount: Decimal = DEFAULT_MAX_AMOUNT) -> Decimal:
    """A credit amount: exact, at most 2 decimals, positive, not absurdly large; else ValueError.

    The limit is checked before `to_money`, whose quantize raises `decimal.InvalidOperation` (not a
    ValueError) for values such as "1e300" that exceed the decimal context's precision.
    """
    if text is None or not text.strip():
        raise ValueError("no amount")
    try:
        parsed = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal amount: {text!r}") from exc
    if parsed.is_finite() and parsed > max_amount:
        raise ValueError(f"amount {text.strip()} exceeds the limit of {max_amount}")
    try:
        value = to_money(text.strip())
    except InvalidOperation as exc:
        raise ValueError(f"amount {text.strip()} is out of range") from exc
    if value <= 0:
        raise ValueError(f"amount {value} is not positive")
    if value > max_amount:
        raise ValueError(f"amount {value} exceeds the limit of {max_amount}")
    return value


def _validation_reason(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


def _payment_or_rejection(
    fields: dict[str, object], *, source: str, raw: str, line_id: str, location: str, vs: str | None
) -> ParsedLine:
    """Build the payment; a field PaymentReceived refuses (11-digit VS, 3 decimals) rejects the line."""
    try:
        return PaymentReceived.model_validate(fields)
    except ValidationError as exc:
        return RejectedLine(
            line_id=line_id,
            source=source,
            raw=raw,
            reason=_validation_reason(exc),
            location=location,
            variable_symbol=vs,
        )


def _has_no_variable_symbol(vs: str | None) -> bool:
    """Banks fill an absent VS with zeros; "0000000000" identifies nobody."""
    return vs is None or vs.strip() == "" or (vs.strip().isdigit() and int(vs.strip()) == 0)


# ---------------------------------------------------------------------------------------------
# CAMT.053

_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
)

_LABELLED_VS = re.compile(r"(?<![A-Z0-9])VS[\s:/=.\-]*([0-9]+)(?![A-Z0-9])", re.IGNORECASE)
"""'VS:123', 'VS 123', 'VS123', '/VS/123/SS/...' (the EndToEndId habit of Czech banks); 'VS:12AB' is
no VS at all rather than VS 12."""


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _children(element: etree._Element | None, name: str) -> list[etree._Element]:
    if element is None:
        return []
    return [child for child in element if _local(child) == name]


def _child(element: etree._Element | None, *path: str) -> etree._Element | None:
    for name in path:
        found = _children(element, name)
        if not found:
            return None
        element = found[0]
    return element


def _text(element: etree._Element | None, *path: str) -> str | None:
    found = _child(element, *path)
    if found is None or found.text is None:
        return None
    return found.text.strip() or None


def _find_variable_symbol(entry: etree._Element, tx: etree._Element | None) -> tuple[str, str] | None:
    """The VS and where it was found, trying the places Czech banks use, in this order:

    1. `RmtInf/Strd/CdtrRefInf/Ref` (each one): the structured creditor reference; bare digits or
       a labelled 'VS...' value.
    2. `RmtInf/Ustrd` (each one): free text, only a labelled 'VS:123' / '/VS/123' counts, since
       free text is full of other numbers.
    3. `Refs/EndToEndId`: a labelled '/VS/123/SS/...' value, or bare digits.
    4. `AddtlNtryInf` / `AddtlTxInf`: labelled only.
    The first place that yields a candidate wins, even if the candidate is invalid (11 digits):
    such a line is rejected rather than matched by a guess from a less reliable place.
    """
    candidates: list[tuple[str, str | None, bool]] = []
    rmt = _child(tx, "RmtInf")
    for strd in _children(rmt, "Strd"):
        candidates.append(("RmtInf/Strd/CdtrRefInf/Ref", _text(strd, "CdtrRefInf", "Ref"), True))
    for ustrd in _children(rmt, "Ustrd"):
        candidates.append(("RmtInf/Ustrd", (ustrd.text or "").strip(), False))
    candidates.append(("Refs/EndToEndId", _text(tx, "Refs", "EndToEndId"), True))
    candidates.append(("AddtlTxInf", _text(tx, "AddtlTxInf"), False))
    candidates.append(("AddtlNtryInf", _text(entry, "AddtlNtryInf"), False))
    for where, text, bare_allowed in candidates:
        if not text:
            continue
        labelled = _LABELLED_VS.search(text)
        if labelled:
            return labelled.group(1), where
        if bare_allowed and text.isdigit():
            return text, where
    return None


def _booking_time(entry: etree._Element) -> datetime:
    for where in ("BookgDt", "ValDt"):
        moment, day = _text(entry, where, "DtTm"), _text(entry, where, "Dt")
        try:
            if moment:
                parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=BANK_TIME_ZONE)
            if day:
                return datetime.combine(date.fromisoformat(day[:10]), time(), tzinfo=BANK_TIME_ZONE)
        except ValueError as exc:
            raise ValueError(f"{where} {moment or day!r} is not a date: {exc}") from exc
    raise ValueError("no booking date (BookgDt) or value date (ValDt)")


def _payer(tx: etree._Element | None) -> str | None:
    debtor = _child(tx, "RltdPties", "Dbtr")
    name = _text(debtor, "Nm") or _text(debtor, "Pty", "Nm")  # .08 wraps the party in Pty
    account_id = _child(tx, "RltdPties", "DbtrAcct", "Id")
    account = _text(account_id, "IBAN") or _text(account_id, "Othr", "Id")
    parts = [part for part in (name, account) if part]
    return " ".join(parts) if parts else None


def _entries(root: etree._Element) -> Iterator[etree._Element]:
    for statement_message in _children(root, "BkToCstmrStmt"):
        for statement in _children(statement_message, "Stmt"):
            yield from _children(statement, "Ntry")


def parse_camt053(xml_bytes: bytes, *, max_amount: Decimal = DEFAULT_MAX_AMOUNT) -> list[ParsedLine]:
    """Every booked credit of a CAMT.053 statement, as a payment or a rejected line.

    The payment id is the bank's reference, first found of: `TxDtls/Refs/AcctSvcrRef`,
    `TxDtls/Refs/TxId`, `Ntry/AcctSvcrRef`, `Ntry/NtryRef` (an entry-level id gets '#n' appended
    when the entry is a batch of several transactions); lacking all, a hash of the entry.
    """
    try:
        tree = etree.fromstring(xml_bytes, parser=_XML_PARSER).getroottree()
    except etree.XMLSyntaxError as exc:
        raise StatementError(f"not well-formed XML: {exc}") from exc
    if getattr(tree.docinfo, "doctype", ""):  # lxml-stubs lack DocInfo.doctype
        raise StatementError("XML with a DOCTYPE is not accepted")
    root = tree.getroot()
    namespace = etree.QName(root).namespace or ""
    if _local(root) != "Document" or _child(root, "BkToCstmrStmt") is None:
        raise StatementError("not a CAMT.053 statement: expected Document/BkToCstmrStmt")
    if namespace and "camt.053" not in namespace:
        raise StatementError(f"not a CAMT.053 statement: namespace {namespace}")

    lines: list[ParsedLine] = []
    for number, entry in enumerate(_entries(root), start=1):
        raw = etree.tostring(entry, encoding="unicode")
        location = f"entry {number}"
        try:
            lines.extend(_camt_entry(entry, raw, location, max_amount))
        except Exception as exc:  # one odd entry must not lose the rest of the statement
            lines.append(
                RejectedLine(
                    line_id=_entry_id(entry) or _line_hash("camt053", raw),
                    source="camt053",
                    raw=raw,
                    reason=f"unreadable entry: {exc}",
                    location=location,
                )
            )
    return lines


def _entry_id(entry: etree._Element) -> str | None:
    return _text(entry, "AcctSvcrRef") or _text(entry, "NtryRef")


def _camt_entry(entry: etree._Element, raw: str, location: str, max_amount: Decimal) -> list[ParsedLine]:
    direction = _text(entry, "CdtDbtInd")
    status_element = _child(entry, "Sts")
    status = _text(status_element, "Cd") or _text(entry, "Sts")  # .08: <Sts><Cd>BOOK</Cd></Sts>
    if direction not in ("CRDT", "DBIT"):
        raise ValueError(f"CdtDbtInd is {direction!r}, expected CRDT or DBIT")
    if direction == "DBIT" or status != "BOOK":
        return []  # outgoing money, or not booked yet: not a payment to route
    if (_text(entry, "RvslInd") or "").lower() == "true":
        return [
            RejectedLine(
                line_id=_entry_id(entry) or _line_hash("camt053", raw),
                source="camt053",
                raw=raw,
                reason="reversal entry (RvslInd): not a customer payment",
                location=location,
            )
        ]
    transactions = [tx for details in _children(entry, "NtryDtls") for tx in _children(details, "TxDtls")]
    if len(transactions) <= 1:
        tx = transactions[0] if transactions else None
        return [_camt_transaction(entry, tx, _child(entry, "Amt"), raw, location, max_amount, None)]
    lines: list[ParsedLine] = []
    for index, tx in enumerate(transactions, start=1):
        if (_text(tx, "CdtDbtInd") or "CRDT") != "CRDT":
            continue
        amount = _child(tx, "Amt")
        if amount is None:  # .02 has no TxDtls/Amt; an lxml element is falsy, so no `or` here
            amount = _child(tx, "AmtDtls", "TxAmt", "Amt")
        tx_raw = etree.tostring(tx, encoding="unicode")
        lines.append(
            _camt_transaction(entry, tx, amount, tx_raw, f"{location} tx {index}", max_amount, index)
        )
    return lines


def _camt_transaction(
    entry: etree._Element,
    tx: etree._Element | None,
    amount_element: etree._Element | None,
    raw: str,
    location: str,
    max_amount: Decimal,
    batch_index: int | None,
) -> ParsedLine:
    tx_id = _text(tx, "Refs", "AcctSvcrRef") or _text(tx, "Refs", "TxId")
    entry_id = _entry_id(entry)
    if tx_id:
        payment_id = tx_id
    elif entry_id:
        payment_id = entry_id if batch_index is None else f"{entry_id}#{batch_index}"
    else:
        payment_id = _line_hash("camt053", raw)

    found = _find_variable_symbol(entry, tx)
    vs = found[0] if found else None

    def rejected(reason: str) -> RejectedLine:
        return RejectedLine(
            line_id=payment_id,
            source="camt053",
            raw=raw,
            reason=reason,
            location=location,
            variable_symbol=vs,
        )

    if _has_no_variable_symbol(vs):
        return rejected("no variable symbol (looked in Strd/CdtrRefInf/Ref, Ustrd, EndToEndId)")
    if amount_element is None:
        return rejected("no amount (Amt)")
    currency = amount_element.get("Ccy")
    if not currency:
        return rejected("amount has no currency (Amt/@Ccy)")
    try:
        amount = checked_amount(amount_element.text, max_amount)
        received_at = _booking_time(entry)
    except (ValueError, InvalidOperation) as exc:
        return rejected(str(exc))
    fields: dict[str, object] = {
        "payment_id": payment_id,
        "variable_symbol": vs,
        "amount": amount,
        "received_at": received_at,
        "currency": currency,
        "source": "bank",
        "payer": _payer(tx),
    }
    return _payment_or_rejection(
        fields, source="camt053", raw=raw, line_id=payment_id, location=location, vs=vs
    )


# ---------------------------------------------------------------------------------------------
# GPC / ABO

GPC_RECORD_LENGTH = 128

GPC_CURRENCIES = {
    "0203": "CZK",
    "0978": "EUR",
    "0840": "USD",
    "0826": "GBP",
    "0756": "CHF",
    "0985": "PLN",
    "0348": "HUF",
}
"""ISO 4217 numeric codes as GPC writes them (4 digits) for the currencies Czech banks keep."""


def decode_gpc(data: bytes) -> str:
    """GPC files are windows-1250 by tradition, some banks send UTF-8; positions are per character."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1250", errors="replace")


def _gpc_date(text: str) -> date | None:
    try:
        return datetime.strptime(text, "%d%m%y").date()
    except ValueError:
        return None


def parse_gpc(text: str, *, max_amount: Decimal = DEFAULT_MAX_AMOUNT) -> list[ParsedLine]:
    """Every credit record ("075", accounting code 2) of a GPC statement.

    Layout of a 075 record (1-based columns): 1-3 "075", 4-19 account, 20-35 counter-account
    (prefix 6 + number 10), 36-48 transaction id, 49-60 amount in hellers, 61 accounting code
    (1 debit, 2 credit, 4 reversed debit, 5 reversed credit), 62-71 VS, 72-81 constant symbol
    (74-77 hold the counter-account's bank code), 82-91 specific symbol, 92-97 value date DDMMYY,
    98-117 counter-party name, 118 "0", 119-122 currency (ISO numeric), 123-128 posting date DDMMYY.
    """
    lines: list[ParsedLine] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = line[:3]
        location = f"line {number}"
        if record == "075":
            parsed = _gpc_transaction(line, location, max_amount)
            if parsed is not None:
                lines.append(parsed)
        elif record not in ("074", "076", "077", "078", "079"):
            lines.append(
                RejectedLine(
                    line_id=_line_hash("gpc", f"{number}:{line}"),
                    source="gpc",
                    raw=line,
                    reason=f"unknown GPC record type {record!r}",
                    location=location,
                )
            )
    return lines


def _gpc_transaction(line: str, location: str, max_amount: Decimal) -> ParsedLine | None:
    transaction_id = line[35:48].strip()
    has_id = bool(transaction_id.strip("0"))
    payment_id = transaction_id if has_id else _line_hash("gpc", line)
    vs_field = line[61:71].strip() if len(line) >= 71 else None

    def rejected(reason: str) -> RejectedLine:
        return RejectedLine(
            line_id=payment_id,
            source="gpc",
            raw=line,
            reason=reason,
            location=location,
            variable_symbol=vs_field,
        )

    if len(line) > GPC_RECORD_LENGTH:
        return rejected(f"record is {len(line)} characters long, GPC records have {GPC_RECORD_LENGTH}")
    if len(line) < 122:
        return rejected(f"record is {len(line)} characters long, too short for a GPC 075 record")
    record = line.ljust(GPC_RECORD_LENGTH)  # some exports trim trailing spaces
    code = record[60]
    if code == "1":
        return None  # a debit: outgoing money is not a payment to route
    if code in ("4", "5"):
        return rejected(f"reversal record (accounting code {code}): not a customer payment")
    if code != "2":
        return rejected(f"unknown accounting code {code!r} (1 debit, 2 credit, 4/5 reversal)")
    if _has_no_variable_symbol(vs_field):
        return rejected("no variable symbol (columns 62-71)")
    hellers = record[48:60]
    if not hellers.isdigit():
        return rejected(f"amount {hellers!r} is not a number of hellers (columns 49-60)")
    try:
        amount = checked_amount(str(Decimal(int(hellers)) / 100), max_amount)
    except ValueError as exc:
        return rejected(str(exc))
    currency = GPC_CURRENCIES.get(record[118:122])
    if currency is None:
        return rejected(f"unknown currency code {record[118:122]!r} (columns 119-122)")
    booked = _gpc_date(record[122:128]) or _gpc_date(record[91:97])
    if booked is None:
        return rejected("no valid posting date (columns 123-128) or value date (columns 92-97)")
    name = record[97:117].strip()
    prefix, account, bank = record[19:25].lstrip("0"), record[25:35].lstrip("0"), record[73:77]
    counter_account = f"{prefix + '-' if prefix else ''}{account}/{bank}" if account else None
    payer = " ".join(part for part in (name, counter_account) if part) or None
    fields: dict[str, object] = {
        "payment_id": payment_id,
        "variable_symbol": vs_field,
        "amount": amount,
        "received_at": datetime.combine(booked, time(), tzinfo=BANK_TIME_ZONE),
        "currency": currency,
        "source": "bank",
        "payer": payer,
    }
    return _payment_or_rejection(
        fields, source="gpc", raw=line, line_id=payment_id, location=location, vs=vs_field
    )
