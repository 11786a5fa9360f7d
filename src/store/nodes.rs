//! A fleet's nodes: who runs, where, with what shared settings (the `nodes` table, PostgreSQL
//! only). A node writes its row at start ([`join`]), refreshes it while it runs ([`heartbeat`])
//! and deletes it when it stops ([`leave`]); a killed node's row goes stale and is not counted.

use super::db::{now_ms, Tx};
use super::Result;
use crate::params;

/// What a node says about itself when it joins.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `node_<ulid>`, kept in the node's data directory: the same node after a restart.
    pub id: String,
    /// `host:data directory`, for people to read.
    pub place: String,
    /// `serve` or `worker`.
    pub kind: String,
    /// An API node's public URL (`--public-url`, else its own address).
    pub url: Option<String>,
    /// An API node's own address, `http://ip:port`.
    pub listen: Option<String>,
    pub version: String,
    /// The settings every node of a fleet must share, as JSON.
    pub settings: serde_json::Value,
}

/// A running node's row.
#[derive(Debug, Clone)]
pub struct Node {
    pub info: NodeInfo,
    pub pid: i64,
    /// When it joined, unix ms (the database's clock).
    pub started_at: i64,
    /// Milliseconds since it last refreshed its row (the database's clock).
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
        "SELECT id, place, kind, url, listen, version, settings, pid, started_at, seen_at
         FROM nodes WHERE id <> ?1 AND seen_at >= ?2 ORDER BY started_at, id",
        params![me, now - STALE_MS],
        |r| {
            Ok(Node {
                info: NodeInfo {
                    id: r.get(0)?,
                    place: r.get(1)?,
                    kind: r.get(2)?,
                    url: r.get(3)?,
                    listen: r.get(4)?,
                    version: r.get(5)?,
                    settings: r.json(6)?,
                },
                pid: r.get(7)?,
                started_at: r.get(8)?,
                seen_ms_ago: now - r.get::<i64>(9)?,
            })
        },
    )
}

/// The addresses of the API nodes that refreshed their row within [`STALE_MS`], the most
/// recently started first, each node's public URL before its own address (a read: client
/// commands choose a node to talk to from these).
pub fn api_urls(tx: &dyn Tx) -> Result<Vec<String>> {
    let now = now_ms(tx)?;
    let rows: Vec<(Option<String>, Option<String>)> = tx.query_map(
        "SELECT url, listen FROM nodes WHERE kind = 'serve' AND seen_at >= ?1
         ORDER BY started_at DESC",
        params![now - STALE_MS],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut urls: Vec<String> = Vec::new();
    for url in rows.into_iter().flat_map(|(u, l)| [u, l]).flatten() {
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    Ok(urls)
}

/// Writes (or replaces: the same node restarted) this node's row; returns when it joined.
pub fn join(tx: &dyn Tx, node: &NodeInfo) -> Result<i64> {
    let now = now_ms(tx)?;
    tx.execute(
        "INSERT INTO nodes (id, place, kind, url, listen, pid, version, settings, started_at,
                            seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT(id) DO UPDATE SET place = excluded.place, kind = excluded.kind,
             url = excluded.url, listen = excluded.listen, pid = excluded.pid,
             version = excluded.version, settings = excluded.settings,
             started_at = excluded.started_at, seen_at = excluded.seen_at",
        params![
            node.id,
            node.place,
            node.kind,
            node.url,
            node.listen,
            i64::from(std::process::id()),
            node.version,
            node.settings.to_string(),
            now
        ],
    )?;
    Ok(now)
}

/// Refreshes this node's row; `false` when it is gone (deleted as a day stale): join again.
pub fn heartbeat(tx: &dyn Tx, id: &str) -> Result<bool> {
    let now = now_ms(tx)?;
    Ok(tx.execute(
        "UPDATE nodes SET seen_at = ?2 WHERE id = ?1",
        params![id, now],
    )? == 1)
}

/// Where and as which process the live row with this id runs, if one does (a node starting
/// finds its own id taken when its data directory was copied from a running node's).
pub fn live_holder(tx: &dyn Tx, id: &str) -> Result<Option<(String, i64)>> {
    let now = now_ms(tx)?;
    tx.query_opt(
        "SELECT place, pid FROM nodes WHERE id = ?1 AND seen_at >= ?2",
        params![id, now - STALE_MS],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Deletes this node's row (it stops).
pub fn leave(tx: &dyn Tx, id: &str) -> Result<()> {
    tx.execute("DELETE FROM nodes WHERE id = ?1", params![id])?;
    Ok(())
}
