"""A structural walker over a Part-10 file: element headers only, never values.

pydicom gives us decoded values but not a trustworthy map of where each value
lies (and it happily reads past the end of a truncated file).  This walker reads
only the 8/12-byte headers and skips values with ``seek``, so a multi-GB
whole-slide instance is mapped in bounded memory, every declared length is checked
against the file size (truncation is detected, not guessed), and the exact
absolute offsets of top-level values and of encapsulated fragments come out.

It needs no data dictionary: an undefined-length value is always a list of items
(a sequence or encapsulated pixel data), and defined-length values are skipped.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, NamedTuple

from vna.errors import InvalidDicom

ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
# Explicit VRs whose header has 2 reserved bytes and a 32-bit length (PS3.5 7.1.2).
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
MAX_DEPTH = 64  # nesting limit, so hostile input cannot exhaust the stack

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = frozenset({"1.2.840.10008.1.2.1.99"})


# little endian? -> unpackers of (tag, 32-bit length), (tag, VR, 16-bit length), 32 bits
_UNPACKERS = {
    little: [struct.Struct(("<" if little else ">") + f).unpack_from for f in ("HHL", "HH2sH", "L")]
    for little in (True, False)
}


class Element(NamedTuple):
    """Where one element lies in the file (absolute offsets).  A NamedTuple: made
    once per header walked, and a frozen dataclass costs ~3x more to build."""

    tag: int
    vr: str | None  # None in implicit VR
    header: int  # offset of the tag
    offset: int  # offset of the value
    length: int  # bytes of the value (computed for undefined length, delimiter excluded)
    undefined: bool  # encoded with undefined length (sequence of items)


def tag_str(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class Walker:
    """Walks a dataset stored in ``fp`` (``size`` bytes) with the given encoding."""

    def __init__(
        self, fp: BinaryIO, size: int, *, implicit: bool, little: bool = True, head: bytes = b""
    ) -> None:
        """``head``, when given, is the first ``len(head)`` bytes of ``fp``: headers
        inside it are sliced from memory instead of seek + read."""
        self.fp, self.size, self.implicit, self.little = fp, size, implicit, little
        self.head = head
        self._tag_len, self._short, self._u32 = _UNPACKERS[little]

    def implicit_twin(self) -> Walker:
        if self.implicit:
            return self
        return Walker(self.fp, self.size, implicit=True, head=self.head)

    def _read(self, pos: int, n: int, what: str) -> bytes:
        if pos + n <= len(self.head):
            return self.head[pos : pos + n]
        self.fp.seek(pos)
        data = self.fp.read(n)
        if len(data) != n:
            raise InvalidDicom(
                f"truncated file: {what} at offset {pos} runs past the end ({self.size} bytes)"
            )
        return data

    def header(self, pos: int) -> Element:
        """Decode the element header at ``pos`` (value not read)."""
        head = self.head
        if pos + 12 <= len(head):  # in memory: unpack in place (the common case)
            g, e, vr_bytes, short_len = self._short(head, pos)
            if g == 0xFFFE or self.implicit:
                (length,) = self._u32(head, pos + 4)
                return Element(g << 16 | e, None, pos, pos + 8, length, length == UNDEFINED)
            vr = _VR_NAMES.get(vr_bytes)
            if vr in _LONG_VR_NAMES:
                (length,) = self._u32(head, pos + 8)
                return Element(g << 16 | e, vr, pos, pos + 12, length, length == UNDEFINED)
            if vr is not None:
                return Element(g << 16 | e, vr, pos, pos + 8, short_len, False)
        raw = self._read(pos, 8, "element header")
        g, e, length = self._tag_len(raw)
        tag = g << 16 | e
        if g == 0xFFFE or self.implicit:
            return Element(tag, None, pos, pos + 8, length, length == UNDEFINED)
        _, _, vr, short_len = self._short(raw)
        if not (vr.isalpha() and vr.isupper()):
            raise InvalidDicom(f"invalid VR {vr!r} for {tag_str(tag)} at offset {pos}")
        if vr in LONG_VRS:
            (length,) = self._u32(self._read(pos + 8, 4, "element length"))
            return Element(tag, vr.decode(), pos, pos + 12, length, length == UNDEFINED)
        return Element(tag, vr.decode(), pos, pos + 8, short_len, False)

    def _check(self, el: Element) -> None:
        if el.offset + el.length > self.size:
            raise InvalidDicom(
                f"truncated file: {tag_str(el.tag)} at offset {el.header} declares "
                f"{el.length} bytes but the file ends at {self.size}"
            )

    def elements(
        self, pos: int, end: int | None = None, depth: int = 0
    ) -> tuple[list[Element], int]:
        """Elements from ``pos`` until ``end`` (or EOF, or, inside an undefined-length
        item, its item delimiter); returns them and the offset where it stopped."""
        out: list[Element] = []
        limit = self.size if end is None else end
        while pos < limit:
            el = self.header(pos)
            if el.tag == ITEM_DELIM and depth > 0:
                break
            if el.undefined:
                # PS3.5 6.2.2: an undefined-length UN value is encoded as Implicit VR LE
                walker = self.implicit_twin() if el.vr == "UN" else self
                stop = walker.items_end(el.offset, depth + 1, el.tag)
                el = Element(el.tag, el.vr, el.header, el.offset, stop - 8 - el.offset, True)
                pos = stop
            else:
                pos = el.offset + el.length
                if pos > self.size:
                    self._check(el)  # raises, naming the element
            out.append(el)
        return out, pos

    def item_list(self, pos: int, depth: int, owner: int) -> list[Element]:
        """The items of an undefined-length value starting at ``pos``, ending with
        the sequence delimiter."""
        if depth > MAX_DEPTH:
            raise InvalidDicom(f"sequences nested deeper than {MAX_DEPTH} levels")
        items: list[Element] = []
        while True:
            g, e, length = self._tag_len(self._read(pos, 8, "sequence item header"))
            tag = g << 16 | e
            if tag == SEQ_DELIM:
                items.append(Element(tag, None, pos, pos + 8, 0, False))
                return items
            if tag != ITEM:
                raise InvalidDicom(
                    f"expected an item in {tag_str(owner)} at offset {pos}, found {tag_str(tag)}"
                )
            if length == UNDEFINED:
                _, stop = self.elements(pos + 8, None, depth)
                if self.header(stop).tag != ITEM_DELIM:
                    raise InvalidDicom(f"item of {tag_str(owner)} at offset {pos} has no delimiter")
                items.append(Element(tag, None, pos, pos + 8, stop - pos - 8, True))
                pos = stop + 8
            else:
                el = Element(tag, None, pos, pos + 8, length, False)
                self._check(el)
                items.append(el)
                pos = el.offset + length

    def items_end(self, pos: int, depth: int, owner: int) -> int:
        """Offset just after the sequence delimiter of the item list at ``pos``."""
        last = self.item_list(pos, depth, owner)[-1]
        return last.offset


_VR_NAMES = {vr: vr.decode() for vr in LONG_VRS} | {
    vr: vr.decode()
    for vr in b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split()
}
_LONG_VR_NAMES = frozenset(vr.decode() for vr in LONG_VRS)

VALID_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV".split()
)


def detect_implicit(
    fp: BinaryIO, pos: int, size: int, declared_implicit: bool, head: bytes = b""
) -> bool:
    """Whether the dataset at ``pos`` really is implicit VR.

    Some writers declare one encoding and write the other (pydicom tolerates it, as
    do we): the first element's would-be VR bytes tell.
    """
    if size - pos < 8:
        return declared_implicit
    if pos + 6 <= len(head):
        return head[pos + 4 : pos + 6] not in VALID_VRS
    fp.seek(pos + 4)
    return fp.read(2) not in VALID_VRS


_META_HEADER = struct.Struct("<HH2sH").unpack_from
_META_U32 = struct.Struct("<L").unpack_from


def _meta_in_head(head: bytes, size: int) -> tuple[dict[int, bytes], int] | None:
    """``read_file_meta`` of a well-formed, explicit VR file meta group held whole
    in ``head``, in one tight loop (every stored instance pays for this); None for
    anything else, which the general walk below reads or refuses as it always did."""
    n = len(head)
    if n < 140 or head[128:132] != b"DICM" or head[136:138] not in VALID_VRS:
        return None
    meta: dict[int, bytes] = {}
    pos = 132
    while pos + 8 <= n:
        group, element, vr, length = _META_HEADER(head, pos)
        if group != 0x0002:
            break
        start = pos + 8
        if vr in LONG_VRS:
            if pos + 12 > n:
                return None
            (length,) = _META_U32(head, start)
            start += 4
        elif vr not in VALID_VRS:
            return None
        if start + length > n:  # runs past the head (or undefined): the walk decides
            return None
        meta[group << 16 | element] = head[start : start + length]
        pos = start + length
    if not meta or (pos + 8 > n and n < size):  # nothing, or the group may go on
        return None
    return meta, pos


def read_file_meta(fp: BinaryIO, size: int, head: bytes = b"") -> tuple[dict[int, bytes], int]:
    """The file meta group's values (tag -> raw bytes) and the offset where the
    dataset starts.  Raises InvalidDicom when there is no Part-10 header.  ``head``
    (the first bytes of ``fp``, if the caller has them) saves reads."""
    if (found := _meta_in_head(head, size)) is not None:
        return found
    if len(head) >= 132:
        prefix = head[:132]
    else:
        fp.seek(0)
        prefix = fp.read(132)
    if len(prefix) < 132 or prefix[128:132] != b"DICM":
        raise InvalidDicom("not a DICOM Part-10 file: no 'DICM' prefix after the 128-byte preamble")
    implicit = detect_implicit(fp, 132, size, False, head)
    walker = Walker(fp, size, implicit=implicit, head=head)
    meta: dict[int, bytes] = {}
    pos = 132
    while pos + 8 <= size:
        (group,) = struct.unpack("<H", walker._read(pos, 2, "element header"))
        if group != 0x0002:
            break
        el = walker.header(pos)
        if el.undefined:
            raise InvalidDicom(f"file meta element {tag_str(el.tag)} has an undefined length")
        walker._check(el)
        meta[el.tag] = walker._read(el.offset, el.length, "file meta value")
        pos = el.offset + el.length
    if not meta:
        raise InvalidDicom("the file has no file meta information group (0002,xxxx)")
    return meta, pos
