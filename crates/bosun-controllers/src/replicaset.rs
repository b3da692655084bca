//! The ReplicaSet controller: keeps as many live pods as `spec.replicas` asks for, each
//! owned by its ReplicaSet, and reports the counts in the status.
//!
//! Level-triggered: any change to ReplicaSets or pods (or a periodic resync) re-reads
//! every ReplicaSet from the cache and reconciles it. After it acts on a ReplicaSet it
//! waits until the pod cache has seen its own writes before acting on it again, so a
//! lagging cache never makes it create (or delete) twice. What a pass reads of each pod
//! is kept while the cache holds the same object ([`Memo`]): a pass over ten thousand
//! pods reads only those that changed.

use bosun_api::json::At;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bosun_client::informer::{Changes, Informer, Informers, Memo};
use bosun_client::Client;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Periodic resync: catches anything an event did not trigger.
const RESYNC: Duration = Duration::from_secs(5);
/// First wait before a ReplicaSet whose reconcile failed is tried again; it doubles with
/// each failure in a row, up to [`MAX_BACKOFF`] (as Kubernetes' work queues back off).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Pods created or deleted per ReplicaSet per pass at most (as Kubernetes' burst limit
/// does; creations go in batches).
const BURST: usize = 2000;
/// Deletes of one ReplicaSet's pods in flight at most.
const DELETES_IN_FLIGHT: usize = 32;

fn uid(o: &Value) -> &str {
    o.at("/metadata/uid").and_then(Value::as_str).unwrap_or("")
}

