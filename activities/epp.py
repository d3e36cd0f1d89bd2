"""An EPP client on asyncio and lxml: RFC 5730 over TLS with RFC 5734 framing, RFC 5731 domain
commands, RFC 3915 redemption restore, and the FRED dialect of CZ.NIC for `.cz`.

Why not a PyPI client: `epptools` (1.1.2, checked) is well made but blocking (plain sockets, so a
cancelled or timed-out activity cannot interrupt it), compiles in the IETF domain namespace (FRED
uses its own) and cannot send the RFC 3915 restore report. What is needed here is small.

    EppError
     ├── EppConnectionError         (TCP/TLS failure, dropped session, timeout, bad frame: reconnect)
     └── EppCommandError(code)      (the server answered with a result code >= 2000)
          ├── EppRetryableError     (2400 command failed, 2500-2502 server closed the session,
          │    │                     login refused: an operator fixes it and the retry succeeds)
          │    └── EppLoginError    (2200/2501 at login)
          └── EppRefusedError       (every other 2xxx: 2303 object does not exist,
                                     2304 status prohibits, 2306 parameter policy error, ...)

One `EppClient` holds one session and sends one command at a time (EPP answers in order and most
registries forbid pipelining). A session that broke is reconnected before the next command. A
query (`info`, `poll req`, `hello`) that broke mid-flight is sent once more on a fresh session;
a transform (`renew`, `update`, `poll ack`) is not, because the registry may have executed it:
the caller gets `EppConnectionError` and decides (renew carries `curExpDate`, so resending it
cannot renew twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import ssl
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from lxml import etree

from activities.env_secrets import secret_from_env

EPP_NS = "urn:ietf:params:xml:ns:epp-1.0"
RGP_NS = "urn:ietf:params:xml:ns:rgp-1.0"
MAX_FRAME = 4 * 1024 * 1024
"""A length header beyond this means the stream is not EPP any more."""

RETRYABLE_CODES = frozenset({2400, 2500, 2501, 2502})
LOGIN_REFUSED_CODES = frozenset({2200, 2501})

RGP_STATEMENTS = (
    "This registrar has not restored the Registered Name in order to assume the rights to use or sell "
    "the Registered Name for itself or for any third party.",
    "The information in this report is true to best of this registrar's knowledge, and this registrar "
    "acknowledges that intentionally supplying false information in this report shall constitute an "
    "incurable material breach of the Registry-Registrar Agreement.",
)
"""The two statements RFC 3915 section 4.2.5 asks a restore report to carry."""

_EPP_NSMAP: Any = {None: EPP_NS}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)


@dataclass(frozen=True)
class Dialect:
    """The namespaces one registry family speaks; the greeting must offer one of `domain_namespaces`."""

    name: str
    domain_namespaces: tuple[str, ...]
    has_rgp: bool


IETF = Dialect("ietf", ("urn:ietf:params:xml:ns:domain-1.0",), has_rgp=True)
FRED = Dialect("fred", ("http://www.nic.cz/xml/epp/domain-1.4",), has_rgp=False)
DIALECTS = {d.name: d for d in (IETF, FRED)}


@dataclass(frozen=True)
class EppConfig:
    """Where and who to log in as. `server_hostname` is the certificate's name when `host` is an IP."""

    host: str
    client_id: str
    password: str = field(repr=False)
    port: int = 700
    dialect: str = "ietf"
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    server_hostname: str | None = None
    lang: str = "en"
    connect_timeout: float = 10.0
    command_timeout: float = 30.0
    keepalive_interval: float = 240.0
    """A session idle this long is checked with `hello` before the next command."""
    cltrid_prefix: str = "hostlife"

    @classmethod
    def from_env(cls, prefix: str = "HOSTLIFE_EPP_") -> EppConfig:
        """Read HOSTLIFE_EPP_HOST, _PORT, _CLIENT_ID, _PASSWORD[_FILE], _DIALECT, _CA_FILE, _CLIENT_CERT, ..."""
        env = os.environ

        def opt(name: str) -> str | None:
            return env.get(prefix + name) or None

        return cls(
            host=env[prefix + "HOST"],
            client_id=env[prefix + "CLIENT_ID"],
            password=secret_from_env(env, prefix + "PASSWORD", required=True) or "",
            port=int(env.get(prefix + "PORT", "700")),
            dialect=env.get(prefix + "DIALECT", "ietf"),
            ca_file=opt("CA_FILE"),
            client_cert=opt("CLIENT_CERT"),
            client_key=opt("CLIENT_KEY"),
            server_hostname=opt("SERVER_HOSTNAME"),
        )


