//! bosun's controllers: level-triggered loops that move the cluster towards what its
//! objects ask for. They run only on the Raft leader ([`leader::while_leading`]) and talk
//! to the store only through the resource API, with every write fenced by the leader term
//! they were started under: a deposed leader's decision is refused by the store.
//!
//! Controllers in this release: [`replicaset`], [`deployment`], [`nodelifecycle`],
//! [`endpoints`], [`job`], [`daemonset`], [`gc`], [`namespace`].
#![forbid(unsafe_code)]

pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodelifecycle;
pub mod replicaset;

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
pub fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}
