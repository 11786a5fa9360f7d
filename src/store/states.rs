//! The words the store keeps in its state and kind columns, as types: a job's status, a
//! generation's status, a webhook event's state and kind, a ledger entry's kind. Each converts to
//! and from its column text here, at the store's edge, so the rest of the code matches on variants
//! (a typo does not compile) and every transition is a function with a test, not a string literal.

use super::db::{FromValue, ToValue, Value};

/// Declares a unit enum stored as lower-case text, with `as_str`, `parse`, `Display`, serde and
/// the store's value conversions.
macro_rules! stored_words {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The text stored in the database and shown to clients.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant stored as `text`, if any.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl ToValue for $name {
            fn to_value(&self) -> Value {
                Value::Text(self.as_str().to_owned())
            }
        }

        impl FromValue for $name {
            fn from_value(v: &Value) -> std::result::Result<Self, String> {
                let text = String::from_value(v)?;
                $name::parse(&text)
                    .ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)))
            }
        }
    };
}

stored_words! {
    /// Where a job is in its life (the jobs API's `status`).
    pub enum JobStatus {
        Queued = "queued",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
    }
}

stored_words! {
    /// Where a generation is in its life (the generations API's `status`).
    pub enum GenerationStatus {
        Queued = "queued",
        Processing = "processing",
        Completed = "completed",
        Failed = "failed",
    }
}

stored_words! {
    /// Where an outbox event is on its way to the receiver.
    pub enum EventState {
        /// Due at `next_attempt_at`.
        Pending = "pending",
        /// Waiting for the job endpoint to be re-enabled.
        Held = "held",
        /// Delivered (a 2xx).
        Succeeded = "succeeded",
        /// Every scheduled attempt failed (generations: the one attempt).
        Failed = "failed",
        /// No endpoint was configured when the job ended: nothing to send.
        Skipped = "skipped",
    }
}

stored_words! {
    /// Which API an outbox event belongs to.
    pub enum EventKind {
        /// Signed and retried on the schedule (jobs API).
        Job = "job",
        /// Sent once, unsigned (generations API).
        Generation = "generation",
    }
}

stored_words! {
    /// What a credit movement was.
    pub enum LedgerKind {
        /// Credits added (the starting grant, `credits add`, `POST /v1/credits`).
        Grant = "grant",
        /// A job's price held at submit.
        Reserve = "reserve",
        /// A finished job keeps its reservation (delta 0).
        Charge = "charge",
        /// A job failed on the server's side: its reservation comes back.
        Refund = "refund",
    }
}

stored_words! {
    /// Why a job failed: its `error.code` (the jobs API's codes for a failed job, and
    /// soundcheck's `cancelled`).
    pub enum FailCode {
        /// The parameters were refused when the engine read them.
        InvalidRequest = "invalid_request",
        UnsupportedAudio = "unsupported_audio",
        CorruptAudio = "corrupt_audio",
        InternalError = "internal_error",
        /// The engine could not run (not installed any more, or shut down).
        ServiceUnavailable = "service_unavailable",
        /// `DELETE /v1/jobs/{job_id}`.
        Cancelled = "cancelled",
    }
}

impl FailCode {
    /// Whether the job's reservation comes back: the failure was the server's (or the client
    /// cancelled), not the upload's or the parameters'.
    pub fn refunded(self) -> bool {
        matches!(
            self,
            FailCode::InternalError | FailCode::ServiceUnavailable | FailCode::Cancelled
        )
    }
}

impl JobStatus {
    /// True once the job can change no more.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}

impl GenerationStatus {
    /// True once the generation can change no more.
    pub fn is_final(self) -> bool {
        matches!(self, GenerationStatus::Completed | GenerationStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every word reads back as the variant it was written from, through SQLite too, and a word
    /// the code does not know is an error, not a default.
    /// The delivery log's query names the pending state by its word (`store::webhooks`).
    #[test]
    fn the_pending_word_is_the_one_the_delivery_log_reads() {
        assert_eq!(EventState::Pending.as_str(), "pending");
    }

    #[test]
    fn every_word_round_trips_through_sqlite_and_unknown_words_are_errors() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let conn: &dyn crate::store::Tx = &conn;
        fn check<T: ToValue + FromValue + Copy + PartialEq + std::fmt::Debug>(
            conn: &dyn crate::store::Tx,
            all: &[T],
            text: impl Fn(T) -> &'static str,
        ) {
            for &v in all {
                let back: T = conn
                    .query_one("SELECT ?1", crate::params![v], |r| r.get(0))
                    .unwrap();
                assert_eq!(back, v);
                let stored: String = conn
                    .query_one("SELECT ?1", crate::params![v], |r| r.get(0))
                    .unwrap();
                assert_eq!(stored, text(v));
            }
            let bad = conn.query_one("SELECT 'runing'", crate::params![], |r| r.get::<T>(0));
            assert!(bad.is_err());
        }
        check(conn, JobStatus::ALL, JobStatus::as_str);
        check(conn, GenerationStatus::ALL, GenerationStatus::as_str);
        check(conn, EventState::ALL, EventState::as_str);
        check(conn, EventKind::ALL, EventKind::as_str);
        check(conn, LedgerKind::ALL, LedgerKind::as_str);
        assert_eq!(
            serde_json::to_string(&JobStatus::Running).unwrap(),
            "\"running\""
        );
        assert!(JobStatus::Failed.is_final() && !JobStatus::Running.is_final());
        assert!(GenerationStatus::Completed.is_final() && !GenerationStatus::Processing.is_final());
    }
}
