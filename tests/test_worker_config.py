"""The worker's wiring from the environment: registrars, the card gateway, exchange rates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities.registrar import EppRegistrar, RecordingRegistrar, RegistrarByTld
from worker import configured_registrar

EPP_VARIABLES = ("HOST", "CLIENT_ID", "PASSWORD", "DIALECT")


def clear(monkeypatch: pytest.MonkeyPatch) -> None:
    for prefix in (
        "HOSTLIFE_EPP_",
        "HOSTLIFE_EPP_CZ_",
        "HOSTLIFE_EPP_GTLD_",
        "HOSTLIFE_EPP_SK_",
        "HOSTLIFE_EPP_EU_",
    ):
        for name in EPP_VARIABLES:
            monkeypatch.delenv(prefix + name, raising=False)


def test_without_epp_configuration_a_recording_registrar_stands_in(monkeypatch: pytest.MonkeyPatch) -> None:
    clear(monkeypatch)
    assert isinstance(configured_registrar(), RecordingRegistrar)


def test_each_tld_goes_to_its_own_registry_and_the_rest_to_the_shared_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear(monkeypatch)
    for prefix, host, dialect in (
        ("HOSTLIFE_EPP_CZ_", "epp.nic.cz.test", "fred"),
        ("HOSTLIFE_EPP_", "epp.shared.test", "ietf"),
    ):
        monkeypatch.setenv(prefix + "HOST", host)
        monkeypatch.setenv(prefix + "CLIENT_ID", "reg-1")
        monkeypatch.setenv(prefix + "PASSWORD", "secret")
        monkeypatch.setenv(prefix + "DIALECT", dialect)
    registrar = configured_registrar()
    assert isinstance(registrar, RegistrarByTld)
    cz = registrar._for("firma.cz")
    com = registrar._for("firma.com")
    assert isinstance(cz, EppRegistrar) and isinstance(com, EppRegistrar)
    assert cz is not com
    assert registrar._for("firma.sk") is com, "TLDs without their own registry use the shared one"


def test_a_tld_without_any_registry_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from activities.registrar import RegistrarRefused

    clear(monkeypatch)
    monkeypatch.setenv("HOSTLIFE_EPP_CZ_HOST", "epp.nic.cz.test")
    monkeypatch.setenv("HOSTLIFE_EPP_CZ_CLIENT_ID", "reg-1")
    monkeypatch.setenv("HOSTLIFE_EPP_CZ_PASSWORD", "secret")
    registrar = configured_registrar()
    assert isinstance(registrar, RegistrarByTld)
    with pytest.raises(RegistrarRefused, match="no registry connection"):
        registrar._for("firma.com")


async def test_stored_cards_are_charged_only_through_a_configured_gateway(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import httpx

    from activities.card_gateway import ComGateGateway, UnconfiguredCardGateway
    from starter.config import Settings
    from worker import configured_card_gateway

    for name in ("MERCHANT", "SECRET", "URL", "TEST"):
        monkeypatch.delenv(f"HOSTLIFE_COMGATE_{name}", raising=False)
    monkeypatch.setenv("HOSTLIFE_DATA_DIR", str(tmp_path))
    settings = Settings.from_env()
    async with httpx.AsyncClient() as http:
        assert isinstance(configured_card_gateway(settings, http), UnconfiguredCardGateway)
        monkeypatch.setenv("HOSTLIFE_COMGATE_MERCHANT", "123456")
        monkeypatch.setenv("HOSTLIFE_COMGATE_SECRET", "s3cret")
        monkeypatch.setenv("HOSTLIFE_COMGATE_TEST", "1")
        gateway = configured_card_gateway(settings, http)
    assert isinstance(gateway, ComGateGateway) and gateway.test and gateway.merchant == "123456"
    assert (tmp_path / "card_charges.sqlite").exists()


async def test_exchange_rates_come_from_the_central_banks_unless_fixed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    from activities.exchange_rates import BnrRates, CnbRates, FixedRates
    from worker import configured_exchange_rates

    monkeypatch.delenv("HOSTLIFE_EXCHANGE_RATES", raising=False)
    monkeypatch.setenv("HOSTLIFE_CNB_URL", "http://mirror.test/denni_kurz.txt")
    async with httpx.AsyncClient() as http:
        sources = configured_exchange_rates(http)
        assert (
            isinstance(sources["CZK"], CnbRates) and sources["CZK"].url == "http://mirror.test/denni_kurz.txt"
        )
        assert isinstance(sources["RON"], BnrRates)
        monkeypatch.setenv("HOSTLIFE_EXCHANGE_RATES", "fixed")
        assert all(isinstance(s, FixedRates) for s in configured_exchange_rates(http).values())


ROOT = Path(__file__).resolve().parent.parent

READ_WITHOUT_COMPILING = """
import importlib.machinery, importlib.util, sys, worker
print(worker.ensure_workflow_bytecode())
def refuse(self, data, path, **kwargs):
    raise SystemExit(f"compiled {path} from source")
importlib.machinery.SourceFileLoader.source_to_code = refuse
for name in ("workflows.subscription", "workflows.payment_path"):
    importlib.util.find_spec(name).loader.get_code(name)
"""


def run_python(code: str, tmp_path: Path, **environment: str) -> str:
    """`code` in a new interpreter (import state and `sys.pycache_prefix` are per process)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "HOSTLIFE_WORKFLOW_BYTECODE")
    }
    env.update(PYTHONPYCACHEPREFIX=str(tmp_path / "pycache"), **environment)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    return done.stdout.strip()


def test_workflow_modules_are_read_as_bytecode_where_python_writes_none(tmp_path: Path) -> None:
    """PYTHONDONTWRITEBYTECODE (set in the image) would make every workflow run compile from source."""
    assert run_python(READ_WITHOUT_COMPILING, tmp_path, PYTHONDONTWRITEBYTECODE="1") == str(
        tmp_path / "pycache"
    )
    assert list((tmp_path / "pycache").rglob("subscription.cpython-*.pyc"))


def test_without_the_worker_compiling_them_the_workflow_modules_are_compiled_from_source(
    tmp_path: Path,
) -> None:
    """The probe above can fail: with the worker's compile turned off, it does."""
    with pytest.raises(AssertionError, match=r"compiled \S*subscription\.py from source"):
        run_python(
            READ_WITHOUT_COMPILING, tmp_path, PYTHONDONTWRITEBYTECODE="1", HOSTLIFE_WORKFLOW_BYTECODE="0"
        )
    assert not list((tmp_path / "pycache").rglob("subscription.cpython-*.pyc"))


def test_where_python_writes_bytecode_itself_the_worker_leaves_it_alone(tmp_path: Path) -> None:
    assert run_python("import worker; print(worker.ensure_workflow_bytecode())", tmp_path) == "None"
