"""The SQLite index: storage, versions, QIDO matching, group commit, migrations.

Records are built from real pydicom datasets written with their Specific
Character Set and read back, so names arrive decoded exactly as from the parser.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
import threading
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from vna.errors import BadRequest, NotFound, StorageError
from vna.index import SqliteIndex, make_index, reads
from vna.index.base import (
    AddOutcome,
    DuplicatePolicy,
    InstanceRecord,
    Query,
    SlideRecord,
    SlideStatus,
)
from vna.index.migrate import apply_migrations, load_migrations, schema_version

CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.11"
KOREAN = "Hong^Gildong=洪^吉洞=홍^길동"
JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


def dataset_json(charset: str | list[str] | None, **elements: Any) -> dict[str, Any]:
    """Write a dataset with ``charset`` to Part-10 bytes and read it back."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dcmread(BytesIO(buf.getvalue())).to_json_dict()


def record(
    sop: str,
    *,
    study: str,
    series: str,
    charset: str | list[str] | None = "ISO_IR 192",
    version: str = "v1",
    stored_at: float = 1000.0,
    site: str | None = None,
    **elements: Any,
) -> InstanceRecord:
    elements.setdefault("SOPClassUID", CT)
    elements.setdefault("Modality", "CT")
    elements.setdefault("PatientID", "ANON")
    meta = dataset_json(
        charset, SOPInstanceUID=sop, StudyInstanceUID=study, SeriesInstanceUID=series, **elements
    )
    identity = hashlib.sha256(f"{sop}/{version}".encode()).hexdigest()
    return InstanceRecord(
        sop_instance_uid=sop,
        sop_class_uid=elements["SOPClassUID"],
        study_instance_uid=study,
        series_instance_uid=series,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        blob_key=f"dicom/{study}/{series}/{sop}/{identity}.dcm",
        size=1234,
        sha256=hashlib.sha256(identity.encode()).hexdigest(),
        identity=identity,
        num_frames=2,
        frames=[[(300, 100)], [(400, 60), (470, 40)]],
        metadata=meta,
        stored_at=stored_at,
        source="test",
        site=site,
    )


def corpus() -> list[InstanceRecord]:
    """Five patients, two of them sharing PatientID 12345 under different issuers."""
    p1 = dict(
        charset="ISO_IR 100",
        PatientName="Müller^Jürgen",
        PatientID="12345",
        IssuerOfPatientID="HOSP_A",
        PatientSex="M",
        PatientBirthDate="19600101",
        StudyDate="20200315",
        StudyTime="101500",
        AccessionNumber="ACC1",
        ReferringPhysicianName="Smith^John",
        StudyDescription="CT Chest",
        PatientAge="060Y",
        site="north",
    )
    p2 = dict(
        PatientName="Doe^Jane",
        PatientID="12345",
        IssuerOfPatientID="HOSP_B",
        StudyDate="20201231",
        StudyTime="235900",
        AccessionNumber="ACC2",
        site="south",
    )
    p3 = dict(
        charset=["", "ISO 2022 IR 149"],
        PatientName=KOREAN,
        PatientID="K1",
        StudyDate="20190101",
        StudyTime="0800",
        AccessionNumber="A_%1",
        site="north",
    )
    p4 = dict(
        charset=["", "ISO 2022 IR 87"],
        PatientName=JAPANESE,
        PatientID="J1",
        StudyDate="20210610",
        AccessionNumber="AX%1",
        site="north",
    )
    return [
        record("1.1.1.1", study="1.1", series="1.1.1", InstanceNumber=2, StationName="CT_A", **p1),
        record("1.1.1.2", study="1.1", series="1.1.1", InstanceNumber=1, StationName="CT_A", **p1),
        record("1.1.2.1", study="1.1", series="1.1.2", SOPClassUID=SR, **{**p1, "Modality": "SR"}),
        record("2.1.1.1", study="2.1", series="2.1.1", **{**p2, "Modality": "MR"}),
        record("3.1.1.1", study="3.1", series="3.1.1", Rows=512, Columns=512, **p3),
        record("4.1.1.1", study="4.1", series="4.1.1", **{**p4, "Modality": "US"}),
    ]


