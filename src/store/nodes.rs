//! A fleet's nodes: who runs, where, with what shared settings (the `nodes` table, PostgreSQL
//! only). A node writes its row at start ([`join`]), refreshes it while it runs ([`heartbeat`])
//! and deletes it when it stops ([`leave`]); a killed node's row goes stale and is not counted.

use super::db::{now_ms, Tx};
use super::Result;
use crate::params;

/// A node's row.
#[derive(Debug, Clone)]
pub struct Node {
    /// `host:data directory`: each node locks a data directory of its own.
    pub id: String,
    /// `serve` or `worker`.
    pub kind: String,
    /// An API node's public URL.
    pub url: Option<String>,
    pub pid: i64,
    pub version: String,
    /// The settings every node of a fleet must share, as JSON.
    pub settings: serde_json::Value,
    /// Milliseconds since the node last refreshed its row (the database's clock).
    pub seen_ms_ago: i64,
}

/// A node that has not refreshed its row for this long (ms) is taken as gone: several refreshes
/// missed (every 5 s), with room for a write that waited the store's 20 s for an answer.
pub const STALE_MS: i64 = 30_000;

/// The other nodes that refreshed their row within [`STALE_MS`], oldest first; rows unseen for a
/// day are deleted on the way.
pub fn live_others(tx: &dyn Tx, me: &str) -> Result<Vec<Node>> {
    let now = now_ms(tx)?;
    tx.execute(
        "DELETE FROM nodes WHERE seen_at < ?1",
        params![now - 86_400_000],
    )?;
    tx.query_map(
        "SELECT id, kind, url, pid, version, settings, seen_at FROM nodes
         WHERE id <> ?1 AND seen_at >= ?2 ORDER BY started_at",
        params![me, now - STALE_MS],
        |r| {
            Ok(Node {
                id: r.get(0)?,
                kind: r.get(1)?,
                url: r.get(2)?,
                pid: r.get(3)?,
                version: r.get(4)?,
                settings: r.json(5)?,
                seen_ms_ago: now - r.get::<i64>(6)?,
            })
        },
    )
}

/// The public URLs of the API nodes that refreshed their row within [`STALE_MS`], the most
/// recently started first (a read: client commands choose a node to talk to from these).
pub fn api_urls(tx: &dyn Tx) -> Result<Vec<String>> {
    let now = now_ms(tx)?;
    tx.query_map(
        "SELECT url FROM nodes WHERE url IS NOT NULL AND seen_at >= ?1
         ORDER BY started_at DESC",
        params![now - STALE_MS],
        |r| r.get(0),
    )
}

/// Writes (or replaces: the same node restarted) this node's row.
pub fn join(
    tx: &dyn Tx,
    id: &str,
    kind: &str,
    url: Option<&str>,
    version: &str,
    settings: &serde_json::Value,
) -> Result<()> {
    let now = now_ms(tx)?;
    tx.execute(
        "INSERT INTO nodes (id, kind, url, pid, version, settings, started_at, seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, url = excluded.url,
             pid = excluded.pid, version = excluded.version, settings = excluded.settings,
             started_at = excluded.started_at, seen_at = excluded.seen_at",
        params![
            id,
            kind,
            url.map(str::to_string),
            i64::from(std::process::id()),
            version,
            settings.to_string(),
            now
        ],
    )?;
    Ok(())
}

/// Refreshes this node's row; `false` when it is gone (deleted as a day stale): join again.
pub fn heartbeat(tx: &dyn Tx, id: &str) -> Result<bool> {
    let now = now_ms(tx)?;
    Ok(tx.execute(
        "UPDATE nodes SET seen_at = ?2 WHERE id = ?1",
        params![id, now],
    )? == 1)
}

/// Deletes this node's row (it stops).
pub fn leave(tx: &dyn Tx, id: &str) -> Result<()> {
    tx.execute("DELETE FROM nodes WHERE id = ?1", params![id])?;
    Ok(())
}
