//! The API server's errors and their one mapping to gRPC status codes.

use bosun_api::admission::FieldError;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request itself is malformed (bad JSON, unknown resource, bad selector).
    #[error("{0}")]
    BadRequest(String),
    /// The object is invalid; every offending field is listed.
    #[error("{kind} {name:?} is invalid: {}", join(.errors))]
    Invalid {
        /// Kind of the object.
        kind: String,
        /// Its name.
        name: String,
        /// Every problem found.
        errors: Vec<FieldError>,
    },
    /// The object, encoded as it would be stored, is larger than the store accepts (an
    /// apply's last-applied annotation or a merge patch can grow a small request's object).
    #[error("{resource} {name:?} is too large to store: the object would be {size} bytes, the limit is {limit}")]
    TooLarge {
        /// Plural resource.
        resource: String,
        /// Name.
        name: String,
        /// Encoded size, bytes.
        size: usize,
        /// The limit, bytes.
        limit: usize,
    },
    /// No such object.
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// Plural resource (or "namespaces" when the namespace is missing).
        resource: String,
        /// Name.
        name: String,
    },
    /// The object exists already.
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        /// Plural resource.
        resource: String,
        /// Name.
        name: String,
    },
    /// The stored object changed since the caller read it (compare-and-swap failed).
    #[error("Operation cannot be fulfilled on {resource} {name:?}: {reason}")]
    Conflict {
        /// Plural resource.
        resource: String,
        /// Name.
        name: String,
        /// Why.
        reason: String,
    },
    /// RBAC (or the node authorizer) refused the request.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No verified client certificate.
    #[error("unauthenticated: a client certificate signed by the cluster CA is required")]
    Unauthenticated,
    /// The resource version asked for was compacted away: list again.
    #[error("Expired: too old resource version: {requested} (compacted up to {compacted})")]
    Expired {
        /// Requested.
        requested: i64,
        /// Compact revision.
        compacted: i64,
    },
    /// A feature bosun does not provide (yet).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A range (service IPs, node ports) has no free value left.
    #[error("{0}")]
    Exhausted(String),
    /// A stored object cannot be read back (corruption or a key bosun did not write).
    #[error("stored object {key} cannot be decoded: {reason}")]
    Corrupt {
        /// Store key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] bosun_store::Error),
}

fn join(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    if parts.len() == 1 {
        parts.concat()
    } else {
        format!("[{}]", parts.join(", "))
    }
}

/// Result with the API server error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        let msg = e.to_string();
        match e {
            Error::BadRequest(_) | Error::Invalid { .. } | Error::TooLarge { .. } => {
                Status::invalid_argument(msg)
            }
            Error::NotFound { .. } => Status::not_found(msg),
            Error::AlreadyExists { .. } => Status::already_exists(msg),
            Error::Conflict { .. } => Status::failed_precondition(msg),
            Error::Forbidden(_) => Status::permission_denied(msg),
            Error::Unauthenticated => Status::unauthenticated(msg),
            Error::Expired { .. } => Status::out_of_range(msg),
            Error::Unsupported(_) => Status::unimplemented(msg),
            Error::Exhausted(_) => Status::resource_exhausted(msg),
            Error::Corrupt { .. } => Status::data_loss(msg),
            // The write reached the leader, which was lost before answering: it may still
            // commit. Not Unavailable, which clients take as "not made, try another
            // server": a retried create or update could then happen twice. Kubernetes
            // answers such a request with a timeout, as this does.
            Error::Store(s @ bosun_store::Error::Peer { .. }) => {
                Status::deadline_exceeded(s.to_string())
            }
            Error::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_of_unknown_outcome_is_not_answered_as_retriable() {
        // Clients retry Unavailable on another server ("not made here"); a write the
        // leader may still commit must not be retried, or it could happen twice.
        let unknown = Error::Store(bosun_store::Error::Peer {
            peer: "127.0.0.11:2380".into(),
            reason: "outcome unknown: a new leader was elected".into(),
        });
        let s = tonic::Status::from(unknown);
        assert_eq!(s.code(), tonic::Code::DeadlineExceeded);
        assert!(s.message().contains("outcome unknown"), "{}", s.message());
        let not_made = Error::Store(bosun_store::Error::NoLeader("no leader yet".into()));
        assert_eq!(
            tonic::Status::from(not_made).code(),
            tonic::Code::Unavailable
        );
    }
}
