"""A small EPP registry for tests: real TLS, RFC 5734 framing and EPP XML, in-memory domains.

It speaks the IETF dialect (RFC 5731 domain-1.0 with RFC 3915 rgp) or the FRED dialect of CZ.NIC
(domain-1.4, no rgp, plain-date exDate). Tests steer it with `fail_next`, `hang_next` and
`drop_after_next`, and read what it executed from `executed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import trustme
from lxml import etree

EPP_NS = "urn:ietf:params:xml:ns:epp-1.0"
RGP_NS = "urn:ietf:params:xml:ns:rgp-1.0"
IETF_OBJECTS = ("urn:ietf:params:xml:ns:domain-1.0", "urn:ietf:params:xml:ns:contact-1.0",
                "urn:ietf:params:xml:ns:host-1.0")
FRED_OBJECTS = ("http://www.nic.cz/xml/epp/contact-1.6", "http://www.nic.cz/xml/epp/nsset-1.2",
                "http://www.nic.cz/xml/epp/domain-1.4", "http://www.nic.cz/xml/epp/keyset-1.3")
MESSAGES = {
    1000: "Command completed successfully",
    1300: "Command completed successfully; no messages",
    1301: "Command completed successfully; ack to dequeue",
    1500: "Command completed successfully; ending session",
    2001: "Command syntax error",
    2002: "Command use error",
    2003: "Required parameter missing",
    2004: "Parameter value range error",
    2101: "Unimplemented command",
    2200: "Authentication error",
    2303: "Object does not exist",
    2304: "Object status prohibits operation",
    2306: "Parameter value policy error",
    2400: "Command failed",
}
_EPP_NSMAP: Any = {None: EPP_NS}


def _q(namespace: str, tag: str) -> str:
    return f"{{{namespace}}}{tag}"


@dataclass
class Domain:
    name: str
    expires_on: date
    statuses: set[str] = field(default_factory=lambda: {"ok"})
    rgp: set[str] = field(default_factory=set)
    registrant: str = "CID-HOLDER"
    updated_at: datetime | None = None


@dataclass
class Notice:
    message_id: str
    text: str
    domain_name: str
    tag: str = "panData"


class Tls:
    """A throwaway CA and a server certificate for 127.0.0.1 (trustme)."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self._ca_file = self.ca.cert_pem.tempfile()
        self.ca_file = self._ca_file.__enter__()

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        return context


