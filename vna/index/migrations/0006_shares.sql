-- Share links (vna.shares).  In the index, beside users and sessions, so a
-- revocation is seen by every serving process on the very next request.

CREATE TABLE shares (
    id TEXT PRIMARY KEY,                      -- public handle: listed, used to revoke
    token_sha256 TEXT NOT NULL UNIQUE,        -- the link's secret is never stored
    kind TEXT NOT NULL,                       -- study | series | slide | patient
    target TEXT NOT NULL,                     -- the UID, slide id or patient ID shared
    scope TEXT NOT NULL,                      -- JSON: the studies, series and slides reachable
    site TEXT,                                -- site of what was shared
    patient_id TEXT,                          -- for the audit trail
    created_by TEXT NOT NULL,
    created_kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL,
    pin_hash TEXT,                            -- argon2id, like passwords; NULL: no PIN
    download INTEGER NOT NULL DEFAULT 0,
    deidentify INTEGER NOT NULL DEFAULT 0,
    deid_key TEXT NOT NULL                    -- hex, random per share: its UID remapping
);
CREATE INDEX shares_creator ON shares (created_by, created_at);

CREATE TABLE share_sessions (
    token_sha256 TEXT PRIMARY KEY,            -- the cookie value is never stored
    share_id TEXT NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX share_sessions_expiry ON share_sessions (expires_at);