class EppError(Exception):
    """Root of the EPP client's errors."""


class EppConnectionError(EppError):
    """No usable session: connect, TLS, timeout, dropped connection or a frame we cannot read."""


class EppCommandError(EppError):
    """The server answered with an error result code."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(f"EPP {code} {message}" + (f": {reason}" if reason else ""))
        self.code = code
        self.epp_message = message
        self.reason = reason


class EppRetryableError(EppCommandError):
    """The server failed or ended the session; the same command may succeed later."""


class EppLoginError(EppRetryableError):
    """Login refused. Retryable on purpose: bad credentials must not fail a customer's renewal."""


class EppRefusedError(EppCommandError):
    """The server refused the command itself; sending it again gets the same answer."""


def command_error(code: int, message: str, reason: str = "") -> EppCommandError:
    cls = EppRetryableError if code in RETRYABLE_CODES else EppRefusedError
    return cls(code, message, reason)


@dataclass
class EppResponse:
    code: int
    message: str
    root: etree._Element
    cl_trid: str | None
    sv_trid: str | None

    def find(self, path: str, namespaces: dict[str, str]) -> etree._Element | None:
        found = self.root.find(path, {"epp": EPP_NS, **namespaces})
        return found


@dataclass(frozen=True)
class DomainInfo:
    name: str
    expires_on: date
    statuses: frozenset[str]
    rgp_statuses: frozenset[str] = frozenset()
    registrant: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class PollMessage:
    message_id: str
    remaining: int
    queued_at: datetime | None
    text: str
    domain_name: str | None
    payload_xml: str


def _q(namespace: str, tag: str) -> str:
    return f"{{{namespace}}}{tag}"


def _parse_date(text: str | None) -> date:
    """exDate is a dateTime in RFC 5731 and a plain date in FRED; the date part is what both mean."""
    if not text:
        raise EppConnectionError("response lacks an expiry date")
    return date.fromisoformat(text.strip()[:10])


def _parse_datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def frame(payload: bytes) -> bytes:
    """RFC 5734: a 4-byte big-endian length that counts itself, then the XML."""
    return struct.pack("!I", len(payload) + 4) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(4)
    (length,) = struct.unpack("!I", header)
    if not 4 < length <= MAX_FRAME:
        raise EppConnectionError(f"invalid EPP frame length {length}")
    return await reader.readexactly(length - 4)


