//! The Job controller: runs pods until `completions` of them succeed, at most
//! `parallelism` at a time; gives up (condition Failed, reason BackoffLimitExceeded) after
//! more than `backoffLimit` failed pods; `suspend` stops it.

use bosun_api::json::At;
use std::sync::Arc;
use std::time::Duration;

use bosun_client::informer::{Changes, Informers};
use bosun_client::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::replicaset::{controller_uid, is_ready};

/// Periodic resync.
const RESYNC: Duration = Duration::from_secs(5);

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, ptr: &str, default: i64) -> i64 {
    v.at(ptr).and_then(Value::as_i64).unwrap_or(default)
}

fn has_condition(job: &Value, kind: &str) -> bool {
    job.at("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| s(c, "/type") == kind && s(c, "/status") == "True")
        })
}

/// A pod for a Job, from its template.
fn pod_for(job: &Value) -> Value {
    crate::replicaset::pod_from_template(job, "batch/v1", "Job")
}

/// Runs the controller until `cancel`.
pub async fn run(client: Client, informers: Informers, cancel: CancellationToken) {
    let jobs = informers.get("jobs");
    let pods = informers.get("pods");
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async { jobs.wait_synced().await; pods.wait_synced().await } => {}
    }
    tracing::info!("job controller started");
    // Per job uid: the revision of its last created pod (wait for the cache to show it).
    let mut waiting: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut changes = Changes::new(vec![jobs.subscribe(), pods.subscribe()]);
    loop {
        for job in jobs.list() {
            let uid = s(&job, "/metadata/uid").to_string();
            if waiting.get(&uid).is_some_and(|r| pods.revision() < *r) {
                continue;
            }
            let mine = &pods.owned_by(&uid)[..];
            match reconcile(&client, &job, mine).await {
                Ok(Some(r)) => {
                    waiting.insert(uid, r);
                }
                Ok(None) => {
                    waiting.remove(&uid);
                }
                Err(e) => {
                    tracing::warn!(job = %format!("{}/{}", s(&job, "/metadata/namespace"), s(&job, "/metadata/name")), error = %e, "reconcile failed; retrying")
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = changes.next_or(RESYNC) => tokio::time::sleep(bosun_client::informer::MIN_PASS_GAP).await,
        }
    }
}

async fn reconcile(
    client: &Client,
    job: &Value,
    candidates: &[Arc<Value>],
) -> bosun_client::Result<Option<i64>> {
    if job.at("/metadata/deletionTimestamp").is_some() {
        return Ok(None);
    }
    let ns = s(job, "/metadata/namespace");
    let name = s(job, "/metadata/name");
    let uid = s(job, "/metadata/uid");
    let owned: Vec<Arc<Value>> = candidates
        .iter()
        .filter(|p| s(p, "/metadata/namespace") == ns && controller_uid(p) == Some(uid))
        .cloned()
        .collect();
    let phase = |p: &Value| s(p, "/status/phase").to_string();
    let succeeded = owned.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i64;
    let active: Vec<&Arc<Value>> = owned
        .iter()
        .filter(|p| {
            !matches!(phase(p).as_str(), "Succeeded" | "Failed")
                && p.at("/metadata/deletionTimestamp").is_none()
        })
        .collect();
    let completions = int(job, "/spec/completions", 1);
    let parallelism = int(job, "/spec/parallelism", 1);
    let backoff = int(job, "/spec/backoffLimit", 6);
    let suspended = job.at("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let finished = has_condition(job, "Complete") || has_condition(job, "Failed");
    let now = crate::now();
    let mut conditions: Vec<Value> = job
        .at("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut completion_time = job.at("/status/completionTime").cloned();
    let mut last = None;
    let done = succeeded >= completions;
    let gave_up = failed > backoff;
    if done || gave_up || suspended || finished {
        // Nothing more runs.
        for p in &active {
            match client
                .delete("pods", ns, s(p, "/metadata/name"), Some(0))
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some(bosun_client::Code::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        if !finished && done {
            conditions.push(json!({"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}));
            completion_time = Some(json!(now));
            tracing::info!(job = name, succeeded, "job complete");
        } else if !finished && gave_up {
            conditions.push(json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}));
            tracing::info!(job = name, failed, "job failed: backoff limit exceeded");
        }
    } else {
        let want = parallelism.min(completions - succeeded).max(0);
        let have = active.len() as i64;
        for _ in have..want {
            let created = client.create("pods", ns, &pod_for(job)).await?;
            last = Some(
                s(&created, "/metadata/resourceVersion")
                    .parse()
                    .unwrap_or(0),
            );
        }
        if have > want {
            for p in active.iter().take((have - want) as usize) {
                let _ = client
                    .delete("pods", ns, s(p, "/metadata/name"), Some(0))
                    .await;
            }
        }
    }
    let status = json!({
        "active": if done || gave_up || suspended { 0 } else { active.len() },
        "ready": active.iter().filter(|p| is_ready(p)).count(),
        "succeeded": succeeded,
        "failed": failed,
        "startTime": job.at("/status/startTime").cloned().unwrap_or(json!(now)),
        "completionTime": completion_time,
        "conditions": conditions,
    });
    let old = job.at("/status").cloned().unwrap_or(json!({}));
    let same = [
        "active",
        "ready",
        "succeeded",
        "failed",
        "conditions",
        "completionTime",
    ]
    .iter()
    .all(|k| old.get(*k).unwrap_or(&Value::Null) == status.get(*k).unwrap_or(&Value::Null));
    if (!same || old.get("startTime").is_none()) && last.is_none() {
        client
            .patch("jobs", ns, name, "status", &json!({"status": status}))
            .await?;
    }
    Ok(last)
}
