"""Load: N services and a burst of payments through the real ingress; the reconciliation balances.

The scenario is `bench/load.py`'s (`python -m bench.load --services 10000 --payments 2000` at full
size): 80 % correct payments, 10 % duplicate deliveries, 5 % unknown variable symbols, 5 % wrong
amounts, signed card webhooks into the real ingress → `TemporalPaymentRouter` → the workflows on a
dev server. Afterwards `hostlife reconcile`, run on the exported payments and answers, must find
every payment applied, held or returned, once, and the totals balanced to the heller.

    HOSTLIFE_LOAD_SERVICES (default 300: ~50 s on 2 cores) and HOSTLIFE_LOAD_PAYMENTS (default services / 5)
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from bench.load import reconcile_cli, run_load, write_exports
from tests.reliability.stack import env_int


async def test_a_burst_of_payments_reconciles_to_the_heller(tmp_path: Path) -> None:
    services = env_int("HOSTLIFE_LOAD_SERVICES", 300)
    burst = env_int("HOSTLIFE_LOAD_PAYMENTS", max(20, services // 5))
    result = await run_load(tmp_path / "data", services, burst)
    report = result.report
    print(json.dumps({"timings": result.timings, "summary": report.summary()}, indent=2))

    assert result.problems() == []
    assert (result.correct, result.duplicates, result.unknown, result.wrong_amount) == (
        burst * 80 // 100,
        burst * 10 // 100,
        burst * 5 // 100,
        burst - burst * 80 // 100 - burst * 10 // 100 - burst * 5 // 100,
    )
    assert (
        report.applied.count == result.correct and report.held.count == result.unknown + result.wrong_amount
    )
    total = sum((p.amount for p in result.deliveries), Decimal("0.00"))
    assert report.applied.amount("CZK") + report.held.amount("CZK") + report.duplicates.amount("CZK") == total

    # What ops run: `hostlife reconcile` on the bank's export and the ingress's answers.
    payments, answers = write_exports(result, tmp_path / "data")
    cli = reconcile_cli(tmp_path / "data", payments, answers)
    assert cli.returncode == 0, cli.stderr
    assert "balanced" in cli.stdout and f"{total}" in cli.stdout.replace(",", "")
