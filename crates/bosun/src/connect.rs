//! Connecting to servers from the CLI: mTLS channels and failover across the configured
//! servers.

use anyhow::{Context, Result};
use bosun_pki::TlsMaterial;
use tonic::transport::Channel;

/// One channel per server, tried in order.
pub struct Servers {
    /// (address, channel).
    pub channels: Vec<(String, Channel)>,
}

impl Servers {
    /// Channels to every address over mTLS with `tls`.
    ///
    /// # Errors
    /// When the TLS files are unusable or an address is malformed.
    pub fn new(addrs: &[String], tls: &TlsMaterial) -> Result<Self> {
        let cfg = bosun_pki::client_config(tls).context("loading client certificate")?;
        let channels = addrs
            .iter()
            .map(|a| Ok((a.clone(), bosun_pki::channel(a, cfg.clone())?)))
            .collect::<Result<Vec<_>, bosun_pki::Error>>()?;
        Ok(Servers { channels })
    }
}