fn name(o: &Value) -> &str {
    o.at("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

fn namespace(o: &Value) -> &str {
    o.at("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub use bosun_client::informer::controller_uid;

/// Whether a pod counts towards its owner's replicas: not being deleted, not finished.
pub fn is_active(pod: &Value) -> bool {
    let phase = pod
        .at("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    pod.at("/metadata/deletionTimestamp").is_none() && phase != "Succeeded" && phase != "Failed"
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    pod.at("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// A new pod from an owner's pod template (`spec.template`): named after the owner,
/// in its namespace, controlled by it.
pub(crate) fn pod_from_template(owner: &Value, api_version: &str, kind: &str) -> Value {
    let template = owner.at("/spec/template").cloned().unwrap_or(json!({}));
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.insert("generateName".into(), json!(format!("{}-", name(owner))));
        m.insert("namespace".into(), json!(namespace(owner)));
        m.remove("name");
        m.insert(
            "ownerReferences".into(),
            json!([{"apiVersion": api_version, "kind": kind, "name": name(owner), "uid": uid(owner),
                "controller": true, "blockOwnerDeletion": true}]),
        );
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

/// A new pod for a ReplicaSet, from its template.
fn pod_for(rs: &Value) -> Value {
    pod_from_template(rs, "apps/v1", "ReplicaSet")
}

/// What reconciling reads of one pod.
struct PodFacts {
    uid: String,
    namespace: String,
    controller: Option<String>,
    active: bool,
    ready: bool,
}

impl PodFacts {
    fn of(pod: &Value) -> PodFacts {
        PodFacts {
            uid: uid(pod).to_string(),
            namespace: namespace(pod).to_string(),
            controller: controller_uid(pod).map(str::to_string),
            active: is_active(pod),
            ready: is_ready(pod),
        }
    }
}

/// Which pods to delete first when scaling down: unbound, then not ready, then newest.
fn deletion_order(pods: &mut [Arc<Value>]) {
    pods.sort_by_key(|p| {
        let bound = p
            .at("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let created = p
            .at("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        (bound, is_ready(p), std::cmp::Reverse(created))
    });
}

/// Runs the controller until `cancel`.
pub async fn run(client: Client, informers: Informers, cancel: CancellationToken) {
    let sets = informers.get("replicasets");
    let pods = informers.get("pods");
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async { sets.wait_synced().await; pods.wait_synced().await } => {}
    }
    tracing::info!("replicaset controller started");
    let mut expect = Expectations::default();
    let mut memo: Memo<PodFacts> = Memo::default();
    // Per ReplicaSet uid whose last reconcile failed: when to try again, and the wait
    // after that.
    let mut backoff: HashMap<String, (tokio::time::Instant, Duration)> = HashMap::new();
    let mut changes = Changes::new(vec![sets.subscribe(), pods.subscribe()]);
    loop {
        expect.forget_gone(&pods);
        for rs in sets.list() {
            if cancel.is_cancelled() {
                break;
            }
            if expect
                .created
                .get(uid(&rs))
                .is_some_and(|r| pods.revision() < *r)
            {
                continue;
            }
            let now = tokio::time::Instant::now();
            if backoff.get(uid(&rs)).is_some_and(|(at, _)| now < *at) {
                continue;
            }
            let mine = &pods.owned_by(uid(&rs))[..];
            match reconcile(&client, &rs, mine, &mut expect, &mut memo).await {
                Ok(()) => {
                    backoff.remove(uid(&rs));
                }
                Err(e) => {
                    let wait = backoff
                        .get(uid(&rs))
                        .map_or(FIRST_BACKOFF, |(_, w)| (*w * 2).min(MAX_BACKOFF));
                    backoff.insert(uid(&rs).to_string(), (now + wait, wait));
                    tracing::warn!(replicaset = %format!("{}/{}", namespace(&rs), name(&rs)), error = %e, retry_in_ms = wait.as_millis() as u64, "reconcile failed; retrying")
                }
            }
        }
        memo.end_pass();
        // ReplicaSets that are gone need no retry.
        if !backoff.is_empty() {
            let live: std::collections::HashSet<String> =
                sets.list().iter().map(|r| uid(r).to_string()).collect();
            backoff.retain(|u, _| live.contains(u));
        }
        let next_retry = backoff.values().map(|(at, _)| *at).min();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = changes.next_or(RESYNC) => tokio::time::sleep(bosun_client::informer::MIN_PASS_GAP).await,
            _ = tokio::time::sleep_until(next_retry.unwrap_or_else(tokio::time::Instant::now)), if next_retry.is_some() => {}
        }
    }
}

/// What the controller's own writes will do to the pod cache, once it sees them.
#[derive(Default)]
struct Expectations {
    /// Per ReplicaSet uid: the revision of its last created pod; the ReplicaSet is left
    /// alone until the pod cache has reached it.
    created: HashMap<String, i64>,
    /// Uids of pods this controller deleted that the cache may still show as live.
    deleted: std::collections::HashSet<String>,
}

impl Expectations {
    /// Drops deleted pods the cache no longer shows as live.
    fn forget_gone(&mut self, pods: &Informer) {
        if self.deleted.is_empty() {
            return;
        }
        let live: std::collections::HashSet<String> = pods
            .list()
            .iter()
            .filter(|p| is_active(p))
            .map(|p| uid(p).to_string())
            .collect();
        self.deleted.retain(|u| live.contains(u));
    }
}

/// Brings one ReplicaSet to its replica count.
async fn reconcile(
    client: &Client,
    rs: &Value,
    candidates: &[Arc<Value>],
    expect: &mut Expectations,
    memo: &mut Memo<PodFacts>,
) -> bosun_client::Result<()> {
    if rs.at("/metadata/deletionTimestamp").is_some() {
        return Ok(());
    }
    let want = rs
        .at("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let (rs_ns, rs_uid) = (namespace(rs), uid(rs));
    let mut ready = 0usize;
    let mut owned: Vec<Arc<Value>> = Vec::with_capacity(candidates.len());
    for p in candidates {
        let f = memo.facts(p, PodFacts::of);
        if f.namespace == rs_ns
            && f.controller.as_deref() == Some(rs_uid)
            && f.active
            && !expect.deleted.contains(&f.uid)
        {
            ready += usize::from(f.ready);
            owned.push(p.clone());
        }
    }
    let mut wrote = false;
    let ns = namespace(rs);
    if owned.len() < want {
        // Batch calls (500 pods each, a few at a time): the server writes each batch in
        // one store transaction.
        // The pods are alike (their names are generated): encoded once.
        let n = (want - owned.len()).min(BURST);
        // Only the outcome and resourceVersion are needed: brief answers.
        let results = client
            .brief()
            .create_copies("pods", ns, &pod_for(rs), n)
            .await?;
        let mut failed = None;
        for r in results {
            match r {
                Ok(created) => {
                    let at = expect.created.entry(uid(rs).to_string()).or_default();
                    *at = (*at).max(rev(&created));
                    wrote = true;
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    } else if owned.len() > want {
        deletion_order(&mut owned);
        // (uid, name) of each pod to delete.
        let doomed: Vec<(String, String)> = owned
            .iter()
            .take((owned.len() - want).min(BURST))
            .map(|p| (uid(p).to_string(), name(p).to_string()))
            .collect();
        for (u, _) in &doomed {
            expect.deleted.insert(u.clone());
        }
        wrote = true;
        // A few deletes in flight, not one at a time: scaling a thousand replicas down
        // otherwise takes a store round trip per pod, in turn.
        let mut outcomes = futures::stream::iter(doomed)
            .map(|(u, n)| async move { (u, client.delete("pods", ns, &n, None).await) })
            .buffer_unordered(DELETES_IN_FLIGHT);
        let mut failed = None;
        while let Some((u, r)) = outcomes.next().await {
            match r {
                Ok(_) => {}
                Err(e) if e.code() == Some(bosun_client::Code::NotFound) => {}
                Err(e) => {
                    // Still live: it counts again, or the next pass would replace a pod
                    // that was never deleted.
                    expect.deleted.remove(&u);
                    failed = failed.or(Some(e));
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    // Status, from the cache (the next pass corrects it after the writes above land).
    let status = json!({
        "replicas": owned.len(),
        "fullyLabeledReplicas": owned.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs.at("/metadata/generation").cloned().unwrap_or(json!(0)),
    });
    let same = [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .all(|k| {
        rs.at(&format!("/status/{k}")).unwrap_or(&json!(0)) == status.get(*k).unwrap_or(&json!(0))
    });
    if !same && !wrote {
        client
            .patch(
                "replicasets",
                ns,
                name(rs),
                "status",
                &json!({"status": status}),
            )
            .await?;
    }
    Ok(())
}

fn rev(o: &Value) -> i64 {
    o.at("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pod_is_owned_by_its_replicaset_and_carries_the_template() {
        let rs = json!({"metadata": {"name": "web-1", "namespace": "n", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let p = pod_for(&rs);
        assert_eq!(p["metadata"]["generateName"], "web-1-");
        assert_eq!(p["metadata"]["labels"]["app"], "web");
        assert_eq!(controller_uid(&p), Some("u1"));
        assert_eq!(p["spec"]["containers"][0]["image"], "i");
    }

    #[test]
    fn the_memo_rereads_changed_pods_and_forgets_dropped_ones() {
        let pod = |ready: bool| {
            Arc::new(json!({"metadata": {"uid": "p1", "namespace": "n",
                "ownerReferences": [{"uid": "u1", "controller": true}]},
                "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        };
        let mut memo: Memo<PodFacts> = Memo::default();
        let old = pod(false);
        let f = memo.facts(&old, PodFacts::of);
        assert!(!f.ready && f.active);
        assert_eq!((f.uid.as_str(), f.namespace.as_str()), ("p1", "n"));
        assert_eq!(f.controller.as_deref(), Some("u1"));
        // Kept while the cache holds the object, used or not.
        memo.end_pass();
        memo.end_pass();
        assert_eq!(memo.len(), 1);
        // The same pod changed is a new object: read again, and once the cache lets go
        // of the old one its facts go.
        let new = pod(true);
        assert!(memo.facts(&new, PodFacts::of).ready);
        drop(old);
        memo.end_pass();
        assert_eq!(memo.len(), 1);
        // Still known without a read: the facts kept are the new object's.
        assert!(memo.facts(&new, |_| unreachable!("read twice")).ready);
        drop(new);
        memo.end_pass();
        assert!(memo.is_empty());
    }

    #[test]
    fn unbound_and_unready_pods_go_first() {
        let mk = |n: &str, node: Option<&str>, ready: bool, t: &str| {
            Arc::new(json!({"metadata": {"name": n, "creationTimestamp": t},
                "spec": {"nodeName": node},
                "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        };
        let mut pods = vec![
            mk("ready-old", Some("n1"), true, "2026-01-01T00:00:00Z"),
            mk("ready-new", Some("n1"), true, "2026-01-02T00:00:00Z"),
            mk("unready", Some("n1"), false, "2026-01-01T00:00:00Z"),
            mk("unbound", None, false, "2026-01-01T00:00:00Z"),
        ];
        deletion_order(&mut pods);
        let order: Vec<&str> = pods.iter().map(|p| name(p)).collect();
        assert_eq!(order, ["unbound", "unready", "ready-new", "ready-old"]);
    }
}
