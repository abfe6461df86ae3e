"""Audit events to a syslog collector (an audit record repository) as DICOM audit
messages (PS3.15 A.5, the RFC 3881 schema), framed per RFC 5424.

``audit_syslog = "udp://host:514"`` (one datagram per message) or
``"tcp://host:601"`` (RFC 6587 octet counting on one kept-open connection).  The
index stays the trail of record: a collector that is down costs log warnings,
never a request.  Sending is blocking socket work, done off the event loop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from vna.errors import BadRequest
from vna.index.security import AuditRecord

log = logging.getLogger(__name__)

FACILITY = 10  # authpriv: security/authorization messages
NOTICE, WARNING = 5, 4
MSGID = "DICOM+RFC3881"

# action -> (EventID code, display name, EventActionCode)
EVENTS = {
    "store": ("110104", "DICOM Instances Transferred", "C"),
    "query": ("110112", "Query", "E"),
    "retrieve": ("110103", "DICOM Instances Accessed", "R"),
    "view": ("110103", "DICOM Instances Accessed", "R"),
    "delete": ("110105", "DICOM Study Deleted", "D"),
    "login": ("110114", "User Authentication", "E"),
    "logout": ("110114", "User Authentication", "E"),
    "audit-query": ("110101", "Audit Log Used", "R"),
    "admin": ("110113", "Security Alert", "E"),
}
OUTCOMES = {"success": "0", "denied": "4", "failure": "8"}


def _code(parent: ET.Element, tag: str, code: str, system: str, text: str) -> None:
    ET.SubElement(parent, tag, {"csd-code": code, "codeSystemName": system, "originalText": text})


def _object(root: ET.Element, oid: str, type_code: str, role: str, code: tuple[str, ...]) -> None:
    el = ET.SubElement(
        root,
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": oid,
            "ParticipantObjectTypeCode": type_code,
            "ParticipantObjectTypeCodeRole": role,
        },
    )
    _code(el, "ParticipantObjectIDTypeCode", *code)


def audit_message(rec: AuditRecord, source_id: str) -> bytes:
    """The PS3.15 A.5.1 AuditMessage XML for one event."""
    code, name, action = EVENTS.get(rec.action, ("110100", "Application Activity", "E"))
    root = ET.Element("AuditMessage")
    event = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": action,
            "EventDateTime": datetime.fromtimestamp(rec.at, UTC).isoformat(),
            "EventOutcomeIndicator": OUTCOMES.get(rec.outcome, "8"),
        },
    )
    _code(event, "EventID", code, "DCM", name)
    if rec.action in ("login", "logout"):
        kind = ("110122", "Login") if rec.action == "login" else ("110123", "Logout")
        _code(event, "EventTypeCode", kind[0], "DCM", kind[1])
    person = ET.SubElement(
        root,
        "ActiveParticipant",
        {"UserID": f"{rec.who_kind}:{rec.who}", "UserIsRequestor": "true"},
    )
    if rec.ip:
        person.set("NetworkAccessPointID", rec.ip)
        person.set("NetworkAccessPointTypeCode", "2")  # an IP address
    if rec.role:
        _code(person, "RoleIDCode", rec.role, "vna", rec.role)
    ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": source_id})
    if rec.study_uid:
        _object(root, rec.study_uid, "2", "3", ("110180", "DCM", "Study Instance UID"))
    if rec.slide_id:
        _object(root, rec.slide_id, "2", "3", ("slide", "vna", "Slide"))
    if rec.patient_id:
        _object(root, rec.patient_id, "1", "1", ("2", "RFC-3881", "Patient Number"))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def syslog_frame(rec: AuditRecord, source_id: str, hostname: str) -> bytes:
    severity = NOTICE if rec.outcome == "success" else WARNING
    stamp = datetime.fromtimestamp(rec.at, UTC).isoformat(timespec="milliseconds")
    header = f"<{FACILITY * 8 + severity}>1 {stamp} {hostname} vna {os.getpid()} {MSGID} - "
    return header.encode() + b"\xef\xbb\xbf" + audit_message(rec, source_id)  # BOM: UTF-8 MSG


class SyslogSink:
    def __init__(self, url: str, source_id: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tcp") or not parts.hostname or not parts.port:
            raise BadRequest(
                f"audit_syslog must be udp://HOST:PORT or tcp://HOST:PORT, not {url!r}"
            )
        self.scheme, self.address = parts.scheme, (parts.hostname, parts.port)
        self.source_id = source_id
        self.hostname = socket.gethostname() or "-"
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def send(self, records: list[AuditRecord]) -> None:
        """Blocking: call through asyncio.to_thread."""
        frames = [syslog_frame(r, self.source_id, self.hostname) for r in records]
        with self._lock:
            try:
                self._send(frames)
            except OSError as exc:
                log.warning("audit syslog to %s:%s failed: %s", *self.address, exc)
                self.close()

    def _send(self, frames: list[bytes]) -> None:
        if self._sock is None:
            if self.scheme == "udp":
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            else:
                self._sock = socket.create_connection(self.address, timeout=10)
        if self.scheme == "udp":
            for frame in frames:
                self._sock.sendto(frame, self.address)
        else:
            self._sock.sendall(b"".join(b"%d %s" % (len(f), f) for f in frames))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
