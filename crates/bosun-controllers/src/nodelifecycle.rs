//! The node lifecycle controller: a node whose heartbeats (its Lease in `kube-node-lease`,
//! or its Ready condition) stop for longer than the grace period is marked
//! `Ready=Unknown` and tainted `node.kubernetes.io/unreachable:NoExecute`; its pods are
//! evicted once their toleration of that taint runs out (bosun's default: 30 s, where
//! Kubernetes waits 300 s), so their owners replace them elsewhere. A node that heartbeats
//! again loses the taint.

use bosun_api::json::At;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bosun_client::informer::{Informers, Memo};
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

/// What a tick reads of one node (kept while the cache holds the same object).
struct NodeFacts {
    name: String,
    /// Its Ready condition's status and last heartbeat.
    ready: String,
    heartbeat: Option<jiff::Timestamp>,
    /// When it was tainted unreachable (its time, or unknown), if it is.
    tainted: Option<Option<jiff::Timestamp>>,
}

impl NodeFacts {
    fn of(node: &Value) -> NodeFacts {
        let ready = ready_condition(node);
        NodeFacts {
            name: s(node, "/metadata/name").to_string(),
            ready: ready.map(|c| s(c, "/status")).unwrap_or("").to_string(),
            heartbeat: ready.and_then(|c| ts(s(c, "/lastHeartbeatTime"))),
            tainted: unreachable_taint(node).map(|t| ts(s(t, "/timeAdded"))),
        }
    }
}

/// A node Lease's holder (the node's name) and its last renewal.
fn lease_facts(lease: &Value) -> (String, Option<jiff::Timestamp>) {
    let name = if s(lease, "/metadata/namespace") == "kube-node-lease" {
        s(lease, "/metadata/name").to_string()
    } else {
        String::new()
    };
    (name, ts(s(lease, "/spec/renewTime")))
}

/// Whether a node has been silent longer than `grace`: its last sign of life is the
/// newest of its Lease renewal, its Ready heartbeat and `floor` (when leadership began).
fn silent(
    lease: Option<jiff::Timestamp>,
    heartbeat: Option<jiff::Timestamp>,
    floor: jiff::Timestamp,
    now: jiff::Timestamp,
    grace: Duration,
) -> bool {
    let beat = [lease, heartbeat, Some(floor)].into_iter().flatten().max();
    beat.is_some_and(|b| now.duration_since(b).as_secs_f64() > grace.as_secs_f64())
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
    // Thousands of nodes are checked every tick: each node and Lease object is read
    // once, and again only when it changes.
    let mut node_memo: Memo<NodeFacts> = Memo::default();
    let mut lease_memo: Memo<(String, Option<jiff::Timestamp>)> = Memo::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = jiff::Timestamp::now();
        let all_leases = leases.list();
        let mut renewed: HashMap<&str, jiff::Timestamp> = HashMap::new();
        for l in &all_leases {
            lease_memo.facts(l, lease_facts);
        }
        for (name, at) in all_leases.iter().filter_map(|l| lease_memo.get(l)) {
            if let (false, Some(at)) = (name.is_empty(), at) {
                renewed.insert(name, *at);
            }
        }
        // Unreachable nodes (tainted and still silent), and since when: their pods are
        // evicted below.
        let mut unreachable: HashMap<String, jiff::Timestamp> = HashMap::new();
        for node in nodes.list() {
            let f = node_memo.facts(&node, NodeFacts::of);
            let silent = silent(
                renewed.get(f.name.as_str()).copied(),
                f.heartbeat,
                started,
                now,
                timing.grace,
            );
            let change = Change::of(silent, &f.ready, f.tainted.is_some());
            if change != Change::default() {
                if let Err(e) = reconcile_node(&client, &node, change).await {
                    tracing::warn!(node = f.name, error = %e, "node lifecycle update failed; retrying");
                }
            }
            if let (true, Some(since)) = (silent, f.tainted) {
                unreachable.insert(f.name.clone(), since.unwrap_or(now));
            }
        }
        drop(renewed);
        drop(all_leases);
        node_memo.end_pass();
        lease_memo.end_pass();
        if !unreachable.is_empty() {
            evict(&client, &pods.list(), &unreachable, now, timing.eviction).await;
        }
    }
}

/// What a node's state must change to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Change {
    /// Mark it `Ready=Unknown`.
    unknown: bool,
    /// Add (true) or remove (false) the unreachable taint.
    taint: Option<bool>,
}

impl Change {
    /// For a node that is `silent` or not, whose Ready status is `ready`, and that is
    /// `tainted` unreachable or not.
    fn of(silent: bool, ready: &str, tainted: bool) -> Change {
        Change {
            unknown: silent && ready != "Unknown",
            taint: (silent != tainted).then_some(silent),
        }
    }
}

