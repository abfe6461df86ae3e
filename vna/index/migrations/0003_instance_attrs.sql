-- Instance-level attributes QIDO returns by default (and WSI viewers ask for:
-- TotalPixelMatrix*, ContainerIdentifier...) as a small JSON, so instance
-- searches do not parse each instance's full metadata.  NULL for rows written
-- before this migration: readers then fall back to the full metadata.
ALTER TABLE instances ADD COLUMN attrs TEXT;
