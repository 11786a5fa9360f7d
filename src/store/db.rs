//! The SQL interface every store function is written against, whichever backend runs it: a
//! transaction ([`Tx`]) that executes statements and returns rows of plain [`Value`]s. SQLite
//! (`rusqlite`) and PostgreSQL (`tokio-postgres`) each implement it once (`sqlite.rs`,
//! `postgres.rs`), so the operations in `jobs.rs`, `credits.rs`, `webhooks.rs`… and the
//! transactions composed of them in `jobs/` and `webhooks/` exist once, not once per backend.
//!
//! Statements use the subset both databases speak: numbered placeholders `?1`, `?2`… (rewritten
//! to `$1` for PostgreSQL), `ON CONFLICT … DO …`, `COALESCE`, `CASE`, no `MAX(a, b)`. Where the two
//! really differ (claiming work: PostgreSQL's `FOR UPDATE SKIP LOCKED`), a function asks
//! [`Tx::dialect`]. Both schemas store the same columns with the same meaning: integers are
//! 64-bit, booleans are integers 0/1, JSON is text.

use super::{Error, Result};

/// One SQL value, as both backends can store and return it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Which database a transaction talks to, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A transaction of either backend. Every statement of one [`super::Store::write`] runs in one of
/// these; it commits when the closure returns `Ok`, rolls back otherwise.
pub trait Tx {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns how many rows it changed.
    fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<usize>;
    /// Runs a query; returns every row.
    fn query(&self, sql: &str, params: &[&dyn ToValue]) -> Result<Vec<Row>>;
}

impl dyn Tx + '_ {
    /// The first row mapped by `f`, if the query returned any.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.query(sql, params)?.first().map(f).transpose()
    }

    /// The first row mapped by `f`; an error if there is none.
    pub fn query_one<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| Error::Type(format!("the query returned no row: {sql}")))
    }

    /// Every row mapped by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.query(sql, params)?.iter().map(f).collect()
    }
}

/// The database's clock, unix ms: on PostgreSQL the server's (`clock_timestamp()`), so that
/// leases written by one node and checked by another agree whatever the nodes' clocks say; on
/// SQLite (one machine) this process's.
pub fn now_ms(tx: &dyn Tx) -> Result<i64> {
    match tx.dialect() {
        Dialect::Sqlite => Ok(super::now_ms()),
        Dialect::Postgres => tx.query_one(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            crate::params![],
            |r| r.get(0),
        ),
    }
}

/// What a [`notify`] tells the other nodes of a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A job or generation is queued: idle workers should look.
    Work,
    /// A webhook event is due: dispatchers should look.
    Outbox,
}

impl Wake {
    /// The notification's payload on the [`WAKE_CHANNEL`].
    pub fn as_str(self) -> &'static str {
        match self {
            Wake::Work => "work",
            Wake::Outbox => "outbox",
        }
    }
}

/// The PostgreSQL `LISTEN` channel of wake-ups.
pub const WAKE_CHANNEL: &str = "soundcheck_wake";

/// On PostgreSQL, tells every node listening (`LISTEN soundcheck_wake`) that there is new work or
/// a due event, once the transaction commits; on SQLite (one process) nothing: the process wakes
/// its own workers.
pub fn notify(tx: &dyn Tx, what: Wake) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        tx.execute(
            "SELECT pg_notify(?1, ?2)",
            crate::params![WAKE_CHANNEL, what.as_str()],
        )?;
    }
    Ok(())
}

/// The statement that picks the oldest queued row of `table` for a claim: `status = ?1`, and, when
/// `only` is given, `column` among those names (`?2`, `?3`…). On PostgreSQL a row another node is
/// claiming at this moment is skipped (`FOR UPDATE SKIP LOCKED`) rather than waited for.
pub fn claim_sql(dialect: Dialect, table: &str, column: &str, only: Option<&[String]>) -> String {
    let mut sql = format!("SELECT id FROM {table} WHERE status = ?1");
    if let Some(names) = only {
        let marks: Vec<String> = (0..names.len()).map(|i| format!("?{}", i + 2)).collect();
        // An empty list matches nothing (`IN ()` is not SQL).
        if marks.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            sql.push_str(&format!(" AND {column} IN ({})", marks.join(", ")));
        }
    }
    sql.push_str(" ORDER BY id LIMIT 1");
    if dialect == Dialect::Postgres {
        sql.push_str(" FOR UPDATE SKIP LOCKED");
    }
    sql
}

/// A result row: its columns in `SELECT` order.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` converted to `T`; a type mismatch is an error naming the column.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).map_err(|e| Error::Type(format!("column {i}: {e}")))
    }

    /// Column `i`, a JSON text column, parsed (`Null` when the text is not JSON).
    pub fn json(&self, i: usize) -> Result<serde_json::Value> {
        let text: String = self.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Column `i`, an optional JSON text column, parsed.
    pub fn json_opt(&self, i: usize) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = self.get(i)?;
        Ok(text.and_then(|s| serde_json::from_str(&s).ok()))
    }
}

/// Builds the parameter slice of a statement: `params![id, now, JobStatus::Queued]`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::store::db::ToValue] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::store::db::ToValue),+] as &[&dyn $crate::store::db::ToValue] };
}
pub use crate::params;

/// A Rust value a statement can take as a parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

/// A Rust value a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> std::result::Result<Self, String>;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for i32 {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
}
impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for bytes::Bytes {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "a blob",
    }
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(format!("expected an integer, found {}", kind(other))),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(format!("expected a real, found {}", kind(other))),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {}", kind(other))),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            other => Err(format!("expected a blob, found {}", kind(other))),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// `?1, ?2 …` → `$1, $2 …`, outside quoted text (PostgreSQL's placeholders).
pub fn numbered_to_dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(|d| d.is_ascii_digit()) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes_only() {
        assert_eq!(
            numbered_to_dollar("SELECT '?1', x FROM t WHERE a = ?1 AND b = ?12 OR c = ?"),
            "SELECT '?1', x FROM t WHERE a = $1 AND b = $12 OR c = ?"
        );
    }

    #[test]
    fn values_convert_both_ways_and_mismatches_name_the_column() {
        let row = Row(vec![
            Value::Int(3),
            Value::Null,
            Value::Text("x".into()),
            Value::Int(1),
            Value::Text("{\"a\":1}".into()),
        ]);
        assert_eq!(row.get::<i64>(0).unwrap(), 3);
        assert_eq!(row.get::<f64>(0).unwrap(), 3.0);
        assert_eq!(row.get::<Option<String>>(1).unwrap(), None);
        assert_eq!(row.get::<String>(2).unwrap(), "x");
        assert!(row.get::<bool>(3).unwrap());
        assert_eq!(row.json(4).unwrap()["a"], 1);
        let err = row.get::<i64>(2).unwrap_err().to_string();
        assert!(err.contains("column 2") && err.contains("text"), "{err}");
        let p: &[&dyn ToValue] = params![1i64, "a", None::<&str>, true, 2.5f64];
        let v: Vec<Value> = p.iter().map(|p| p.to_value()).collect();
        assert_eq!(
            v,
            vec![
                Value::Int(1),
                Value::Text("a".into()),
                Value::Null,
                Value::Int(1),
                Value::Real(2.5)
            ]
        );
    }
}
