//! The garbage collector: deletes pods and ReplicaSets whose owners (by ownerReferences)
//! are all gone, however they went (the API server propagates deletions of Deployments,
//! ReplicaSets, DaemonSets and Jobs itself; this catches everything else, e.g. an owner
//! removed through the raw store API). An owner missing from the cache is confirmed
//! missing with a read through the API before anything is deleted, so a cache that lags
//! behind a new owner never costs its dependents.

use bosun_api::json::At;
use std::collections::HashSet;
use std::time::Duration;

use bosun_client::informer::{Informer, Informers};
use bosun_client::{Client, Code};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How often dependents are checked.
const PERIOD: Duration = Duration::from_secs(5);
/// Kinds that own others, as (plural resource, kind).
const OWNERS: [(&str, &str); 4] = [
    ("deployments", "Deployment"),
    ("replicasets", "ReplicaSet"),
    ("daemonsets", "DaemonSet"),
    ("jobs", "Job"),
];
/// Kinds collected when their owners are gone.
const DEPENDENTS: [&str; 2] = ["replicasets", "pods"];

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Whether the owner an ownerReference names still exists (checked through the API).
async fn owner_exists(client: &Client, ns: &str, r: &Value) -> bosun_client::Result<bool> {
    let Some((resource, _)) = OWNERS.iter().find(|(_, k)| *k == s(r, "/kind")) else {
        // An owner of a kind we do not track: never collect on its account.
        return Ok(true);
    };
    match client.get(resource, ns, s(r, "/name")).await {
        Ok(o) => Ok(s(&o, "/metadata/uid") == s(r, "/uid")),
        Err(e) if e.code() == Some(Code::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the collector until `cancel`.
pub async fn run(client: Client, informers: Informers, cancel: CancellationToken) {
    let owner_caches: Vec<Informer> = OWNERS.iter().map(|(r, _)| informers.get(r)).collect();
    let pods = informers.get("pods");
    let nodes = informers.get("nodes");
    for inf in owner_caches.iter().chain([&pods, &nodes]) {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = inf.wait_synced() => {}
        }
    }
    tracing::info!("garbage collector started");
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let live: HashSet<String> = owner_caches
            .iter()
            .flat_map(|c| c.list())
            .map(|o| s(&o, "/metadata/uid").to_string())
            .collect();
        // Pods bound to a node that no longer exists can never be stopped by its agent:
        // they go at once (Kubernetes' pod garbage collector does the same).
        let node_names: HashSet<String> = nodes
            .list()
            .iter()
            .map(|n| s(n, "/metadata/name").to_string())
            .collect();
        if nodes.revision() > 0 {
            for p in pods.list() {
                let node = s(&p, "/spec/nodeName");
                if !node.is_empty()
                    && !node_names.contains(node)
                    && p.at("/metadata/deletionTimestamp").is_some()
                {
                    let (ns, name) = (s(&p, "/metadata/namespace"), s(&p, "/metadata/name"));
                    match client.delete("pods", ns, name, Some(0)).await {
                        Ok(_) => {
                            tracing::info!(pod = %format!("{ns}/{name}"), node, "deleted: its node does not exist")
                        }
                        Err(e) if e.code() == Some(Code::NotFound) => {}
                        Err(e) => tracing::debug!(error = %e, "pod gc failed; retrying later"),
                    }
                }
            }
        }
        let replicasets = &owner_caches[1];
        for (resource, cache) in DEPENDENTS.iter().zip([replicasets, &pods]) {
            for dep in cache.list() {
                let refs = dep
                    .at("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if refs.is_empty() || refs.iter().any(|r| live.contains(s(r, "/uid"))) {
                    continue;
                }
                if dep.at("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let ns = s(&dep, "/metadata/namespace");
                let mut orphaned = true;
                for r in &refs {
                    match owner_exists(&client, ns, r).await {
                        Ok(false) => {}
                        Ok(true) => orphaned = false,
                        Err(e) => {
                            tracing::debug!(error = %e, "owner check failed; retrying later");
                            orphaned = false;
                        }
                    }
                }
                if orphaned {
                    let name = s(&dep, "/metadata/name");
                    match client.delete(resource, ns, name, None).await {
                        Ok(_) => {
                            tracing::info!(resource, object = %format!("{ns}/{name}"), "collected: its owners are gone")
                        }
                        Err(e) if e.code() == Some(Code::NotFound) => {}
                        Err(e) => tracing::debug!(error = %e, "collecting failed; retrying later"),
                    }
                }
            }
        }
    }
}
