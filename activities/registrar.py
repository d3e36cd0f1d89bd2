"""Domain registrars and registries.

    RegistrarError
     ├── RegistrarUnavailable  (retried: connection lost, timeout, EPP 2400/2500-range session errors)
     └── RegistrarRefused      (not retried: EPP 2303 object does not exist, 2304 status prohibits,
                                2306 parameter policy error, other 2xxx command errors)

Registrar extension happens only after payment. Renewal always names the current expiry date
(EPP `curExpDate`), so a renew retried after a timeout that the registry had already executed is
refused by the registry instead of renewing twice; the adapter then reads the domain back and
reports the renewal as done.

`EppRegistrar` is the real implementation (EPP, `activities/epp.py`); its errors are translated
here: `EppConnectionError` and `EppRetryableError` become `RegistrarUnavailable`, `EppRefusedError`
becomes `RegistrarRefused(code)`. The activities turn those into `ApplicationError`s of the same
type name, `RegistrarRefused` non-retryable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.epp import (
    DomainInfo,
    EppClient,
    EppCommandError,
    EppConfig,
    EppConnectionError,
    EppRetryableError,
    RestoreReport,
)
from activities.liveness import deadline_for, watched

CURRENT_EXPIRY_MISMATCH_CODES = frozenset({2004, 2005, 2306})
"""How registries refuse a renew whose curExpDate is stale (RFC 5731 leaves the code open)."""


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
    already_restored: bool = False


class ReadDomainInput(BaseModel):
    domain_name: str


class ReadDomainResult(BaseModel):
    domain_name: str
    expires_on: date
    statuses: list[str] = []
    rgp_statuses: list[str] = []
    """RFC 3915 states such as `redemptionPeriod`; always empty for FRED."""


class RegistryMessage(BaseModel):
    """One notice from the registry's poll queue (transfer, expiry warning, deletion, ...)."""

    message_id: str
    queued_at: datetime | None = None
    text: str = ""
    domain_name: str | None = None
    payload_xml: str = ""


class ReadRegistryMessageInput(BaseModel):
    pass


class ReadRegistryMessageResult(BaseModel):
    """The oldest queued notice, still queued: acknowledge it once it is recorded."""

    message: RegistryMessage | None = None
    remaining: int = 0


class AcknowledgeRegistryMessageInput(BaseModel):
    message_id: str


class AcknowledgeRegistryMessageResult(BaseModel):
    remaining: int


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
    async def read_domain(self, domain_name: str) -> ReadDomainResult: ...
    async def read_message(self) -> ReadRegistryMessageResult: ...
    async def acknowledge_message(self, message_id: str) -> AcknowledgeRegistryMessageResult: ...


def renewed_expiry(current_expiry: date, years: int) -> date:
    """The expiry a renewal by `years` leads to; 29 February falls back to the 28th."""
    try:
        return current_expiry.replace(year=current_expiry.year + years)
    except ValueError:
        return current_expiry.replace(year=current_expiry.year + years, day=28)


class RegistrarByTld:
    """One `Registrar` for the worker: each domain goes to the registry of its TLD.

    `registrars` is keyed by the catalog's TLD rule keys (`cz`, `sk`, `eu`, `gtld`); `tld_of` maps a
    domain name to such a key (the catalog's `Profile.tld_rules(name).tld`). A domain whose registry
    has no connection configured is refused, not retried: ops must configure it.
    """

    def __init__(self, registrars: dict[str, Registrar], tld_of: Callable[[str], str]) -> None:
        self.registrars = registrars
        self.tld_of = tld_of

    def _for(self, domain_name: str) -> Registrar:
        key = self.tld_of(domain_name)
        try:
            return self.registrars[key]
        except KeyError:
            raise RegistrarRefused(
                f"no registry connection is configured for {key} ({domain_name})"
            ) from None

    async def renew_domain(self, domain_name: str, current_expiry: date, years: int) -> RenewDomainResult:
        return await self._for(domain_name).renew_domain(domain_name, current_expiry, years)

    async def restore_domain(self, domain_name: str) -> RestoreDomainResult:
        return await self._for(domain_name).restore_domain(domain_name)

    async def read_domain(self, domain_name: str) -> ReadDomainResult:
        return await self._for(domain_name).read_domain(domain_name)

    async def read_message(self) -> ReadRegistryMessageResult:
        raise RegistrarRefused("poll each registry's own EppRegistrar; message ids are per registry")

    async def acknowledge_message(self, message_id: str) -> AcknowledgeRegistryMessageResult:
        raise RegistrarRefused("poll each registry's own EppRegistrar; message ids are per registry")


