-- Access control and the audit trail (vna.auth, vna.audit).  Kept in the index so
-- every serving process of --workers N sees the same users, keys, sessions,
-- login throttles and audit rows.

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,              -- argon2id (PHC string)
    role TEXT NOT NULL,
    site TEXT,                                -- NULL: not restricted to a site
    created_at REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,                      -- public, shown by `vna keys list`
    secret_sha256 TEXT NOT NULL,              -- hex SHA-256 of the 256-bit secret
    role TEXT NOT NULL,
    site TEXT,
    label TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);

CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,            -- the cookie value is never stored
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE login_failures (
    client TEXT PRIMARY KEY,                  -- remote address
    failures INTEGER NOT NULL,
    last_at REAL NOT NULL
);

CREATE TABLE audit (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,                         -- epoch seconds
    who TEXT NOT NULL,                        -- user name, key id, token subject, AE title
    who_kind TEXT NOT NULL,                   -- user | key | token | ae | dev | anonymous
    role TEXT NOT NULL DEFAULT '',
    ip TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL,                     -- store | query | retrieve | delete | login ...
    method TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL DEFAULT '',
    status INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL,                    -- success | failure | denied
    patient_id TEXT,
    study_uid TEXT,
    series_uid TEXT,
    sop_uid TEXT,
    slide_id TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_patient ON audit (patient_id, at);
CREATE INDEX audit_study ON audit (study_uid, at);
CREATE INDEX audit_who ON audit (who, at);

-- Append-only: the database itself refuses edits and deletions of audit rows.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
