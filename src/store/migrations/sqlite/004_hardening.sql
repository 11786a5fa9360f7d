-- Times each generation was claimed by a worker, as jobs.runs counts for jobs: a generation whose
-- runs keep being cut off by a crash (a poison input) ends failed instead of re-queueing forever.
ALTER TABLE generations ADD COLUMN runs INTEGER NOT NULL DEFAULT 0;

-- When the janitor deleted an upload's file (its job long finished); NULL while it is on disk.
ALTER TABLE uploads ADD COLUMN deleted_at TEXT;
-- The janitor's scans: expired media, finished jobs by age.
CREATE INDEX media_by_expiry ON media(expires_at);
CREATE INDEX jobs_by_finish ON jobs(finished_at) WHERE finished_at IS NOT NULL;