class RecordingRegistrar:
    """Keeps domain expiries in memory and honours `curExpDate` like a registry does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.expiries: dict[str, date] = {}
        self.messages: list[RegistryMessage] = []

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

    async def read_domain(self, domain_name: str) -> ReadDomainResult:
        self.calls.append(("info", domain_name))
        if domain_name not in self.expiries:
            raise RegistrarRefused(f"{domain_name} does not exist", code=2303)
        expires_on = self.expiries[domain_name]
        return ReadDomainResult(domain_name=domain_name, expires_on=expires_on, statuses=["ok"])

    async def read_message(self) -> ReadRegistryMessageResult:
        self.calls.append(("poll", ""))
        head = self.messages[0] if self.messages else None
        return ReadRegistryMessageResult(message=head, remaining=len(self.messages))

    async def acknowledge_message(self, message_id: str) -> AcknowledgeRegistryMessageResult:
        self.calls.append(("ack", message_id))
        self.messages = [m for m in self.messages if m.message_id != message_id]
        return AcknowledgeRegistryMessageResult(remaining=len(self.messages))


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Turn the EPP client's errors into the registrar's, so activities see one hierarchy."""
    try:
        yield
    except (EppConnectionError, EppRetryableError) as exc:
        raise RegistrarUnavailable(str(exc)) from exc
    except EppCommandError as exc:
        raise RegistrarRefused(str(exc), code=exc.code) from exc


def _domain_summary(info: DomainInfo) -> str:
    statuses = ",".join(sorted(info.statuses | info.rgp_statuses))
    return f"name={info.name} registrant={info.registrant or ''} expires={info.expires_on} status={statuses}"


