-- soundcheck schema v2. A small upload (under 1 MiB) is kept in its row until a worker needs it:
-- admitting a job then costs one transaction and no file creation. The worker writes the bytes to
-- `path` before the engine runs and clears `data`; `path` is where the file is or will be.
ALTER TABLE uploads ADD COLUMN data BLOB;
