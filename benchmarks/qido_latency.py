"""QIDO-RS latency of the SQLite index at a million instances.

    nice -n 10 .venv/bin/python benchmarks/qido_latency.py [--instances 1000000]

Populates (once; cached under benchmarks/.cache/) an index with synthetic
instances built from one template DICOM JSON dict with substituted values (no
pydicom per row), inserted through ``SqliteIndex.add_many`` in large batches,
then times ``find()`` for typical QIDO queries and prints p50/p95/p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vna.index import SqliteIndex  # noqa: E402
from vna.index.base import DuplicatePolicy, InstanceRecord, Query  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
FAMILY = [
    "Smith",
    "Jones",
    "Müller",
    "García",
    "Martínez",
    "Núñez",
    "Søren",
    "Dubois",
    "Lefèvre",
    "Rossi",
    "Kim",
    "Lee",
    "Park",
    "Tanaka",
    "Suzuki",
    "Nguyen",
    "Brown",
    "Wilson",
    "Taylor",
    "Schmidt",
    "Schröder",
    "Johansson",
    "Novák",
    "Kowalski",
    "Öztürk",
    "Silva",
]
GIVEN = [
    "Anna",
    "Hans",
    "José",
    "Zoë",
    "Émile",
    "Mia",
    "Noah",
    "Liam",
    "Olivia",
    "Jürgen",
    "Chloé",
    "Ren",
    "Ji-woo",
    "Sofía",
    "Luca",
]
MODALITIES = ["CT", "MR", "CR", "US", "DX", "PT", "NM", "MG", "SM", "XA"]
SERIES_PER_STUDY = 2
INSTANCES_PER_SERIES = 5
ROOT = "1.2.826.0.1.3680043.10.1234"


def _el(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


TEMPLATE: dict[str, dict[str, Any]] = {
    "00080005": _el("CS", "ISO_IR 192"),
    "00080008": _el("CS", "ORIGINAL", "PRIMARY", "AXIAL"),
    "00080016": _el("UI", "1.2.840.10008.5.1.4.1.1.2"),
    "00080070": _el("LO", "ACME"),
    "00080080": _el("LO", "General Hospital"),
    "00081010": _el("SH", "STATION1"),
    "00081090": _el("LO", "Scanner 3000"),
    "00100030": _el("DA", "19700101"),
    "00180050": _el("DS", 1.25),
    "00180060": _el("DS", 120),
    "00200032": _el("DS", -250.0, -250.0, 10.0),
    "00200037": _el("DS", 1, 0, 0, 0, 1, 0),
    "00280002": _el("US", 1),
    "00280004": _el("CS", "MONOCHROME2"),
    "00280010": _el("US", 512),
    "00280011": _el("US", 512),
    "00280030": _el("DS", 0.7, 0.7),
    "00280100": _el("US", 16),
    "00280101": _el("US", 12),
    "00280102": _el("US", 11),
    "00280103": _el("US", 0),
    "00281050": _el("DS", 40),
    "00281051": _el("DS", 400),
    "7FE00010": {"vr": "OW", "BulkDataURI": "bulk/7FE00010"},
}


def patient_of(n: int) -> tuple[str, str, str, str]:
    """(PatientID, Issuer, name, sex) of synthetic patient n; every 10th patient
    shares its PatientID with another hospital's patient (different issuer)."""
    pid = f"P{n // 2 if n % 10 == 1 else n:07d}"
    issuer = "HOSP_B" if n % 10 == 1 else "HOSP_A"
    name = f"{FAMILY[n % len(FAMILY)]}^{GIVEN[(n // 7) % len(GIVEN)]}^^^"
    return pid, issuer, name.rstrip("^"), "MF"[n % 2]


