"""Domain registrars and registries.

    RegistrarError
     ├── RegistrarUnavailable  (retried: connection lost, timeout, EPP 2400/2500-range session errors)
     └── RegistrarRefused      (not retried: EPP 2303 object does not exist, 2304 status prohibits,
                                2306 parameter policy error, other 2xxx command errors)

Registrar extension happens only after payment. Renewal always names the current expiry date
(EPP `curExpDate`), so a renew retried after a timeout that the registry had already executed is
refused by the registry instead of renewing twice; the adapter then reads the domain back and
reports the renewal as done.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError


class RenewDomainInput(BaseModel):
    idempotency_key: str
    service_id: str
    domain_name: str
    current_expiry: date
    years: int = 1


class RenewDomainResult(BaseModel):
    domain_name: str
    new_expiry: date
    already_renewed: bool = False


class RestoreDomainInput(BaseModel):
    """A paid restore out of redemption (RFC 3915) or quarantine."""

    idempotency_key: str
    service_id: str
    domain_name: str


class RestoreDomainResult(BaseModel):
    domain_name: str
    restored: bool


class RegistrarError(Exception):
    """Root of the registrar adapter's errors."""


class RegistrarUnavailable(RegistrarError):
    """The registry could not be reached or the session broke; try again."""


class RegistrarRefused(RegistrarError):
    """The registry refused the command; retrying cannot help."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Registrar(Protocol):
    async def renew_domain(self, domain_name: str, current_expiry: date, years: int) -> RenewDomainResult: ...
    async def restore_domain(self, domain_name: str) -> RestoreDomainResult: ...


class RecordingRegistrar:
    """Keeps domain expiries in memory and honours `curExpDate` like a registry does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.expiries: dict[str, date] = {}

    async def renew_domain(self, domain_name: str, current_expiry: date, years: int) -> RenewDomainResult:
        self.calls.append(("renew", domain_name))
        known = self.expiries.setdefault(domain_name, current_expiry)
        target = current_expiry.replace(year=current_expiry.year + years)
        if known == target:
            return RenewDomainResult(domain_name=domain_name, new_expiry=target, already_renewed=True)
        if known != current_expiry:
            raise RegistrarRefused(f"curExpDate {current_expiry} does not match {known}", code=2306)
        self.expiries[domain_name] = target
        return RenewDomainResult(domain_name=domain_name, new_expiry=target)

    async def restore_domain(self, domain_name: str) -> RestoreDomainResult:
        self.calls.append(("redemption_restore", domain_name))
        return RestoreDomainResult(domain_name=domain_name, restored=True)


class RegistrarActivities:
    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar

    @activity.defn
    async def renew_domain(self, request: RenewDomainInput) -> RenewDomainResult:
        try:
            return await self.registrar.renew_domain(request.domain_name, request.current_expiry, request.years)
        except RegistrarRefused as exc:
            raise ApplicationError(str(exc), exc.code, type="RegistrarRefused", non_retryable=True) from exc

    @activity.defn
    async def restore_domain(self, request: RestoreDomainInput) -> RestoreDomainResult:
        try:
            return await self.registrar.restore_domain(request.domain_name)
        except RegistrarRefused as exc:
            raise ApplicationError(str(exc), exc.code, type="RegistrarRefused", non_retryable=True) from exc