class EppServer:
    def __init__(self, tls: Tls, dialect: str = "ietf", client_id: str = "REG-HOSTLIFE",
                 password: str = "secret-pw") -> None:
        self.tls = tls
        self.dialect = dialect
        self.domain_ns = FRED_OBJECTS[2] if dialect == "fred" else IETF_OBJECTS[0]
        self.client_id = client_id
        self.password = password
        self.domains: dict[str, Domain] = {}
        self.notices: list[Notice] = []
        self.executed: list[tuple[str, str]] = []
        """(command, domain) for every command the registry carried out, logins and hellos included."""
        self.reports: list[dict[str, list[str]]] = []
        self.logins: list[list[str]] = []
        self._failures: list[tuple[int, str]] = []
        self._hang: set[str] = set()
        self._drop_after: set[str] = set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._sv_counter = 0
        self.port = 0

    # --- steering ---------------------------------------------------------------------------

    def add_domain(self, name: str, expires_on: date, **kwargs: Any) -> Domain:
        self.domains[name] = Domain(name, expires_on, **kwargs)
        return self.domains[name]

    def fail_next(self, count: int, code: int, reason: str = "") -> None:
        """Answer the next `count` commands (after login) with `code`, without executing them."""
        self._failures.extend([(code, reason)] * count)

    def hang_next(self, command: str) -> None:
        """Never answer the next `command`, nor execute it."""
        self._hang.add(command)

    def drop_after_next(self, command: str) -> None:
        """Execute the next `command`, then close the connection instead of answering."""
        self._drop_after.add(command)

    async def drop_all_connections(self) -> None:
        """As a registry does when it restarts or times out idle sessions."""
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0.05)

    def count(self, command: str, name: str = "") -> int:
        return sum(1 for c, n in self.executed if c == command and (not name or n == name))

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0,
                                                  ssl=self.tls.server_context())
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self.drop_all_connections()
            await self._server.wait_closed()

    # --- protocol ---------------------------------------------------------------------------

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        logged_in = False
        try:
            await self._send(writer, self._greeting())
            while True:
                header = await reader.readexactly(4)
                (length,) = struct.unpack("!I", header)
                root = etree.fromstring(await reader.readexactly(length - 4))
                if root.find(_q(EPP_NS, "hello")) is not None:
                    self.executed.append(("hello", ""))
                    await self._send(writer, self._greeting())
                    continue
                command = root.find(_q(EPP_NS, "command"))
                if command is None:
                    await self._send(writer, self._response(2001, None))
                    continue
                cl_trid = command.findtext(_q(EPP_NS, "clTRID"))
                skip = {_q(EPP_NS, "clTRID"), _q(EPP_NS, "extension")}
                verb = next(c for c in command if c.tag not in skip)
                name = etree.QName(verb).localname
                if name == "login":
                    logged_in = self._login(verb)
                    await self._send(writer, self._response(1000 if logged_in else 2200, cl_trid))
                    continue
                if name == "logout":
                    await self._send(writer, self._response(1500, cl_trid))
                    break
                if not logged_in:
                    await self._send(writer, self._response(2002, cl_trid))
                    continue
                kind = self._kind(name, verb, command)
                if kind in self._hang:
                    self._hang.discard(kind)
                    await reader.read()  # silent until the client gives up and disconnects
                    break
                if self._failures:
                    code, reason = self._failures.pop(0)
                    await self._send(writer, self._response(code, cl_trid, reason=reason))
                    continue
                answer = self._execute(kind, verb, command, cl_trid)
                if kind in self._drop_after:
                    self._drop_after.discard(kind)
                    break
                await self._send(writer, answer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, root: etree._Element) -> None:
        payload = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        writer.write(struct.pack("!I", len(payload) + 4) + payload)
        await writer.drain()

    def _greeting(self) -> etree._Element:
        epp = etree.Element(_q(EPP_NS, "epp"), nsmap=_EPP_NSMAP)
        greeting = etree.SubElement(epp, _q(EPP_NS, "greeting"))
        etree.SubElement(greeting, _q(EPP_NS, "svID")).text = f"test registry ({self.dialect})"
        etree.SubElement(greeting, _q(EPP_NS, "svDate")).text = datetime.now(UTC).isoformat()
        menu = etree.SubElement(greeting, _q(EPP_NS, "svcMenu"))
        etree.SubElement(menu, _q(EPP_NS, "version")).text = "1.0"
        for lang in ("en", "cs"):
            etree.SubElement(menu, _q(EPP_NS, "lang")).text = lang
        for uri in FRED_OBJECTS if self.dialect == "fred" else IETF_OBJECTS:
            etree.SubElement(menu, _q(EPP_NS, "objURI")).text = uri
        extension = etree.SubElement(menu, _q(EPP_NS, "svcExtension"))
        ext = "http://www.nic.cz/xml/epp/enumval-1.2" if self.dialect == "fred" else RGP_NS
        etree.SubElement(extension, _q(EPP_NS, "extURI")).text = ext
        return epp

    def _response(self, code: int, cl_trid: str | None, *, reason: str = "") -> etree._Element:
        epp = etree.Element(_q(EPP_NS, "epp"), nsmap=_EPP_NSMAP)
        response = etree.SubElement(epp, _q(EPP_NS, "response"))
        result = etree.SubElement(response, _q(EPP_NS, "result"), code=str(code))
        etree.SubElement(result, _q(EPP_NS, "msg")).text = MESSAGES.get(code, "Error")
        if reason:
            ext_value = etree.SubElement(result, _q(EPP_NS, "extValue"))
            etree.SubElement(ext_value, _q(EPP_NS, "value"))
            etree.SubElement(ext_value, _q(EPP_NS, "reason")).text = reason
        tr_id = etree.SubElement(response, _q(EPP_NS, "trID"))
        if cl_trid is not None:
            etree.SubElement(tr_id, _q(EPP_NS, "clTRID")).text = cl_trid
        self._sv_counter += 1
        etree.SubElement(tr_id, _q(EPP_NS, "svTRID")).text = f"SV-{self._sv_counter}"
        return epp

    def _login(self, login: etree._Element) -> bool:
        uris = [e.text or "" for e in login.iter(_q(EPP_NS, "objURI"), _q(EPP_NS, "extURI"))]
        ok = (login.findtext(_q(EPP_NS, "clID")) == self.client_id
              and login.findtext(_q(EPP_NS, "pw")) == self.password
              and self.domain_ns in uris)
        if ok:
            self.logins.append(uris)
            self.executed.append(("login", ""))
        return ok

    def _kind(self, name: str, verb: etree._Element, command: etree._Element) -> str:
        if name == "poll":
            return f"poll-{verb.get('op')}"
        if name == "update" and command.find(f"{{{EPP_NS}}}extension/{{{RGP_NS}}}update") is not None:
            return "restore"
        return name

    def _execute(self, kind: str, verb: etree._Element, command: etree._Element,
                 cl_trid: str | None) -> etree._Element:
        if kind == "poll-req":
            return self._poll_request(cl_trid)
        if kind == "poll-ack":
            return self._poll_ack(verb.get("msgID", ""), cl_trid)
        element = verb.find(_q(self.domain_ns, kind if kind != "restore" else "update"))
        if element is None:
            return self._response(2101, cl_trid)
        name = element.findtext(_q(self.domain_ns, "name")) or ""
        domain = self.domains.get(name)
        if domain is None:
            return self._response(2303, cl_trid)
        if kind == "info":
            self.executed.append(("info", name))
            return self._info(domain, cl_trid)
        if kind == "renew":
            return self._renew(domain, element, cl_trid)
        if kind == "restore":
            return self._restore(domain, command, cl_trid)
        return self._response(2101, cl_trid)

    def _res_data(self, epp: etree._Element, tag: str) -> etree._Element:
        response = epp.find(_q(EPP_NS, "response"))
        assert response is not None
        res_data = etree.Element(_q(EPP_NS, "resData"))
        response.insert(1, res_data)
        return etree.SubElement(res_data, _q(self.domain_ns, tag), nsmap={"domain": self.domain_ns})

    def _expiry_text(self, expires_on: date) -> str:
        """FRED sends a plain date; RFC 5731 a dateTime."""
        return expires_on.isoformat() if self.dialect == "fred" else f"{expires_on.isoformat()}T10:00:00.0Z"

    def _info(self, domain: Domain, cl_trid: str | None) -> etree._Element:
        epp = self._response(1000, cl_trid)
        data = self._res_data(epp, "infData")
        etree.SubElement(data, _q(self.domain_ns, "name")).text = domain.name
        etree.SubElement(data, _q(self.domain_ns, "roid")).text = f"D{abs(hash(domain.name)) % 10**8}-TEST"
        for status in sorted(domain.statuses):
            etree.SubElement(data, _q(self.domain_ns, "status"), s=status)
        etree.SubElement(data, _q(self.domain_ns, "registrant")).text = domain.registrant
        etree.SubElement(data, _q(self.domain_ns, "clID")).text = self.client_id
        if domain.updated_at is not None:
            etree.SubElement(data, _q(self.domain_ns, "upDate")).text = domain.updated_at.isoformat()
        etree.SubElement(data, _q(self.domain_ns, "exDate")).text = self._expiry_text(domain.expires_on)
        if domain.rgp:
            response = epp.find(_q(EPP_NS, "response"))
            assert response is not None
            extension = etree.Element(_q(EPP_NS, "extension"))
            response.insert(2, extension)
            info = etree.SubElement(extension, _q(RGP_NS, "infData"), nsmap={"rgp": RGP_NS})
            for status in sorted(domain.rgp):
                etree.SubElement(info, _q(RGP_NS, "rgpStatus"), s=status)
        return epp

    def _renew(self, domain: Domain, element: etree._Element, cl_trid: str | None) -> etree._Element:
        if domain.statuses & {"pendingDelete", "serverRenewProhibited", "clientRenewProhibited"}:
            return self._response(2304, cl_trid)
        current = element.findtext(_q(self.domain_ns, "curExpDate"))
        if current != domain.expires_on.isoformat():
            # FRED answers a stale curExpDate with 2004, gTLD registries commonly with 2306.
            code = 2004 if self.dialect == "fred" else 2306
            return self._response(code, cl_trid, reason="curExpDate does not match the expiration date")
        years = int(element.findtext(_q(self.domain_ns, "period")) or "1")
        domain.expires_on = domain.expires_on.replace(year=domain.expires_on.year + years)
        self.executed.append(("renew", domain.name))
        epp = self._response(1000, cl_trid)
        data = self._res_data(epp, "renData")
        etree.SubElement(data, _q(self.domain_ns, "name")).text = domain.name
        etree.SubElement(data, _q(self.domain_ns, "exDate")).text = self._expiry_text(domain.expires_on)
        return epp

    def _restore(self, domain: Domain, command: etree._Element, cl_trid: str | None) -> etree._Element:
        restore = command.find(f"{{{EPP_NS}}}extension/{{{RGP_NS}}}update/{{{RGP_NS}}}restore")
        assert restore is not None
        operation = restore.get("op")
        if operation == "request":
            if "redemptionPeriod" not in domain.rgp:
                return self._response(2304, cl_trid)
            domain.rgp = {"pendingRestore"}
            self.executed.append(("restore-request", domain.name))
            status = "pendingRestore"
        elif operation == "report":
            if "pendingRestore" not in domain.rgp:
                return self._response(2304, cl_trid)
            report: dict[str, list[str]] = {}
            for child in restore.iterfind(f"{{{RGP_NS}}}report/*"):
                report.setdefault(etree.QName(child).localname, []).append(child.text or "")
            required = {"preData", "postData", "delTime", "resTime", "resReason", "statement"}
            if not required <= report.keys() or len(report["statement"]) != 2:
                return self._response(2003 if not required <= report.keys() else 2306, cl_trid)
            self.reports.append(report)
            domain.rgp = set()
            domain.statuses = {"ok"}
            self.executed.append(("restore-report", domain.name))
            status = ""
        else:
            return self._response(2001, cl_trid)
        epp = self._response(1000, cl_trid)
        if status:
            response = epp.find(_q(EPP_NS, "response"))
            assert response is not None
            extension = etree.Element(_q(EPP_NS, "extension"))
            response.insert(1, extension)
            up_data = etree.SubElement(extension, _q(RGP_NS, "upData"), nsmap={"rgp": RGP_NS})
            etree.SubElement(up_data, _q(RGP_NS, "rgpStatus"), s=status)
        return epp

    def _poll_request(self, cl_trid: str | None) -> etree._Element:
        self.executed.append(("poll-req", ""))
        if not self.notices:
            return self._response(1300, cl_trid)
        notice = self.notices[0]
        epp = self._response(1301, cl_trid)
        response = epp.find(_q(EPP_NS, "response"))
        assert response is not None
        queue = etree.Element(_q(EPP_NS, "msgQ"), count=str(len(self.notices)), id=notice.message_id)
        response.insert(1, queue)
        etree.SubElement(queue, _q(EPP_NS, "qDate")).text = "2026-01-15T08:00:00.0Z"
        etree.SubElement(queue, _q(EPP_NS, "msg")).text = notice.text
        res_data = etree.Element(_q(EPP_NS, "resData"))
        response.insert(2, res_data)
        data = etree.SubElement(res_data, _q(self.domain_ns, notice.tag), nsmap={"domain": self.domain_ns})
        etree.SubElement(data, _q(self.domain_ns, "name"), paResult="1").text = notice.domain_name
        return epp

    def _poll_ack(self, message_id: str, cl_trid: str | None) -> etree._Element:
        if not any(n.message_id == message_id for n in self.notices):
            return self._response(2303, cl_trid)
        self.notices = [n for n in self.notices if n.message_id != message_id]
        self.executed.append(("poll-ack", message_id))
        epp = self._response(1000, cl_trid)
        response = epp.find(_q(EPP_NS, "response"))
        assert response is not None
        response.insert(1, etree.Element(_q(EPP_NS, "msgQ"), count=str(len(self.notices)), id=message_id))
        return epp
