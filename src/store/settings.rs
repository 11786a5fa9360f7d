//! Settings: the API keys, generated on first start and kept in the database.

use super::db::Tx;
use crate::params;

use super::Result;

/// Reads one setting.
pub fn get(conn: &dyn Tx, key: &str) -> Result<Option<String>> {
    conn.query_opt(
        "SELECT value FROM settings WHERE key = ?1",
        params![key],
        |r| r.get(0),
    )
}

/// Writes one setting, replacing any earlier value.
pub fn set(conn: &dyn Tx, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Returns the stored value, or stores and returns `make()` when there is none.
pub fn get_or_insert(conn: &dyn Tx, key: &str, make: impl FnOnce() -> String) -> Result<String> {
    if let Some(v) = get(conn, key)? {
        return Ok(v);
    }
    let v = make();
    set(conn, key, &v)?;
    Ok(v)
}