async fn reconcile_node(client: &Client, node: &Value, change: Change) -> bosun_client::Result<()> {
    let name = s(node, "/metadata/name");
    if change.unknown {
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
    if let Some(want_taint) = change.taint {
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

/// The pods to evict now: those on `unreachable` nodes (each with the time it was
/// tainted), not already being deleted, whose toleration of the taint has run out. One
/// pass over the pods, however many nodes are unreachable.
fn due<'a>(
    pods: &'a [Arc<Value>],
    unreachable: &HashMap<String, jiff::Timestamp>,
    now: jiff::Timestamp,
    default: Duration,
) -> Vec<&'a Arc<Value>> {
    pods.iter()
        .filter(|p| {
            let Some(since) = unreachable.get(s(p, "/spec/nodeName")) else {
                return false;
            };
            p.at("/metadata/deletionTimestamp").is_none()
                && tolerated_for(p, default).is_some_and(|limit| {
                    now.duration_since(*since).as_secs_f64() >= limit.as_secs_f64()
                })
        })
        .collect()
}

/// Deletes the pods [`due`] for eviction.
async fn evict(
    client: &Client,
    pods: &[Arc<Value>],
    unreachable: &HashMap<String, jiff::Timestamp>,
    now: jiff::Timestamp,
    default: Duration,
) {
    for p in due(pods, unreachable, now, default) {
        let node = s(p, "/spec/nodeName");
        let (ns, name) = (s(p, "/metadata/namespace"), s(p, "/metadata/name"));
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
    fn a_node_is_silent_when_its_newest_sign_of_life_is_older_than_the_grace() {
        let t = |s: i64| jiff::Timestamp::from_second(1_700_000_000 + s).unwrap_or_default();
        let grace = Duration::from_secs(10);
        // The Lease renewed lately: alive, whatever the Ready heartbeat says.
        assert!(!silent(Some(t(95)), Some(t(0)), t(0), t(100), grace));
        // Both old: silent.
        assert!(silent(Some(t(80)), Some(t(85)), t(0), t(100), grace));
        // No heartbeat at all, but leadership began lately: not held against it yet.
        assert!(!silent(None, None, t(95), t(100), grace));
        assert!(silent(None, None, t(50), t(100), grace));
    }

    #[test]
    fn node_and_lease_facts_read_what_the_tick_needs() {
        let node = json!({"metadata": {"name": "n1"},
            "spec": {"taints": [{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-12-06T10:00:00Z"}]},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown", "lastHeartbeatTime": "2026-12-06T09:59:00Z"}]}});
        let f = NodeFacts::of(&node);
        assert_eq!((f.name.as_str(), f.ready.as_str()), ("n1", "Unknown"));
        assert_eq!(f.heartbeat, ts("2026-12-06T09:59:00Z"));
        assert_eq!(f.tainted, Some(ts("2026-12-06T10:00:00Z")));
        let fresh = NodeFacts::of(&json!({"metadata": {"name": "n2"}}));
        assert!(fresh.tainted.is_none() && fresh.heartbeat.is_none() && fresh.ready.is_empty());
        let lease = json!({"metadata": {"name": "n1", "namespace": "kube-node-lease"},
            "spec": {"renewTime": "2026-12-06T10:00:01Z"}});
        assert_eq!(
            lease_facts(&lease),
            ("n1".into(), ts("2026-12-06T10:00:01Z"))
        );
        // A Lease elsewhere is no node's heartbeat.
        let other = json!({"metadata": {"name": "n1", "namespace": "default"}});
        assert_eq!(lease_facts(&other).0, "");
    }

    #[test]
    fn a_node_changes_only_where_its_state_is_wrong() {
        let none = Change::default();
        let add = Some(true);
        let remove = Some(false);
        // (silent, Ready status, tainted) -> change
        let table = [
            (false, "True", false, none),
            (
                false,
                "True",
                true,
                Change {
                    unknown: false,
                    taint: remove,
                },
            ),
            (false, "Unknown", false, none),
            (
                false,
                "Unknown",
                true,
                Change {
                    unknown: false,
                    taint: remove,
                },
            ),
            (
                true,
                "True",
                false,
                Change {
                    unknown: true,
                    taint: add,
                },
            ),
            (
                true,
                "True",
                true,
                Change {
                    unknown: true,
                    taint: None,
                },
            ),
            (
                true,
                "Unknown",
                false,
                Change {
                    unknown: false,
                    taint: add,
                },
            ),
            (true, "Unknown", true, none),
            (
                true,
                "",
                false,
                Change {
                    unknown: true,
                    taint: add,
                },
            ),
        ];
        for (silent, ready, tainted, want) in table {
            assert_eq!(
                Change::of(silent, ready, tainted),
                want,
                "silent={silent} ready={ready:?} tainted={tainted}"
            );
        }
    }

    #[test]
    fn pods_are_due_for_eviction_only_on_unreachable_nodes_past_their_toleration() {
        let t = |s: i64| jiff::Timestamp::from_second(1_700_000_000 + s).unwrap_or_default();
        let pod = |name: &str, node: &str| json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"nodeName": node}});
        let mut deleting = pod("deleting", "a");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
        let mut patient = pod("patient", "a");
        patient["spec"]["tolerations"] = json!([{"key": UNREACHABLE, "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 600}]);
        let mut forever = pod("forever", "b");
        forever["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        let pods: Vec<Arc<Value>> = [
            pod("old-on-a", "a"),
            pod("old-on-b", "b"),
            pod("on-live-node", "c"),
            deleting,
            patient,
            forever,
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        // a was tainted 40 s ago, b 10 s ago; the default toleration is 30 s.
        let unreachable: HashMap<String, jiff::Timestamp> =
            [("a".to_string(), t(60)), ("b".to_string(), t(90))].into();
        let names = |now| -> Vec<&str> {
            due(&pods, &unreachable, now, Duration::from_secs(30))
                .iter()
                .map(|p| s(p, "/metadata/name"))
                .collect()
        };
        assert_eq!(names(t(100)), ["old-on-a"]);
        assert_eq!(names(t(120)), ["old-on-a", "old-on-b"]);
        assert_eq!(names(t(700)), ["old-on-a", "old-on-b", "patient"]);
    }

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
