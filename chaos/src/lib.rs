//! bosun's chaos suite: faults injected into a real cluster under load, every client
//! operation recorded, and each key's history checked for linearizability.
//!
//! - [`workload`]: clients that read, write and compare-and-set a few keys through the
//!   etcd API of every server, recording what they sent and what they learnt;
//! - [`nemesis`]: the faults (kill -9 or pause the leader, restart the whole control
//!   plane), each held for a while and then healed;
//! - [`checker`]: the linearizability check of the recorded history.
//!
//! The scenarios (`chaos/scenarios/`) put them together against real `bosun` processes
//! started by `scripts/cluster.sh`; `scripts/chaos.sh` runs them for longer.
#![forbid(unsafe_code)]

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod workload;
