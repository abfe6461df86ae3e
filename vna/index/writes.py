"""The write path: add / delete / clear as plain DB-API code on one connection.

Each function runs inside a transaction opened by the caller (the single writer
thread's group commit), so these never BEGIN or COMMIT themselves.  SQL is kept
portable (ON CONFLICT, RETURNING work on SQLite >= 3.35 and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from vna.errors import StorageError
from vna.index import attrs
from vna.index.base import AddOutcome, BlobCheck, DuplicatePolicy, InstanceRecord, Level

Conn = Any  # a DB-API connection (sqlite3.Connection today)

_LEVEL_TABLE = {"patient": "patients", "study": "studies", "series": "series"}
_NAME_ATTRS = {"patient": ("PatientName",), "study": ("ReferringPhysicianName",)}


Tally = dict[tuple[int, int], int]  # (series pk, study pk) -> current instances added
Memo = dict[tuple, tuple[int, int]]  # hierarchy rows found (see upsert_hierarchy)


def add_one(
    conn: Conn,
    rec: InstanceRecord,
    policy: DuplicatePolicy,
    tally: Tally | None = None,
    *,
    refresh: bool = False,
    memo: Memo | None = None,
) -> AddOutcome:
    """Index one record; with a ``tally``, its counter changes are added there for
    the caller to apply (``apply_tally``) instead of made at once.  ``refresh``
    (reindex): a version already indexed from the same blob is derived again.
    ``memo``: see ``upsert_hierarchy``."""
    rows = conn.execute(
        "SELECT pk, identity, is_current, series_pk, study_pk, blob_key, stored_at, source, site "
        "FROM instances WHERE sop_uid = ?",
        (rec.sop_instance_uid,),
    ).fetchall()
    same = next((r for r in rows if r[1] == rec.identity), None)
    if same is not None:
        if refresh and same[5] == rec.blob_key:  # another key: another file meta, keep it
            refresh_instance(conn, rec, same, memo)
        return AddOutcome.DUPLICATE
    current = next((r for r in rows if r[2]), None)
    outcome, make_current = AddOutcome.STORED, rec.current
    if current is not None:
        if policy is DuplicatePolicy.REJECT:
            return AddOutcome.CONFLICT
        if policy is DuplicatePolicy.KEEP:
            outcome, make_current = AddOutcome.SUPERSEDED, False
        else:
            conn.execute("UPDATE instances SET is_current = 0 WHERE pk = ?", (current[0],))
            _count(conn, tally, current[3], current[4], -1)
            outcome, make_current = AddOutcome.REPLACED, True
    series_pk, study_pk = upsert_hierarchy(conn, rec, make_current, memo)
    insert_instance(conn, rec, series_pk, study_pk, make_current)
    if make_current:
        _count(conn, tally, series_pk, study_pk, +1)
    return outcome


def _count(conn: Conn, tally: Tally | None, series_pk: int, study_pk: int, delta: int) -> None:
    if tally is None:
        bump(conn, series_pk, study_pk, delta)
    else:
        tally[series_pk, study_pk] = tally.get((series_pk, study_pk), 0) + delta


def apply_tally(conn: Conn, tally: Tally) -> None:
    for (series_pk, study_pk), delta in tally.items():
        if delta:
            bump(conn, series_pk, study_pk, delta)


def add_each(
    conn: Conn,
    recs: list[InstanceRecord],
    policy: DuplicatePolicy,
    check: BlobCheck | None = None,
    *,
    refresh: bool = False,
) -> list[Any]:
    """``add_one`` for each record in its own savepoint: a record that fails is
    rolled back alone and its exception returned in its place.

    The series and study counters are updated once per series at the end, not per
    record: rewriting those rows (and the study's covering index) for every
    instance cost 18 of the 129 us a record took (a batch of 20 CT of one series)."""
    gone = vanished_blobs(conn, recs, check)
    out: list[Any] = []
    tally: Tally = {}
    memo: Memo = {}
    for rec in recs:
        if rec.blob_key in gone:
            out.append(blob_vanished(rec))
            continue
        conn.execute("SAVEPOINT rec")
        mine: Tally = {}
        try:
            out.append(add_one(conn, rec, policy, mine, refresh=refresh, memo=memo))
        except Exception as exc:
            conn.execute("ROLLBACK TO rec")
            out.append(exc)
            mine = {}  # rolled back: nothing to count
            memo.clear()  # nor to remember: its rows may be gone
        conn.execute("RELEASE rec")
        for key, delta in mine.items():
            tally[key] = tally.get(key, 0) + delta
    apply_tally(conn, tally)
    return out


def vanished_blobs(conn: Conn, recs: list[InstanceRecord], check: BlobCheck | None) -> set[str]:
    """Blob keys of ``recs`` a DELETE removed since ``check.epoch`` was read.  Called
    under the writers' lock, which a DELETE holds until its blobs are gone: a blob
    found here stays.  Without a deletion since, nothing is looked at."""
    if check is None or (deletion_epoch(conn) == check.epoch and not check.epoch % 2):
        return set()  # no DELETE began since, and none was under way when read
    return {rec.blob_key for rec in recs if not check.exists(rec.blob_key)}


def blob_vanished(rec: InstanceRecord) -> StorageError:
    return StorageError(
        f"instance {rec.sop_instance_uid} was deleted while it was being stored: send it again"
    )


def begin_deletion(conn: Conn) -> None:
    """A DELETE's rows go: the epoch turns odd until ``end_deletion``.  Odd already
    means a DELETE died with its blobs half gone; it stays odd, as the next
    ``end_deletion`` is the first to vouch that no removal is under way."""
    conn.execute("UPDATE deletions SET epoch = epoch + 1 + epoch % 2")


def end_deletion(conn: Conn) -> None:
    """The DELETE's blobs are gone (or it had none to remove): even again."""
    conn.execute("UPDATE deletions SET epoch = epoch + 1 WHERE epoch % 2 = 1")


def deletion_epoch(conn: Conn) -> int:
    row = conn.execute("SELECT epoch FROM deletions WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def _derived(rec: InstanceRecord) -> dict[str, Any]:
    """The instance row's columns that come from the blob's bytes."""
    cols = attrs.column_values(rec.metadata, "instance")
    cols.pop("sop_uid", None)
    cols["sop_class_uid"] = rec.sop_class_uid or cols.get("sop_class_uid", "")
    return {
        **cols,
        "transfer_syntax": rec.transfer_syntax_uid,
        "size": rec.size,
        "sha256": rec.sha256,
        "num_frames": rec.num_frames,
        "frames": None if rec.frames is None else attrs.dumps(rec.frames),
        "metadata": attrs.dumps(rec.metadata),
        "attrs": attrs.level_json(rec.metadata, "instance"),
    }


def insert_instance(
    conn: Conn, rec: InstanceRecord, series_pk: int, study_pk: int, current: bool
) -> None:
    row = {
        "sop_uid": rec.sop_instance_uid,
        "identity": rec.identity,
        "is_current": 1 if current else 0,
        "series_pk": series_pk,
        "study_pk": study_pk,
        **_derived(rec),
        "blob_key": rec.blob_key,
        "stored_at": rec.stored_at,
        "source": rec.source,
        "site": rec.site,
    }
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO instances ({names}) VALUES ({marks})", tuple(row.values()))


def refresh_instance(
    conn: Conn, rec: InstanceRecord, row: Any, memo: Memo | None = None
) -> None:  # row by name
    """Derive an existing version's row again from its blob (``rec``, read from
    ``row``'s own blob key): what comes from the bytes is replaced, while when it
    was stored, by whom and for which site are kept.  A current version refreshes
    its patient, study and series rows as its store did, so the newest current
    instance of each has the last word, and a store made since is not undone."""
    rec = replace(rec, stored_at=row["stored_at"], source=row["source"], site=row["site"])
    cols = _derived(rec)
    sets = ", ".join(f"{c} = ?" for c in cols)
    conn.execute(f"UPDATE instances SET {sets} WHERE pk = ?", (*cols.values(), row["pk"]))
    if row["is_current"]:
        upsert_hierarchy(conn, rec, True, memo)  # it may rewrite them: the memo must know


# -- patient / study / series rows -------------------------------------------


def upsert_hierarchy(
    conn: Conn, rec: InstanceRecord, current: bool, memo: Memo | None = None
) -> tuple[int, int]:
    """Find or create the patient, study and series rows; refresh their attributes
    when ``rec`` is current and at least as new as what they were taken from.

    With a ``memo`` (one per ``add_each``, in one transaction), a record naming the
    same rows with the same attributes and time as the record just before it needs
    none of this: the rows are there and were just made to match.  The instances of
    a series stored together are such records, and each skips seven statements.
    Only the last record's rows are remembered: one between that named them with
    other attributes may have rewritten them, and then the order decides as without
    a memo."""
    meta = rec.metadata
    key = None
    if memo is not None:
        key = (
            current,
            rec.stored_at,
            rec.study_instance_uid,
            rec.series_instance_uid,
            *(attrs.level_json(meta, level) for level in _LEVEL_TABLE),
        )
        if key in memo:
            return memo[key]
        memo.clear()
    pks = _upsert_hierarchy(conn, rec, current)
    if key is not None:
        memo[key] = pks
    return pks


def _upsert_hierarchy(conn: Conn, rec: InstanceRecord, current: bool) -> tuple[int, int]:
    meta = rec.metadata
    pid, issuer = attrs.text_of(meta, "PatientID"), attrs.text_of(meta, "IssuerOfPatientID")
    patient_pk = _ensure(conn, "patients", {"patient_id": pid, "issuer": issuer})
    study_pk = _ensure(
        conn, "studies", {"study_uid": rec.study_instance_uid}, {"patient_pk": patient_pk}
    )
    series_pk = _ensure(
        conn, "series", {"series_uid": rec.series_instance_uid}, {"study_pk": study_pk}
    )
    if current:
        _refresh(conn, "patient", patient_pk, rec)
        _refresh(conn, "study", study_pk, rec)
        _refresh(conn, "series", series_pk, rec)
        _move_study(conn, study_pk, patient_pk)
    return series_pk, study_pk


def _ensure(
    conn: Conn, table: str, key: dict[str, Any], parent: dict[str, Any] | None = None
) -> int:
    """The pk of the row ``key`` names, made (with ``parent``) if missing.  Looked
    up first: the row exists for all but the first instance of its series, and a
    lookup costs half an insert attempt.  No other writer can slip in between:
    the caller holds the write transaction."""
    where = " AND ".join(f"{col} = ?" for col in key)
    row = conn.execute(f"SELECT pk FROM {table} WHERE {where}", tuple(key.values())).fetchone()
    if row is None:
        cols = {**key, **(parent or {})}
        names, marks = ", ".join(cols), ", ".join("?" * len(cols))
        row = conn.execute(
            f"INSERT INTO {table} ({names}) VALUES ({marks}) RETURNING pk", tuple(cols.values())
        ).fetchone()
    return int(row[0])


def _refresh(conn: Conn, level: Level, pk: int, rec: InstanceRecord) -> None:
    table = _LEVEL_TABLE[level]
    row = conn.execute(f"SELECT updated_at, attrs FROM {table} WHERE pk = ?", (pk,)).fetchone()
    new_attrs = attrs.level_json(rec.metadata, level)
    if rec.stored_at < row[0] or (new_attrs == row[1] and row[1] != "{}"):
        return  # older than what we have, or nothing changed (the common case)
    cols = attrs.column_values(rec.metadata, level)
    for key in ("study_uid", "series_uid", "patient_id", "issuer"):
        cols.pop(key, None)
    if level == "study" or level == "series":
        cols["site"] = rec.site
    cols.update(attrs=new_attrs, updated_at=rec.stored_at)
    sets = ", ".join(f"{c} = ?" for c in cols)
    conn.execute(f"UPDATE {table} SET {sets} WHERE pk = ?", (*cols.values(), pk))
    if level == "series":  # its Modality may have changed
        (study_pk,) = conn.execute("SELECT study_pk FROM series WHERE pk = ?", (pk,)).fetchone()
        refresh_modalities(conn, study_pk)
    for keyword in _NAME_ATTRS.get(level, ()):
        conn.execute("DELETE FROM name_tokens WHERE attr = ? AND owner = ?", (keyword, pk))
        conn.executemany(
            "INSERT INTO name_tokens (attr, token, owner) VALUES (?, ?, ?)",
            [(keyword, tok, pk) for tok in attrs.pn_token_rows(rec.metadata, keyword)],
        )


def _move_study(conn: Conn, study_pk: int, patient_pk: int) -> None:
    """A newer instance names another patient (a correction): follow it."""
    row = conn.execute(
        "SELECT patient_pk, num_instances FROM studies WHERE pk = ?", (study_pk,)
    ).fetchone()
    if row[0] == patient_pk:
        return
    conn.execute("UPDATE studies SET patient_pk = ? WHERE pk = ?", (patient_pk, study_pk))
    if row[1] > 0:
        conn.execute("UPDATE patients SET num_studies = num_studies - 1 WHERE pk = ?", (row[0],))
        conn.execute(
            "UPDATE patients SET num_studies = num_studies + 1 WHERE pk = ?", (patient_pk,)
        )


# -- counters ----------------------------------------------------------------


def bump(conn: Conn, series_pk: int, study_pk: int, delta: int) -> None:
    """Add ``delta`` current instances to a series and its study, keeping the
    series / study / patient counters and ModalitiesInStudy in step."""
    (n_series,) = conn.execute(
        "UPDATE series SET num_instances = num_instances + ? WHERE pk = ? RETURNING num_instances",
        (delta, series_pk),
    ).fetchone()
    series_delta = _edge(n_series, delta)
    n_study, patient_pk = conn.execute(
        "UPDATE studies SET num_instances = num_instances + ?, num_series = num_series + ? "
        "WHERE pk = ? RETURNING num_instances, patient_pk",
        (delta, series_delta, study_pk),
    ).fetchone()
    if series_delta:
        refresh_modalities(conn, study_pk)
    study_delta = _edge(n_study, delta)
    if study_delta:
        conn.execute(
            "UPDATE patients SET num_studies = num_studies + ? WHERE pk = ?",
            (study_delta, patient_pk),
        )


def _edge(count_after: int, delta: int) -> int:
    """+1 when a counter just became non-zero, -1 when it just became zero."""
    if count_after > 0 and count_after - delta <= 0:
        return 1
    if count_after <= 0 and count_after - delta > 0:
        return -1
    return 0


def refresh_modalities(conn: Conn, study_pk: int) -> None:
    rows = conn.execute(
        "SELECT DISTINCT modality FROM series WHERE study_pk = ? AND num_instances > 0 "
        "AND modality <> ''",
        (study_pk,),
    ).fetchall()
    joined = "\\".join(sorted(r[0] for r in rows))
    conn.execute("UPDATE studies SET modalities = ? WHERE pk = ?", (joined, study_pk))


# -- delete / clear ----------------------------------------------------------


def delete_rows(conn: Conn, pks: list[int]) -> None:
    """Remove instance rows (any version) and recount what contained them."""
    if not pks:
        return
    begin_deletion(conn)
    touched_series, touched_studies = set(), set()
    for start in range(0, len(pks), 500):
        chunk = pks[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for series_pk, study_pk in conn.execute(
            f"SELECT DISTINCT series_pk, study_pk FROM instances WHERE pk IN ({marks})", chunk
        ):
            touched_series.add(series_pk)
            touched_studies.add(study_pk)
        conn.execute(f"DELETE FROM instances WHERE pk IN ({marks})", chunk)
    for series_pk in touched_series:
        _recount_series(conn, series_pk)
    patients = set()
    for study_pk in touched_studies:
        patients.add(_recount_study(conn, study_pk))
    for patient_pk in patients:
        _recount_patient(conn, patient_pk)


def _recount_series(conn: Conn, series_pk: int) -> None:
    total, current = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(is_current), 0) FROM instances WHERE series_pk = ?",
        (series_pk,),
    ).fetchone()
    if total == 0:
        conn.execute("DELETE FROM series WHERE pk = ?", (series_pk,))
    else:
        conn.execute("UPDATE series SET num_instances = ? WHERE pk = ?", (current, series_pk))


def _recount_study(conn: Conn, study_pk: int) -> int:
    (patient_pk,) = conn.execute(
        "SELECT patient_pk FROM studies WHERE pk = ?", (study_pk,)
    ).fetchone()
    n_series, n_inst, n_rows = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN num_instances > 0 THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(num_instances), 0), COUNT(*) FROM series WHERE study_pk = ?",
        (study_pk,),
    ).fetchone()
    if n_rows == 0:
        conn.execute(
            "DELETE FROM name_tokens WHERE attr = ? AND owner = ?",
            ("ReferringPhysicianName", study_pk),
        )
        conn.execute("DELETE FROM studies WHERE pk = ?", (study_pk,))
    else:
        conn.execute(
            "UPDATE studies SET num_series = ?, num_instances = ? WHERE pk = ?",
            (n_series, n_inst, study_pk),
        )
        refresh_modalities(conn, study_pk)
    return patient_pk


