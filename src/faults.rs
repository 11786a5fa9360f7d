//! Fault injection: make the unhappy paths happen on demand, through the real failure code
//! (refunds, `job.failed`, `errorMessage`, the webhook retry schedule and auto-disable).
//!
//! Per request, the `X-Soundcheck-Fault` header takes one value, or two separated by a comma (one
//! for the run, one for its webhook deliveries):
//! - `internal_error` / `service_unavailable`: the job or generation fails with that code (a job's
//!   credits are refunded, as for any failure on our side);
//! - `timeout`: the engine never finishes, and the run fails through the timeout path;
//! - `delay=<ms>`: the run starts after a pause of up to 60 s (to watch `running` and progress);
//! - `webhook_fail`: every scheduled delivery of this item's webhook fails without reaching the
//!   receiver, so the retry schedule runs in full and counts towards auto-disable;
//! - `webhook_slow=<ms>`: each scheduled delivery waits that long before it is sent; past the
//!   webhook timeout it fails as a timeout.
//!
//! Globally, `serve --fail-rate F` fails that fraction of runs as `internal_error` and
//! `serve --latency MS` delays every API response (see `app.rs`).

use std::time::Duration;

/// Header that carries a fault on submit requests.
pub const HEADER: &str = "x-soundcheck-fault";

/// Longest accepted `delay=` / `webhook_slow=` value, in milliseconds.
const MAX_MS: u64 = 60_000;

/// A fault to inject into one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    InternalError,
    ServiceUnavailable,
    Timeout,
    Delay(Duration),
}

/// A fault to inject into the scheduled webhook deliveries of one job or generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFault {
    /// The attempt fails without a request being sent.
    Fail,
    /// The attempt waits this long before it is sent.
    Slow(Duration),
}

/// Everything one `X-Soundcheck-Fault` header asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub run: Option<Fault>,
    pub delivery: Option<DeliveryFault>,
}

fn millis(s: &str, prefix: &str) -> Option<Duration> {
    s.strip_prefix(prefix)
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms <= MAX_MS)
        .map(Duration::from_millis)
}

impl Faults {
    /// Parses the header value; `Err` is a client-facing message.
    pub fn parse(s: &str) -> Result<Faults, String> {
        let mut faults = Faults::default();
        for part in s.split(',').map(str::trim) {
            let unknown = || {
                format!(
                    "unknown fault {part:?}; expected internal_error, service_unavailable, \
                     timeout, delay=<ms up to {MAX_MS}>, webhook_fail or \
                     webhook_slow=<ms up to {MAX_MS}> (one run fault and one webhook fault, \
                     comma-separated)"
                )
            };
            let (run, delivery) = match part {
                "internal_error" => (Some(Fault::InternalError), None),
                "service_unavailable" => (Some(Fault::ServiceUnavailable), None),
                "timeout" => (Some(Fault::Timeout), None),
                "webhook_fail" => (None, Some(DeliveryFault::Fail)),
                _ => match (millis(part, "delay="), millis(part, "webhook_slow=")) {
                    (Some(d), _) => (Some(Fault::Delay(d)), None),
                    (_, Some(d)) => (None, Some(DeliveryFault::Slow(d))),
                    _ => return Err(unknown()),
                },
            };
            if (run.is_some() && faults.run.is_some())
                || (delivery.is_some() && faults.delivery.is_some())
            {
                return Err(format!(
                    "X-Soundcheck-Fault {s:?} names two run faults or two webhook faults; \
                     give at most one of each"
                ));
            }
            faults.run = faults.run.or(run);
            faults.delivery = faults.delivery.or(delivery);
        }
        Ok(faults)
    }

    /// The canonical text stored with the job (parses back to the same faults).
    pub fn as_string(&self) -> String {
        let run = self.run.map(|f| match f {
            Fault::InternalError => "internal_error".to_string(),
            Fault::ServiceUnavailable => "service_unavailable".into(),
            Fault::Timeout => "timeout".into(),
            Fault::Delay(d) => format!("delay={}", d.as_millis()),
        });
        let delivery = self.delivery.map(|f| match f {
            DeliveryFault::Fail => "webhook_fail".to_string(),
            DeliveryFault::Slow(d) => format!("webhook_slow={}", d.as_millis()),
        });
        [run, delivery]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The faults stored with a job or generation (`None` or unreadable text: none).
    pub fn stored(s: Option<&str>) -> Faults {
        s.and_then(|s| Faults::parse(s).ok()).unwrap_or_default()
    }
}

/// Decides whether a run fails under `serve --fail-rate`: true for about `rate` of the calls.
pub fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
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
            "webhook_fail",
            "webhook_slow=1500",
            "internal_error,webhook_fail",
            "delay=10,webhook_slow=20",
        ] {
            assert_eq!(Faults::parse(s).unwrap().as_string(), s);
        }
        let both = Faults::parse(" timeout , webhook_fail ").unwrap();
        assert_eq!(both.run, Some(Fault::Timeout));
        assert_eq!(both.delivery, Some(DeliveryFault::Fail));
        assert!(Faults::parse("delay=999999").is_err());
        assert!(Faults::parse("webhook_slow=60001").is_err());
        assert!(Faults::parse("explode").is_err());
        assert!(Faults::parse("timeout,internal_error").is_err());
        assert!(Faults::parse("webhook_fail,webhook_slow=5").is_err());
        assert_eq!(Faults::stored(None), Faults::default());
        assert_eq!(Faults::stored(Some("garbage")), Faults::default());
    }

    #[test]
    fn roll_respects_the_extremes_and_the_rate() {
        assert!((0..1000).all(|_| !roll(0.0)));
        assert!((0..1000).all(|_| roll(1.0)));
        let hits = (0..10_000).filter(|_| roll(0.3)).count();
        assert!((2_500..3_500).contains(&hits), "{hits}");
    }
}
