//! Node heartbeats: the Lease in `kube-node-lease` that the node lifecycle controller
//! watches, shared by the Docker agent and hollow nodes.

use bosun_client::{Client, Code};
use serde_json::json;

/// The current time, RFC 3339 in whole seconds (UTC).
pub fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// Renews node `name`'s Lease (creating it the first time), valid `duration_s` seconds.
///
/// # Errors
/// When the API refuses or cannot be reached.
pub async fn renew(client: &Client, name: &str, duration_s: u64) -> bosun_client::Result<()> {
    let spec = json!({"holderIdentity": name, "leaseDurationSeconds": duration_s.max(1), "renewTime": now()});
    let renewed = client
        .patch(
            "leases",
            "kube-node-lease",
            name,
            "",
            &json!({"spec": spec}),
        )
        .await;
    match renewed {
        Err(e) if e.code() == Some(Code::NotFound) => {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec});
            match client.create("leases", "kube-node-lease", &lease).await {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(Code::AlreadyExists) => Ok(()),
                Err(e) => Err(e),
            }
        }
        other => other.map(|_| ()),
    }
}
