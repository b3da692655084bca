//! Wire types of bosun, shared by servers and clients.
//!
//! - [`etcdserverpb`] and [`mvccpb`]: the etcd v3 client API (`etcdserverpb`, `mvccpb`), served by every
//!   bosun server on its client port so that etcdctl and etcd client libraries work.
//! - [`peer`]: Raft traffic and leader forwarding between servers (peer port, servers only).
//! - [`admin`]: cluster membership and status for the `bosun cluster` verbs.
//! - [`resources`]: the `bosun.api.v1.Resources` gRPC service (Kubernetes objects as JSON)
//!   and the table of kinds bosun serves ([`kinds`]): resource names, keys in the store.
//! - [`admission`]: defaulting and validation of the Kubernetes types, as Kubernetes does it.
//! - [`selector`]: label and field selectors.
#![forbid(unsafe_code)]

pub mod admission;
pub mod json;
pub mod kinds;
pub mod selector;

/// The etcd v3 key-value record and watch event (`mvccpb`).
pub mod mvccpb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("mvccpb");
}

/// The etcd v3 client API (`etcdserverpb`).
pub mod etcdserverpb {
    #![allow(missing_docs, clippy::all, non_snake_case)]
    tonic::include_proto!("etcdserverpb");
}

/// bosun's peer protocol (Raft and forwarding).
pub mod peer {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("bosun.peer.v1");
}

/// bosun's admin protocol (membership and status).
pub mod admin {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("bosun.admin.v1");
}

pub use etcdserverpb as etcd;
pub use mvccpb as mvcc;

/// bosun's resource protocol (Kubernetes objects, JSON-encoded, over gRPC).
pub mod resources {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("bosun.api.v1");
}
