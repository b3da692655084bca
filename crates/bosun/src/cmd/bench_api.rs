//! `bosun bench api`: object create throughput and list latency through the resource API,
//! as a user (or a controller) sees them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bosun_client::{Client, Query};
use serde_json::json;

use crate::config::ClientConfig;

/// Arguments of `bench api`.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// Pods to create.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients (each with its own connections).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Timed list requests.
    #[arg(long, default_value_t = 10)]
    lists: usize,
    /// Keep the namespace and its pods afterwards.
    #[arg(long)]
    keep: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn pod(ns: &str, i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-{i:06}"), "namespace": ns, "labels": {"app": "bench", "shard": (i % 10).to_string()}},
        "spec": {"nodeName": format!("node-{}", i % 100), "containers": [{"name": "c", "image": "bosun/busybox:latest",
            "command": ["sleep", "3600"], "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}})
}

/// Runs the benchmark against the cluster of the client config.
///
/// # Errors
/// When the cluster cannot be reached or a request fails.
pub async fn run(a: ApiArgs, config: Option<&Path>) -> Result<()> {
    let cfg = ClientConfig::find(config)?;
    let admin = Client::connect(&cfg.servers, &cfg.tls())?;
    let ns = format!("bench-{}", std::process::id());
    admin
        .create(
            "namespaces",
            "",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await
        .context("creating the benchmark namespace")?;
    println!(
        "creating {} pods in namespace {ns} with {} clients",
        a.pods, a.clients
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let clients = a.clients.max(1);
    for w in 0..clients {
        // Clients start on different servers, as users of a cluster would.
        let mut servers = cfg.servers.clone();
        let n = servers.len().max(1);
        servers.rotate_left(w % n);
        let client = Client::connect(&servers, &cfg.tls())?;
        let ns = ns.clone();
        let total = a.pods;
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut i = w;
            while i < total {
                let t = Instant::now();
                client.create("pods", &ns, &pod(&ns, i)).await?;
                lat.push(t.elapsed());
                i += clients;
            }
            Ok::<_, bosun_client::Error>(lat)
        });
    }
    let mut lat = Vec::with_capacity(a.pods);
    while let Some(r) = tasks.join_next().await {
        lat.extend(r.context("a benchmark task panicked")??);
    }
    let took = started.elapsed();
    lat.sort();
    println!(
        "create: {} pods in {:.2} s = {:.0} objects/s, latency p50 {} p99 {}",
        lat.len(),
        took.as_secs_f64(),
        lat.len() as f64 / took.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );

    for (what, limit) in [("one page", 0i64), ("pages of 500", 500)] {
        let mut times = Vec::new();
        for _ in 0..a.lists.max(1) {
            let q = Query {
                resource: "pods".into(),
                namespace: ns.clone(),
                limit,
                ..Default::default()
            };
            let t = Instant::now();
            let l = admin.list_all(&q).await?;
            times.push(t.elapsed());
            if l.items.len() != a.pods {
                bail!("listed {} pods, expected {}", l.items.len(), a.pods);
            }
        }
        times.sort();
        println!(
            "list all {} pods ({what}): p50 {} p99 {} over {} lists",
            a.pods,
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            times.len()
        );
    }
    let mut times = Vec::new();
    for _ in 0..a.lists.max(1) {
        let q = Query {
            resource: "pods".into(),
            namespace: ns.clone(),
            fields: "spec.nodeName=node-7".into(),
            ..Default::default()
        };
        let t = Instant::now();
        admin.list_all(&q).await?;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "list pods of one node (field selector spec.nodeName): p50 {} p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    if !a.keep {
        let t = Instant::now();
        admin.delete("namespaces", "", &ns, None).await?;
        println!(
            "deleted namespace {ns} with its pods in {}",
            ms(t.elapsed())
        );
    }
    Ok(())
}
