//! The credit ledger: every grant, reservation, charge and refund is a row; the balance is the last
//! row's `balance_after`, so reading it is one index lookup however long the ledger grows.

use serde::Serialize;

use super::db::Tx;
use crate::params;

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
pub fn balance(conn: &dyn Tx) -> Result<i64> {
    Ok(conn
        .query_opt(
            "SELECT balance_after FROM credit_ledger ORDER BY id DESC LIMIT 1",
            params![],
            |r| r.get(0),
        )?
        .unwrap_or(0))
}

/// Appends a movement and returns the new balance.
pub fn record(conn: &dyn Tx, job_id: Option<&str>, kind: LedgerKind, delta: i64) -> Result<i64> {
    let after = balance(conn)? + delta;
    conn.execute(
        "INSERT INTO credit_ledger (job_id, kind, delta, balance_after, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![job_id, kind, delta, after, super::now_rfc3339()],
    )?;
    Ok(after)
}

/// Gives a fresh database its starting credits (once).
pub fn ensure_initial_grant(conn: &dyn Tx) -> Result<()> {
    let any: Option<i64> =
        conn.query_opt("SELECT id FROM credit_ledger LIMIT 1", params![], |r| {
            r.get(0)
        })?;
    if any.is_none() {
        record(conn, None, LedgerKind::Grant, STARTING_CREDITS)?;
    }
    Ok(())
}

/// The most recent movements, newest first.
pub fn recent(conn: &dyn Tx, limit: usize) -> Result<Vec<Movement>> {
    conn.query_map(
        "SELECT id, job_id, kind, delta, balance_after, created_at
         FROM credit_ledger ORDER BY id DESC LIMIT ?1",
        params![limit],
        |r| {
            Ok(Movement {
                id: r.get(0)?,
                job_id: r.get(1)?,
                kind: r.get(2)?,
                delta: r.get(3)?,
                balance_after: r.get(4)?,
                created_at: r.get(5)?,
            })
        },
    )
}
