"""The statement parsers on their own: every credit line becomes a payment or a rejected line."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from activities.billing import PaymentReceived
from starter.bank_statements import (
    StatementError,
    decode_gpc,
    detect_format,
    parse_camt053,
    parse_gpc,
    parse_statement,
)
from starter.payment_routing import RejectedLine

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bank"
PRAGUE = ZoneInfo("Europe/Prague")


def camt(entries: str, version: str = "02") -> bytes:
    """A minimal statement around the given <Ntry> elements."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{version}">
  <BkToCstmrStmt><GrpHdr><MsgId>M</MsgId></GrpHdr>
    <Stmt><Id>S</Id>{entries}</Stmt>
  </BkToCstmrStmt>
</Document>""".encode()


def entry(
    *,
    ref: str = "REF1",
    amount: str = "100.00",
    currency: str | None = "CZK",
    direction: str = "CRDT",
    status: str = "<Sts>BOOK</Sts>",
    details: str = "<RmtInf><Strd><CdtrRefInf><Ref>2024000101</Ref></CdtrRefInf></Strd></RmtInf>",
    extra: str = "",
) -> str:
    ccy = f' Ccy="{currency}"' if currency else ""
    return f"""<Ntry><Amt{ccy}>{amount}</Amt><CdtDbtInd>{direction}</CdtDbtInd>{status}
        <BookgDt><Dt>2024-05-03</Dt></BookgDt><AcctSvcrRef>{ref}</AcctSvcrRef>{extra}
        <NtryDtls><TxDtls>{details}</TxDtls></NtryDtls></Ntry>"""


def only(lines: list[PaymentReceived | RejectedLine]) -> PaymentReceived | RejectedLine:
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------------------------------------
# CAMT.053


def test_camt_sample_gives_four_payments_and_one_rejected_line() -> None:
    lines = parse_camt053((FIXTURES / "camt053_sample.xml").read_bytes())

    payments = [line for line in lines if isinstance(line, PaymentReceived)]
    assert [(p.payment_id, p.variable_symbol, p.amount) for p in payments] == [
        ("24050300001", "2024000101", Decimal("1200.00")),  # Strd/CdtrRefInf/Ref
        ("24050300002", "2024000077", Decimal("1200.00")),  # EndToEndId /VS/.../SS//KS/...
        ("24050300003", "555123", Decimal("499.00")),  # Ustrd "VS:0000555123", zeros dropped
        ("24050300004", "2024000103", Decimal("1000.00")),  # Strd Ref "VS2024000103"
    ]
    assert payments[0].received_at == datetime(2024, 5, 3, tzinfo=PRAGUE)
    assert payments[0].payer == "Jan Novák CZ5508000000001234567899"
    assert {p.currency for p in payments} == {"CZK"}
    assert {p.source for p in payments} == {"bank"}
    rejected = lines[4]
    assert isinstance(rejected, RejectedLine)
    assert rejected.line_id == "24050300005"
    assert rejected.location == "entry 5"
    assert rejected.variable_symbol == "20240001011"
    assert "at most 10 digits" in rejected.reason
    assert "<Ref>20240001011</Ref>" in rejected.raw


def test_camt_version_08_with_nested_status_party_and_datetime() -> None:
    xml = camt(
        """<Ntry><NtryRef>N1</NtryRef><Amt Ccy="EUR">49.90</Amt><CdtDbtInd>CRDT</CdtDbtInd>
        <Sts><Cd>BOOK</Cd></Sts><BookgDt><DtTm>2024-05-03T10:15:00+02:00</DtTm></BookgDt>
        <NtryDtls><TxDtls><Refs><TxId>TX-77</TxId></Refs>
          <RltdPties><Dbtr><Pty><Nm>ACME s.r.o.</Nm></Pty></Dbtr></RltdPties>
          <RmtInf><Ustrd>faktura VS 2024000101</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>""",
        version="08",
    )
    payment = only(parse_camt053(xml))
    assert isinstance(payment, PaymentReceived)
    assert payment.payment_id == "TX-77"  # TxDtls/Refs/TxId before Ntry/NtryRef
    assert payment.currency == "EUR"
    assert payment.amount == Decimal("49.90")
    assert payment.payer == "ACME s.r.o."
    assert payment.received_at == datetime.fromisoformat("2024-05-03T10:15:00+02:00")


def test_camt_without_namespace_is_read_too() -> None:
    xml = camt(entry()).replace(b' xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"', b"")
    assert isinstance(only(parse_camt053(xml)), PaymentReceived)


@pytest.mark.parametrize(
    "ntry",
    [
        entry(direction="DBIT"),
        entry(status="<Sts>PDNG</Sts>"),
        entry(status="<Sts><Cd>INFO</Cd></Sts>"),
    ],
    ids=["debit", "pending", "info"],
)
def test_camt_skips_debits_and_unbooked_entries(ntry: str) -> None:
    assert parse_camt053(camt(ntry)) == []


def test_camt_batch_entry_gives_one_payment_per_transaction() -> None:
    xml = camt(
        """<Ntry><Amt Ccy="CZK">300.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>2024-05-03</Dt></BookgDt><AcctSvcrRef>BATCH</AcctSvcrRef>
        <NtryDtls>
          <TxDtls><AmtDtls><TxAmt><Amt Ccy="CZK">100.00</Amt></TxAmt></AmtDtls>
            <RmtInf><Ustrd>VS:111</Ustrd></RmtInf></TxDtls>
          <TxDtls><Amt Ccy="CZK">200.00</Amt><Refs><AcctSvcrRef>OWN-2</AcctSvcrRef></Refs>
            <RmtInf><Ustrd>VS:222</Ustrd></RmtInf></TxDtls>
        </NtryDtls></Ntry>"""
    )
    lines = parse_camt053(xml)
    assert [(p.payment_id, p.variable_symbol, p.amount) for p in lines if isinstance(p, PaymentReceived)] == [
        ("BATCH#1", "111", Decimal("100.00")),
        ("OWN-2", "222", Decimal("200.00")),
    ]


@pytest.mark.parametrize(
    ("details", "expected_vs"),
    [
        ("<RmtInf><Strd><CdtrRefInf><Ref>0012345678</Ref></CdtrRefInf></Strd></RmtInf>", "12345678"),
        ("<RmtInf><Strd><CdtrRefInf><Ref>VS:42</Ref></CdtrRefInf></Strd></RmtInf>", "42"),
        ("<RmtInf><Ustrd>/VS/42/SS/7</Ustrd></RmtInf>", "42"),
        ("<Refs><EndToEndId>42</EndToEndId></Refs>", "42"),
        # a creditor reference that is not a VS falls through to the next place
        (
            "<Refs><EndToEndId>/VS/42</EndToEndId></Refs>"
            "<RmtInf><Strd><CdtrRefInf><Ref>RF18539007547034</Ref></CdtrRefInf></Strd></RmtInf>",
            "42",
        ),
        # Strd wins over Ustrd and EndToEndId
        (
            "<Refs><EndToEndId>/VS/3</EndToEndId></Refs>"
            "<RmtInf><Ustrd>VS 2</Ustrd><Strd><CdtrRefInf><Ref>1</Ref></CdtrRefInf></Strd></RmtInf>",
            "1",
        ),
    ],
)
def test_camt_variable_symbol_places(details: str, expected_vs: str) -> None:
    payment = only(parse_camt053(camt(entry(details=details))))
    assert isinstance(payment, PaymentReceived)
    assert payment.variable_symbol == expected_vs


@pytest.mark.parametrize(
    ("ntry", "reason"),
    [
        (entry(amount="12.345"), "more than 2 decimal places"),
        (entry(amount="-5.00"), "not positive"),
        (entry(amount="0.00"), "not positive"),
        (entry(amount="100000000000.00"), "exceeds the limit"),
        (entry(amount="1E+300"), "exceeds the limit"),
        (entry(amount="abc"), "not a decimal amount"),
        (entry(currency=None), "no currency"),
        (entry(details="<RmtInf><Ustrd>thanks for the hosting, 2024000101</Ustrd></RmtInf>"), "no variable"),
        (entry(details="<RmtInf><Ustrd>VS:12AB</Ustrd></RmtInf>"), "no variable symbol"),
        (entry(details="<RmtInf><Ustrd>VS:0000000000</Ustrd></RmtInf>"), "no variable symbol"),
        (entry(details="<Refs><EndToEndId>/VS/123456789012</EndToEndId></Refs>"), "at most 10 digits"),
        (entry(direction="XXXX"), "CdtDbtInd"),
        (entry(extra="<RvslInd>true</RvslInd>"), "reversal"),
        (entry().replace("<BookgDt><Dt>2024-05-03</Dt></BookgDt>", ""), "no booking date"),
        (entry().replace("2024-05-03", "2024-13-45"), "BookgDt '2024-13-45' is not a date"),
    ],
)
def test_camt_bad_entry_is_rejected_with_its_reason(ntry: str, reason: str) -> None:
    line = only(parse_camt053(camt(ntry)))
    assert isinstance(line, RejectedLine)
    assert reason in line.reason
    assert line.line_id == "REF1"
    assert line.source == "camt053"


def test_camt_bad_entry_does_not_lose_its_neighbours() -> None:
    lines = parse_camt053(camt(entry(ref="A") + entry(ref="B", amount="1.001") + entry(ref="C")))
    assert [type(line).__name__ for line in lines] == ["PaymentReceived", "RejectedLine", "PaymentReceived"]


def test_camt_entry_without_any_reference_gets_a_stable_id() -> None:
    ntry = entry().replace("<AcctSvcrRef>REF1</AcctSvcrRef>", "")
    first, second = only(parse_camt053(camt(ntry))), only(parse_camt053(camt(ntry)))
    assert first.model_dump() == second.model_dump()
    assert isinstance(first, PaymentReceived)
    assert first.payment_id.startswith("camt053:")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<Document><unclosed></Document>", "not well-formed XML"),
        (
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.02">'
            b"<BkToCstmrDbtCdtNtfctn/></Document>",
            "expected Document/BkToCstmrStmt",
        ),
        (
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.052.001.02"><BkToCstmrStmt/></Document>',
            "namespace",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<Document><BkToCstmrStmt><Stmt><Ntry><Amt>&x;</Amt></Ntry></Stmt></BkToCstmrStmt></Document>",
            "DOCTYPE",
        ),
    ],
    ids=["not-xml", "camt054", "camt052", "xxe"],
)
def test_camt_unreadable_file_raises(data: bytes, message: str) -> None:
    with pytest.raises(StatementError, match=message):
        parse_camt053(data)


# ---------------------------------------------------------------------------------------------
# GPC


def gpc_075(
    *,
    transaction_id: str = "1000000001",
    hellers: str = "000000120000",
    code: str = "2",
    vs: str = "2024000101",
    currency: str = "0203",
    posted: str = "030524",
    valuta: str = "030524",
    name: str = "Novák Jan",
) -> str:
    line = (
        "075"
        + "0000002000145399"
        + "0000192900000001"
        + transaction_id.rjust(13, "0")
        + hellers
        + code
        + vs.rjust(10)
        + "0020100308"
        + "0000000000"
        + valuta
        + name.ljust(20)
        + "0"
        + currency
        + posted
    )
    assert len(line) == 128
    return line


HEADER = "074" + "0" * 125


def test_gpc_sample_gives_two_payments_and_two_rejected_lines() -> None:
    lines = parse_gpc(decode_gpc((FIXTURES / "gpc_sample.gpc").read_bytes()))

    assert len(lines) == 4  # the debit on line 4 is not a payment
    first, unknown, no_vs, storno = lines
    assert first == PaymentReceived(
        payment_id="0001000000001",
        variable_symbol="2024000101",
        amount=Decimal("1200.00"),
        received_at=datetime(2024, 5, 3, tzinfo=PRAGUE),
        currency="CZK",
        source="bank",
        payer="Novák Jan 19-2900000001/2010",  # decoded from windows-1250
    )
    assert isinstance(unknown, PaymentReceived)
    assert (unknown.variable_symbol, unknown.amount) == ("9999999999", Decimal("2500.00"))
    assert isinstance(no_vs, RejectedLine)
    assert (no_vs.location, no_vs.reason) == ("line 6", "no variable symbol (columns 62-71)")
    assert isinstance(storno, RejectedLine)
    assert "reversal" in storno.reason
    assert storno.line_id == "0001000000005"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (gpc_075(hellers="00000012000X"), "not a number of hellers"),
        (gpc_075(hellers="000000000000"), "not positive"),
        (gpc_075(hellers="999999999999"), "exceeds the limit"),
        (gpc_075(currency="0999"), "unknown currency code"),
        (gpc_075(posted="999999", valuta="000000"), "no valid posting date"),
        (gpc_075(vs="12AB"), "variable_symbol"),
        (gpc_075(vs=""), "no variable symbol"),
        (gpc_075(code="9"), "unknown accounting code"),
        (gpc_075(code="4"), "reversal"),
        (gpc_075() + "EXTRA", "GPC records have 128"),
        (gpc_075()[:100], "too short"),
        ("999 something else", "unknown GPC record type"),
    ],
)
def test_gpc_bad_line_is_rejected_with_its_reason(line: str, reason: str) -> None:
    parsed = only(parse_gpc(f"{HEADER}\n{line}\n"))
    assert isinstance(parsed, RejectedLine)
    assert reason in parsed.reason
    assert parsed.raw == line
    assert parsed.source == "gpc"


def test_gpc_posting_date_falls_back_to_value_date_and_trailing_spaces_may_be_trimmed() -> None:
    line = gpc_075(posted="000000", valuta="020524", name="").rstrip()
    payment = only(parse_gpc(f"{HEADER}\n{line}"))
    assert isinstance(payment, PaymentReceived)
    assert payment.received_at == datetime(2024, 5, 2, tzinfo=PRAGUE)
    assert payment.payer == "19-2900000001/2010"


def test_gpc_transaction_without_id_gets_a_stable_one() -> None:
    line = gpc_075(transaction_id="0")
    first, second = only(parse_gpc(line)), only(parse_gpc(line))
    assert isinstance(first, PaymentReceived) and isinstance(second, PaymentReceived)
    assert first.payment_id == second.payment_id
    assert first.payment_id.startswith("gpc:")


def test_gpc_decoding_accepts_utf8_and_windows_1250() -> None:
    text = f"{HEADER}\n{gpc_075(name='Žluťoučký kůň')}\n"
    for encoding in ("utf-8", "cp1250"):
        payment = only(parse_gpc(decode_gpc(text.encode(encoding))))
        assert isinstance(payment, PaymentReceived)
        assert payment.payer is not None and payment.payer.startswith("Žluťoučký kůň ")


# ---------------------------------------------------------------------------------------------
# format detection


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xef\xbb\xbf  <?xml version='1.0'?><Document/>", "camt053"),
        (b"\r\n074000", "gpc"),
    ],
)
def test_detect_format(data: bytes, kind: str) -> None:
    assert detect_format(data) == kind


def test_unknown_format_is_a_statement_error() -> None:
    with pytest.raises(StatementError, match="unrecognised statement format"):
        parse_statement(b"date;amount;vs\n2024-05-03;100;123\n")
