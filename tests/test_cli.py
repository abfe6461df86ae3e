"""The vna command as an operator runs it: import, reindex, fsck, settings."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vna.archive.runtime import open_archive
from vna.index.base import Query
from vna.settings import load_settings
from vna.testdata import dicom as td

VNA = str(Path(sys.executable).parent / "vna")


def vna(*args: str, data: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [VNA, *args, "--data", str(data)], capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"vna {args} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def write_corpus(folder: Path) -> list:
    datasets = td.make_study(seed=40, modalities=("CT", "MR"), n_instances=3)
    datasets += td.make_study(seed=41, modalities=("US",), n_instances=1)
    for i, ds in enumerate(datasets):
        sub = folder / f"s{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        td.write(ds, sub / f"{i}.dcm")
    (folder / "notes.txt").write_text("not an image")
    return datasets


def answers(data: Path) -> dict:
    """Every QIDO level's answer, as a client would see it."""

    async def go():
        async with open_archive(load_settings(data=str(data))) as archive:
            out = {}
            for level in ("study", "series", "instance"):
                res = await archive.find(Query(level=level, include_all=True))
                out[level] = sorted(res.items, key=lambda d: str(sorted(d.items())))
            return out

    return asyncio.run(go())


def test_import_reports_and_is_idempotent(tmp_path):
    datasets = write_corpus(tmp_path / "in")
    data = tmp_path / "data"
    first = vna("import", str(tmp_path / "in"), data=data)
    assert f"stored {len(datasets)}, duplicates 0, failed 1" in first.stdout
    assert "notes.txt" in first.stderr  # the non-DICOM file is named, not fatal
    second = vna("import", str(tmp_path / "in"), data=data)
    assert f"stored 0, duplicates {len(datasets)}, failed 1" in second.stdout
    assert (tmp_path / "in" / "notes.txt").exists()  # the user's files are left alone
    assert len(answers(data)["instance"]) == len(datasets)


def test_reindex_from_a_copy_of_the_blobs_gives_the_same_answers(tmp_path):
    datasets = write_corpus(tmp_path / "in")
    data = tmp_path / "data"
    vna("import", str(tmp_path / "in"), data=data)
    # a superseded version must survive the rebuild too, and stay superseded
    ds = td.make_study(seed=40, modalities=("CT", "MR"), n_instances=3)[0]
    td.write(td.with_value(ds, "SeriesDescription", "changed"), tmp_path / "v2.dcm")
    assert "superseded 1" in vna("import", str(tmp_path / "v2.dcm"), data=data).stdout
    before = answers(data)

    copy = tmp_path / "restored"
    shutil.copytree(data / "blobs", copy / "blobs")
    out = vna("reindex", data=copy)
    assert f"indexed {len(datasets) + 1}, already indexed 0," in out.stdout
    assert out.stdout.strip().endswith("failed 0")
    assert answers(copy) == before
    assert "changed" not in str(before)  # the original stayed current, before and after


def test_fsck_finds_corruption_and_orphans(tmp_path):
    write_corpus(tmp_path / "in")
    data = tmp_path / "data"
    vna("import", str(tmp_path / "in"), data=data)
    assert vna("fsck", data=data).stdout.strip().endswith("orphans 0, swept 0")

    blobs = sorted((data / "blobs").rglob("*.dcm"))
    victim = blobs[0]
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit in the pixel data
    victim.write_bytes(bytes(raw))
    # a blob with no index row: what a crash between blob and index leaves
    orphan = data / "blobs" / "dicom" / "1.2.3" / "4.5.6" / "7.8.9" / "deadbeef.dcm"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")

    bad = vna("fsck", data=data, check=False)
    assert bad.returncode == 1
    assert f"CORRUPT blob (checksum mismatch): {victim.relative_to(data / 'blobs')}" in bad.stdout
    assert "orphan blob (no index row): dicom/1.2.3/4.5.6/7.8.9/deadbeef.dcm" in bad.stdout
    swept = vna("fsck", "--sweep", "0", data=data, check=False)
    assert "swept 1" in swept.stdout and not orphan.exists()


def test_settings_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "vna.toml"
    cfg.write_text('data = "/from/config"\nhttp = "0.0.0.0:9000"\nduplicate_policy = "reject"\n')
    monkeypatch.setenv("VNA_HTTP", "127.0.0.1:9100")
    s = load_settings(str(cfg), data=None, http=None)
    assert (s.data, s.http, s.duplicate_policy.value) == (
        "/from/config",
        "127.0.0.1:9100",
        "reject",
    )
    s = load_settings(str(cfg), http="127.0.0.1:9200")
    assert s.http == "127.0.0.1:9200"
    bad = subprocess.run(
        [VNA, "serve", "--config", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "cannot read config file" in bad.stderr
    cfg.write_text("no_such_setting = 1\n")
    with pytest.raises(ValueError, match="unknown setting"):
        load_settings(str(cfg))


@pytest.mark.slow
def test_demo_puts_a_study_and_a_slide_in_once(tmp_path):
    """What the README's run command imports: something to look at, once."""
    data = tmp_path / "data"
    first = vna("demo", data=data)
    assert "demo study: stored 32, already there 0" in first.stdout
    slide_id, name, size = first.stdout.strip().splitlines()[-1].split("\t")
    assert name == "Demo slide (synthetic H&E)" and size == "16000x12000"
    again = vna("demo", data=data)
    assert "already there 32" in again.stdout and "demo slide: already there" in again.stdout
    listed = vna("slides", "list", data=data).stdout
    assert slide_id in listed and "ready" in listed
