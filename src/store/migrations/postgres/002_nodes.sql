-- soundcheck schema for PostgreSQL, version 2: the fleet's nodes (a fleet only; a server on its
-- own SQLite file is the only node). Each node writes its row at start and refreshes `seen_at`
-- every few seconds while it runs, so a node starting can tell which others run, and with what
-- settings: the ones every node must share are compared then (and at every refresh), and
-- `--claim-media` is refused while another node runs on the storage it would replace. A node
-- stopped cleanly deletes its row; a killed one's goes stale.
CREATE TABLE nodes (
    id         TEXT PRIMARY KEY,               -- node_<ulid>, kept in the node's data directory
    place      TEXT NOT NULL,                  -- host:data directory, for people to read
    kind       TEXT NOT NULL,                  -- serve | worker
    url        TEXT,                           -- an API node's public URL
    listen     TEXT,                           -- an API node's own address (http://ip:port)
    pid        BIGINT NOT NULL,
    version    TEXT NOT NULL,                  -- soundcheck's version
    settings   TEXT NOT NULL,                  -- JSON: the settings every node must share
    started_at BIGINT NOT NULL,                -- unix ms, the database's clock
    seen_at    BIGINT NOT NULL                 -- unix ms, the database's clock
);
