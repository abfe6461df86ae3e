"""The streamed ZIP + DICOMDIR export (vna.export.dicom_zip), from instances
stored in a real archive on both blob stores, checked by unzipping it and
reading it back with pydicom's FileSet."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.fileset import FileSet
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1

from tests.fixtures_server import BACKENDS, storage_for
from tests.test_deid import check_profile, leaks, planted, walk
from vna.archive.runtime import open_archive
from vna.archive.service import Archive
from vna.deid import Deidentifier
from vna.errors import IntegrityError
from vna.export import deidentified_chunks, dicom_zip
from vna.index.base import InstanceRecord
from vna.settings import Settings
from vna.testdata import dicom as td


@pytest.fixture(params=BACKENDS)
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Archive]:
    settings = Settings(data=str(tmp_path / "data"), storage=storage_for(request), dimse="")
    async with open_archive(settings) as arc:
        yield arc


def study_datasets() -> list[Dataset]:
    """CT and MR series, a multi-frame US, compressed variants, and an MR slice
    that references a CT slice."""
    datasets = td.make_study(seed=4, modalities=("CT", "MR", "US"), n_instances=3)
    ct, mr = datasets[0], datasets[3]
    ref = Dataset()
    ref.ReferencedSOPClassUID = ct.SOPClassUID
    ref.ReferencedSOPInstanceUID = ct.SOPInstanceUID
    mr.ReferencedImageSequence = [ref]
    block = mr.private_block(0x0019, "VNA VENDOR", create=True)
    block.add_new(0x10, "LO", "S-PRIVATE-VENDOR")
    datasets[1] = td.compressed(datasets[1], JPEGLosslessSV1)
    datasets[2] = td.compressed(datasets[2], JPEG2000Lossless)
    return datasets


async def store(archive: Archive, datasets: list[Dataset]) -> list[InstanceRecord]:
    for ds in datasets:
        result = await archive.store_bytes(td.to_bytes(ds), source="test")
        assert result.ok, result.error
    return await archive.instances(datasets[0].StudyInstanceUID)


async def unzip(
    archive: Archive, recs: list[InstanceRecord], tmp: Path, **kwargs
) -> tuple[zipfile.ZipFile, Path, int]:
    chunks = [c async for c in dicom_zip(archive, recs, **kwargs)]
    zf = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert zf.testzip() is None  # every member's CRC-32 checks
    out = tmp / "unzipped"
    zf.extractall(out)
    return zf, out, len(chunks)


def file_set(root: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, as the DICOMDIR lists them."""
    fs = FileSet(dcmread(root / "DICOMDIR"))
    found = {}
    for instance in fs:
        path = Path(instance.path)
        assert path.is_relative_to(root) and path.exists()
        parts = path.relative_to(root).parts
        assert len(parts) <= 8  # PS3.10 8.2: File ID components
        for part in parts:
            assert re.fullmatch(r"[A-Z0-9_]{1,8}", part), part
        found[instance.SOPInstanceUID] = path
    return found


@pytest.mark.parametrize("buffer_limit", [32 << 20, 0], ids=["buffered", "two-pass"])
async def test_zip_holds_the_stored_files_under_a_dicomdir(
    archive: Archive, tmp_path: Path, buffer_limit: int
) -> None:
    recs = await store(archive, study_datasets())
    zf, root, _ = await unzip(archive, recs, tmp_path, buffer_limit=buffer_limit)
    listed = file_set(root)
    assert set(listed) == {r.sop_instance_uid for r in recs}
    assert "README.TXT" not in zf.namelist()
    for rec in recs:
        stored = await archive.read_instance(rec)
        assert listed[rec.sop_instance_uid].read_bytes() == stored
        info = zf.getinfo(listed[rec.sop_instance_uid].relative_to(root).as_posix())
        assert info.compress_type == zipfile.ZIP_STORED
    fs = FileSet(dcmread(root / "DICOMDIR"))
    assert len(fs.find_values("SeriesInstanceUID")) == 3
    patients = fs.find_values(["PatientID", "PatientName"])
    assert patients["PatientID"] == [recs[0].metadata["00100020"]["Value"][0]]