def _recount_patient(conn: Conn, patient_pk: int) -> None:
    n_studies, n_rows = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN num_instances > 0 THEN 1 ELSE 0 END), 0), COUNT(*) "
        "FROM studies WHERE patient_pk = ?",
        (patient_pk,),
    ).fetchone()
    if n_rows == 0:
        conn.execute(
            "DELETE FROM name_tokens WHERE attr = ? AND owner = ?", ("PatientName", patient_pk)
        )
        conn.execute("DELETE FROM patients WHERE pk = ?", (patient_pk,))
    else:
        conn.execute("UPDATE patients SET num_studies = ? WHERE pk = ?", (n_studies, patient_pk))


def drop_dangling(conn: Conn, keys: list[str], exists: Callable[[str], bool]) -> int:
    """Remove the rows of the blob keys that do not exist (see Index.drop_dangling).
    No blob goes, so the deletion count ends within the transaction."""
    gone = [key for key in keys if not exists(key)]
    pks: list[int] = []
    for start in range(0, len(gone), 500):
        chunk = gone[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        pks += [
            r[0]
            for r in conn.execute(f"SELECT pk FROM instances WHERE blob_key IN ({marks})", chunk)
        ]
    if pks:
        delete_rows(conn, pks)
        end_deletion(conn)
    return len(pks)
