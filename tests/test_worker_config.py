"""The worker's registrar wiring: one EPP connection per registry the environment names."""

from __future__ import annotations

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