@pytest.mark.parametrize("buffer_limit", [32 << 20, 0], ids=["in-memory", "header-split"])
async def test_deidentified_zip(archive: Archive, tmp_path: Path, buffer_limit: int) -> None:
    datasets = study_datasets()
    burned = td.make_ct(seed=4, index=9, ctx=td.context(4, series_number=1))
    burned.BurnedInAnnotation = "YES"
    full = planted()  # every attribute of the table, in the same study
    full.StudyInstanceUID = datasets[0].StudyInstanceUID
    full.file_meta.MediaStorageSOPInstanceUID = full.SOPInstanceUID
    del full.EncapsulatedDocument  # would make it an ENCAP DOC record, which a CT is not
    full.PatientID = datasets[0].PatientID  # the same patient: one pseudonym
    del full.IssuerOfPatientID
    originals = {ds.SOPInstanceUID: ds for ds in [*datasets, burned, full]}
    recs = await store(archive, list(originals.values()))
    deid = Deidentifier(b"share-key")
    zf, root, _ = await unzip(archive, recs, tmp_path, deid=deid, buffer_limit=buffer_limit)

    readme = zf.read("README.TXT").decode()
    assert "1 instance(s) were left out" in readme and "burned-in" in readme
    listed = file_set(root)
    shared = [r for r in recs if r.sop_instance_uid != burned.SOPInstanceUID]
    assert set(listed) == {deid.uid(r.sop_instance_uid) for r in shared}

    new_series: dict[str, set[str]] = {}
    for rec in shared:
        src = originals[rec.sop_instance_uid]
        path = listed[deid.uid(rec.sop_instance_uid)]
        out = dcmread(path)
        check_profile(deid, out, src)
        assert not any(e.tag.is_private for e in walk(out))
        assert out.file_meta.TransferSyntaxUID == rec.transfer_syntax_uid
        assert out.PixelData == src.PixelData
        assert np.array_equal(out.pixel_array, src.pixel_array)
        assert leaks(path.read_bytes(), full) == []
        for original in (src.PatientID, src.AccessionNumber, src.SeriesInstanceUID):
            assert original.encode() not in path.read_bytes()
        new_series.setdefault(src.SeriesInstanceUID, set()).add(out.SeriesInstanceUID)
    assert all(len(s) == 1 for s in new_series.values())  # series still group
    assert len({next(iter(s)) for s in new_series.values()}) == len(new_series)

    mr = dcmread(listed[deid.uid(datasets[3].SOPInstanceUID)])
    target = mr.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert target in listed  # the reference resolves inside the ZIP

    dicomdir = (root / "DICOMDIR").read_bytes()
    for ds in originals.values():
        for original in (ds.PatientID, ds.StudyInstanceUID, ds.SOPInstanceUID):
            assert original.encode() not in dicomdir
    fs = FileSet(dcmread(root / "DICOMDIR"))
    assert fs.find_values("PatientID") == [deid.pseudonym(datasets[0].PatientID)[1]]
    assert all(info.date_time[:3] == (1980, 1, 1) for info in zf.infolist())


async def test_zip_streams_in_chunks(archive: Archive, tmp_path: Path) -> None:
    datasets = [td.make_ct(seed=6, index=i, count=8, rows=512, cols=512) for i in range(8)]
    recs = await store(archive, datasets)
    _, root, n_chunks = await unzip(archive, recs, tmp_path, buffer_limit=0)
    assert len(file_set(root)) == 8
    assert n_chunks > 1  # about 4 MiB of members, sent 1 MiB at a time


async def test_a_damaged_blob_aborts_the_stream(archive: Archive, tmp_path: Path) -> None:
    recs = await store(archive, study_datasets()[:3])
    stored = await archive.read_instance(recs[1])
    await archive.store.put(recs[1].blob_key, stored[:-10] + b"0123456789")
    for limit in (32 << 20, 0):
        with pytest.raises(IntegrityError):
            async for _ in dicom_zip(archive, recs, buffer_limit=limit):
                pass


async def test_unlisted_kinds_go_to_extra(archive: Archive, tmp_path: Path) -> None:
    ct = td.make_ct(seed=7)
    odd = td.make_ct(seed=7, index=1)
    # an RT Dose without Dose Summation Type: its DICOMDIR record cannot be made
    odd.SOPClassUID = odd.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    recs = await store(archive, [ct, odd])
    zf, root, _ = await unzip(archive, recs, tmp_path)
    assert set(file_set(root)) == {ct.SOPInstanceUID}
    extra = [n for n in zf.namelist() if n.startswith("EXTRA/")]
    assert len(extra) == 1
    assert (root / extra[0]).read_bytes() == await archive.read_instance(
        next(r for r in recs if r.sop_instance_uid == odd.SOPInstanceUID)
    )
    assert "EXTRA/" in zf.read("README.TXT").decode()