class EppRegistrar:
    """The registry over EPP: IETF (gTLDs, .eu, .sk, ...) or FRED (.cz), chosen by `config.dialect`.

    One instance per worker and registry; it keeps one session open and serialises commands on it.
    """

    def __init__(
        self,
        config: EppConfig,
        restore_reason: str = "Registrant error; the registrant paid for the restore.",
    ) -> None:
        self.client = EppClient(config)
        self.restore_reason = restore_reason

    async def close(self) -> None:
        await self.client.close()

    async def keepalive(self) -> None:
        """Run as a task next to the worker: `hello` on every idle interval."""
        await self.client.keepalive()

    async def renew_domain(self, domain_name: str, current_expiry: date, years: int) -> RenewDomainResult:
        target = renewed_expiry(current_expiry, years)
        async with _translated():
            try:
                new_expiry = await self.client.domain_renew(domain_name, current_expiry, years)
            except EppCommandError as exc:
                if exc.code not in CURRENT_EXPIRY_MISMATCH_CODES:
                    raise
                # A stale curExpDate: most likely our own earlier attempt went through and only the
                # answer was lost. The registry's expiry tells.
                info = await self.client.domain_info(domain_name)
                if info.expires_on == target:
                    return RenewDomainResult(domain_name=domain_name, new_expiry=target, already_renewed=True)
                raise RegistrarRefused(
                    f"{exc}; registry expiry is {info.expires_on}, asked to renew {current_expiry} "
                    f"to {target}",
                    code=exc.code,
                ) from exc
            if new_expiry is None:
                new_expiry = (await self.client.domain_info(domain_name)).expires_on
        return RenewDomainResult(domain_name=domain_name, new_expiry=new_expiry)

    async def restore_domain(self, domain_name: str) -> RestoreDomainResult:
        """RFC 3915: request, then report. Resumes at the report when the request already went through."""
        if not self.client.dialect.has_rgp:
            dialect = self.client.dialect.name
            raise RegistrarRefused(f"the {dialect} registry has no redemption restore; renew {domain_name}")
        async with _translated():
            info = await self.client.domain_info(domain_name)
            if "pendingRestore" not in info.rgp_statuses:
                if "redemptionPeriod" not in info.rgp_statuses:
                    if "pendingDelete" in info.statuses:
                        raise RegistrarRefused(f"{domain_name} is pendingDelete past redemption", code=2304)
                    return RestoreDomainResult(domain_name=domain_name, restored=True, already_restored=True)
                await self.client.domain_restore(domain_name)
            now = datetime.now(UTC).replace(microsecond=0)
            report = RestoreReport(
                pre_data=_domain_summary(info),
                post_data=_domain_summary(info),
                deleted_at=info.updated_at or now - timedelta(seconds=1),
                restored_at=now,
                reason=self.restore_reason,
            )
            await self.client.domain_restore(domain_name, report)
        return RestoreDomainResult(domain_name=domain_name, restored=True)

    async def read_domain(self, domain_name: str) -> ReadDomainResult:
        async with _translated():
            info = await self.client.domain_info(domain_name)
        return ReadDomainResult(
            domain_name=info.name or domain_name,
            expires_on=info.expires_on,
            statuses=sorted(info.statuses),
            rgp_statuses=sorted(info.rgp_statuses),
        )

    async def read_message(self) -> ReadRegistryMessageResult:
        async with _translated():
            message = await self.client.poll_request()
        if message is None:
            return ReadRegistryMessageResult()
        return ReadRegistryMessageResult(
            message=RegistryMessage(
                message_id=message.message_id,
                queued_at=message.queued_at,
                text=message.text,
                domain_name=message.domain_name,
                payload_xml=message.payload_xml,
            ),
            remaining=message.remaining,
        )

    async def acknowledge_message(self, message_id: str) -> AcknowledgeRegistryMessageResult:
        async with _translated():
            remaining = await self.client.poll_ack(message_id)
        return AcknowledgeRegistryMessageResult(remaining=remaining)


def _application_error(exc: RegistrarError) -> ApplicationError:
    """RegistrarRefused is final; anything else the registrar raises is worth another attempt."""
    if isinstance(exc, RegistrarRefused):
        return ApplicationError(str(exc), exc.code, type="RegistrarRefused", non_retryable=True)
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=False)


class RegistrarActivities:
    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar

    @activity.defn
    async def renew_domain(self, request: RenewDomainInput) -> RenewDomainResult:
        try:
            result = await watched(
                self.registrar.renew_domain(request.domain_name, request.current_expiry, request.years),
                what=f"renew {request.domain_name} at the registry",
                deadline=deadline_for("registrar"),
            )
        except RegistrarError as exc:
            raise _application_error(exc) from exc
        activity.logger.info(
            "domain renewed",
            extra={
                "domain_name": request.domain_name,
                "new_expiry": str(result.new_expiry),
                "already_renewed": result.already_renewed,
            },
        )
        return result

    @activity.defn
    async def restore_domain(self, request: RestoreDomainInput) -> RestoreDomainResult:
        try:
            return await watched(
                self.registrar.restore_domain(request.domain_name),
                what=f"restore {request.domain_name} at the registry",
                deadline=deadline_for("registrar"),
            )
        except RegistrarError as exc:
            raise _application_error(exc) from exc

    @activity.defn
    async def read_domain(self, request: ReadDomainInput) -> ReadDomainResult:
        try:
            return await self.registrar.read_domain(request.domain_name)
        except RegistrarError as exc:
            raise _application_error(exc) from exc

    @activity.defn
    async def read_registry_message(self, request: ReadRegistryMessageInput) -> ReadRegistryMessageResult:
        try:
            return await self.registrar.read_message()
        except RegistrarError as exc:
            raise _application_error(exc) from exc

    @activity.defn
    async def acknowledge_registry_message(
        self, request: AcknowledgeRegistryMessageInput
    ) -> AcknowledgeRegistryMessageResult:
        try:
            return await self.registrar.acknowledge_message(request.message_id)
        except RegistrarError as exc:
            raise _application_error(exc) from exc
