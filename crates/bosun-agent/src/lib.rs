//! bosun's node agent.
//!
//! - [`node::run`]: the agent of one worker host. It registers its Node, renews its Lease,
//!   caches the pods bound to it and runs each as Docker containers: a sandbox holding the
//!   network namespace, init containers in order, then the spec's containers joined to it
//!   ([`worker`]), with probes ([`probe`]), restart back-off and graceful termination.
//!   Containers carry the node, pod uid, container name and attempt in labels, so a
//!   restarted agent adopts what runs and several agents share one Docker host.
//! - [`runtime::ContainerRuntime`]: what the agent needs of a runtime; [`docker::Docker`]
//!   implements it with bollard. [`pod`] turns a pod spec into runtime containers.
//! - [`hollow`]: simulated nodes without Docker (as Kubernetes' kubemark), for tests and
//!   scale benchmarks of the control plane.
#![forbid(unsafe_code)]

pub mod cache;
pub mod docker;
pub mod hollow;
pub mod lease;
pub mod node;
pub mod pod;
pub mod probe;
pub mod runtime;
pub mod server;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

/// Settings every pod worker of an agent shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name.
    pub node: String,
    /// This agent's owner label ([`pod::agent_id`]).
    pub agent_id: String,
    /// Where pod volumes live on the host (the Docker daemon must see the same path).
    pub root: PathBuf,
    /// The Docker bridge network pods attach to.
    pub network: String,
    /// The image of pod sandboxes (it needs `/bin/sh` and `sleep`).
    pub sandbox_image: String,
    /// This node's address (`status.hostIP`).
    pub host_ip: String,
    /// The first restart back-off (the kubelet's is 10 s).
    pub backoff_initial: Duration,
    /// The longest restart back-off (the kubelet's is 5 min).
    pub backoff_max: Duration,
    /// Whether images may be pulled (no registry is reachable on an isolated host).
    pub pulls: bool,
}

impl Settings {
    /// The owner of this agent's containers.
    pub fn agent(&self) -> pod::Agent {
        pod::Agent {
            node: self.node.clone(),
            id: self.agent_id.clone(),
        }
    }
}
