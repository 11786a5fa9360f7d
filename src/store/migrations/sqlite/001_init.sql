-- soundcheck schema v1. Times shown to clients are RFC 3339 text; times used for scheduling are
-- unix milliseconds (INTEGER) so comparisons are cheap and exact.

-- Key/value settings: API keys and the like, generated on first start.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Text-to-music generations (generations API).
CREATE TABLE generations (
    id            TEXT PRIMARY KEY,            -- gen_<ulid>
    status        TEXT NOT NULL,               -- queued | processing | completed | failed
    prompt        TEXT NOT NULL,               -- the request's tags, verbatim
    parameters    TEXT NOT NULL,               -- JSON {bpm,duration,keyscale,timesignature,seed}
    model         TEXT NOT NULL,               -- generator that renders it
    webhook       TEXT,                        -- URL to POST once when final, verbatim
    fault         TEXT,                        -- injected fault (X-Soundcheck-Fault), if any
    audio_url     TEXT,
    duration      REAL,                        -- actual rendered length, seconds
    error_message TEXT,
    detail        TEXT,                        -- JSON: what the generator understood (not in the public body)
    trace_id      TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    completed_at  TEXT
);
CREATE INDEX generations_by_status ON generations(status);

-- Uploaded input files, streamed to disk under <data>/uploads.
CREATE TABLE uploads (
    id         TEXT PRIMARY KEY,               -- upl_<ulid>
    path       TEXT NOT NULL,
    filename   TEXT,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Async jobs (jobs API).
CREATE TABLE jobs (
    id                   TEXT PRIMARY KEY,     -- job_<ulid>
    endpoint             TEXT NOT NULL,        -- /v1/separate …
    engine               TEXT NOT NULL,        -- engine name chosen at submit
    status               TEXT NOT NULL,        -- queued | running | completed | failed
    params               TEXT NOT NULL,        -- JSON, as validated by the engine
    fault                TEXT,                 -- injected fault (X-Soundcheck-Fault), if any
    upload_id            TEXT NOT NULL REFERENCES uploads(id),
    result               TEXT,                 -- JSON with absolute media URLs
    error_code           TEXT,
    error_message        TEXT,
    trace_id             TEXT NOT NULL,
    credits_reserved     INTEGER NOT NULL,
    credits_used         INTEGER NOT NULL DEFAULT 0,
    runs                 INTEGER NOT NULL DEFAULT 0, -- times claimed by a worker (>1 after a crash)
    created_at           TEXT NOT NULL,
    started_at           TEXT,
    finished_at          TEXT,
    estimated_completion TEXT NOT NULL
);
CREATE INDEX jobs_by_status ON jobs(status);

-- Published result files: an unguessable token per file, with an expiry.
CREATE TABLE media (
    token        TEXT PRIMARY KEY,
    path         TEXT NOT NULL,
    filename     TEXT NOT NULL,
    owner_id     TEXT NOT NULL,                -- job_ or gen_ id
    expires_at   INTEGER NOT NULL              -- unix ms
);

-- Every credit movement; the balance is the last row's balance_after.
CREATE TABLE credit_ledger (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT,
    kind          TEXT NOT NULL,               -- grant | reserve | charge | refund
    delta         INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    created_at    TEXT NOT NULL
);

-- Idempotency-Key → the job it created, for 24 hours.
CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    created_at   INTEGER NOT NULL              -- unix ms
);

-- The one webhook endpoint of the jobs API (the dashboard's configuration).
CREATE TABLE webhook_endpoint (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    url                  TEXT,
    secret               TEXT NOT NULL,
    enabled              INTEGER NOT NULL DEFAULT 1,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    disabled_at          TEXT,
    disabled_reason      TEXT,
    updated_at           TEXT NOT NULL
);

-- The outbox: every webhook we promised, written before it is sent.
CREATE TABLE webhook_events (
    id              TEXT PRIMARY KEY,          -- evt_<ulid>
    kind            TEXT NOT NULL,             -- job (signed, retried) | generation (fire-once)
    type            TEXT NOT NULL,             -- job.completed | job.failed | generation.completed | generation.failed
    subject_id      TEXT NOT NULL,             -- job_ or gen_ id
    url             TEXT,                      -- generation: the request's URL; job: NULL = the endpoint at send time
    payload         TEXT NOT NULL,             -- the exact body sent
    state           TEXT NOT NULL,             -- pending | held | succeeded | failed | skipped
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,                   -- unix ms, while pending
    created_at      TEXT NOT NULL
);
CREATE INDEX webhook_events_due ON webhook_events(state, next_attempt_at);

-- One row per delivery attempt, with the full request and response.
CREATE TABLE webhook_attempts (
    id               TEXT PRIMARY KEY,         -- del_<ulid>
    event_id         TEXT NOT NULL REFERENCES webhook_events(id),
    attempt          INTEGER NOT NULL,         -- 1-based; manual resends continue the count
    url              TEXT NOT NULL,
    request_headers  TEXT NOT NULL,            -- JSON object
    request_body     TEXT NOT NULL,
    response_status  INTEGER,
    response_headers TEXT,                     -- JSON object
    response_body    TEXT,
    error            TEXT,                     -- transport error or timeout
    duration_ms      INTEGER NOT NULL,
    succeeded        INTEGER NOT NULL,
    manual           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,                  -- when the next retry is due, if any
    created_at       TEXT NOT NULL
);
CREATE INDEX webhook_attempts_by_event ON webhook_attempts(event_id);
