//! The openraft type configuration: one `declare_raft_types!` and the aliases the rest of
//! the crate uses (so openraft's generics appear in one place only).

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{Request, Response};

/// A member of the Raft group: how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Server name (`s1`); unique in the cluster.
    pub name: String,
    /// Peer address (`host:port`): Raft and forwarding, servers only.
    pub peer_addr: String,
    /// Client address (`host:port`): the etcd API and the admin API.
    pub client_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// bosun's Raft types: commands in, responses out, members as nodes.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Aliases of openraft's generic types for [`TypeConfig`].
pub mod typ {
    use super::{Member, TypeConfig};

    /// A running Raft node.
    pub type Raft = openraft::Raft<TypeConfig>;
    /// A log id.
    pub type LogId = openraft::LogId<u64>;
    /// A log entry.
    pub type Entry = openraft::Entry<TypeConfig>;
    /// A vote.
    pub type Vote = openraft::Vote<u64>;
    /// Membership as stored with its log id.
    pub type StoredMembership = openraft::StoredMembership<u64, Member>;
    /// Snapshot metadata.
    pub type SnapshotMeta = openraft::SnapshotMeta<u64, Member>;
    /// A snapshot.
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    /// Storage error.
    pub type StorageError = openraft::StorageError<u64>;
    /// Raft metrics.
    pub type RaftMetrics = openraft::RaftMetrics<u64, Member>;
    /// RPC error of the network layer.
    pub type RpcError<E = openraft::error::Infallible> =
        openraft::error::RPCError<u64, Member, openraft::error::RaftError<u64, E>>;
    /// Error of a client write.
    pub type ClientWriteError = openraft::error::ClientWriteError<u64, Member>;
    /// Error of a leadership check.
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<u64, Member>;
    /// Raft-level error wrapper.
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<u64, E>;
}
