-- soundcheck schema v3. An inline upload's bytes move out of the `uploads` row into a table of their
-- own: every poll joins `uploads`, and with the bytes in the row that join walked (and, for
-- `data IS NOT NULL`, read) several kilobytes of overflow pages per job. A row here exists exactly
-- while the bytes are not yet at `uploads.path`.
CREATE TABLE upload_bytes (
    upload_id TEXT PRIMARY KEY REFERENCES uploads(id),
    data      BLOB NOT NULL
);
INSERT INTO upload_bytes (upload_id, data) SELECT id, data FROM uploads WHERE data IS NOT NULL;
ALTER TABLE uploads DROP COLUMN data;
