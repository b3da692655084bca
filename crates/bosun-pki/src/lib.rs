//! bosun's PKI: the cluster CA, certificate issuance, and the TLS plumbing every bosun
//! connection goes through.
//!
//! - [`ca`]: `bosun pki init` and `bosun pki issue` — a cluster CA and server, node and user
//!   certificates written to a directory (keys 0600), with rcgen.
//! - [`identity`]: who a verified peer certificate names (CN = user, O = group).
//! - [`tls`]: rustls server and client configs that require and verify certificates against the
//!   cluster CA, a TLS listener that feeds tonic and logs refused handshakes, and a tonic
//!   channel that connects over mTLS.
//! - [`local`]: in-process connections to a server's own API, in the server's own name
//!   (the leader's scheduler and controllers), served beside the TLS ones.
#![forbid(unsafe_code)]

pub mod ca;
pub mod identity;
pub mod local;
pub mod tls;

pub use ca::{Layout, Pki};
pub use identity::{Identity, PeerInfo, SERVERS_GROUP};
pub use local::{local, ClientIncoming, LocalConnector};
pub use tls::{
    channel, channel_from, client_config, client_config_with, server_config, server_config_with,
    Dialer, ReloadingIdentity, TlsIncoming, TlsMaterial,
};

/// Errors of the PKI and TLS setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// A PEM file held no certificate or key, or a bad one.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// rustls refused the configuration.
    #[error("tls config: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("tls client verifier: {0}")]
    Verifier(String),
    /// `pki init` found an existing CA.
    #[error("{0} already exists: refusing to overwrite an existing CA")]
    CaExists(std::path::PathBuf),
    /// A name, group or address given to `pki` is not acceptable.
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A tonic endpoint could not be built.
    #[error("endpoint {0}: {1}")]
    Endpoint(String, String),
}

/// Result with the PKI error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