@pytest.mark.dcmtk
@pytest.mark.parametrize("archive", ["fs"], indirect=True)
@pytest.mark.parametrize("deidentify", [False, True], ids=["stored", "deidentified"])
async def test_dcmtk_accepts_the_file_set(
    archive: Archive, tmp_path: Path, deidentify: bool
) -> None:
    """An independent reader: dcmtk's dcmmkdir, updating the DICOMDIR with the
    same files, checks each file against its record's Type 1 keys and must find
    every record already there (it adds none, and complains of nothing)."""
    if shutil.which("dcmmkdir") is None:
        pytest.skip("dcmmkdir (dcmtk) is not installed")
    recs = await store(archive, study_datasets())
    deid = Deidentifier(b"k") if deidentify else None
    _, root, _ = await unzip(archive, recs, tmp_path, deid=deid)
    # --no-xfer-check: the files keep their stored transfer syntax (JPEG...), which
    # the General Purpose CD-R profile dcmmkdir checks by default would not allow
    cmd = ["dcmmkdir", "--update", "--no-xfer-check", "--recurse"]
    cmd += ["--input-directory", str(root), "DICOM"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if re.match(r"[EW]:", line) and "LittleEndianExplicit expected" not in line
    ]
    assert complaints == []
    assert len(FileSet(dcmread(root / "DICOMDIR"))) == len(recs)


async def test_large_files_are_split_only_when_pixels_come_last(
    archive: Archive, tmp_path: Path
) -> None:
    """The header-split path (pixel data streamed as stored) is taken for native
    and encapsulated pixel data, and refused when elements follow the pixel data
    (they would leave un-de-identified): those go the whole-file way."""
    from vna.export import zipstream

    trailing = td.make_ct(seed=4, index=7, ctx=td.context(4, series_number=1))
    trailing.DataSetTrailingPadding = b"S-TRAILING-PAD"
    datasets = [*study_datasets()[:2], trailing]
    recs = {r.sop_instance_uid: r for r in await store(archive, datasets)}
    deid = Deidentifier(b"k")
    split = [
        await zipstream._deid_header(archive, recs[ds.SOPInstanceUID], deid) for ds in datasets
    ]
    assert split[0] is not None and split[1] is not None  # native, JPEG Lossless
    assert split[2] is None
    _, root, _ = await unzip(archive, list(recs.values()), tmp_path, deid=deid, buffer_limit=0)
    for path in file_set(root).values():
        assert b"S-TRAILING-PAD" not in path.read_bytes()


@pytest.mark.parametrize("archive", ["fs"], indirect=True)
async def test_dicomdir_names_in_every_character_set(archive: Archive, tmp_path: Path) -> None:
    """Patients named in Latin-1, ISO 2022 Korean and Japanese, UTF-8: the
    DICOMDIR records carry the instance's character set, so names read back."""
    datasets = [td.make_ct(seed=seed) for seed in range(len(td.PATIENTS))]
    recs = [rec for ds in datasets for rec in await store(archive, [ds])]
    _, root, _ = await unzip(archive, recs, tmp_path)
    fs = FileSet(dcmread(root / "DICOMDIR"))
    names = sorted(str(n) for n in fs.find_values("PatientName"))
    assert names == sorted(name for _, name, _, _ in td.PATIENTS)
    assert len(fs) == len(datasets)


async def test_one_instance_streams_deidentified(archive: Archive) -> None:
    """``deidentified_chunks`` (a share's WADO-RS retrieve): large files come as a
    new header then the stored pixel data, in several chunks, and read back as
    the same de-identified dataset as the whole-file path gives."""
    datasets = study_datasets()
    recs = {r.sop_instance_uid: r for r in await store(archive, datasets)}
    deid = Deidentifier(b"share-key")
    for ds in (datasets[0], datasets[1], datasets[6]):  # native CT, JPEG Lossless CT, US
        rec = recs[ds.SOPInstanceUID]
        chunks = [c async for c in deidentified_chunks(archive, rec, deid, buffer_limit=0)]
        assert len(chunks) > 1  # header, then the stored pixel data
        whole = deid.part10(await archive.read_instance(rec))
        streamed = dcmread(io.BytesIO(b"".join(chunks)))
        assert streamed == dcmread(io.BytesIO(whole))
        assert streamed.SOPInstanceUID == deid.uid(ds.SOPInstanceUID)
        assert streamed.PixelData == ds.PixelData
        small = [c async for c in deidentified_chunks(archive, rec, deid)]
        assert small == [whole]