class EppClient:
    """One logged-in EPP session, reopened on demand. Safe to share between concurrent activities."""

    def __init__(self, config: EppConfig) -> None:
        if config.dialect not in DIALECTS:
            raise ValueError(f"unknown EPP dialect {config.dialect!r}, expected one of {sorted(DIALECTS)}")
        self.config = config
        self.dialect = DIALECTS[config.dialect]
        self.domain_ns = self.dialect.domain_namespaces[0]
        self.greeting: etree._Element | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._last_used = 0.0
        self._counter = itertools.count(1)
        self._token = secrets.token_hex(4)
        self.connects = 0

    # --- session ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return (self._writer is not None and not self._writer.is_closing()
                and self._reader is not None and not self._reader.at_eof())

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.config.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.config.client_cert:
            context.load_cert_chain(self.config.client_cert, self.config.client_key)
        return context

    async def _open(self) -> None:
        """Connect, read the greeting and log in with the services it offers."""
        cfg = self.config
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    cfg.host, cfg.port, ssl=self._tls_context(),
                    server_hostname=cfg.server_hostname or cfg.host,
                ),
                cfg.connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise EppConnectionError(f"cannot connect to {cfg.host}:{cfg.port}: {exc!r}") from exc
        self.connects += 1
        try:
            self.greeting = self._expect_greeting(await self._receive())
            await self._login()
        except BaseException:
            self._drop()
            raise

    def _expect_greeting(self, root: etree._Element) -> etree._Element:
        greeting = root.find(_q(EPP_NS, "greeting"))
        if greeting is None:
            raise EppConnectionError("server did not send a <greeting>")
        offered = [e.text or "" for e in greeting.iterfind(f"{{{EPP_NS}}}svcMenu/{{{EPP_NS}}}objURI")]
        for namespace in self.dialect.domain_namespaces:
            if namespace in offered:
                self.domain_ns = namespace
                return greeting
        raise EppConnectionError(f"server offers none of {self.dialect.domain_namespaces}, only {offered}")

    async def _login(self) -> None:
        assert self.greeting is not None
        menu = self.greeting.find(_q(EPP_NS, "svcMenu"))
        obj_uris = [e.text or "" for e in menu.iterfind(_q(EPP_NS, "objURI"))] if menu is not None else []
        ext_uris = [e.text or "" for e in menu.iterfind(f"{{{EPP_NS}}}svcExtension/{{{EPP_NS}}}extURI")] \
            if menu is not None else []
        epp, command = self._envelope()
        login = etree.SubElement(command, _q(EPP_NS, "login"))
        etree.SubElement(login, _q(EPP_NS, "clID")).text = self.config.client_id
        etree.SubElement(login, _q(EPP_NS, "pw")).text = self.config.password
        options = etree.SubElement(login, _q(EPP_NS, "options"))
        etree.SubElement(options, _q(EPP_NS, "version")).text = "1.0"
        etree.SubElement(options, _q(EPP_NS, "lang")).text = self.config.lang
        svcs = etree.SubElement(login, _q(EPP_NS, "svcs"))
        for uri in obj_uris:
            etree.SubElement(svcs, _q(EPP_NS, "objURI")).text = uri
        if ext_uris:
            extension = etree.SubElement(svcs, _q(EPP_NS, "svcExtension"))
            for uri in ext_uris:
                etree.SubElement(extension, _q(EPP_NS, "extURI")).text = uri
        cl_trid = self._add_cltrid(command)
        await self._send(epp)
        try:
            self._check(await self._receive(), cl_trid)
        except EppCommandError as exc:
            if exc.code in LOGIN_REFUSED_CODES:
                raise EppLoginError(exc.code, exc.epp_message, exc.reason) from exc
            raise

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _hello(self) -> None:
        epp = etree.Element(_q(EPP_NS, "epp"), nsmap=_EPP_NSMAP)
        etree.SubElement(epp, _q(EPP_NS, "hello"))
        await self._send(epp)
        self._expect_greeting(await self._receive())

    async def hello(self) -> None:
        """Keep the session alive; a broken one is reopened (hello changes nothing, so resending is safe)."""
        async with self._lock:
            await self._ensure_session()
            try:
                await self._hello()
            except EppConnectionError:
                self._drop()
                await self._ensure_session()
                await self._hello()
            self._last_used = time.monotonic()

    async def keepalive(self) -> None:
        """Run forever next to a worker, so the registry never closes an idle session on us."""
        while True:
            await asyncio.sleep(self.config.keepalive_interval)
            with contextlib.suppress(EppError):  # the next command reconnects anyway
                await self.hello()

    async def _ensure_session(self) -> None:
        if not self.connected:
            self._drop()
            await self._open()
            self._last_used = time.monotonic()
        elif time.monotonic() - self._last_used > self.config.keepalive_interval:
            try:
                await self._hello()
            except EppConnectionError:
                self._drop()
                await self._open()
            self._last_used = time.monotonic()

    async def close(self) -> None:
        """Log out politely; a session that is already gone is simply forgotten."""
        async with self._lock:
            if self.connected:
                epp, command = self._envelope()
                etree.SubElement(command, _q(EPP_NS, "logout"))
                cl_trid = self._add_cltrid(command)
                try:
                    await self._send(epp)
                    self._check(await self._receive(), cl_trid)
                except EppError:
                    pass
            self._drop()

    # --- framing and XML --------------------------------------------------------------------

    async def _send(self, epp: etree._Element) -> None:
        if self._writer is None:
            raise EppConnectionError("not connected")
        payload = etree.tostring(epp, xml_declaration=True, encoding="UTF-8", standalone=False)
        try:
            self._writer.write(frame(payload))
            await asyncio.wait_for(self._writer.drain(), self.config.command_timeout)
        except (OSError, TimeoutError) as exc:
            self._drop()
            raise EppConnectionError(f"write failed: {exc!r}") from exc

    async def _receive(self) -> etree._Element:
        if self._reader is None:
            raise EppConnectionError("not connected")
        try:
            data = await asyncio.wait_for(read_frame(self._reader), self.config.command_timeout)
            return etree.fromstring(data, _PARSER)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, EppConnectionError) as exc:
            self._drop()
            raise EppConnectionError(f"read failed: {exc!r}") from exc
        except etree.XMLSyntaxError as exc:
            self._drop()
            raise EppConnectionError(f"server sent malformed XML: {exc}") from exc

    def _envelope(self) -> tuple[etree._Element, etree._Element]:
        epp = etree.Element(_q(EPP_NS, "epp"), nsmap=_EPP_NSMAP)
        return epp, etree.SubElement(epp, _q(EPP_NS, "command"))

    def _add_cltrid(self, command: etree._Element) -> str:
        cl_trid = f"{self.config.cltrid_prefix}-{self._token}-{next(self._counter)}"
        etree.SubElement(command, _q(EPP_NS, "clTRID")).text = cl_trid
        return cl_trid

    def _check(self, root: etree._Element, cl_trid: str) -> EppResponse:
        """Parse a <response>, make sure it answers *this* command, and raise on codes >= 2000."""
        response = root.find(_q(EPP_NS, "response"))
        result = response.find(_q(EPP_NS, "result")) if response is not None else None
        if response is None or result is None:
            self._drop()
            raise EppConnectionError("server sent no <response><result>")
        code = int(result.get("code", "0"))
        message = result.findtext(_q(EPP_NS, "msg"), "").strip()
        reason = " ".join((e.text or "").strip() for e in result.iter(_q(EPP_NS, "reason")))
        echoed = response.findtext(f"{{{EPP_NS}}}trID/{{{EPP_NS}}}clTRID")
        if echoed is not None and echoed != cl_trid:
            # An answer to an earlier command: the stream is out of step and cannot be trusted.
            self._drop()
            raise EppConnectionError(f"response for clTRID {echoed}, expected {cl_trid}")
        if code >= 2000:
            if code in {2500, 2501, 2502}:
                self._drop()
            raise command_error(code, message, reason)
        return EppResponse(code, message, response, echoed,
                           response.findtext(f"{{{EPP_NS}}}trID/{{{EPP_NS}}}svTRID"))

    async def command(self, epp: etree._Element, command: etree._Element, *, query: bool) -> EppResponse:
        """Send one command and return its checked response; a query survives one dropped session."""
        async with self._lock:
            cl_trid = self._add_cltrid(command)
            for attempt in (1, 2):
                await self._ensure_session()
                try:
                    await self._send(epp)
                    response = self._check(await self._receive(), cl_trid)
                except EppConnectionError:
                    if query and attempt == 1:
                        continue
                    raise
                self._last_used = time.monotonic()
                return response
            raise AssertionError("unreachable")

    # --- domain commands --------------------------------------------------------------------

    def _domain_command(self, verb: str, name: str) -> tuple[etree._Element, etree._Element, etree._Element]:
        epp, command = self._envelope()
        element = etree.SubElement(etree.SubElement(command, _q(EPP_NS, verb)), _q(self.domain_ns, verb),
                                   nsmap={"domain": self.domain_ns})
        etree.SubElement(element, _q(self.domain_ns, "name")).text = name
        return epp, command, element

    async def domain_info(self, name: str) -> DomainInfo:
        epp, command, _ = self._domain_command("info", name)
        response = await self.command(epp, command, query=True)
        ns = {"domain": self.domain_ns, "rgp": RGP_NS}
        data = response.find("epp:resData/domain:infData", ns)
        if data is None:
            raise EppConnectionError("info response lacks domain:infData")
        return DomainInfo(
            name=data.findtext("domain:name", "", ns),
            expires_on=_parse_date(data.findtext("domain:exDate", None, ns)),
            statuses=frozenset(e.get("s", "") for e in data.iterfind("domain:status", ns)),
            rgp_statuses=frozenset(
                e.get("s", "") for e in response.root.iterfind("epp:extension/rgp:infData/rgp:rgpStatus",
                                                               {"epp": EPP_NS, **ns})
            ),
            registrant=data.findtext("domain:registrant", None, ns),
            updated_at=_parse_datetime(data.findtext("domain:upDate", None, ns)),
        )

    async def domain_renew(self, name: str, current_expiry: date, years: int) -> date | None:
        """Renew from `current_expiry`; returns the new expiry, or None when the registry left it out."""
        epp, command, element = self._domain_command("renew", name)
        etree.SubElement(element, _q(self.domain_ns, "curExpDate")).text = current_expiry.isoformat()
        etree.SubElement(element, _q(self.domain_ns, "period"), unit="y").text = str(years)
        response = await self.command(epp, command, query=False)
        ns = {"domain": self.domain_ns}
        text = response.find("epp:resData/domain:renData/domain:exDate", ns)
        return _parse_date(text.text) if text is not None else None

    async def domain_restore(self, name: str, report: RestoreReport | None = None) -> set[str]:
        """RFC 3915: op="request" without a report, op="report" with one. Returns the rgp statuses."""
        if not self.dialect.has_rgp:
            raise EppRefusedError(2101, f"the {self.dialect.name} dialect has no RFC 3915 restore")
        epp, command, element = self._domain_command("update", name)
        etree.SubElement(element, _q(self.domain_ns, "chg"))
        extension = etree.SubElement(command, _q(EPP_NS, "extension"))
        update = etree.SubElement(extension, _q(RGP_NS, "update"), nsmap={"rgp": RGP_NS})
        operation = "request" if report is None else "report"
        restore = etree.SubElement(update, _q(RGP_NS, "restore"), op=operation)
        if report is not None:
            body = etree.SubElement(restore, _q(RGP_NS, "report"))
            for tag, value in report.fields():
                etree.SubElement(body, _q(RGP_NS, tag)).text = value
        response = await self.command(epp, command, query=False)
        return {e.get("s", "") for e in response.root.iterfind(
            "epp:extension/rgp:upData/rgp:rgpStatus", {"epp": EPP_NS, "rgp": RGP_NS})}

    # --- poll --------------------------------------------------------------------------------

    async def poll_request(self) -> PollMessage | None:
        """The oldest queued registry notice, left in the queue until `poll_ack`."""
        epp, command = self._envelope()
        etree.SubElement(command, _q(EPP_NS, "poll"), op="req")
        response = await self.command(epp, command, query=True)
        if response.code == 1300:
            return None
        queue = response.find("epp:msgQ", {})
        if queue is None:
            raise EppConnectionError("poll response lacks msgQ")
        res_data = response.find("epp:resData", {})
        payload = etree.tostring(res_data, encoding="unicode") if res_data is not None else ""
        names = [e.text for e in res_data.iter("{*}name") if e.text] if res_data is not None else []
        return PollMessage(
            message_id=queue.get("id", ""),
            remaining=int(queue.get("count", "0")),
            queued_at=_parse_datetime(queue.findtext(_q(EPP_NS, "qDate"))),
            text=(queue.findtext(_q(EPP_NS, "msg")) or "").strip(),
            domain_name=str(names[0]) if names else None,
            payload_xml=payload,
        )

    async def poll_ack(self, message_id: str) -> int:
        """Dequeue one message; returns how many remain."""
        epp, command = self._envelope()
        etree.SubElement(command, _q(EPP_NS, "poll"), op="ack", msgID=message_id)
        response = await self.command(epp, command, query=False)
        queue = response.find("epp:msgQ", {})
        return int(queue.get("count", "0")) if queue is not None else 0


@dataclass(frozen=True)
class RestoreReport:
    """The RFC 3915 report: what the domain looked like before deletion and now, and why it comes back."""

    pre_data: str
    post_data: str
    deleted_at: datetime
    restored_at: datetime
    reason: str
    statements: Iterable[str] = RGP_STATEMENTS
    other: str | None = None

    def fields(self) -> list[tuple[str, str]]:
        def stamp(moment: datetime) -> str:
            return moment.isoformat().replace("+00:00", "Z")

        items = [("preData", self.pre_data), ("postData", self.post_data),
                 ("delTime", stamp(self.deleted_at)), ("resTime", stamp(self.restored_at)),
                 ("resReason", self.reason)]
        items += [("statement", statement) for statement in self.statements]
        if self.other:
            items.append(("other", self.other))
        return items
