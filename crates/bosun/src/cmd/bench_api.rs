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
        delete_namespace(&admin, &ns).await?;
        println!(
            "deleted namespace {ns} with its pods in {}",
            ms(t.elapsed())
        );
    }
    Ok(())
}

/// Arguments of `bench schedule`.
#[derive(clap::Args)]
pub struct ScheduleArgs {
    /// Unbound pods to create and have scheduled.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Replicas of the Deployment timed from apply to all running (0: skip).
    #[arg(long, default_value_t = 1_000)]
    deployment: usize,
    /// Concurrent clients creating pods.
    #[arg(long, default_value_t = 32)]
    clients: usize,
}

/// Scheduling throughput on the cluster's (hollow) nodes: `scripts/cluster.sh up --hollow N`
/// first.
///
/// # Errors
/// When the cluster cannot be reached, has no ready node, or a request fails.
pub async fn schedule(a: ScheduleArgs, config: Option<&Path>) -> Result<()> {
    let cfg = ClientConfig::find(config)?;
    let admin = Client::connect(&cfg.servers, &cfg.tls())?;
    let nodes = admin
        .list_all(&Query {
            resource: "nodes".into(),
            ..Default::default()
        })
        .await?
        .items;
    if nodes.is_empty() {
        bail!("no nodes: start hollow nodes first (scripts/cluster.sh up --hollow N, or bosun agent --hollow N)");
    }
    println!("{} nodes", nodes.len());
    let ns = format!("bench-sched-{}", std::process::id());
    admin
        .create(
            "namespaces",
            "",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    let q = Query {
        resource: "pods".into(),
        namespace: ns.clone(),
        ..Default::default()
    };
    let mut events = Box::pin(admin.watch(&q, "", false).await?);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let clients = a.clients.max(1);
    for w in 0..clients {
        let mut servers = cfg.servers.clone();
        let n = servers.len().max(1);
        servers.rotate_left(w % n);
        let client = Client::connect(&servers, &cfg.tls())?;
        let (ns, total) = (ns.clone(), a.pods);
        tasks.spawn(async move {
            let mut i = w;
            while i < total {
                let mut p = pod(&ns, i);
                if let Some(spec) = p.get_mut("spec").and_then(|s| s.as_object_mut()) {
                    spec.remove("nodeName");
                }
                client.create("pods", &ns, &p).await?;
                i += clients;
            }
            Ok::<_, bosun_client::Error>(())
        });
    }
    let mut bound = std::collections::HashSet::new();
    let mut created_at = None;
    while bound.len() < a.pods {
        tokio::select! {
            Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                r.context("a benchmark task panicked")??;
                if tasks.is_empty() {
                    created_at = Some(started.elapsed());
                }
            }
            ev = futures::StreamExt::next(&mut events) => {
                let Some(ev) = ev else { bail!("the watch ended") };
                let ev = ev?;
                if ev.object.pointer("/spec/nodeName").and_then(|n| n.as_str()).is_some_and(|n| !n.is_empty()) {
                    if let Some(name) = ev.object.pointer("/metadata/name").and_then(|n| n.as_str()) {
                        bound.insert(name.to_string());
                    }
                }
            }
        }
    }
    let took = started.elapsed();
    println!(
        "schedule: {} pods created in {:.2} s, all bound after {:.2} s = {:.0} pods/s from creation to binding",
        a.pods,
        created_at.unwrap_or(took).as_secs_f64(),
        took.as_secs_f64(),
        a.pods as f64 / took.as_secs_f64()
    );
    delete_namespace(&admin, &ns).await?;
    if a.deployment > 0 {
        let ns = format!("{ns}-d");
        admin
            .create(
                "namespaces",
                "",
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await?;
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "big", "namespace": ns},
            "spec": {"replicas": a.deployment, "selector": {"matchLabels": {"app": "big"}},
                "template": {"metadata": {"labels": {"app": "big"}}, "spec": {"containers": [{"name": "c", "image": "bosun/busybox:latest",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}});
        let t = Instant::now();
        admin.apply(&ns, &d).await?;
        let q = Query {
            resource: "deployments".into(),
            namespace: ns.clone(),
            ..Default::default()
        };
        let mut w = Box::pin(admin.watch(&q, "", false).await?);
        while let Some(ev) = futures::StreamExt::next(&mut w).await {
            let ev = ev?;
            if ev
                .object
                .pointer("/status/availableReplicas")
                .and_then(|v| v.as_u64())
                == Some(a.deployment as u64)
            {
                break;
            }
        }
        println!(
            "deployment: {} replicas from apply to all running and available in {:.2} s",
            a.deployment,
            t.elapsed().as_secs_f64()
        );
        delete_namespace(&admin, &ns).await?;
    }
    Ok(())
}

/// Deletes a namespace and waits until the namespace controller has emptied and removed it.
async fn delete_namespace(admin: &Client, ns: &str) -> Result<()> {
    admin.delete("namespaces", "", ns, None).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match admin.get("namespaces", "", ns).await {
            Err(e) if e.code() == Some(bosun_client::Code::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) if Instant::now() >= deadline => {
                bail!("namespace {ns} was not deleted within 600 s")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
