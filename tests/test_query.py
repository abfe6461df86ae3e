"""QIDO / C-FIND matching rules (vna.index.query) without an index.

The SQL emitted for text / wildcard matching is checked against the Python
post-filter matcher on a scratch SQLite table, so both paths agree.
"""

from __future__ import annotations

import sqlite3

import pytest

from vna.errors import BadRequest
from vna.index import attrs
from vna.index.base import Query
from vna.index.query import (
    compile_query,
    glob_pattern,
    like_pattern,
    matches,
    parse_match,
    resolve_keyword,
    returned_keywords,
)


def test_empty_and_star_are_universal() -> None:
    assert parse_match("PatientID", "text", "").kind == "any"
    assert parse_match("StudyDate", "date", "*").kind == "any"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20200101-20201231", [("20200101", "20201231")]),
        ("-20201231", [("", "20201231")]),
        ("20200101-", [("20200101", "")]),
        ("20200101", [("20200101", "20200101")]),
        ("2020.01.01-2020.02.01", [("20200101", "20200201")]),
        ("20200101\\20200301-20200302", [("20200101", "20200101"), ("20200301", "20200302")]),
    ],
)
def test_date_ranges(value: str, expected: list[tuple[str, str]]) -> None:
    m = parse_match("StudyDate", "date", value)
    assert m.kind == "range"
    assert m.ranges == expected


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("10-12", "100000.000000", "125959.999999"),
        ("101500.000-", "101500.000000", ""),
        ("-0930", "", "093059.999999"),
        ("1015", "101500.000000", "101559.999999"),  # a partial time covers its span
    ],
)
def test_time_ranges(value: str, low: str, high: str) -> None:
    assert parse_match("StudyTime", "time", value).ranges == [(low, high)]


