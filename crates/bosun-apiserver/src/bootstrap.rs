//! Objects every cluster has: the namespaces `default`, `kube-system`, `kube-public` and
//! `kube-node-lease`, and the default ClusterRoles and ClusterRoleBindings. Every server
//! creates whatever is missing once a leader exists; creation is create-if-absent, so
//! servers racing each other (or a restart) change nothing, and an administrator's edits
//! to these objects are kept.

use std::sync::Arc;
use std::time::Duration;

use bosun_api::kinds;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::service::Inner;

/// Namespaces created in every cluster.
pub const NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn objects() -> Vec<Value> {
    let mut out: Vec<Value> = NAMESPACES
        .iter()
        .map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
        .collect();
    for r in crate::rbac::default_cluster_roles() {
        if let Ok(mut v) = serde_json::to_value(r) {
            tag(&mut v, "rbac.authorization.k8s.io/v1", "ClusterRole");
            out.push(v);
        }
    }
    for b in crate::rbac::default_cluster_role_bindings() {
        if let Ok(mut v) = serde_json::to_value(b) {
            tag(&mut v, "rbac.authorization.k8s.io/v1", "ClusterRoleBinding");
            out.push(v);
        }
    }
    out
}

fn tag(v: &mut Value, api_version: &str, kind: &str) {
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(api_version.into()));
        m.insert("kind".into(), Value::String(kind.into()));
    }
}

/// Creates the missing default objects, retrying with back-off (no leader yet, a
/// failover) until they all exist or `shutdown`.
pub async fn run(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut pending = objects();
    let mut backoff = FIRST_BACKOFF;
    while !pending.is_empty() {
        let mut left = Vec::new();
        for obj in pending {
            let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let kind_name = obj.get("kind").and_then(Value::as_str).unwrap_or("");
            let Some(kind) = kinds::by_kind(api_version, kind_name) else {
                continue;
            };
            let name = crate::admission::name_of(&obj).to_string();
            if matches!(inner.store().get(&kind.key("", &name)), Ok(Some(_))) {
                continue;
            }
            match inner.create(kind, obj.clone(), false).await {
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => {
                    tracing::debug!(error = %e, kind = kind.kind, name, backoff_ms = backoff.as_millis() as u64, "bootstrap object not created yet; retrying");
                    left.push(obj);
                }
            }
        }
        pending = left;
        if pending.is_empty() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    tracing::debug!("default namespaces and roles present");
}
