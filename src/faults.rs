//! Fault injection: make the unhappy paths happen on demand, through the real failure code
//! (refunds, `job.failed`, `errorMessage`, the webhook retry schedule).
//!
//! Per request, the `X-Soundcheck-Fault` header takes one of:
//! - `internal_error` / `service_unavailable`: the job or generation fails with that code (a job's
//!   credits are refunded, as for any failure on our side);
//! - `timeout`: the engine never finishes, and the run fails through the timeout path;
//! - `delay=<ms>`: the run starts after a pause of up to 60 s (to watch `running` and progress).

use std::time::Duration;

/// Header that carries a fault on submit requests.
pub const HEADER: &str = "x-soundcheck-fault";

/// A fault to inject into one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    InternalError,
    ServiceUnavailable,
    Timeout,
    Delay(Duration),
}

impl Fault {
    /// Parses the header value; `Err` is a client-facing message.
    pub fn parse(s: &str) -> Result<Fault, String> {
        let s = s.trim();
        match s {
            "internal_error" => Ok(Fault::InternalError),
            "service_unavailable" => Ok(Fault::ServiceUnavailable),
            "timeout" => Ok(Fault::Timeout),
            _ => {
                let ms = s
                    .strip_prefix("delay=")
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|ms| *ms <= 60_000)
                    .ok_or_else(|| {
                        format!(
                            "unknown fault {s:?}; expected internal_error, service_unavailable, \
                             timeout or delay=<ms up to 60000>"
                        )
                    })?;
                Ok(Fault::Delay(Duration::from_millis(ms)))
            }
        }
    }

    /// The canonical text stored with the job (parses back to the same fault).
    pub fn as_string(&self) -> String {
        match self {
            Fault::InternalError => "internal_error".into(),
            Fault::ServiceUnavailable => "service_unavailable".into(),
            Fault::Timeout => "timeout".into(),
            Fault::Delay(d) => format!("delay={}", d.as_millis()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        for s in [
            "internal_error",
            "service_unavailable",
            "timeout",
            "delay=250",
        ] {
            assert_eq!(Fault::parse(s).unwrap().as_string(), s);
        }
        assert!(Fault::parse("delay=999999").is_err());
        assert!(Fault::parse("explode").is_err());
    }
}
