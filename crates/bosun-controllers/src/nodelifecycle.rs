//! The node lifecycle controller: a node whose heartbeats (its Lease in `kube-node-lease`,
//! or its Ready condition) stop for longer than the grace period is marked
//! `Ready=Unknown` and tainted `node.kubernetes.io/unreachable:NoExecute`; its pods are
//! evicted once their toleration of that taint runs out (bosun's default: 30 s, where
//! Kubernetes waits 300 s), so their owners replace them elsewhere. A node that heartbeats
//! again loses the taint.

use bosun_api::json::At;
use std::time::Duration;

use bosun_client::informer::{Informer, Informers};
use bosun_client::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The taint of an unreachable node.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// How often nodes are checked.
const TICK: Duration = Duration::from_millis(500);

/// Timing of the controller.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A node is Unknown after this long without a heartbeat (Kubernetes' default 40 s,
    /// bosun's 10 s).
    pub grace: Duration,
    /// Pods without their own toleration of the unreachable taint are evicted this long
    /// after it was added (Kubernetes' default 300 s, bosun's 30 s).
    pub eviction: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            grace: Duration::from_secs(10),
            eviction: Duration::from_secs(30),
        }
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

fn ts(t: &str) -> Option<jiff::Timestamp> {
    t.parse().ok()
}

fn ready_condition(node: &Value) -> Option<&Value> {
    node.at("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| s(c, "/type") == "Ready")
}

fn unreachable_taint(node: &Value) -> Option<&Value> {
    node.at("/spec/taints")?
        .as_array()?
        .iter()
        .find(|t| s(t, "/key") == UNREACHABLE && s(t, "/effect") == "NoExecute")
}

/// How long a pod tolerates the unreachable taint: its own toleration's seconds (none
/// given: forever), or the default.
fn tolerated_for(pod: &Value, default: Duration) -> Option<Duration> {
    let tols = pod.at("/spec/tolerations").and_then(Value::as_array);
    for t in tols.into_iter().flatten() {
        let key_ok = s(t, "/key") == UNREACHABLE
            || (s(t, "/key").is_empty() && s(t, "/operator") == "Exists");
        let effect_ok = s(t, "/effect").is_empty() || s(t, "/effect") == "NoExecute";
        if key_ok && effect_ok {
            return t
                .get("tolerationSeconds")
                .and_then(Value::as_i64)
                .map(|s| Duration::from_secs(s.max(0) as u64));
        }
    }
    Some(default)
}

/// Runs the controller until `cancel`.
pub async fn run(client: Client, informers: Informers, timing: Timing, cancel: CancellationToken) {
    let nodes = informers.get("nodes");
    let leases = informers.get("leases");
    let pods = informers.get("pods");
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async { nodes.wait_synced().await; leases.wait_synced().await; pods.wait_synced().await } => {}
    }
    tracing::info!(
        grace_ms = timing.grace.as_millis() as u64,
        eviction_ms = timing.eviction.as_millis() as u64,
        "node lifecycle controller started"
    );
    // Leadership just started: heartbeats older than this instant are not held against a
    // node until a full grace period has passed under this leader.
    let started = jiff::Timestamp::now();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = jiff::Timestamp::now();
        for node in nodes.list() {
            let name = s(&node, "/metadata/name");
            let lease = leases.get("kube-node-lease", name);
            let beat = [
                lease.as_ref().and_then(|l| ts(s(l, "/spec/renewTime"))),
                ready_condition(&node).and_then(|c| ts(s(c, "/lastHeartbeatTime"))),
                Some(started),
            ]
            .into_iter()
            .flatten()
            .max();
            let silent = beat
                .is_some_and(|b| now.duration_since(b).as_secs_f64() > timing.grace.as_secs_f64());
            let ready = ready_condition(&node)
                .map(|c| s(c, "/status"))
                .unwrap_or("");
            if let Err(e) = reconcile_node(&client, &node, silent, ready).await {
                tracing::warn!(node = name, error = %e, "node lifecycle update failed; retrying");
            }
            if let Some(taint) = unreachable_taint(&node) {
                let since = ts(s(taint, "/timeAdded")).unwrap_or(now);
                evict(&client, &pods, name, since, now, timing.eviction).await;
            }
        }
    }
}

async fn reconcile_node(
    client: &Client,
    node: &Value,
    silent: bool,
    ready: &str,
) -> bosun_client::Result<()> {
    let name = s(node, "/metadata/name");
    let tainted = unreachable_taint(node).is_some();
    if silent && ready != "Unknown" {
        let now = crate::now();
        let mut conds = node
            .at("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| s(c, "/type") != "Ready");
        conds.push(json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": ready_condition(node).and_then(|c| c.get("lastHeartbeatTime")).cloned().unwrap_or(json!(now)),
            "lastTransitionTime": now}));
        client
            .patch(
                "nodes",
                "",
                name,
                "status",
                &json!({"status": {"conditions": conds}}),
            )
            .await?;
        tracing::warn!(node = name, "node stopped heartbeating: Ready=Unknown");
    }
    let want_taint = silent;
    if want_taint != tainted {
        let mut taints: Vec<Value> = node
            .at("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        taints.retain(|t| s(t, "/key") != UNREACHABLE);
        if want_taint {
            taints.push(
                json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": crate::now()}),
            );
        }
        client
            .patch("nodes", "", name, "", &json!({"spec": {"taints": if taints.is_empty() { Value::Null } else { json!(taints) }}}))
            .await?;
        if !want_taint {
            tracing::info!(
                node = name,
                "node heartbeats again: unreachable taint removed"
            );
        }
    }
    Ok(())
}

async fn evict(
    client: &Client,
    pods: &Informer,
    node: &str,
    since: jiff::Timestamp,
    now: jiff::Timestamp,
    default: Duration,
) {
    for p in pods.list() {
        if s(&p, "/spec/nodeName") != node || p.at("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let Some(limit) = tolerated_for(&p, default) else {
            continue;
        };
        if now.duration_since(since).as_secs_f64() < limit.as_secs_f64() {
            continue;
        }
        let (ns, name) = (s(&p, "/metadata/namespace"), s(&p, "/metadata/name"));
        // The node cannot confirm a graceful stop: the pod goes at once, and its owner
        // replaces it on a reachable node.
        match client.delete("pods", ns, name, Some(0)).await {
            Ok(_) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), node, "evicted from an unreachable node")
            }
            Err(e) if e.code() == Some(bosun_client::Code::NotFound) => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "eviction failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_tolerate_an_unreachable_node_as_long_as_they_say() {
        let d = Duration::from_secs(30);
        assert_eq!(tolerated_for(&json!({}), d), Some(d));
        let own = json!({"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        assert_eq!(tolerated_for(&own, d), Some(Duration::from_secs(5)));
        let forever = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(tolerated_for(&forever, d), None);
    }
}