@pytest.fixture
async def index(tmp_path: Path):
    idx = make_index(f"sqlite:///{tmp_path / 'db' / 'index.db'}")
    await idx.open()
    yield idx
    await idx.close()


@pytest.fixture
async def filled(index):
    for rec in corpus():
        assert await index.add(rec, DuplicatePolicy.KEEP) is AddOutcome.STORED
    return index


def values(items: list[dict], keyword_tag: str) -> list[Any]:
    return [v for item in items for v in item.get(keyword_tag, {}).get("Value", [])]


async def uids(index, level: str = "study", **kw: Any) -> list[str]:
    tag = {"study": "0020000D", "series": "0020000E", "instance": "00080018"}[level]
    result = await index.find(Query(level, **kw))
    return values(result.items, tag)


# -- patients ------------------------------------------------------------------


async def test_same_patient_id_with_other_issuer_is_another_patient(filled) -> None:
    both = await filled.find(Query("patient", {"PatientID": "12345"}))
    assert sorted(values(both.items, "00100021")) == ["HOSP_A", "HOSP_B"]
    assert len(both.items) == 2
    one = await filled.find(Query("patient", {"PatientID": "12345", "IssuerOfPatientID": "HOSP_B"}))
    assert values(one.items, "00100010") == [{"Alphabetic": "Doe^Jane"}]
    assert values(one.items, "00201200") == [1]  # NumberOfPatientRelatedStudies


async def test_names_decoded_from_each_charset_and_returned_as_stored(filled) -> None:
    korean = await filled.find(Query("study", {"PatientName": "홍*"}))
    assert values(korean.items, "00100010") == [
        {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"}
    ]
    assert await uids(filled, filters={"PatientName": "hong^gildong"}) == ["3.1"]
    assert await uids(filled, filters={"PatientName": "山田*"}) == ["4.1"]
    assert await uids(filled, filters={"PatientName": "Yamada^Tarou=山田^太郎"}) == ["4.1"]
    assert await uids(filled, filters={"PatientName": "MÜLLER^JÜRGEN"}) == ["1.1"]
    assert await uids(filled, filters={"PatientName": "müller^jürgen^^"}) == ["1.1"]
    assert await uids(filled, filters={"PatientName": "müller"}) == []


async def test_fuzzy_names_ignore_accents_and_case(filled) -> None:
    assert await uids(filled, filters={"PatientName": "muller"}) == []
    assert await uids(filled, filters={"PatientName": "muller"}, fuzzy=True) == ["1.1"]
    assert await uids(filled, filters={"PatientName": "jurg mul"}, fuzzy=True) == ["1.1"]
    assert await uids(filled, filters={"PatientName": "길"}, fuzzy=True) == ["3.1"]
    assert await uids(filled, filters={"PatientName": "mullerx"}, fuzzy=True) == []
    # a wildcard inside a fuzzy value narrows like the word it is in, never widens
    assert await uids(filled, filters={"PatientName": "*mull*"}, fuzzy=True) == ["1.1"]
    assert await uids(filled, filters={"PatientName": "*nobody*"}, fuzzy=True) == []
    assert await uids(filled, filters={"ReferringPhysicianName": "SMI"}, fuzzy=True) == ["1.1"]


# -- matching ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"StudyDate": "20200101-20201231"}, ["2.1", "1.1"]),
        ({"StudyDate": "-20191231"}, ["3.1"]),
        ({"StudyDate": "20210101-"}, ["4.1"]),
        ({"StudyDate": "20190101"}, ["3.1"]),
        ({"StudyTime": "10-12"}, ["1.1"]),
        ({"StudyTime": "101500.000-"}, ["2.1", "1.1"]),
        ({"StudyTime": "-08"}, ["3.1"]),
        ({"AccessionNumber": "A_%1"}, ["3.1"]),  # % and _ are literal characters
        ({"AccessionNumber": "A?%1"}, ["4.1", "3.1"]),
        ({"AccessionNumber": "ACC*"}, ["2.1", "1.1"]),
        ({"AccessionNumber": "acc*"}, []),  # only person names are case-insensitive
        ({"StudyInstanceUID": "1.1\\3.1\\9.9"}, ["1.1", "3.1"]),
        ({"ModalitiesInStudy": "SR"}, ["1.1"]),
        ({"Modality": "MR\\US"}, ["4.1", "2.1"]),
        ({"PatientID": "12345", "StudyDate": "2020*"}, None),  # wildcard in a date: 400
    ],
)
async def test_study_matching(filled, filters: dict, expected: list[str] | None) -> None:
    if expected is None:
        with pytest.raises(BadRequest):
            await filled.find(Query("study", filters))
        return
    assert await uids(filled, filters=filters) == expected


