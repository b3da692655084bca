//! `bosun agent`: this release runs hollow nodes only.

use std::path::Path;

use anyhow::{bail, Result};
use tokio_util::sync::CancellationToken;

use crate::config::ClientConfig;

/// Arguments of `bosun agent`.
#[derive(clap::Args)]
pub struct Args {
    /// Run this many hollow nodes (simulated: they register, heartbeat and report their
    /// pods running, without Docker).
    #[arg(long)]
    hollow: Option<usize>,
    /// Name prefix of the hollow nodes.
    #[arg(long, default_value = "hollow")]
    prefix: String,
    /// Allocatable cpu per hollow node.
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Allocatable memory per hollow node.
    #[arg(long, default_value = "8Gi")]
    memory: String,
    /// Pods per hollow node.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// How often each hollow node renews its Lease and Ready condition, ms (well under the
    /// servers' node grace period, 10 s by default).
    #[arg(long = "heartbeat-ms", default_value_t = 2_500)]
    heartbeat_ms: u64,
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(a: Args, config: Option<&Path>) -> Result<()> {
    let Some(count) = a.hollow else {
        bail!("the Docker agent is not part of this release: run hollow nodes with --hollow N");
    };
    let cfg = ClientConfig::find(config)?;
    let client = bosun_client::Client::connect(&cfg.servers, &cfg.tls())?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    let hc = bosun_agent::hollow::Config {
        prefix: a.prefix,
        count,
        cpu: a.cpu,
        memory: a.memory,
        pods: a.pods,
        heartbeat: std::time::Duration::from_millis(a.heartbeat_ms.max(100)),
    };
    bosun_agent::hollow::run(client, hc, cancel).await?;
    Ok(())
}
