//! The Endpoints controller: for every Service with a selector, an Endpoints object of
//! the same name listing the IPs of the matching pods (ready ones as `addresses`, the
//! others as `notReadyAddresses`) and the Service's ports resolved to the pods' ports.

use bosun_api::json::At;
use std::collections::BTreeMap;
use std::time::Duration;

use bosun_client::informer::{Changes, Informers};
use bosun_client::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::replicaset::is_ready;

/// Periodic resync.
const RESYNC: Duration = Duration::from_secs(5);
/// The annotation marking Endpoints this controller manages (and may delete).
pub const MANAGED: &str = "bosun.io/managed-by";

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

fn selects(selector: &serde_json::Map<String, Value>, pod: &Value) -> bool {
    let labels = pod.at("/metadata/labels");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The container port a Service port's targetPort means on `pod`.
fn target_port(port: &Value, pod: Option<&Value>) -> Option<i64> {
    match port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => pod?
            .at("/spec/containers")?
            .as_array()?
            .iter()
            .filter_map(|c| c.get("ports")?.as_array())
            .flatten()
            .find(|p| s(p, "/name") == name)
            .and_then(|p| p.get("containerPort")?.as_i64()),
        _ => port.get("port").and_then(Value::as_i64),
    }
}

/// Pods that share one port set.
#[derive(Default)]
struct Subset {
    ports: Vec<Value>,
    ready: Vec<Value>,
    not_ready: Vec<Value>,
}

/// The subsets an Endpoints object should have for `svc`.
pub fn subsets(svc: &Value, pods: &[std::sync::Arc<Value>]) -> Value {
    let Some(selector) = svc.at("/spec/selector").and_then(Value::as_object) else {
        return json!([]);
    };
    let ns = s(svc, "/metadata/namespace");
    let mut chosen: Vec<&Value> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            s(p, "/metadata/namespace") == ns
                && p.at("/metadata/deletionTimestamp").is_none()
                && !s(p, "/status/podIP").is_empty()
                && selects(selector, p)
        })
        .collect();
    chosen.sort_by_key(|p| s(p, "/status/podIP").to_string());
    if chosen.is_empty() {
        return json!([]);
    }
    // One subset per distinct port set (pods of one template share theirs).
    let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
    for p in chosen {
        let ports: Vec<Value> = svc
            .at("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|sp| {
                let port = target_port(sp, Some(p))?;
                let mut e = json!({"port": port, "protocol": sp.get("protocol").cloned().unwrap_or(json!("TCP"))});
                if let Some(n) = sp.get("name").filter(|n| !n.as_str().unwrap_or("").is_empty()) {
                    e["name"] = n.clone();
                }
                Some(e)
            })
            .collect();
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let addr = json!({"ip": s(p, "/status/podIP"), "nodeName": s(p, "/spec/nodeName"),
            "targetRef": {"kind": "Pod", "namespace": ns, "name": s(p, "/metadata/name"), "uid": s(p, "/metadata/uid")}});
        let entry = groups.entry(key).or_insert_with(|| Subset {
            ports,
            ..Default::default()
        });
        if is_ready(p) {
            entry.ready.push(addr);
        } else {
            entry.not_ready.push(addr);
        }
    }
    Value::Array(
        groups
            .into_values()
            .map(|g| {
                let mut sub = json!({"ports": g.ports});
                if !g.ready.is_empty() {
                    sub["addresses"] = json!(g.ready);
                }
                if !g.not_ready.is_empty() {
                    sub["notReadyAddresses"] = json!(g.not_ready);
                }
                sub
            })
            .collect(),
    )
}

/// Runs the controller until `cancel`.
pub async fn run(client: Client, informers: Informers, cancel: CancellationToken) {
    let services = informers.get("services");
    let pods = informers.get("pods");
    let endpoints = informers.get("endpoints");
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async { services.wait_synced().await; pods.wait_synced().await; endpoints.wait_synced().await } => {}
    }
    tracing::info!("endpoints controller started");
    let mut changes = Changes::new(vec![services.subscribe(), pods.subscribe()]);
    loop {
        let all_pods = pods.list();
        for svc in services.list() {
            if svc.at("/spec/selector").is_none() {
                continue;
            }
            let (ns, name) = (s(&svc, "/metadata/namespace"), s(&svc, "/metadata/name"));
            let want = subsets(&svc, &all_pods);
            let current = endpoints.get(ns, name);
            let have = current
                .as_ref()
                .and_then(|e| e.get("subsets").cloned())
                .unwrap_or(json!([]));
            if current.is_some() && have == want {
                continue;
            }
            let res = match current {
                Some(_) => client
                    .patch("endpoints", ns, name, "", &json!({"subsets": want}))
                    .await
                    .map(|_| ()),
                None => client
                    .create("endpoints", ns, &json!({"apiVersion": "v1", "kind": "Endpoints",
                        "metadata": {"name": name, "namespace": ns, "annotations": {MANAGED: "endpoints-controller"}},
                        "subsets": want}))
                    .await
                    .map(|_| ()),
            };
            if let Err(e) = res {
                tracing::debug!(service = %format!("{ns}/{name}"), error = %e, "endpoints update failed; retrying");
            }
        }
        // Endpoints of Services that are gone.
        for ep in endpoints.list() {
            let managed = ep
                .at("/metadata/annotations")
                .and_then(|a| a.get(MANAGED))
                .is_some();
            let (ns, name) = (s(&ep, "/metadata/namespace"), s(&ep, "/metadata/name"));
            if managed && services.get(ns, name).is_none() {
                let _ = client.delete("endpoints", ns, name, None).await;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = changes.next_or(RESYNC) => tokio::time::sleep(bosun_client::informer::MIN_PASS_GAP).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ready_and_unready_pods_are_listed_apart_with_named_ports_resolved() {
        let svc = json!({"metadata": {"name": "web", "namespace": "n"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
        let pod = |name: &str, ip: &str, ready: bool| {
            Arc::new(
                json!({"metadata": {"name": name, "namespace": "n", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
            )
        };
        let other = Arc::new(
            json!({"metadata": {"name": "x", "namespace": "n", "labels": {"app": "db"}}, "status": {"podIP": "10.0.0.9"}}),
        );
        let subs = subsets(
            &svc,
            &[
                pod("a", "10.0.0.2", true),
                pod("b", "10.0.0.1", false),
                other,
            ],
        );
        assert_eq!(
            subs[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(subs[0]["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(subs[0]["notReadyAddresses"][0]["ip"], "10.0.0.1");
    }
}
