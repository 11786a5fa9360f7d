//! The jobs API's retry schedule, as data: the wait before each attempt (seed table), scaled by
//! `--time-scale` for local testing.

use std::time::Duration;

/// Wait before attempt 1..=6: immediate, 1 min, 5 min, 15 min, 1 h, 4 h.
pub const WAITS_SECS: [u64; 6] = [0, 60, 300, 900, 3_600, 14_400];

/// Attempts an event gets before it has failed for good.
pub const MAX_ATTEMPTS: i64 = WAITS_SECS.len() as i64;

/// Events in a row that failed for good before the endpoint is disabled.
pub const DISABLE_AFTER: i64 = 5;

/// The wait before attempt number `next` (1-based), scaled; `None` when no attempt is left.
pub fn wait_before(next: i64, time_scale: f64) -> Option<Duration> {
    let secs = *WAITS_SECS.get(usize::try_from(next - 1).ok()?)?;
    // `serve` bounds the scale; a scale from elsewhere that is not a usable number waits the
    // longest rather than panicking.
    Some(Duration::try_from_secs_f64(secs as f64 * time_scale).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_the_seeds_table_scaled() {
        assert_eq!(wait_before(1, 1.0), Some(Duration::ZERO));
        assert_eq!(wait_before(2, 1.0), Some(Duration::from_secs(60)));
        assert_eq!(wait_before(6, 1.0), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(wait_before(7, 1.0), None);
        assert_eq!(wait_before(2, 0.001), Some(Duration::from_millis(60)));
        assert_eq!(wait_before(0, 1.0), None);
        assert_eq!(wait_before(2, 1e308), Some(Duration::MAX));
    }
}
