"""The invoice notice says what an upgrade or plan-change fee invoice is for (not a renewal)."""

from __future__ import annotations

import pytest

from activities.mailer import NoticeKind
from tests.activities.test_mailer import SAMPLE, notice, renderer

FACTS = {name: SAMPLE[name] for name in ("variable_symbol", "amount", "due_on", "expires_on")}


@pytest.mark.parametrize(
    ("language", "purpose", "says", "never"),
    [
        ("en", "upgrade", "price difference for the rest of the prepaid period", "by a full period"),
        ("cs", "upgrade", "rozdíl ceny za zbytek předplaceného období", "o celé období"),
        ("en", "plan_change_fee", "second change of plan", "by a full period"),
        ("cs", "plan_change_fee", "druhou změnu tarifu", "o celé období"),
        ("en", "renewal", "by a full period", "higher plan"),
        ("en", None, "by a full period", "higher plan"),
    ],
)
def test_invoice_wording_follows_its_purpose(
    language: str, purpose: str | None, says: str, never: str
) -> None:
    rendered = renderer.render(notice(NoticeKind.INVOICE_ISSUED, language, purpose=purpose, **FACTS))
    text = " ".join(rendered.text.split())
    assert says in text
    assert never not in text
