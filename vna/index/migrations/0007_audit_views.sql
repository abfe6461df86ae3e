-- Repeated reads (tiles, frames) are audited once per (who, object, 5 minutes).
-- The last time each such key was recorded lives here, so that the several
-- serving processes of `vna serve --workers N` share one window: the check and
-- the audit row are written in the same transaction, by the one index writer.
CREATE TABLE audit_views (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX audit_views_at ON audit_views (at);
