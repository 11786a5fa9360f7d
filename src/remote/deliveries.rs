//! `deliveries resend --failed-since`: bulk replay of the events whose latest attempt failed.

use anyhow::anyhow;

use super::client::Client;
use super::print::print_deliveries;
use crate::api::webhook::DeliveryList;
use crate::store::webhooks::Attempt;

/// `--failed-since`: an RFC 3339 time, or an age before `now` (`90s`, `30m`, `2h`, `1d`).
pub(super) fn parse_since(
    raw: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let bad = || {
        anyhow!(
            "--failed-since {raw:?}: give an RFC 3339 time (2026-12-05T18:00:00Z) or an age \
             (90s, 30m, 2h, 1d)"
        )
    };
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = raw.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let age =
        chrono::Duration::try_seconds(n.checked_mul(secs).ok_or_else(bad)?).ok_or_else(bad)?;
    // An age past the calendar's start (99999999999d) is refused, not an overflow.
    now.checked_sub_signed(age).ok_or_else(bad)
}

/// Resends each event (of `of` kind) whose most recent attempt failed at or after `since`.
pub(super) async fn resend_failed_since(
    c: &Client,
    since: chrono::DateTime<chrono::Utc>,
    of: &str,
    json: bool,
) -> anyhow::Result<()> {
    let list: DeliveryList = c
        .tl_get_as(&format!(
            "/v1/webhook/deliveries?of={}&limit=100",
            super::client::query(of)
        ))
        .await?;
    let mut latest_seen = std::collections::HashSet::new();
    let mut failed = Vec::new();
    // Newest first: the first attempt seen of an event is its latest.
    for a in list.data {
        if !latest_seen.insert(a.event_id.clone()) || a.succeeded {
            continue;
        }
        let at = chrono::DateTime::parse_from_rfc3339(&a.created_at).ok();
        if at.is_some_and(|t| t >= since) {
            failed.push(a.event_id);
        }
    }
    if failed.is_empty() && json {
        println!("[]");
        return Ok(());
    }
    if failed.is_empty() {
        println!(
            "no {of} event has failed since {}",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        return Ok(());
    }
    let mut sent: Vec<Attempt> = Vec::new();
    for event in failed.iter().rev() {
        let path = format!(
            "/v1/webhook/deliveries/{}/resend",
            super::client::segment(event)?
        );
        sent.push(c.tl_send_as("POST", &path, None).await?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&sent)?);
    } else {
        print_deliveries(&sent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_since_takes_rfc3339_or_an_age_and_refuses_anything_else() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T18:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let at = |s: &str| parse_since(s, now).map(|t| t.to_rfc3339());
        assert_eq!(
            at("2026-12-05T17:00:00Z").unwrap(),
            "2026-12-05T17:00:00+00:00"
        );
        assert_eq!(at("90s").unwrap(), "2026-12-05T17:58:30+00:00");
        assert_eq!(at("30m").unwrap(), "2026-12-05T17:30:00+00:00");
        assert_eq!(at("2h").unwrap(), "2026-12-05T16:00:00+00:00");
        assert_eq!(at("1d").unwrap(), "2026-12-04T18:00:00+00:00");
        for bad in [
            "",
            "yesterday",
            "10",
            "m",
            "5w",
            "-3m",
            "99999999999999999d",
            "99999999999d",
        ] {
            assert!(at(bad).is_err(), "{bad:?} accepted");
        }
    }
}
