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
    print!("{}", deliveries_table(list));
}

/// The table `print_deliveries` prints: a header line, then one line per attempt. The error
/// column comes last and is left unpadded, so a long message does not widen the others.
fn deliveries_table(list: &[Attempt]) -> String {
    const HEAD: [&str; 9] = [
        "ID",
        "EVENT",
        "SUBJECT",
        "#",
        "RESULT",
        "MS",
        "AT",
        "NEXT RETRY",
        "ERROR",
    ];
    let rows: Vec<[String; 9]> = list
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
            [
                a.id.clone(),
                a.event_type.clone(),
                a.subject_id.clone(),
                attempt,
                result,
                a.duration_ms.to_string(),
                a.created_at.clone(),
                next,
                a.error.clone().unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([HEAD[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..HEAD.len()).map(width).collect();
    let line = |cells: [&str; 9]| {
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
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(HEAD);
    for r in &rows {
        out.push_str(&line(std::array::from_fn(|i| r[i].as_str())));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: &str, error: Option<&str>, status: Option<i64>) -> Attempt {
        Attempt {
            id: id.into(),
            event_id: "evt_1".into(),
            event_type: "job.completed".into(),
            subject_id: "job_1".into(),
            attempt: 1,
            url: "http://127.0.0.1:9/hook".into(),
            request_headers: serde_json::json!({}),
            request_body: "{}".into(),
            response_status: status,
            response_headers: None,
            response_body: None,
            error: error.map(Into::into),
            duration_ms: 12,
            succeeded: status == Some(200),
            manual: false,
            next_attempt_at: None,
            created_at: "2026-12-07T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_error_column_has_a_header_and_lines_up() {
        let table = deliveries_table(&[
            attempt("whatt_a", Some("connection refused"), None),
            attempt("whatt_bb", None, Some(200)),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].ends_with("NEXT RETRY  ERROR"), "{table}");
        // The error sits under its header, and an attempt without one shows "-" there.
        let col = lines[0].find("ERROR").unwrap();
        assert_eq!(&lines[1][col..], "connection refused", "{table}");
        assert_eq!(&lines[2][col..], "-", "{table}");
        assert!(
            lines[1].contains("fail") && lines[2].contains("ok 200"),
            "{table}"
        );
    }
}
