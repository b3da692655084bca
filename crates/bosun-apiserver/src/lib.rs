//! bosun's API server: Kubernetes objects on the replicated store.
//!
//! Where to start: [`service::start`] returns the `bosun.api.v1.Resources` gRPC service
//! that every server serves on its client port, and its background tasks. Reads and
//! watches are served from the local state machine after a read barrier; writes are
//! compare-and-swap transactions on the store (forwarded to the leader by the store).
//!
//! - [`authz`]: who is calling (client certificate) and whether they may ([`rbac`]).
//! - [`admission`]: strict decoding, defaulting and validation ([`bosun_api::admission`]),
//!   and the fields the server owns; [`allocator`]: ClusterIPs and NodePorts.
//! - [`store`]: objects as JSON in the store, Secrets encrypted at rest.
//! - [`watch`]: resource watches; [`audit`]: the audit log; [`bootstrap`]: default objects.
#![forbid(unsafe_code)]

pub mod admission;
pub mod allocator;
pub mod audit;
pub mod authz;
pub mod bootstrap;
pub mod error;
pub mod rbac;
pub mod service;
pub mod store;
pub mod watch;

pub use audit::Audit;
pub use error::{Error, Result};
pub use service::{start, Config};
pub use store::SecretKeys;
