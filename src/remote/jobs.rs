//! `jobs list` and `jobs tail`: the job list, and each job's live event stream printed change by
//! change with its time.

use std::time::Duration;

use serde_json::Value;

use super::client::{Client, Key};
use super::print::job_line;

pub(super) async fn jobs_list(c: &Client, json: bool) -> anyhow::Result<()> {
    let list = c.tl_get("/v1/jobs").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<30} {:<20} {:<10} {:>4}  CREATED",
        "ID", "ENDPOINT", "STATUS", "PROG"
    );
    for j in list["data"].as_array().into_iter().flatten() {
        println!("{}", job_line(j));
    }
    Ok(())
}

/// Prints a job's line at each event of its live stream until it ends; returns the final job.
pub(super) async fn follow_job(c: &Client, id: &str) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    c.follow(
        &format!("/v1/jobs/{id}/events"),
        Key::Jobs,
        |event, data| {
            match event {
                "progress" => last["progress"] = data["progress"].clone(),
                _ => last = data.clone(),
            }
            println!("{}  {}", clock(), job_line(&last));
        },
    )
    .await
}

/// The local time of a change `jobs tail` prints (to the millisecond: changes come fast).
pub(super) fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S%.3f").to_string()
}

/// Looks for new jobs every half second (the list is not rate limited) and follows each one
/// that has not ended through its live event stream, printing every change.
pub(super) async fn jobs_tail(c: &Client) -> anyhow::Result<()> {
    let mut seen: std::collections::HashSet<String> = Default::default();
    let mut first = true;
    loop {
        let list = c.tl_get("/v1/jobs").await?;
        let mut jobs: Vec<Value> = list["data"].as_array().cloned().unwrap_or_default();
        jobs.reverse(); // oldest first, so lines come out in order
        for j in jobs {
            let id = j["job_id"].as_str().unwrap_or("").to_string();
            if !seen.insert(id.clone()) {
                continue;
            }
            let ended = j["status"] == "completed" || j["status"] == "failed";
            if ended {
                // Began and ended between two looks: its final line only.
                if !first {
                    println!("{}  {}", clock(), job_line(&j));
                }
                continue;
            }
            let c = c.clone();
            tokio::spawn(async move {
                if let Err(e) = follow_job(&c, &id).await {
                    eprintln!("{id}: {e:#}");
                }
            });
        }
        first = false;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
