"""DICOM JSON straight from the encoded bytes: the fast path of ``dataset_json``.

Building pydicom DataElements and calling ``to_json_dict`` costs ~20 us an element,
most of a small instance's parse.  This module decodes the common cases from the
raw bytes and produces *exactly* what ``metadata.dataset_json_pydicom`` gives for
the same dataset (tests/test_dicom_fastjson.py compares the two over every
generated and every pydicom test file).  It copies pydicom's conversion rules
(values.py, valuerep.py, jsonrep.py) VR by VR; whenever a value is outside the
cases copied here -- an undecodable value, an unknown character set, an ambiguous
or unknown implicit VR, an explicit UN, a number string pydicom would repair, a
duplicate tag, big endian -- it raises ``Unsupported`` and the caller uses
pydicom for the whole dataset.  Declining is always safe; guessing never is.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom.charset import convert_encodings, python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.multival import MultiValue
from pydicom.values import convert_PN, convert_single_string, convert_string, convert_text

from vna.dicom.walk import Element

ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
CHARSET_TAG = 0x00080005
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
MAX_DEPTH = 64


class Unsupported(Exception):
    """The fast path declines this dataset; pydicom must convert it."""


_HEADER = struct.Struct("<HH2sH").unpack_from
_TAG_LEN = struct.Struct("<HHL").unpack_from
_U32 = struct.Struct("<L").unpack_from

_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_SHORT_VRS = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH"}
_SHORT_VRS |= {"SL", "SS", "ST", "TM", "UI", "UL", "US"}
_VR_OF_BYTES = {vr.encode(): vr for vr in _LONG_VRS | _SHORT_VRS}
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_FORMATS = {
    "US": ("H", 2),
    "SS": ("h", 2),
    "UL": ("L", 4),
    "SL": ("l", 4),
    "FL": ("f", 4),
    "FD": ("d", 8),
    "UV": ("Q", 8),
    "SV": ("q", 8),
}
_STRING_VRS = frozenset({"AS", "CS", "DA", "DT", "TM"})  # convert_string
_TEXT_VRS = frozenset({"SH", "LO", "UC"})  # convert_text: charset, split, rstrip each
_SINGLE_VRS = frozenset({"LT", "ST", "UT"})  # convert_single_string
_CHARSET_VRS = _TEXT_VRS | _SINGLE_VRS | {"PN"}
# Character sets whose text decodes byte-for-byte like pydicom's (no escapes, '='
# and '\' never inside a multi-byte character): ASCII-compatible single-byte, UTF-8.
_SAFE_CODECS = frozenset(
    {"iso8859", "latin_1", "UTF8"}
    | {f"iso8859_{n}" for n in (2, 3, 4)}
    | {f"iso_ir_{n}" for n in (126, 127, 138, 144, 148, 166)}
)
DEFAULT_CODEC = "iso8859"
# number strings whose conversion by IS()/DSfloat() is plain int()/float()
_IS_RE = re.compile(r" *[+-]?[0-9]+ *")
_DS_RE = re.compile(r" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})? *")

_implicit_vrs: dict[int, str] = {}
_KEYS: dict[int, str] = {}  # tag -> "GGGGEEEE", for the public tags met so far


def _key(tag: int) -> str:
    key = f"{tag:08X}"
    if not tag >> 16 & 1 and len(_KEYS) < 8192:
        _KEYS[tag] = key
    return key


def _implicit_vr(tag: int) -> str:
    """The dictionary VR of a public tag; ambiguous ones come back as 'A or B'."""
    vr = _implicit_vrs.get(tag)
    if vr is None:
        if tag >> 16 & 1:  # private: pydicom looks at the private creator
            raise Unsupported("private tag in implicit VR")
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise Unsupported("tag not in the dictionary") from None
        _implicit_vrs[tag] = vr
    return vr


# How text is decoded: one Python codec, decoded here (single-byte sets, UTF-8);
# or pydicom's list of encodings (code extensions: ISO 2022 escape sequences,
# multi-byte sets), whose values go through pydicom's own converters one by one,
# so they come out exactly as pydicom reads them without parsing the whole
# dataset with pydicom (Korean and Japanese hospitals send these every day).
Codec = str | tuple[str, ...]


def charset_codec(raw: bytes) -> Codec:
    """How pydicom decodes text under this Specific Character Set value, or
    Unsupported.  Present but empty means the default, even in an item whose
    enclosing dataset has another (as pydicom reads it)."""
    terms = raw.decode("latin-1").rstrip(" \x00").split("\\")
    if terms == [""]:
        return DEFAULT_CODEC
    if any(t not in python_encoding for t in terms[1:]) or terms[0] not in python_encoding:
        raise Unsupported("unknown character set term")
    codec = python_encoding[terms[0] or "ISO_IR 6"]
    if len(terms) == 1 and codec in _SAFE_CODECS:
        return codec
    return tuple(convert_encodings(convert_string(raw, True)))


def _decode(raw: bytes, codec: Codec) -> str:
    if b"\x1b" in raw:
        raise Unsupported("escape sequence")
    try:
        return raw.decode(codec)
    except UnicodeError:
        raise Unsupported("undecodable text") from None


def _is(raw: bytes) -> list[int] | None:
    text = raw.decode("latin-1").rstrip(" \x00")
    if not text.strip(" "):
        return None
    parts = text.split("\\")
    if not all(_IS_RE.fullmatch(p) for p in parts):
        raise Unsupported("IS value pydicom would repair")
    return [int(p) for p in parts]


def _ds(raw: bytes) -> list[float] | None:
    text = raw.decode("latin-1").strip().rstrip(" \x00")
    if not text:
        return None
    parts = text.split("\\")
    if not all(_DS_RE.fullmatch(p) for p in parts):
        raise Unsupported("DS value pydicom would repair")
    return [float(p) for p in parts]


def _pydicom_values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, MultiValue) else [value]


def _pn_entry(groups: list[str] | tuple[str, ...]) -> dict[str, str]:
    """One person name's JSON object from its component groups, as pydicom's."""
    if not groups:
        raise Unsupported("empty person name in a value pydicom cannot convert")
    return dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False))


def _pn_extended(raw: bytes, codec: tuple[str, ...]) -> list[dict[str, str]]:
    values = _pydicom_values(convert_PN(raw, list(codec)))
    return [_pn_entry(name.components) for name in values]


def _pn(raw: bytes, codec: Codec) -> list[dict[str, str]] | None:
    stripped = raw.rstrip(b"\x00 ")
    if not stripped:
        return None
    if isinstance(codec, tuple):
        return _pn_extended(raw, codec)
    out = []
    for name in _decode(stripped, codec).split("\\"):
        groups = name.split("=")
        while groups and not groups[-1]:
            groups.pop()
        out.append(_pn_entry(groups))
    return out


# The Value of each string VR, as pydicom's converter + DataElement give it.
def _string(raw: bytes, codec: Codec) -> list[str] | None:  # AS CS DA DT TM: convert_string
    text = raw.decode("latin-1").rstrip(" \x00")
    return text.split("\\") if text else None


def _text(raw: bytes, codec: Codec) -> list[str] | None:  # SH LO UC: convert_text
    if isinstance(codec, tuple):
        values = _pydicom_values(convert_text(raw, list(codec)))
    else:
        values = [v.rstrip("\x00 ") for v in _decode(raw, codec).split("\\")]
    return values if len(values) > 1 or values[0] else None


def _single(raw: bytes, codec: Codec) -> list[str] | None:  # LT ST UT
    if isinstance(codec, tuple):
        text = convert_single_string(raw, list(codec))
    else:
        text = _decode(raw, codec).rstrip("\x00 ")
    return [text] if text else None


def _ui(raw: bytes, codec: Codec) -> list[str] | None:  # convert_UI, then UID() strips
    text = raw.decode("latin-1").rstrip("\x00 ")
    return [v.strip() for v in text.split("\\")] if text else None


def _ae(raw: bytes, codec: Codec) -> list[str] | None:  # convert_AE_string
    values = [v.strip() for v in raw.decode("latin-1").split("\\")]
    return values if len(values) > 1 or values[0] else None


def _ur(raw: bytes, codec: Codec) -> list[str] | None:  # convert_UR_string: one value
    text = raw.decode("latin-1").rstrip()
    return [text] if text else None


def _at(raw: bytes, codec: Codec) -> list[str] | None:
    if len(raw) % 4:
        raise Unsupported("AT value of odd length")
    pairs = struct.unpack(f"<{len(raw) // 2}H", raw)
    return [f"{g << 16 | e:08X}" for g, e in zip(pairs[::2], pairs[1::2], strict=True)] or None


def _number_converter(vr: str) -> Callable[[bytes, str], list[Any] | None]:
    fmt, size = _NUMBER_FORMATS[vr]

    def convert(raw: bytes, codec: Codec) -> list[Any] | None:
        n, rest = divmod(len(raw), size)
        if rest:
            raise Unsupported("number value of odd length")
        return list(struct.unpack(f"<{n}{fmt}", raw)) if n else None

    return convert


# VR -> (raw value, text codec) -> the JSON "Value" list, or None when empty
_CONVERTERS: dict[str, Callable[[bytes, str], list[Any] | None]] = {
    **{vr: _number_converter(vr) for vr in _NUMBER_FORMATS},
    **dict.fromkeys(_STRING_VRS, _string),
    **dict.fromkeys(_TEXT_VRS, _text),
    **dict.fromkeys(_SINGLE_VRS, _single),
    "UI": _ui,
    "AE": _ae,
    "UR": _ur,
    "IS": lambda raw, codec: _is(raw),
    "DS": lambda raw, codec: _ds(raw),
    "PN": _pn,
    "AT": _at,
}


# The same short values come again and again: the instances of a series share
# their patient, study, series and equipment attributes byte for byte.  Each
# value's JSON is kept under its tag, VR, bytes and codec, and handed out fresh
# (new dicts and lists each time: no two instances' metadata share a mutable
# object).  Parsing a CT of a series took 146 us, 96 with this.
MEMO_BYTES = 128  # values up to this long are remembered
MEMO_SIZE = 50_000  # values remembered at most, then forgotten all at once
_memo: dict[tuple[int, str, bytes, Codec], tuple[str, tuple[Any, ...] | None] | dict] = {}


def _remembered(tag: int, vr: str, raw: bytes, codec: Codec) -> dict[str, Any]:
    key = (tag, vr, raw, codec)
    kept = _memo.get(key)
    if kept is None:
        elem = value_json(vr, raw, codec)  # Unsupported is raised, not kept
        if set(elem) == {"vr", "Value"}:
            kept = (vr, tuple(elem["Value"]))
        elif len(elem) == 1:
            kept = (vr, None)
        else:
            kept = elem  # InlineBinary: its string is immutable
        if len(_memo) >= MEMO_SIZE:
            _memo.clear()
        _memo[key] = kept
    if type(kept) is dict:
        return dict(kept)
    vr, value = kept
    if value is None:
        return {"vr": vr}
    if vr == "PN":  # a dict per name
        return {"vr": vr, "Value": [dict(name) for name in value]}
    return {"vr": vr, "Value": list(value)}


def _in_order(found: dict[str, dict[str, Any]], ordered: bool) -> dict[str, Any]:
    """The elements in tag order, as DICOM JSON lists them (most files are)."""
    return found if ordered else dict(sorted(found.items()))


_new = tuple.__new__


def value_json(vr: str, raw: bytes, codec: Codec) -> dict[str, Any]:
    """The JSON of a non-sequence value that is not bulk data."""
    convert = _CONVERTERS.get(vr)
    if convert is not None:
        value = convert(raw, codec)
        return {"vr": vr, "Value": value} if value is not None else {"vr": vr}
    if vr in BULK_VRS and vr != "UN":
        return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode()} if raw else {"vr": vr}
    raise Unsupported("explicit UN: pydicom looks the VR up")


class FastDecoder:
    """Decodes one little-endian dataset held in ``buf`` into DICOM JSON.

    It also records where each top-level element lies (``elements``, as the
    structural walker would map them) and the offset where it stopped (``stop``:
    the first pixel data tag, ``at_pixels``, or the end of ``buf``), so a caller
    holding the file's head in memory needs the walker only from there on.
    """

    def __init__(self, buf: bytes, implicit: bool, threshold: int, bulk_prefix: str) -> None:
        self.buf, self.implicit = buf, implicit
        self.threshold, self.prefix = threshold, bulk_prefix
        self.elements: list[Element] = []
        self.stop, self.at_pixels = 0, False

    def top(self, start: int = 0) -> dict[str, Any]:
        """The top-level dataset from ``start`` up to (not including) the first pixel
        data tag."""
        try:
            out, self.stop = self.dataset(
                start, len(self.buf), [], DEFAULT_CODEC, 0, delimited=False
            )
        except (struct.error, IndexError, ValueError) as exc:  # never guess: decline
            raise Unsupported(f"{type(exc).__name__}: {exc}") from None
        return out

    def dataset(
        self, pos: int, end: int, path: list[str], codec: Codec, depth: int, *, delimited: bool
    ) -> tuple[dict[str, Any], int]:
        """Elements from ``pos`` to ``end`` (or, ``delimited``, to the item delimiter);
        returns the JSON and the offset after them.  One long loop on purpose: it
        runs once per element, and calls cost as much as the work here."""
        buf, implicit, size = self.buf, self.implicit, len(self.buf)
        found: dict[str, dict[str, Any]] = {}  # by JSON key: "GGGGEEEE" sorts as the tag
        last, ordered, text_seen = -1, True, False
        record, keys = self.elements.append, _KEYS
        while pos < end:
            if pos + 8 > size:
                raise Unsupported("header past the end")
            g, e, vr_bytes, length = _HEADER(buf, pos)
            tag = g << 16 | e
            if g == 0xFFFE:
                if tag == ITEM_DELIM and delimited:
                    return _in_order(found, ordered), pos + 8
                raise Unsupported("stray delimiter")
            if implicit:
                (length,) = _U32(buf, pos + 4)
                vr, start, vr_or_none = (_implicit_vr(tag) if e else "UL"), pos + 8, None
            else:
                vr = _VR_OF_BYTES.get(vr_bytes, "")
                if vr in _LONG_VRS:
                    if pos + 12 > size:
                        raise Unsupported("header past the end")
                    (length,) = _U32(buf, pos + 8)
                    start = pos + 12
                elif vr:
                    start = pos + 8
                else:
                    raise Unsupported("unknown VR")
                vr_or_none = vr
            if not depth and tag in PIXEL_TAGS:
                self.at_pixels = True
                break  # as dcmread(stop_before_pixels=True)
            key = keys.get(tag) or _key(tag)
            if tag <= last:
                if tag == last or key in found:
                    raise Unsupported("duplicate tag")
                ordered = False
            last = tag
            if " or " in vr:  # implicit 'OB or OW' & co: pydicom resolves it per dataset
                raise Unsupported(f"ambiguous VR {vr}")
            if tag == CHARSET_TAG:
                if text_seen or length == UNDEFINED or start + length > end:
                    raise Unsupported("odd Specific Character Set")
                codec = charset_codec(buf[start : start + length])
            elif vr in _CHARSET_VRS or vr == "SQ":
                text_seen = True
            skip = not e or g == 2 or tag == 0xFFFCFFFC  # left out of the JSON
            if length == UNDEFINED:
                at = pos
                value, pos = self._undefined(tag, vr, start, path, codec, depth)
                if pos > end:
                    raise Unsupported("value past the end")
                if not depth:  # the walker's Element (no VR when implicit)
                    record(_new(Element, (tag, vr_or_none, at, start, pos - 8 - start, True)))
                if not skip:
                    found[key] = value
                continue
            if not depth:  # tuple.__new__: a NamedTuple's own __new__ is a Python call
                record(_new(Element, (tag, vr_or_none, pos, start, length, False)))
            pos = start + length
            if pos > end:
                raise Unsupported("value past the end")
            if skip:
                continue
            if vr == "SQ":
                found[key] = self._sequence(tag, start, pos, path, codec, depth)
            elif length > self.threshold and vr in BULK_VRS:
                found[key] = self._bulk(tag, vr, path)
            elif length <= MEMO_BYTES:
                found[key] = _remembered(tag, vr, buf[start:pos], codec)
            else:
                found[key] = value_json(vr, buf[start:pos], codec)
        if delimited:
            raise Unsupported("item without delimiter")
        return _in_order(found, ordered), pos

    def _bulk(self, tag: int, vr: str, path: list[str]) -> dict[str, Any]:
        return {"vr": vr, "BulkDataURI": self.prefix + "/".join([*path, _key(tag)])}

    def _undefined(
        self, tag: int, vr: str, start: int, path: list[str], codec: Codec, depth: int
    ) -> tuple[dict[str, Any], int]:
        if vr == "SQ":
            return self._items(tag, start, None, path, codec, depth)
        if vr in BULK_VRS and vr != "UN" and tag & 0xFFFF:
            return self._bulk(tag, vr, path), self._skip_fragments(start)
        raise Unsupported(f"undefined length {vr}")

    def _skip_fragments(self, pos: int) -> int:
        """Offset after the sequence delimiter of an encapsulated value."""
        while True:
            if pos + 8 > len(self.buf):
                raise Unsupported("fragments past the end")
            g, e, length = _TAG_LEN(self.buf, pos)
            tag = g << 16 | e
            if tag == SEQ_DELIM:
                return pos + 8
            if tag != ITEM or length == UNDEFINED:
                raise Unsupported("odd fragment")
            pos += 8 + length

    def _sequence(
        self, tag: int, start: int, stop: int, path: list[str], codec: Codec, depth: int
    ) -> dict[str, Any]:
        found, _ = self._items(tag, start, stop, path, codec, depth)
        return found

    def _items(
        self, tag: int, pos: int, stop: int | None, path: list[str], codec: Codec, depth: int
    ) -> tuple[dict[str, Any], int]:
        """The items of a sequence ending at ``stop`` (or at its delimiter)."""
        if depth >= MAX_DEPTH:
            raise Unsupported("deep nesting")
        items: list[dict[str, Any]] = []
        key = f"{tag:08X}"
        while stop is None or pos < stop:
            if pos + 8 > len(self.buf):
                raise Unsupported("item past the end")
            g, e, length = _TAG_LEN(self.buf, pos)
            item_tag = g << 16 | e
            if item_tag == SEQ_DELIM and stop is None:
                pos += 8
                break
            if item_tag != ITEM:
                raise Unsupported("not an item")
            sub = [*path, key, str(len(items))]
            if length == UNDEFINED:
                item, pos = self.dataset(
                    pos + 8, len(self.buf), sub, codec, depth + 1, delimited=True
                )
            else:
                item_end = pos + 8 + length
                if item_end > len(self.buf) or (stop is not None and item_end > stop):
                    raise Unsupported("item past the end")
                item, pos = self.dataset(pos + 8, item_end, sub, codec, depth + 1, delimited=False)
                if pos != item_end:
                    raise Unsupported("item contents overrun")
            items.append(item)
        return ({"vr": "SQ", "Value": items} if items else {"vr": "SQ"}), pos
