//! The credit ledger: every grant, reservation, charge and refund is a row; the balance is the last
//! row's `balance_after`, so reading it is one index lookup however long the ledger grows.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::states::LedgerKind;
use super::Result;

/// Credits a new data directory starts with (docs/decisions.md).
pub const STARTING_CREDITS: i64 = 1_000;

/// One ledger row, as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Movement {
    pub id: i64,
    pub job_id: Option<String>,
    #[schema(value_type = String)]
    pub kind: LedgerKind,
    pub delta: i64,
    pub balance_after: i64,
    pub created_at: String,
}

/// The available balance (reservations already deducted).
pub fn balance(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT balance_after FROM credit_ledger ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Appends a movement and returns the new balance.
pub fn record(
    conn: &Connection,
    job_id: Option<&str>,
    kind: LedgerKind,
    delta: i64,
) -> Result<i64> {
    let after = balance(conn)? + delta;
    conn.prepare_cached(
        "INSERT INTO credit_ledger (job_id, kind, delta, balance_after, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![job_id, kind, delta, after, super::now_rfc3339()])?;
    Ok(after)
}

/// Gives a fresh database its starting credits (once).
pub fn ensure_initial_grant(conn: &Connection) -> Result<()> {
    let any: Option<i64> = conn
        .query_row("SELECT id FROM credit_ledger LIMIT 1", [], |r| r.get(0))
        .optional()?;
    if any.is_none() {
        record(conn, None, LedgerKind::Grant, STARTING_CREDITS)?;
    }
    Ok(())
}

/// The most recent movements, newest first.
pub fn recent(conn: &Connection, limit: usize) -> Result<Vec<Movement>> {
    let mut stmt = conn.prepare(
        "SELECT id, job_id, kind, delta, balance_after, created_at
         FROM credit_ledger ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(Movement {
            id: r.get(0)?,
            job_id: r.get(1)?,
            kind: r.get(2)?,
            delta: r.get(3)?,
            balance_after: r.get(4)?,
            created_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