def records(n_instances: int, start: int = 0) -> Iterator[InstanceRecord]:
    per_study = SERIES_PER_STUDY * INSTANCES_PER_SERIES
    rng = random.Random(42)
    for study_n in range(start // per_study, n_instances // per_study):
        pid, issuer, name, sex = patient_of(study_n // 4)
        study_uid = f"{ROOT}.1.{study_n}"
        date = f"{2000 + study_n % 25}{1 + (study_n // 25) % 12:02d}{1 + (study_n // 300) % 28:02d}"
        study = {
            "00080020": _el("DA", date),
            "00080030": _el("TM", f"{8 + study_n % 10:02d}{study_n % 60:02d}00"),
            "00080050": _el("SH", f"A{study_n:08d}"),
            "00080090": _el("PN", {"Alphabetic": f"{FAMILY[study_n % 7]}^Doc"}),
            "00081030": _el("LO", f"Study {study_n % 50}"),
            "00100010": _el("PN", {"Alphabetic": name}),
            "00100020": _el("LO", pid),
            "00100021": _el("LO", issuer),
            "00100040": _el("CS", sex),
            "0020000D": _el("UI", study_uid),
            "00200010": _el("SH", str(study_n % 10000)),
        }
        for s in range(SERIES_PER_STUDY):
            series_uid = f"{ROOT}.2.{study_n}.{s}"
            series = {
                "00080060": _el("CS", rng.choice(MODALITIES)),
                "0008103E": _el("LO", f"Series {s}"),
                "0020000E": _el("UI", series_uid),
                "00200011": _el("IS", s + 1),
            }
            for i in range(INSTANCES_PER_SERIES):
                yield _record(
                    study, series, study_uid, series_uid, f"{ROOT}.3.{study_n}.{s}.{i}", i
                )


def _record(
    study: dict, series: dict, study_uid: str, series_uid: str, sop: str, i: int
) -> InstanceRecord:
    meta = dict(TEMPLATE)
    meta.update(study)
    meta.update(series)
    meta["00080018"] = _el("UI", sop)
    meta["00200013"] = _el("IS", i + 1)
    return InstanceRecord(
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        blob_key=f"dicom/{study_uid}/{series_uid}/{sop}/x.dcm",
        size=524_588,
        sha256="0" * 64,
        identity=hashlib.sha256(sop.encode()).hexdigest(),
        num_frames=1,
        frames=[[(1000, 524288)]],
        metadata=meta,
        stored_at=1.7e9,
        source="benchmark",
    )


def count_instances(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        except sqlite3.Error:
            return 0


async def populate(index: SqliteIndex, n: int, have: int, batch: int = 5000) -> float:
    t0 = time.perf_counter()
    buf: list[InstanceRecord] = []
    done = have
    for rec in records(n, start=have):
        buf.append(rec)
        if len(buf) >= batch:
            await index.add_many(buf, DuplicatePolicy.KEEP)
            done += len(buf)
            buf = []
            if done % 100_000 == 0:
                rate = (done - have) / (time.perf_counter() - t0)
                print(f"  {done:,} instances ({rate:,.0f}/s)", flush=True)
    if buf:
        await index.add_many(buf, DuplicatePolicy.KEEP)
    return time.perf_counter() - t0


def query_makers(n_studies: int) -> dict[str, Callable[[random.Random], Query]]:
    def study_uid(r: random.Random) -> str:
        return f"{ROOT}.1.{r.randrange(n_studies)}"

    def month(r: random.Random) -> str:
        y, m = 2000 + r.randrange(25), 1 + r.randrange(12)
        return f"{y}{m:02d}01-{y}{m:02d}28"

    return {
        "PatientID exact": lambda r: Query(
            "study", {"PatientID": patient_of(r.randrange(n_studies // 4))[0]}, limit=100
        ),
        "PatientName prefix*": lambda r: Query(
            "study", {"PatientName": r.choice(FAMILY)[:3] + "*"}, limit=100
        ),
        "StudyDate range (1 month)": lambda r: Query("study", {"StudyDate": month(r)}, limit=100),
        "ModalitiesInStudy": lambda r: Query(
            "study", {"ModalitiesInStudy": r.choice(MODALITIES)}, limit=100
        ),
        "AccessionNumber": lambda r: Query(
            "study", {"AccessionNumber": f"A{r.randrange(n_studies):08d}"}, limit=100
        ),
        "series of a study": lambda r: Query("series", {"StudyInstanceUID": study_uid(r)}),
        "instances of a series": lambda r: _instances_query(r, n_studies),
        "fuzzy PatientName": lambda r: Query(
            "study", {"PatientName": r.choice(FAMILY)[:4].lower()}, fuzzy=True, limit=100
        ),
        "studies, no filter": lambda r: Query("study", {}, limit=100),
    }


def _instances_query(r: random.Random, n_studies: int) -> Query:
    s = r.randrange(n_studies)
    filters = {
        "StudyInstanceUID": f"{ROOT}.1.{s}",
        "SeriesInstanceUID": f"{ROOT}.2.{s}.{r.randrange(SERIES_PER_STUDY)}",
    }
    return Query("instance", filters)


async def measure(index: SqliteIndex, n_studies: int, runs: int) -> None:
    # Wall time is what a client sees; CPU time (all threads of this process) is
    # the work done, and stays meaningful when other jobs load the machine.
    print(f"load average before measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    head = f"{'query':<28}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'cpu p50':>9}{'cpu p95':>9}{'rows':>7}"
    print("\n" + head)
    for label, make in query_makers(n_studies).items():
        r = random.Random(label)
        times, cpu, rows = [], [], 0
        for k in range(runs + 5):
            q = make(r)
            t0, c0 = time.perf_counter(), time.process_time()
            res = await index.find(q)
            if k >= 5:  # the first few warm the page cache
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
                rows += len(res.items)
        qs, cq = statistics.quantiles(times, n=100), statistics.quantiles(cpu, n=100)
        print(
            f"{label:<28}{qs[49]:>9.2f}{qs[94]:>9.2f}{qs[98]:>9.2f}{cq[49]:>9.2f}{cq[94]:>9.2f}"
            f"{rows / runs:>7.0f}"
        )


QIDO_PATHS = {"study": "/studies", "series": "/series", "instance": "/instances"}


def qido_request(q: Query) -> tuple[str, dict[str, str]]:
    """The QIDO-RS request a viewer would send for ``q``."""
    params = dict(q.filters)
    if q.fuzzy:
        params["fuzzymatching"] = "true"
    if q.limit is not None:
        params["limit"] = str(q.limit)
    return QIDO_PATHS[q.level], params


async def measure_http(base: str, n_studies: int, runs: int) -> None:
    """The same queries through a running ``vna serve``: what a viewer waits for."""
    import aiohttp

    print(f"\nover HTTP (QIDO-RS, one keep-alive connection), {base}")
    print(f"{'query':<28}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'rows':>7}")
    async with aiohttp.ClientSession() as session:
        for label, make in query_makers(n_studies).items():
            r = random.Random(label)
            times, rows = [], 0
            for k in range(runs + 5):
                path, params = qido_request(make(r))
                t0 = time.perf_counter()
                async with session.get(base + path, params=params) as resp:
                    body = await resp.json(content_type=None)
                    assert resp.status == 200, body
                if k >= 5:
                    times.append((time.perf_counter() - t0) * 1000)
                    rows += len(body)
            qs = statistics.quantiles(times, n=100)
            print(f"{label:<28}{qs[49]:>9.2f}{qs[94]:>9.2f}{qs[98]:>9.2f}{rows / runs:>7.0f}")


def run_http(path: Path, n_studies: int, runs: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers import vna

    with vna("--index", f"sqlite:///{path}") as peer:
        asyncio.run(measure_http(peer.dicomweb, n_studies, runs))


async def main() -> tuple[Path, int, int]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    path = CACHE / f"qido-{args.instances}.db"
    have = count_instances(path)
    index = SqliteIndex(f"sqlite:///{path}", path)
    await index.open()
    try:
        if have < args.instances:
            print(
                f"populating {path} from {have:,} to {args.instances:,} instances ...", flush=True
            )
            secs = await populate(index, args.instances, have)
            print(
                f"population: {args.instances - have:,} instances in {secs:.0f} s "
                f"({(args.instances - have) / secs:,.0f} instances/s)"
            )
            await index.close()  # close/open refreshes the planner statistics
            index = SqliteIndex(f"sqlite:///{path}", path)
            await index.open()
        else:
            print(f"using cached {path} ({have:,} instances)")
        n_studies = args.instances // (SERIES_PER_STUDY * INSTANCES_PER_SERIES)
        await measure(index, n_studies, args.runs)
    finally:
        await index.close()
    return path, n_studies, args.runs


if __name__ == "__main__":
    db, studies, n_runs = asyncio.run(main())
    run_http(db, studies, n_runs)
