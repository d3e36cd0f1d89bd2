"""The worker's wiring from the environment: registrars, the card gateway, exchange rates."""

from __future__ import annotations

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
