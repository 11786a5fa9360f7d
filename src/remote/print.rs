//! How the developer tools print what the API answers: the endpoint, the delivery log as an
//! aligned table, one line per job.

use crate::api::webhook::EndpointBody;
use crate::store::webhooks::Attempt;
use crate::views::JobBody;

pub(super) fn print_endpoint(ep: &EndpointBody) {
    println!("url:      {}", ep.url.as_deref().unwrap_or("(none)"));
    println!("enabled:  {}", ep.enabled);
    println!("secret:   {}", ep.secret);
    println!("failures: {}", ep.consecutive_failures);
    if let Some(reason) = &ep.disabled_reason {
        println!("disabled: {reason}");
    }
    if let Some(n) = ep.released_events {
        println!("released: {n} held event(s)");
    }
}

/// The delivery log as a table whose columns line up whatever the values' widths (numbers are
/// formatted as numbers: a JSON value ignores width and alignment).
pub(super) fn print_deliveries(list: &[Attempt]) {
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|a| {
            let result = match (a.succeeded, a.response_status) {
                (true, Some(s)) => format!("ok {s}"),
                (_, Some(s)) => format!("fail {s}"),
                _ => "fail".to_string(),
            };
            let mut attempt = a.attempt.to_string();
            if a.manual {
                attempt.push_str(" (resend)");
            }
            let next = a
                .next_attempt_at
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map_or_else(|| "-".to_string(), crate::store::rfc3339);
            let error = a.error.as_ref().map(|e| format!("  ({e})"));
            [
                a.id.clone(),
                a.event_type.clone(),
                a.subject_id.clone(),
                attempt,
                result,
                a.duration_ms.to_string(),
                a.created_at.clone(),
                format!("{next}{}", error.unwrap_or_default()),
            ]
        })
        .collect();
    let head = [
        "ID",
        "EVENT",
        "SUBJECT",
        "#",
        "RESULT",
        "MS",
        "AT",
        "NEXT RETRY",
    ];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..head.len()).map(width).collect();
    let line = |cells: [&str; 8]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths[i];
            // Numbers right-aligned, text left-aligned; the last column unpadded.
            if i == cells.len() - 1 {
                out.push_str(cell);
            } else if i == 3 || i == 5 {
                out.push_str(&format!("{cell:>w$}  "));
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    println!("{}", line(head));
    for r in &rows {
        println!("{}", line(std::array::from_fn(|i| r[i].as_str())));
    }
}

pub(super) fn job_line(j: &JobBody) -> String {
    let progress = j
        .progress
        .map(|p| format!("{:>3.0}%", p * 100.0))
        .unwrap_or_else(|| "   -".into());
    let error = j
        .error
        .as_ref()
        .map(|e| format!("  {}: {}", e.code, e.message))
        .unwrap_or_default();
    format!(
        "{:<30} {:<20} {:<10} {}  {}{}",
        j.job_id, j.endpoint, j.status, progress, j.created_at, error
    )
}
