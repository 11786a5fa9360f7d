//! How the developer tools print what the API answers: the endpoint, the delivery log as an
//! aligned table, one line per job.

use serde_json::Value;

use crate::api::webhook::EndpointBody;
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
pub(super) fn print_deliveries(list: &Value) {
    let rows: Vec<[String; 8]> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let result = match (a["succeeded"].as_bool(), a["response_status"].as_i64()) {
                (Some(true), Some(s)) => format!("ok {s}"),
                (_, Some(s)) => format!("fail {s}"),
                _ => "fail".to_string(),
            };
            let num = |v: &Value| v.as_i64().map(|n| n.to_string()).unwrap_or_default();
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            let mut attempt = num(&a["attempt"]);
            if a["manual"] == true {
                attempt.push_str(" (resend)");
            }
            let error = a["error"].as_str().map(|e| format!("  ({e})"));
            [
                s(&a["id"]),
                s(&a["event_type"]),
                s(&a["subject_id"]),
                attempt,
                result,
                num(&a["duration_ms"]),
                s(&a["created_at"]),
                format!(
                    "{}{}",
                    a["next_attempt_at"].as_str().unwrap_or("-"),
                    error.unwrap_or_default()
                ),
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
