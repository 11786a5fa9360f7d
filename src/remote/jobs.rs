//! `jobs list` and `jobs tail`: the job list, and each job's live event stream printed change by
//! change with its time (with `--json`, one JSON object per line).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{decode, Client, Key, Next, WAIT_RETRY};
use super::print::job_line;
use crate::api::jobs::JobList;
use crate::api::lifecycle::ProgressEvent;
use crate::views::JobBody;

pub(super) async fn jobs_list(c: &Client, json: bool) -> anyhow::Result<()> {
    if json {
        let list = c.tl_get("/v1/jobs").await?;
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let list: JobList = c.tl_get_as("/v1/jobs").await?;
    println!(
        "{:<30} {:<20} {:<10} {:>4}  CREATED",
        "ID", "ENDPOINT", "STATUS", "PROG"
    );
    for j in &list.data {
        println!("{}", job_line(j));
    }
    Ok(())
}

/// Prints a job at each event of its live stream until it ends (a line of text, or with `json`
/// one object: `{"time", "event", "job"}`); returns the final job.
///
/// It waits out `503`s and, given only a fleet's database, moves to another API node when its
/// own stops answering ([`Client::follow_on`]; `announce`: saying so).
pub(super) async fn follow_job(
    c: &Client,
    id: &str,
    json: bool,
    announce: bool,
) -> anyhow::Result<JobBody> {
    let path = format!("/v1/jobs/{}/events", super::client::segment(id)?);
    let mut last: Option<JobBody> = None;
    // What was printed last: a stream reopened after a move starts with the job as it is, which
    // is not printed again when nothing changed.
    let mut printed: Option<Value> = None;
    let (done, _) = c
        .follow_on(&path, Key::Jobs, announce, |event, data| {
            match (event, last.as_mut()) {
                // A progress event carries only the fraction.
                ("progress", Some(job)) => {
                    job.progress = serde_json::from_value::<ProgressEvent>(data.clone())
                        .ok()
                        .map(|e| e.progress as f32)
                }
                ("progress", None) => return,
                _ => match serde_json::from_value::<JobBody>(data.clone()) {
                    Ok(job) => last = Some(job),
                    Err(e) => {
                        eprintln!("{id}: an event that is not a job ({e}): {data}");
                        return;
                    }
                },
            }
            if let Some(job) = &last {
                let shown = serde_json::to_value(job).unwrap_or_default();
                if printed.as_ref() == Some(&shown) && event != "done" {
                    return;
                }
                print_change(event, job, json);
                printed = Some(shown);
            }
        })
        .await?;
    decode(done, &path)
}

/// One change of a followed job, as `jobs tail` prints it.
fn print_change(event: &str, job: &JobBody, json: bool) {
    if json {
        let line = json!({ "time": timestamp(), "event": event, "job": job });
        println!("{line}");
    } else {
        println!("{}  {}", clock(), job_line(job));
    }
}

/// The local time of a change `jobs tail` prints (to the millisecond: changes come fast).
pub(super) fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S%.3f").to_string()
}