def test_datetime_offset_is_not_a_range() -> None:
    one = parse_match("AcquisitionDateTime", "datetime", "2020010110-0500")
    assert one.ranges == [("20200101100000.000000", "20200101105959.999999")]
    span = parse_match("AcquisitionDateTime", "datetime", "2020-2021")
    assert span.ranges == [("20200101000000.000000", "20211231235959.999999")]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("date", "2020-13"),
        ("date", "20201301"),
        ("date", "20200132-"),
        ("date", "20201231-20200101"),
        ("time", "2500"),
        ("time", "1260"),
        ("datetime", "20201301"),
        ("date", "20200101-20201231-20211231"),
        ("date", "2020*"),
        ("time", "25x"),
        ("time", "1-2"),
        ("uid", "1.2.abc"),
        ("uid", "1.2.3\\1..2"),
        ("uid", "1.2.*"),
        ("int", "12a"),
        ("datetime", "yesterday"),
    ],
)
def test_malformed_values_are_bad_requests(kind: str, value: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_match("X", kind, value)
    assert "X" in str(err.value)


def test_uid_list_and_pn_fold() -> None:
    assert parse_match("StudyInstanceUID", "uid", "1.2.3\\1.2.4").items == ["1.2.3", "1.2.4"]
    pn = parse_match("PatientName", "pn", "MÜLLER^J*")
    assert (pn.kind, pn.items) == ("wild", ["müller^j*"])
    assert parse_match("PatientName", "pn", "mül", fuzzy=True).kind == "fuzzy"


def test_keywords_and_hex_tags() -> None:
    assert resolve_keyword("PatientName") == "PatientName"
    assert resolve_keyword("00100020") == "PatientID"
    assert resolve_keyword("x0020000D") == "StudyInstanceUID"
    for bad in ("NoSuchKeyword", "0010002", "ZZZZZZZZ"):
        with pytest.raises(BadRequest):
            resolve_keyword(bad)


def test_escaping() -> None:
    assert glob_pattern("a[b]*?") == "a[[]b]*?"
    assert like_pattern("50%_off*\\?") == "50\\%\\_off%\\\\_"


def test_compile_uses_levels_and_warns() -> None:
    q = Query("study", {"PatientID": "123", "SOPClassUID": "1.2.3", "PatientAge": "042Y"})
    c = compile_query(q)
    assert c.where == ["p.patient_id = ?"]
    assert c.params == ["123"]
    assert [k for k, _ in c.post] == ["PatientAge"]  # kept in study rows: Python post-filter
    assert any("SOPClassUID" in w for w in c.warnings)  # instance attribute at study level


def test_compile_modality_at_study_level_means_modalities_in_study() -> None:
    c = compile_query(Query("study", {"Modality": "CT\\MR"}))
    assert "EXISTS (SELECT 1 FROM series x" in c.where[0]
    assert c.params == ["CT", "MR"]
    assert "ModalitiesInStudy" in returned_keywords(Query("study", {"Modality": "CT"}), c)


def test_sites_restrict() -> None:
    assert compile_query(Query("series", sites=["a", "b"])).where == ["se.site IN (?, ?)"]
    assert compile_query(Query("study", sites=[])).where == ["1 = 0"]


def test_returned_keywords_follow_level_and_scope() -> None:
    q = Query("series", {"StudyInstanceUID": "1.2.3", "StationName": ""}, include=["Manufacturer"])
    keys = returned_keywords(q, compile_query(q))
    assert "NumberOfSeriesRelatedInstances" in keys and "StationName" in keys
    assert "Manufacturer" in keys and "PatientName" not in keys  # scoped to one study
    unscoped = Query("series", {})
    assert "PatientName" in returned_keywords(unscoped, compile_query(unscoped))


def _pn(alpha: str, ideo: str = "", phon: str = "") -> dict:
    value = {"Alphabetic": alpha}
    if ideo:
        value["Ideographic"] = ideo
    if phon:
        value["Phonetic"] = phon
    return {"vr": "PN", "Value": [value]}


def test_python_matcher() -> None:
    name = _pn("Müller^Jürgen")
    assert matches("PatientName", parse_match("PatientName", "pn", "müller^jürgen"), name)
    assert matches("PatientName", parse_match("PatientName", "pn", "MÜ*"), name)
    assert not matches("PatientName", parse_match("PatientName", "pn", "muller*"), name)
    assert matches("PatientName", parse_match("PatientName", "pn", "mull^jur", fuzzy=True), name)
    assert not matches("PatientName", parse_match("PatientName", "pn", "jurx", fuzzy=True), name)
    korean = _pn("Hong^Gildong", "洪^吉洞", "홍^길동")
    assert matches("PatientName", parse_match("PatientName", "pn", "홍*"), korean)
    date = {"vr": "DA", "Value": ["20200315"]}
    assert matches("StudyDate", parse_match("StudyDate", "date", "20200101-"), date)
    assert not matches("StudyDate", parse_match("StudyDate", "date", "-20191231"), date)
    assert not matches("StudyDate", parse_match("StudyDate", "date", "20200101-"), {"vr": "DA"})
    station = {"vr": "SH", "Value": ["CT_1"]}
    assert matches("StationName", parse_match("StationName", "text", "CT?1\\MR"), station)
    assert not matches("StationName", parse_match("StationName", "text", "ct_1"), station)


VALUES = ["ABC", "abc", "A_C", "A%C", "A[C]", "AXC", "ABCD", "", "B", "Ω-1", "ΩΩ"]
PATTERNS = ["A?C", "A_C", "A%C", "A*", "*C", "A[C]", "A[*", "*", "?", "Ω*", "*-1", "ABC"]


def test_sql_and_python_wildcards_agree() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE studies (pk INTEGER PRIMARY KEY, accession TEXT)")
    conn.executemany("INSERT INTO studies (accession) VALUES (?)", [(v,) for v in VALUES])
    for pattern in PATTERNS:
        c = compile_query(Query("study", {"AccessionNumber": pattern}))
        where = " AND ".join(c.where) or "1 = 1"
        got = {
            r[0] for r in conn.execute(f"SELECT accession FROM studies s WHERE {where}", c.params)
        }
        m = parse_match("AccessionNumber", "text", pattern)
        want = {
            v for v in VALUES if v and matches("AccessionNumber", m, {"vr": "SH", "Value": [v]})
        }
        if m.kind == "any":
            want = set(VALUES)
        assert got == want, pattern


def test_fuzzy_keys_strip_accents_and_case() -> None:
    assert attrs.fuzzy_key("MÜLLER") == "muller"
    assert attrs.name_tokens("Núñez García^José María") == ["nunez", "garcia", "jose", "maria"]
    assert attrs.name_tokens("山田^太郎") == ["山田", "太郎"]
