//! The store's error type and its one mapping to gRPC status codes.

use std::path::PathBuf;

use crate::command::ApplyError;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened.
    #[error("opening database {path}: {reason}")]
    Open {
        /// Database path.
        path: PathBuf,
        /// RocksDB's reason.
        reason: String,
    },
    /// Reading stored state failed.
    #[error("reading stored state: {0}")]
    Load(#[source] std::io::Error),
    /// Raft could not be started.
    #[error("starting raft: {0}")]
    Start(String),
    /// The command was refused while being applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// No leader is known, or it could not be reached in time: retry.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The request is invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// A named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (membership changes).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation is not provided by bosun.
    #[error("{0}")]
    Unimplemented(String),
    /// Raft or storage failed.
    #[error("raft: {0}")]
    Raft(String),
    /// A peer could not be reached.
    #[error("peer {peer}: {reason}")]
    Peer {
        /// Peer address.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl Error {
    /// The same error for another waiter of a failed batch (errors carry no live sources
    /// here, so a copy by message is faithful).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Apply(a) => Error::Apply(a.clone()),
            Error::NoLeader(s) => Error::NoLeader(s.clone()),
            Error::Peer { peer, reason } => Error::Peer {
                peer: peer.clone(),
                reason: reason.clone(),
            },
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::NotFound(s) => Error::NotFound(s.clone()),
            Error::FailedPrecondition(s) => Error::FailedPrecondition(s.clone()),
            Error::Unimplemented(s) => Error::Unimplemented(s.clone()),
            Error::PermissionDenied(s) => Error::PermissionDenied(s.clone()),
            Error::ShuttingDown => Error::ShuttingDown,
            other => Error::Raft(other.to_string()),
        }
    }
}

/// Result with the store error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::mvcc::ReadError> for Error {
    fn from(e: crate::mvcc::ReadError) -> Self {
        match e {
            crate::mvcc::ReadError::Refused(a) => Error::Apply(a),
            crate::mvcc::ReadError::History(io) => Error::Load(io),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        let msg = e.to_string();
        match e {
            Error::Apply(ApplyError::LeaseNotFound) | Error::NotFound(_) => Status::not_found(msg),
            // etcd reports an existing lease id as FailedPrecondition.
            Error::Apply(ApplyError::LeaseExists) => Status::failed_precondition(msg),
            Error::Apply(ApplyError::Compacted) | Error::Apply(ApplyError::FutureRevision) => {
                Status::out_of_range(msg)
            }
            Error::Apply(ApplyError::KeyNotFound)
            | Error::Apply(ApplyError::NestedBatch)
            | Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::Apply(ApplyError::Fenced { .. }) | Error::FailedPrecondition(_) => {
                Status::failed_precondition(msg)
            }
            Error::NoLeader(_) | Error::Peer { .. } | Error::ShuttingDown => {
                Status::unavailable(msg)
            }
            Error::PermissionDenied(_) => Status::permission_denied(msg),
            Error::Unimplemented(_) => Status::unimplemented(msg),
            Error::Open { .. } | Error::Load(_) | Error::Start(_) | Error::Raft(_) => {
                Status::internal(msg)
            }
        }
    }
}
