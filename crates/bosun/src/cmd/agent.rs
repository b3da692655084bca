//! `bosun agent`: a worker's agent running pods as Docker containers (`--config FILE`),
//! or simulated hollow nodes (`--hollow N`) for tests and benchmarks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, ClientConfig};

/// Arguments of `bosun agent`.
#[derive(clap::Args)]
pub struct Args {
    /// Run this many hollow nodes (simulated: they register, heartbeat and report their
    /// pods running, without Docker) instead of the Docker agent; `--config` is then a
    /// client config with any identity allowed to write nodes.
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

fn shutdown_on_signal() -> CancellationToken {
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
    cancel
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(a: Args, config: Option<&Path>) -> Result<()> {
    let Some(count) = a.hollow else {
        let path = config.context(
            "the Docker agent needs its config: bosun agent --config FILE (see config/examples/agent.toml)",
        )?;
        return docker_agent(&AgentConfig::load(path)?).await;
    };
    let cfg = ClientConfig::find(config)?;
    let client = bosun_client::Client::connect(&cfg.servers, &cfg.tls())?;
    let cancel = shutdown_on_signal();
    let hc = bosun_agent::hollow::Config {
        prefix: a.prefix,
        count,
        cpu: a.cpu,
        memory: a.memory,
        pods: a.pods,
        heartbeat: Duration::from_millis(a.heartbeat_ms.max(100)),
    };
    bosun_agent::hollow::run(client, hc, cancel).await?;
    Ok(())
}

/// The host's memory in KiB, from /proc/meminfo.
fn host_memory() -> Option<String> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(format!("{kib}Ki"))
}

async fn docker_agent(c: &AgentConfig) -> Result<()> {
    std::fs::create_dir_all(&c.data_dir)
        .with_context(|| format!("creating the agent's data_dir {}", c.data_dir.display()))?;
    let root = std::fs::canonicalize(&c.data_dir)
        .with_context(|| format!("resolving data_dir {}", c.data_dir.display()))?;
    let client = bosun_client::Client::connect(&c.servers, &c.tls())?;
    let docker = bosun_agent::docker::Docker::connect().await.context(
        "connecting to the Docker Engine (is dockerd running, and its socket readable?)",
    )?;
    let runtime_version = docker
        .version()
        .await
        .unwrap_or_else(|_| "docker://unknown".into());
    let cancel = shutdown_on_signal();
    let agent_id = bosun_agent::pod::agent_id(&c.name, &root);
    // For scripts: `cluster.sh down` removes this agent's containers by it.
    std::fs::write(root.join("agent-id"), &agent_id)
        .with_context(|| format!("writing {}", root.join("agent-id").display()))?;
    let settings = bosun_agent::Settings {
        node: c.name.clone(),
        agent_id,
        root,
        network: c.network.clone(),
        sandbox_image: c.sandbox_image.clone(),
        host_ip: c.address.clone(),
        backoff_initial: Duration::from_millis(c.backoff_initial_ms.max(10)),
        backoff_max: Duration::from_millis(c.backoff_max_ms.max(c.backoff_initial_ms)),
        pulls: c.pulls,
    };
    let node = bosun_agent::node::NodeSpec {
        labels: c.labels.clone(),
        taints: c
            .taints
            .iter()
            .map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect}))
            .collect(),
        cpu: c.cpu.clone().unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .to_string()
        }),
        memory: c
            .memory
            .clone()
            .or_else(host_memory)
            .unwrap_or_else(|| "1Gi".into()),
        pods: c.pods,
        heartbeat: Duration::from_millis(c.heartbeat_ms.max(100)),
        runtime_version,
        port: c.port,
    };
    let ip: std::net::IpAddr = c
        .address
        .parse()
        .with_context(|| format!("address {:?}", c.address))?;
    let listen = std::net::SocketAddr::new(ip, c.port);
    let rt = Arc::new(docker);
    let settings = Arc::new(settings);
    let tls = c.tls();
    let server =
        bosun_agent::server::serve(rt.clone(), settings.clone(), listen, &tls, cancel.clone());
    let agent = bosun_agent::node::run(rt, client, settings, node, cancel.clone());
    let (served, ran) = tokio::join!(
        async {
            let r = server.await;
            // Without its port the agent is not whole: stop the rest too.
            cancel.cancel();
            r
        },
        agent
    );
    ran.with_context(|| format!("agent of node {}", c.name))?;
    served.map_err(anyhow::Error::msg)?;
    Ok(())
}
