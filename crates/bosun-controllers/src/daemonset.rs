//! The DaemonSet controller: one pod on every eligible node (its nodeSelector matches and
//! it tolerates the node's NoSchedule/NoExecute taints), placed through the scheduler with
//! a required node affinity on the node's name, as Kubernetes does. A template change
//! replaces the pods at most `maxUnavailable` (default 1) nodes at a time.

use bosun_api::json::At;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bosun_client::informer::{Changes, Informers};
use bosun_client::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::deployment::template_hash;
use crate::replicaset::{controller_uid, is_active, is_ready};

/// Periodic resync.
const RESYNC: Duration = Duration::from_secs(5);
/// The label carrying the template hash of a daemon pod.
const HASH_LABEL: &str = "controller-revision-hash";

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

fn tolerates(pod_spec: &Value, taint: &Value) -> bool {
    pod_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .is_some_and(|ts| {
            ts.iter().any(|t| {
                (s(t, "/key").is_empty() || s(t, "/key") == s(taint, "/key"))
                    && (s(t, "/effect").is_empty() || s(t, "/effect") == s(taint, "/effect"))
                    && (s(t, "/operator") == "Exists" || s(t, "/value") == s(taint, "/value"))
            })
        })
}

/// Whether the DaemonSet wants a pod on `node`.
fn eligible(ds: &Value, node: &Value) -> bool {
    let spec = ds.at("/spec/template/spec").cloned().unwrap_or(json!({}));
    let labels = node.at("/metadata/labels");
    let selector_ok = spec
        .get("nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        });
    let taints_ok = node
        .at("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| matches!(s(t, "/effect"), "NoSchedule" | "NoExecute"))
        // The controller's own tolerations, as Kubernetes adds them to daemon pods.
        .filter(|t| !s(t, "/key").starts_with("node.kubernetes.io/"))
        .all(|t| tolerates(&spec, t));
    selector_ok && taints_ok
}

/// The node a daemon pod is for: its binding, or its required node affinity.
fn target_node(pod: &Value) -> String {
    let bound = s(pod, "/spec/nodeName");
    if !bound.is_empty() {
        return bound.to_string();
    }
    pod.at("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn pod_for(ds: &Value, node: &str, hash: &str) -> Value {
    let mut pod = crate::replicaset::pod_from_template(ds, "apps/v1", "DaemonSet");
    if let Some(l) = pod
        .pointer_mut("/metadata")
        .and_then(Value::as_object_mut)
        .map(|m| m.entry("labels").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        l.insert(HASH_LABEL.into(), json!(hash));
    }
    if let Some(sp) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        sp.insert(
            "affinity".into(),
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}),
        );
        let tolerations = sp.entry("tolerations").or_insert_with(|| json!([]));
        if let Some(t) = tolerations.as_array_mut() {
            for key in [
                "node.kubernetes.io/unreachable",
                "node.kubernetes.io/not-ready",
            ] {
                t.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute"}));
            }
            t.push(json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}));
        }
    }
    pod
}

