-- A count of deletions of instance rows, so that a store can tell whether a
-- DELETE ran while it was writing its blob (vna.archive: a DELETE removes the
-- rows, then their blobs, holding the index's writers' lock throughout; a store
-- that began before it checks, when it commits, that its blob is still there).
CREATE TABLE deletions (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT INTO deletions (id, epoch) VALUES (1, 0);
