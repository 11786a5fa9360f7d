//! Published files: each result file gets an unguessable token and an expiry; the media handler
//! looks the token up to serve the file.

use super::db::Tx;
use crate::params;

use super::Result;

/// A published file.
#[derive(Debug, Clone)]
pub struct Media {
    pub path: String,
    pub filename: String,
    pub expires_at: i64,
}

/// Publishes `path` under `token` until `expires_at` (unix ms).
pub fn insert(
    conn: &dyn Tx,
    token: &str,
    path: &str,
    filename: &str,
    owner_id: &str,
    expires_at: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO media (token, path, filename, owner_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token, path, filename, owner_id, expires_at],
    )?;
    Ok(())
}

/// Looks a token up (expired ones too: the caller decides what expiry means).
pub fn get(conn: &dyn Tx, token: &str) -> Result<Option<Media>> {
    conn.query_opt(
        "SELECT path, filename, expires_at FROM media WHERE token = ?1",
        params![token],
        |r| {
            Ok(Media {
                path: r.get(0)?,
                filename: r.get(1)?,
                expires_at: r.get(2)?,
            })
        },
    )
}

/// Up to `limit` published files whose links expired before `now_ms`: `(token, path)`.
pub fn expired(conn: &dyn Tx, now_ms: i64, limit: usize) -> Result<Vec<(String, String)>> {
    conn.query_map(
        "SELECT token, path FROM media WHERE expires_at < ?1 ORDER BY expires_at LIMIT ?2",
        params![now_ms, limit],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Forgets published files (their links answer `404` from now on).
pub fn delete(conn: &dyn Tx, tokens: &[String]) -> Result<()> {
    for t in tokens {
        conn.execute("DELETE FROM media WHERE token = ?1", params![t])?;
    }
    Ok(())
}
