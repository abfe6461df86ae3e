"""Media types, transfer syntaxes and Accept-header negotiation (PS3.18 8.7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vna.errors import BadRequest

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE = {EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE}

# media type of a frame / bulk value encoded in each compressed transfer syntax,
# and the default transfer syntax of each media type
TS_MEDIA: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}
MEDIA_DEFAULT_TS: dict[str, str] = {
    "application/octet-stream": EXPLICIT_LE,
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/jphc": "1.2.840.10008.1.2.4.201",
}


def media_type_of(ts: str) -> str:
    return TS_MEDIA.get(ts, "application/octet-stream")


@dataclass(slots=True)
class MediaRange:
    type: str  # e.g. "application/dicom", "image/jpeg", "*/*"
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def parse_params(text: str) -> tuple[str, dict[str, str]]:
    """'a/b; k=v; k2="v2"' -> ('a/b', {'k': 'v', 'k2': 'v2'})."""
    head, *rest = _split_outside_quotes(text, ";")
    params: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            continue
        params[key.strip().lower()] = value.strip().strip('"')
    return head.strip().lower(), params


def parse_accept(header: str | None) -> list[MediaRange]:
    """Accept alternatives, best first.  A multipart/related range is unwrapped to
    its ``type`` parameter, which is what the part must be."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for order, item in enumerate(_split_outside_quotes(header, ",")):
        if not item.strip():
            continue
        mtype, params = parse_params(item)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            raise BadRequest(f"bad q value in Accept: {item.strip()!r}") from None
        if mtype == "multipart/related":
            mtype = params.pop("type", "*/*").lower()
        ranges.append((-q, order, MediaRange(mtype, params, q)))
    return [r for _, _, r in sorted(ranges, key=lambda t: (t[0], t[1])) if r.q > 0]


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def matches(range_type: str, mtype: str) -> bool:
    if range_type in ("*/*", mtype):
        return True
    major, _, minor = range_type.partition("/")
    return minor == "*" and mtype.startswith(major + "/")
