//! bosun's replicated store: what replaces etcd.
//!
//! openraft (0.9) over one RocksDB instance holding the Raft log, the vote and the state
//! machine; an MVCC key space with etcd v3 semantics (revisions, transactions, watches,
//! leases, compaction); peer transport over tonic with mTLS; and the etcd v3 gRPC API.
//!
//! Where to start: [`server::run`] starts everything for one server; [`node::Node`] is the
//! store's API (writes, linearizable reads, leases, membership); [`mvcc`] holds the
//! deterministic state machine logic, [`state_machine`] and [`log_store`] its persistence.
#![forbid(unsafe_code)]

pub mod command;
pub mod cursor;
pub mod db;
pub mod error;
pub mod etcd;
mod hist;
pub mod log_store;
pub mod metrics;
pub mod mvcc;
pub mod network;
pub mod node;
pub mod read;
pub mod server;
pub mod state_machine;
pub mod types;

pub use error::{Error, Result};
pub use log_store::LogStore;
pub use node::{Node, NodeConfig};
pub use state_machine::StateMachine;
pub use types::{Member, TypeConfig};
