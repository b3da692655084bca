//! The identity a verified client certificate carries: CN is the user, O the group.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The group every bosun server certificate carries. The peer port accepts only
/// certificates in this group, so a node or user certificate can never join the Raft group.
pub const SERVERS_GROUP: &str = "system:servers";

/// Who is on the other end of a connection, from its verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Certificate CN.
    pub user: String,
    /// Certificate O values.
    pub groups: Vec<String>,
}

impl Identity {
    /// Reads CN and O from a DER certificate. Returns `None` when it cannot be parsed.
    pub fn from_der(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(Identity { user, groups })
    }

    /// Whether this identity is a bosun server.
    pub fn is_server(&self) -> bool {
        self.groups.iter().any(|g| g == SERVERS_GROUP)
    }
}

/// What tonic handlers learn about the connection a request came in on (request extension).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Remote socket address (None for an in-process connection, see [`crate::local`]).
    pub remote: Option<std::net::SocketAddr>,
    /// The verified client identity (always present: the listeners require certificates).
    pub identity: Option<Identity>,
}