/// The same instant for `--json`: RFC 3339 with the local offset, to the millisecond.
pub(super) fn timestamp() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// Looks for new jobs every half second (the list is not rate limited) and follows each one
/// that has not ended through its live event stream, printing every change.
///
/// A `503` (a fleet's database restarting) is waited out, with one line when it begins and one
/// when it ends. Given only the fleet's database, it goes on through another API node when its
/// node stops answering (and waits for one while none does). Any other error ends the command.
pub(super) async fn jobs_tail(c: &Client, json: bool) -> anyhow::Result<()> {
    let mut c = c.clone();
    let mut seen: HashSet<String> = Default::default();
    let mut mark: Option<String> = None;
    let mut first = true;
    let mut outage = false;
    // Each followed job holds a connection (and a file descriptor) for its stream: at most
    // this many at once; the others wait their turn (a stream opens with the job as it is,
    // so one that ended meanwhile prints its end then).
    let streams = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
    loop {
        let jobs = match new_jobs(&c, &seen, mark.as_deref(), first).await {
            Ok(jobs) => {
                if std::mem::take(&mut outage) {
                    eprintln!("{}  {} answers again", clock(), c.base);
                }
                jobs
            }
            Err(e) => match c.recover(e).await? {
                Next::Through(next) => {
                    if next.base != c.base {
                        eprintln!(
                            "{}  {} stopped answering; following the fleet through {}",
                            clock(),
                            c.base,
                            next.base
                        );
                        outage = false;
                    }
                    c = next;
                    continue;
                }
                Next::Wait(why) => {
                    if !std::mem::replace(&mut outage, true) {
                        eprintln!("{}  {why}", clock());
                    }
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                        _ = tokio::time::sleep(WAIT_RETRY) => continue,
                    }
                }
            },
        };
        for j in jobs {
            seen.insert(j.job_id.clone());
            if mark.as_deref().is_none_or(|m| j.job_id.as_str() > m) {
                mark = Some(j.job_id.clone());
            }
            if j.status == "completed" || j.status == "failed" {
                // Began and ended between two looks: its final line only (none at the first
                // look: those ended before the command started).
                if !first {
                    print_change("done", &j, json);
                }
                continue;
            }
            let (c, streams) = (c.clone(), streams.clone());
            // The job list's loop says when the server or node changes; the streams quietly
            // follow.
            tokio::spawn(async move {
                let Ok(_turn) = streams.acquire_owned().await else {
                    return;
                };
                if let Err(e) = follow_job(&c, &j.job_id, json, false).await {
                    eprintln!("{}: {e:#}", j.job_id);
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

/// How many job streams `jobs tail` keeps open at once.
const MAX_STREAMS: usize = 128;

/// The jobs of the list `seen` lacks, oldest first. At the `first` look: the newest page, and
/// every job still queued or running. Then: the newest page and older ones
/// back to `mark`, the newest job an earlier look saw, so that however many jobs came meanwhile
/// (its node frozen, a move to another) none is skipped.
async fn new_jobs(
    c: &Client,
    seen: &HashSet<String>,
    mark: Option<&str>,
    first: bool,
) -> anyhow::Result<Vec<JobBody>> {
    // Ids sort by creation time: a page reaching `mark` holds everything after it. None seen
    // before: at the first look the newest page is enough (older jobs that have ended are not
    // printed); after it, every job is new.
    let mut found = pages(c, "", |page| match (mark, page.data.last()) {
        (Some(m), Some(oldest)) => oldest.job_id.as_str() <= m,
        (None, Some(_)) => first,
        (_, None) => true,
    })
    .await?;
    if first {
        for status in ["queued", "running"] {
            let query = format!("status={status}&limit=500");
            found.extend(pages(c, &query, |_| false).await?);
        }
    }
    found.retain(|j| !seen.contains(&j.job_id));
    found.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    found.dedup_by(|a, b| a.job_id == b.job_id);
    Ok(found)
}

/// The job list with `query` (`name=value&…`, or empty), page after page (`before`), newest
/// first, until `enough` says a page was the last one needed or there are no more.
async fn pages(
    c: &Client,
    query: &str,
    mut enough: impl FnMut(&JobList) -> bool,
) -> anyhow::Result<Vec<JobBody>> {
    let mut found = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match (query, &before) {
            ("", None) => "/v1/jobs".to_string(),
            (q, None) => format!("/v1/jobs?{q}"),
            ("", Some(b)) => format!("/v1/jobs?before={}", super::client::query(b)),
            (q, Some(b)) => format!("/v1/jobs?{q}&before={}", super::client::query(b)),
        };
        let page: JobList = c.tl_poll_as(&path).await?;
        let stop = enough(&page);
        found.extend(page.data);
        match page.next_before {
            Some(b) if !stop => before = Some(b),
            _ => return Ok(found),
        }
    }
}

/// The final job of a stream as `jobs wait` and `jobs cancel` print it.
pub(super) fn print_job(job: &JobBody, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(job)?);
    } else {
        println!("{}", job_line(job));
    }
    Ok(())
}

/// `error.code: error.message` of a failed job (`?` if the server gave none).
pub(super) fn job_error(job: &JobBody) -> String {
    match &job.error {
        Some(e) => format!("{}: {}", e.code, e.message),
        None => "?".into(),
    }
}
