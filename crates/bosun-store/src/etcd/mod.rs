//! The etcd v3 gRPC API served on the client port: KV, Watch, Lease, Cluster, Maintenance,
//! plus bosun's Admin service. Every service authorizes the caller from its verified client
//! certificate: the raw store is for `system:masters` (administrators) and servers only.

pub mod admin;
pub mod cluster;
mod convert;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use std::sync::Arc;

use bosun_api::etcd::ResponseHeader;
use bosun_pki::PeerInfo;
use tonic::Status;

use crate::node::Node;

/// The group whose members may use the raw store API.
pub const MASTERS_GROUP: &str = "system:masters";

/// Refuses callers that are neither administrators nor servers.
///
/// # Errors
/// `Unauthenticated` without a verified certificate, `PermissionDenied` otherwise.
pub fn authorize<T>(req: &tonic::Request<T>) -> Result<(), Status> {
    let Some(id) = req
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.identity.clone())
    else {
        return Err(Status::unauthenticated(
            "a client certificate signed by the cluster CA is required",
        ));
    };
    if id
        .groups
        .iter()
        .any(|g| g == MASTERS_GROUP || g == bosun_pki::SERVERS_GROUP)
    {
        Ok(())
    } else {
        tracing::warn!(user = %id.user, "etcd API denied");
        Err(Status::permission_denied(format!(
            "user {:?} may not use the store API: it requires group {MASTERS_GROUP}",
            id.user
        )))
    }
}

pub(crate) fn header(node: &Arc<Node>, revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: node.cluster_id(),
        member_id: node.config().id,
        revision,
        raft_term: node.term(),
    })
}