async def test_bad_values_and_unknown_keys(filled) -> None:
    for filters in (
        {"StudyInstanceUID": "1.2.x"},
        {"StudyDate": "2020-13-01"},
        {"NoSuchAttribute": "1"},
    ):
        with pytest.raises(BadRequest):
            await filled.find(Query("study", filters))
    hexed = await uids(filled, filters={"00100020": "K1"})
    assert hexed == ["3.1"]


async def test_computed_and_default_attributes(filled) -> None:
    res = await filled.find(Query("study", {"StudyInstanceUID": "1.1"}))
    (study,) = res.items
    assert study["00080061"]["Value"] == ["CT", "SR"]  # ModalitiesInStudy
    assert study["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert study["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances
    assert study["00080056"]["Value"] == ["ONLINE"]
    assert study["00100030"]["Value"] == ["19600101"]
    assert "00081010" not in study  # StationName is not a study default
    patient = await filled.find(
        Query("patient", {"PatientID": "12345", "IssuerOfPatientID": "HOSP_A"})
    )
    assert patient.items[0]["00201202"]["Value"] == [2]  # NumberOfPatientRelatedSeries
    assert patient.items[0]["00201204"]["Value"] == [3]  # NumberOfPatientRelatedInstances


async def test_nested_resources_and_ordering(filled) -> None:
    series = await filled.find(Query("series", {"StudyInstanceUID": "1.1"}))
    assert values(series.items, "0020000E") == ["1.1.1", "1.1.2"]
    assert values(series.items, "00201209") == [2, 1]  # NumberOfSeriesRelatedInstances
    inst = await filled.find(
        Query("instance", {"StudyInstanceUID": "1.1", "SeriesInstanceUID": "1.1.1"})
    )
    assert values(inst.items, "00080018") == ["1.1.1.2", "1.1.1.1"]  # by InstanceNumber
    assert values(inst.items, "00200013") == [1, 2]
    rows = await filled.find(Query("instance", {"Rows": "512"}))
    assert values(rows.items, "00080018") == ["3.1.1.1"]
    assert values(rows.items, "00100020") == ["K1"]  # unscoped: study attributes too


async def test_limit_offset_pages_are_disjoint_and_complete(filled) -> None:
    everything = await uids(filled)
    assert len(everything) == 4
    pages = [await uids(filled, limit=3, offset=off) for off in (0, 3, 6)]
    assert [len(p) for p in pages] == [3, 1, 0]
    assert pages[0] + pages[1] == everything
    assert everything == ["4.1", "2.1", "1.1", "3.1"]  # StudyDate descending


async def test_unindexed_attributes_post_filter_or_warn(filled) -> None:
    assert await uids(filled, "series", filters={"StationName": "CT_?"}) == ["1.1.1"]
    assert await uids(filled, filters={"PatientAge": "060Y"}) == ["1.1"]
    assert await uids(filled, filters={"PatientAge": "060Y"}, limit=1, offset=1) == []
    res = await filled.find(Query("study", {"SOPClassUID": SR}))
    assert len(res.items) == 4 and any("SOPClassUID" in w for w in res.warnings)
    # not kept in the instance rows' summary: matched against the full metadata
    jis = {"SpecificCharacterSet": "ISO 2022 IR 87"}
    assert await uids(filled, "instance", filters=jis) == ["4.1.1.1"]
    seq = await filled.find(Query("series", {"RequestAttributesSequence": "X"}))
    assert len(seq.items) == 5 and any("sequence" in w for w in seq.warnings)


async def test_post_filter_scan_is_bounded(filled, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reads, "MAX_POST_SCAN", 2)
    res = await filled.find(Query("instance", {"StationName": "nothing"}))
    assert res.items == [] and any("stopped after 2" in w for w in res.warnings)
    plain = await filled.find(Query("instance", {}))
    assert len(plain.items) == 6 and plain.warnings == []  # no post-filter: no bound


async def test_rows_written_before_migration_3_still_answer(filled, tmp_path: Path) -> None:
    await filled.close()
    with sqlite3.connect(tmp_path / "db" / "index.db") as conn:
        conn.execute("UPDATE instances SET attrs = NULL")  # as left by migration 3
    await filled.open()
    res = await filled.find(Query("instance", {"SOPInstanceUID": "3.1.1.1"}))
    assert res.items[0]["00280010"]["Value"] == [512]
    assert res.items[0]["00200013"] == {"vr": "IS"}  # absent stays absent


async def test_include_fields(filled) -> None:
    res = await filled.find(Query("study", {"StudyInstanceUID": "1.1"}, include=["StationName"]))
    assert res.items[0]["00081010"]["Value"] == ["CT_A"]  # from a representative instance
    every = await filled.find(Query("instance", {"SOPInstanceUID": "1.1.1.1"}, include_all=True))
    assert every.items[0]["00081010"]["Value"] == ["CT_A"]
    assert every.items[0]["00101010"]["Value"] == ["060Y"]


async def test_sites_restrict_results(filled) -> None:
    assert await uids(filled, sites=["south"]) == ["2.1"]
    assert await uids(filled, sites=[]) == []
    assert len(await uids(filled, "instance", sites=["north"])) == 5


# -- records, versions, policies -----------------------------------------------


async def test_get_instances_versions_roundtrip(filled) -> None:
    rec = await filled.get("1.1.1.1")
    assert rec.frames == [[(300, 100)], [(400, 60), (470, 40)]]
    assert rec.metadata["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
    assert (rec.study_instance_uid, rec.series_instance_uid, rec.site) == ("1.1", "1.1.1", "north")
    listed = await filled.instances("1.1")
    assert [r.sop_instance_uid for r in listed] == ["1.1.1.2", "1.1.1.1", "1.1.2.1"]
    assert [r.sop_instance_uid for r in await filled.instances("1.1", "1.1.2")] == ["1.1.2.1"]
    assert await filled.instances("1.1", "1.1.2", "1.1.1.1") == []
    assert await filled.instances("9.9") == []
    with pytest.raises(NotFound):
        await filled.get("9.9.9")


async def test_duplicate_policies(filled) -> None:
    base = dict(
        study="2.1",
        series="2.1.1",
        PatientName="Doe^Jane",
        PatientID="12345",
        IssuerOfPatientID="HOSP_B",
        Modality="MR",
    )
    same = record("2.1.1.1", **base)
    assert await filled.add(same, DuplicatePolicy.REPLACE) is AddOutcome.DUPLICATE
    v2 = record("2.1.1.1", version="v2", stored_at=2000.0, **base)
    assert await filled.add(v2, DuplicatePolicy.REJECT) is AddOutcome.CONFLICT
    assert len(await filled.versions("2.1.1.1")) == 1
    assert await filled.add(v2, DuplicatePolicy.KEEP) is AddOutcome.SUPERSEDED
    assert (await filled.get("2.1.1.1")).identity == same.identity
    v3 = record("2.1.1.1", version="v3", stored_at=3000.0, **base)
    assert await filled.add(v3, DuplicatePolicy.REPLACE) is AddOutcome.REPLACED
    assert (await filled.get("2.1.1.1")).identity == v3.identity
    versions = await filled.versions("2.1.1.1")
    assert [v.identity for v in versions][0] == v3.identity
    assert [v.current for v in versions] == [True, False, False]
    study = (await filled.find(Query("study", {"StudyInstanceUID": "2.1"}))).items[0]
    assert study["00201208"]["Value"] == [1]  # versions are not extra instances


async def test_patient_attributes_follow_newest_current_instance(filled) -> None:
    base = dict(study="2.5", series="2.5.1", PatientID="12345", IssuerOfPatientID="HOSP_B")
    await filled.add(
        record("2.5.1.1", PatientName="Doe^Janet", stored_at=5000.0, **base), DuplicatePolicy.KEEP
    )
    await filled.add(
        record("2.5.1.2", PatientName="Old^Name", stored_at=10.0, **base), DuplicatePolicy.KEEP
    )
    res = await filled.find(Query("patient", {"PatientID": "12345", "IssuerOfPatientID": "HOSP_B"}))
    assert values(res.items, "00100010") == [{"Alphabetic": "Doe^Janet"}]
    assert values(res.items, "00201200") == [2]
    assert await uids(filled, filters={"PatientName": "doe^jane"}) == []


async def test_newer_series_attributes_refresh_modalities_in_study(filled) -> None:
    fixed = record(
        "2.1.1.9",
        study="2.1",
        series="2.1.1",
        stored_at=9000.0,
        PatientID="12345",
        IssuerOfPatientID="HOSP_B",
        Modality="OT",
    )
    assert await filled.add(fixed, DuplicatePolicy.KEEP) is AddOutcome.STORED
    study = (await filled.find(Query("study", {"StudyInstanceUID": "2.1"}))).items[0]
    assert study["00080061"]["Value"] == ["OT"]
    assert await uids(filled, filters={"ModalitiesInStudy": "MR"}) == []


async def test_delete_updates_counters_and_removes_empty_rows(filled) -> None:
    v2 = record(
        "1.1.2.1",
        study="1.1",
        series="1.1.2",
        version="v2",
        PatientID="12345",
        IssuerOfPatientID="HOSP_A",
        Modality="SR",
        SOPClassUID=SR,
    )
    original = await filled.get("1.1.2.1")
    assert await filled.add(v2, DuplicatePolicy.KEEP) is AddOutcome.SUPERSEDED
    removed = await filled.delete("1.1", "1.1.2")
    assert sorted(r.identity for r in removed) == sorted([v2.identity, original.identity])
    study = (await filled.find(Query("study", {"StudyInstanceUID": "1.1"}))).items[0]
    assert study["00080061"]["Value"] == ["CT"]
    assert study["00201206"]["Value"] == [1] and study["00201208"]["Value"] == [2]
    assert await filled.delete("1.1", "1.1.1", "9.9.9") == []
    assert len(await filled.delete("1.1")) == 2
    assert await uids(filled, filters={"PatientID": "12345"}) == ["2.1"]
    patients = await filled.find(Query("patient", {"PatientID": "12345"}))
    assert values(patients.items, "00100021") == ["HOSP_B"]
    assert await uids(filled, filters={"PatientName": "mul"}, fuzzy=True) == []
    keys = [k async for k, _sha, _size in filled.blob_keys()]
    assert len(keys) == 3 and all(r.blob_key not in keys for r in removed)


# -- group commit --------------------------------------------------------------


async def test_concurrent_adds_are_group_committed_and_durable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gc.db'}"
    idx = make_index(url)
    await idx.open()
    template = record("5.1.1.0", study="5.1", series="5.1.1", PatientID="GC")
    recs = []
    for n in range(200):
        meta = dict(template.metadata)
        meta["00080018"] = {"vr": "UI", "Value": [f"5.1.1.{n}"]}
        recs.append(
            InstanceRecord(
                **{
                    **{f: getattr(template, f) for f in InstanceRecord.__slots__},
                    "sop_instance_uid": f"5.1.1.{n}",
                    "identity": f"{n:064x}",
                    "metadata": meta,
                }
            )
        )
    bad = InstanceRecord(
        **{
            **{f: getattr(template, f) for f in InstanceRecord.__slots__},
            "sop_instance_uid": "5.1.1.999",
            "identity": None,
        }
    )
    commits_before = idx.commits
    outcomes = await asyncio.gather(
        *(idx.add(r, DuplicatePolicy.KEEP) for r in recs[:100]),
        idx.add(bad, DuplicatePolicy.KEEP),
        *(idx.add(r, DuplicatePolicy.KEEP) for r in recs[100:]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[100], StorageError)  # fails alone, inside the batch
    assert [o for i, o in enumerate(outcomes) if i != 100] == [AddOutcome.STORED] * 200
    assert idx.commits - commits_before < 200  # some adds shared a transaction
    await idx.close()
    with sqlite3.connect(tmp_path / "gc.db") as conn:  # committed, seen by a new connection
        assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 200
        assert conn.execute("SELECT num_instances FROM studies").fetchone()[0] == 200
    again = make_index(url)
    await again.open()
    assert len(await again.instances("5.1")) == 200
    await again.close()


async def test_reads_do_not_wait_for_an_open_write_transaction(filled) -> None:
    """The writer holds a transaction open (uncommitted row inside) until released;
    searches and gets must answer meanwhile, from the last committed state."""
    inside, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE studies SET study_id = 'UNCOMMITTED'")
        inside.set()
        release.wait(60)

    writer = asyncio.ensure_future(filled._write(hold))
    try:
        assert await asyncio.to_thread(inside.wait, 60)
        res = await asyncio.wait_for(filled.find(Query("study", {"StudyID": "UNCOMMITTED"})), 30)
        assert res.items == []
        assert (await asyncio.wait_for(filled.get("4.1.1.1"), 30)).sop_instance_uid == "4.1.1.1"
    finally:
        release.set()
        await writer
    assert len(await uids(filled, filters={"StudyID": "UNCOMMITTED"})) == 4


# -- migrations, factory, slides -----------------------------------------------


async def test_migrations_apply_once_and_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert len(migrations) >= 2
    conn = sqlite3.connect(path, isolation_level=None)
    assert apply_migrations(conn, upto=1) == [1]  # a database left at version 1
    assert schema_version(conn) == 1
    conn.close()
    idx = SqliteIndex(f"sqlite:///{path}", path)
    await idx.open()
    await idx.close()
    conn = sqlite3.connect(path, isolation_level=None)
    assert schema_version(conn) == len(migrations)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "studies_site" in names  # from migration 2
    assert apply_migrations(conn) == []  # reopening applies nothing
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(migrations)
    conn.close()


async def test_unreadable_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an SQLite database" * 100)
    idx = make_index(f"sqlite:///{path}")
    with pytest.raises(StorageError):
        await idx.open()
    with pytest.raises(StorageError, match="not open"):
        await idx.get("1.2.3")


def test_make_index_urls(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="not yet supported"):
        make_index("postgresql://user@db/vna")
    with pytest.raises(BadRequest):
        make_index("mysql://x/y")
    assert make_index(f"sqlite:///{tmp_path}/a.db").path == f"{tmp_path}/a.db"
    assert make_index("sqlite:///rel/a.db").path == "rel/a.db"


async def test_slides_crud(index) -> None:
    slide = SlideRecord(
        id="s1",
        name="Liver",
        source="liver.svs",
        properties={"mpp": 0.25},
        created_at=1.0,
        site="north",
    )
    await index.put_slide(slide)
    await index.put_slide(SlideRecord(id="s2", name="Kidney", source="k.svs", created_at=2.0))
    assert (await index.get_slide("s1")).properties == {"mpp": 0.25}
    assert [s.id for s in await index.list_slides()] == ["s2", "s1"]
    assert [s.id for s in await index.list_slides(["north"])] == ["s1"]
    await index.update_slide(
        "s1", status=SlideStatus.READY, progress=1.0, width=4096, properties={"vendor": "aperio"}
    )
    got = await index.get_slide("s1")
    assert (got.status, got.width, got.properties) == (
        SlideStatus.READY,
        4096,
        {"vendor": "aperio"},
    )
    with pytest.raises(BadRequest):
        await index.update_slide("s1", nonsense=1)
    await index.delete_slide("s1")
    for call in (
        index.get_slide("s1"),
        index.delete_slide("s1"),
        index.update_slide("s1", width=1),
    ):
        with pytest.raises(NotFound):
            await call


async def test_writers_of_other_processes_take_turns_on_the_lock_file(tmp_path: Path) -> None:
    """A writer waits on the lock file beside the database while another process
    holds it (not on SQLite's sleeping retries), and writes once it is released."""
    db = tmp_path / "shared.db"
    idx = make_index(f"sqlite:///{db}")
    await idx.open()
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import fcntl, os, sys\n"
        f"fd = os.open({str(db) + '-writer.lock'!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert await holder.stdout.readline() == b"held\n"
        add = asyncio.ensure_future(
            idx.add(record("6.1.1.1", study="6.1", series="6.1.1"), DuplicatePolicy.KEEP)
        )
        done, _ = await asyncio.wait([add], timeout=1.0)
        assert not done  # an unlocked write takes milliseconds
        holder.stdin.close()
        assert await holder.wait() == 0
        assert await asyncio.wait_for(add, 30) is AddOutcome.STORED
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await idx.close()
    with sqlite3.connect(db) as conn:  # committed, seen by a new connection
        assert conn.execute("SELECT sop_uid FROM instances").fetchall() == [("6.1.1.1",)]


# -- the batched write path (one transaction, a savepoint per record) ------------


def _failing(rec: InstanceRecord) -> InstanceRecord:
    """``rec`` that fails after its patient, study and series rows were written."""
    return InstanceRecord(
        **{**{f: getattr(rec, f) for f in InstanceRecord.__slots__}, "identity": None}
    )


async def test_a_failed_record_rolls_back_the_series_its_batch_goes_on_with(index) -> None:
    """The batch's first record of a new series fails after creating the series
    row, which its rollback removes: the next record must create it again."""
    first = _failing(record("7.1.1.1", study="7.1", series="7.1.1", PatientID="P7"))
    second = record("7.1.1.2", study="7.1", series="7.1.1", PatientID="P7")
    out = await asyncio.to_thread(index.add_batch_blocking, [first, second], DuplicatePolicy.KEEP)
    assert isinstance(out[0], StorageError) and out[1] is AddOutcome.STORED
    [series] = (await index.find(Query("series", {"StudyInstanceUID": "7.1"}))).items
    assert values([series], "00201209") == [1]  # NumberOfSeriesRelatedInstances
    assert await uids(index, "instance", filters={"SeriesInstanceUID": "7.1.1"}) == ["7.1.1.2"]


async def test_in_a_batch_the_newest_record_sets_the_shared_study_row(index) -> None:
    """Series A, then series B of the same study with another StudyDescription,
    then A again: the study ends with A's description, as if stored one by one."""
    batch = [
        record("8.1.1.1", study="8.1", series="8.1.1", StudyDescription="first", stored_at=1),
        record("8.1.2.1", study="8.1", series="8.1.2", StudyDescription="second", stored_at=2),
        record("8.1.1.2", study="8.1", series="8.1.1", StudyDescription="first", stored_at=3),
    ]
    out = await asyncio.to_thread(index.add_batch_blocking, batch, DuplicatePolicy.KEEP)
    assert out == [AddOutcome.STORED] * 3
    query = Query("study", {"StudyInstanceUID": "8.1"}, include=["StudyDescription"])
    [study] = (await index.find(query)).items
    assert values([study], "00081030") == ["first"]
    assert values([study], "00201208") == [3]  # NumberOfStudyRelatedInstances
    counts = {
        values([s], "0020000E")[0]: values([s], "00201209")[0]
        for s in (await index.find(Query("series", {"StudyInstanceUID": "8.1"}))).items
    }
    assert counts == {"8.1.1": 2, "8.1.2": 1}


async def test_in_one_store_batch_the_last_record_sets_the_shared_study_row(index) -> None:
    """As above, with one store time for the whole batch (a STOW-RS batch): records
    naming the rows the record before them named skip re-checking them, and that
    must not let A's second instance skip restoring A's description after B's."""
    batch = [
        record("8.2.1.1", study="8.2", series="8.2.1", StudyDescription="first"),
        record("8.2.1.2", study="8.2", series="8.2.1", StudyDescription="first"),
        record("8.2.2.1", study="8.2", series="8.2.2", StudyDescription="second"),
        record("8.2.1.3", study="8.2", series="8.2.1", StudyDescription="first"),
    ]
    out = await asyncio.to_thread(index.add_batch_blocking, batch, DuplicatePolicy.KEEP)
    assert out == [AddOutcome.STORED] * 4
    query = Query("study", {"StudyInstanceUID": "8.2"}, include=["StudyDescription"])
    [study] = (await index.find(query)).items
    assert values([study], "00081030") == ["first"]
    assert values([study], "00201208") == [4]


async def test_a_batch_counts_as_its_records_one_by_one(index) -> None:
    """The counters are tallied per series and applied once per batch: a replaced
    version moving series, a new series and a failed record end as if each record
    had been added on its own (counts, ModalitiesInStudy, the patient's studies)."""
    batch = [
        record("9.1.1.1", study="9.1", series="9.1.1", Modality="CT", PatientID="P9"),
        record("9.1.2.1", study="9.1", series="9.1.2", Modality="MR", PatientID="P9"),
        # a new version of the first, now in the second series, made current
        record("9.1.1.1", study="9.1", series="9.1.2", Modality="MR", PatientID="P9", version="v2"),
        # a version replacing the second that fails after un-counting the one it replaces
        _failing(
            record(
                "9.1.2.1", study="9.1", series="9.1.2", Modality="MR", PatientID="P9", version="v3"
            )
        ),
    ]
    out = await asyncio.to_thread(index.add_batch_blocking, batch, DuplicatePolicy.REPLACE)
    assert out[:3] == [AddOutcome.STORED, AddOutcome.STORED, AddOutcome.REPLACED]
    assert isinstance(out[3], StorageError)
    query = Query("study", {"StudyInstanceUID": "9.1"}, include=["ModalitiesInStudy"])
    [study] = (await index.find(query)).items
    assert values([study], "00201206") == [1]  # NumberOfStudyRelatedSeries: 9.1.1 is empty
    assert values([study], "00201208") == [2]  # NumberOfStudyRelatedInstances
    assert values([study], "00080061") == ["MR"]  # ModalitiesInStudy
    counts = {
        values([s], "0020000E")[0]: values([s], "00201209")[0]
        for s in (await index.find(Query("series", {"StudyInstanceUID": "9.1"}))).items
    }
    assert counts.get("9.1.2") == 2 and counts.get("9.1.1", 0) == 0
    [patient] = (await index.find(Query("patient", {"PatientID": "P9"}))).items
    assert values([patient], "00201200") == [1]  # NumberOfPatientRelatedStudies


async def test_a_blocking_add_commits_in_its_own_thread_when_the_writer_is_idle(index) -> None:
    """A store thread adding while the writer is idle runs the transaction itself
    (no hand-over); while the writer is in a transaction, it queues and the
    writer commits it after, as before."""
    ran_in: list[str] = []
    add_each = index._add_each_sync

    def spy(conn, *args):
        ran_in.append(threading.current_thread().name)
        return add_each(conn, *args)

    index._add_each_sync = spy
    first = record("10.1.1.1", study="10.1", series="10.1.1")
    out = await asyncio.to_thread(index.add_batch_blocking, [first], DuplicatePolicy.KEEP)
    assert out == [AddOutcome.STORED] and ran_in[-1] != "vna-index-writer"
    assert (await index.get("10.1.1.1")).identity == first.identity

    index._wlock.acquire()  # the writer's turn, as if it were committing others' writes
    second = record("10.1.1.2", study="10.1", series="10.1.1")
    pending = asyncio.ensure_future(
        asyncio.to_thread(index.add_batch_blocking, [second], DuplicatePolicy.KEEP)
    )
    await asyncio.sleep(0.3)
    assert not pending.done()  # it waits for the writer, and does not write meanwhile
    index._wlock.release()
    assert await pending == [AddOutcome.STORED] and ran_in[-1] == "vna-index-writer"
    assert await uids(index, "instance", filters={"SeriesInstanceUID": "10.1.1"}) == [
        "10.1.1.1",
        "10.1.1.2",
    ]