/// Runs the controller until `cancel`.
pub async fn run(client: Client, informers: Informers, cancel: CancellationToken) {
    let sets = informers.get("daemonsets");
    let pods = informers.get("pods");
    let nodes = informers.get("nodes");
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async { sets.wait_synced().await; pods.wait_synced().await; nodes.wait_synced().await } => {}
    }
    tracing::info!("daemonset controller started");
    let mut waiting: HashMap<String, i64> = HashMap::new();
    let mut changes = Changes::new(vec![sets.subscribe(), pods.subscribe(), nodes.subscribe()]);
    loop {
        let all_nodes = nodes.list();
        for ds in sets.list() {
            let uid = s(&ds, "/metadata/uid").to_string();
            if waiting.get(&uid).is_some_and(|r| pods.revision() < *r) {
                continue;
            }
            let mine = &pods.owned_by(&uid)[..];
            match reconcile(&client, &ds, mine, pods.revision(), &all_nodes).await {
                Ok(Some(r)) => {
                    waiting.insert(uid, r);
                }
                Ok(None) => {
                    waiting.remove(&uid);
                }
                Err(e) => {
                    tracing::warn!(daemonset = %s(&ds, "/metadata/name"), error = %e, "reconcile failed; retrying")
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
    ds: &Value,
    candidates: &[Arc<Value>],
    pods_revision: i64,
    nodes: &[Arc<Value>],
) -> bosun_client::Result<Option<i64>> {
    if ds.at("/metadata/deletionTimestamp").is_some() {
        return Ok(None);
    }
    let ns = s(ds, "/metadata/namespace");
    let uid = s(ds, "/metadata/uid");
    let hash = template_hash(&ds.at("/spec/template").cloned().unwrap_or(json!({})));
    let mut per_node: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for p in candidates.iter().cloned() {
        if s(&p, "/metadata/namespace") == ns && controller_uid(&p) == Some(uid) && is_active(&p) {
            per_node.entry(target_node(&p)).or_default().push(p);
        }
    }
    let wanted: Vec<&str> = nodes
        .iter()
        .filter(|n| eligible(ds, n))
        .map(|n| s(n, "/metadata/name"))
        .collect();
    let mut last = None;
    let mut delete: Vec<Arc<Value>> = Vec::new();
    // Pods on nodes that no longer want one, and duplicates.
    for (node, list) in &per_node {
        if !wanted.contains(&node.as_str()) {
            delete.extend(list.iter().cloned());
        } else {
            delete.extend(list.iter().skip(1).cloned());
        }
    }
    // Outdated pods: replaced at most maxUnavailable at a time, while the rest are ready.
    let max_unavailable = ds
        .at("/spec/updateStrategy/rollingUpdate/maxUnavailable")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(1) as usize;
    let rolling = s(ds, "/spec/updateStrategy/type") != "OnDelete";
    let unavailable = wanted
        .iter()
        .filter(|n| {
            per_node
                .get(**n)
                .is_none_or(|l| l.first().is_none_or(|p| !is_ready(p)))
        })
        .count();
    if rolling && unavailable < max_unavailable {
        let outdated = wanted
            .iter()
            .filter_map(|n| per_node.get(*n).and_then(|l| l.first()))
            .filter(|p| s(p, &format!("/metadata/labels/{HASH_LABEL}")) != hash);
        delete.extend(outdated.take(max_unavailable - unavailable).cloned());
    }
    for p in &delete {
        match client
            .delete("pods", ns, s(p, "/metadata/name"), Some(0))
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some(bosun_client::Code::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    for node in &wanted {
        if !per_node.contains_key(*node) {
            let created = client.create("pods", ns, &pod_for(ds, node, &hash)).await?;
            last = Some(
                s(&created, "/metadata/resourceVersion")
                    .parse()
                    .unwrap_or(0),
            );
        }
    }
    if !delete.is_empty() && last.is_none() {
        last = Some(pods_revision + 1);
    }
    let scheduled = wanted.iter().filter(|n| per_node.contains_key(**n)).count();
    let ready = wanted
        .iter()
        .filter(|n| {
            per_node
                .get(**n)
                .and_then(|l| l.first())
                .is_some_and(|p| is_ready(p))
        })
        .count();
    let updated = wanted
        .iter()
        .filter(|n| {
            per_node
                .get(**n)
                .and_then(|l| l.first())
                .is_some_and(|p| s(p, &format!("/metadata/labels/{HASH_LABEL}")) == hash)
        })
        .count();
    let status = json!({
        "desiredNumberScheduled": wanted.len(), "currentNumberScheduled": scheduled,
        "numberReady": ready, "numberAvailable": ready, "numberUnavailable": wanted.len() - ready,
        "updatedNumberScheduled": updated, "numberMisscheduled": 0,
        "observedGeneration": ds.at("/metadata/generation").cloned().unwrap_or(json!(0)),
    });
    let old = ds.at("/status").cloned().unwrap_or(json!({}));
    let same = [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberReady",
        "updatedNumberScheduled",
        "observedGeneration",
    ]
    .iter()
    .all(|k| old.get(*k).unwrap_or(&Value::Null) == status.get(*k).unwrap_or(&Value::Null));
    if !same && last.is_none() {
        client
            .patch(
                "daemonsets",
                ns,
                s(ds, "/metadata/name"),
                "status",
                &json!({"status": status}),
            )
            .await?;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_pod_is_pinned_to_its_node_and_tolerates_node_conditions() {
        let ds = json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let p = pod_for(&ds, "n7", "h");
        assert_eq!(target_node(&p), "n7");
        assert_eq!(p["metadata"]["labels"][HASH_LABEL], "h");
        assert!(p["spec"]["tolerations"]
            .to_string()
            .contains("node.kubernetes.io/unreachable"));
    }

    #[test]
    fn nodes_are_eligible_by_selector_and_taints() {
        let ds = json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}});
        let edge = json!({"metadata": {"labels": {"role": "edge"}}});
        let core = json!({"metadata": {"labels": {"role": "core"}}});
        assert!(eligible(&ds, &edge));
        assert!(!eligible(&ds, &core));
        let tainted = json!({"metadata": {"labels": {"role": "edge"}}, "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}});
        assert!(!eligible(&ds, &tainted));
        let cordoned = json!({"metadata": {"labels": {"role": "edge"}}, "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}});
        assert!(eligible(&ds, &cordoned));
    }
}
