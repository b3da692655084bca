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
    create_namespace(&admin, &ns)
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
        let client = client_number(&cfg, w)?;
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
    /// Who creates the pods: "replicaset" (one ReplicaSet of --pods replicas: its
    /// controller creates them in batches) or "clients" (--clients concurrent clients, one
    /// Create call per pod, as kube-scheduler's benchmark does).
    #[arg(long, default_value = "replicaset")]
    via: String,
    /// Concurrent clients creating pods (with --via clients).
    #[arg(long, default_value_t = 32)]
    clients: usize,
}

/// Scheduling throughput on the cluster's (hollow) nodes: `scripts/cluster.sh up --hollow N`
/// first.
///
/// # Errors
/// When the cluster cannot be reached, has no ready node, or a request fails.
/// A pod as `bench schedule` reads it: its name and node.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct NamedPod {
    #[serde(deserialize_with = "bosun_client::informer::null_as_default")]
    metadata: Named,
    #[serde(deserialize_with = "bosun_client::informer::null_as_default")]
    spec: Placed,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Named {
    #[serde(deserialize_with = "bosun_client::informer::null_as_default")]
    name: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Placed {
    #[serde(deserialize_with = "bosun_client::informer::null_as_default")]
    node_name: String,
}

pub async fn schedule(a: ScheduleArgs, config: Option<&Path>) -> Result<()> {
    let cfg = ClientConfig::find(config)?;
    let admin = Client::connect(&cfg.servers, &cfg.tls())?;
    let nodes = list_nodes(&admin, "").await?;
    if nodes.is_empty() {
        bail!("no nodes: start hollow nodes first (scripts/cluster.sh up --hollow N, or bosun agent --hollow N)");
    }
    println!("{} nodes", nodes.len());
    let ns = format!("bench-sched-{}", std::process::id());
    create_namespace(&admin, &ns).await?;
    let q = Query {
        resource: "pods".into(),
        namespace: ns.clone(),
        ..Default::default()
    };
    // Only a pod's name and node are read: a typed view, not 10,000 decoded objects.
    let mut events = Box::pin(admin.watch_as::<NamedPod>(&q, "", false).await?);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    match a.via.as_str() {
        "replicaset" => {
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "sched", "namespace": ns},
                "spec": {"replicas": a.pods, "selector": {"matchLabels": {"app": "sched"}},
                    "template": {"metadata": {"labels": {"app": "sched"}}, "spec": {"containers": [{"name": "c",
                        "image": "bosun/busybox:latest", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}});
            admin.create("replicasets", &ns, &rs).await?;
        }
        "clients" => {
            let clients = a.clients.max(1);
            for w in 0..clients {
                let client = client_number(&cfg, w)?;
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
        }
        other => bail!("--via {other:?}: say replicaset or clients"),
    }
    let mut seen = std::collections::HashSet::new();
    let mut bound = std::collections::HashSet::new();
    let (mut first_created, mut all_created) = (None, None);
    let deadline = started + Duration::from_secs(600);
    while bound.len() < a.pods {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} pods were bound within 600 s",
                bound.len(),
                a.pods
            );
        }
        tokio::select! {
            Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                r.context("a benchmark task panicked")??;
            }
            ev = futures::StreamExt::next(&mut events) => {
                let Some(ev) = ev else { bail!("the watch ended") };
                let ev = ev?;
                let NamedPod { metadata: Named { name }, spec: Placed { node_name } } = ev.object;
                if name.is_empty() {
                    continue;
                }
                if seen.insert(name.clone()) {
                    first_created.get_or_insert_with(|| started.elapsed());
                    if seen.len() == a.pods {
                        all_created = Some(started.elapsed());
                    }
                }
                if !node_name.is_empty() {
                    bound.insert(name);
                }
            }
        }
    }
    let took = started.elapsed();
    let first = first_created.unwrap_or_default();
    let window = took.saturating_sub(first);
    println!(
        "schedule ({} pods via {}): first pod created after {:.2} s, all created after {:.2} s, all bound after {:.2} s = {:.0} pods/s from the first creation to the last binding",
        a.pods,
        a.via,
        first.as_secs_f64(),
        all_created.unwrap_or(took).as_secs_f64(),
        took.as_secs_f64(),
        a.pods as f64 / window.as_secs_f64().max(1e-3)
    );
    let t = Instant::now();
    delete_namespace(&admin, &ns).await?;
    println!(
        "namespace of {} pods deleted (every pod gone) in {:.2} s",
        a.pods,
        t.elapsed().as_secs_f64()
    );
    if a.deployment > 0 {
        let ns = format!("{ns}-d");
        create_namespace(&admin, &ns).await?;
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
        let t = Instant::now();
        admin
            .patch(
                "deployments",
                &ns,
                "big",
                "",
                &json!({"spec": {"replicas": 0}}),
            )
            .await?;
        let pods = Query {
            resource: "pods".into(),
            namespace: ns.clone(),
            limit: 1,
            ..Default::default()
        };
        let deadline = t + Duration::from_secs(600);
        while !admin.list_as::<NamedPod>(&pods).await?.items.is_empty() {
            if Instant::now() >= deadline {
                bail!("pods of deployment big were still there 600 s after scaling it to 0");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "deployment: scaled from {} replicas to 0, every pod gone in {:.2} s",
            a.deployment,
            t.elapsed().as_secs_f64()
        );
        delete_namespace(&admin, &ns).await?;
    }
    Ok(())
}

/// Benchmark client number `w`: clients start on different servers in turn, as users
/// of a cluster would (two thirds of the writes are then forwarded to the leader).
fn client_number(cfg: &ClientConfig, w: usize) -> Result<Client> {
    let mut servers = cfg.servers.clone();
    let n = servers.len().max(1);
    servers.rotate_left(w % n);
    Ok(Client::connect(&servers, &cfg.tls())?)
}

/// The cluster's nodes that match `labels` (a label selector; empty: all).
async fn list_nodes(admin: &Client, labels: &str) -> Result<Vec<serde_json::Value>> {
    let q = Query {
        resource: "nodes".into(),
        labels: labels.into(),
        ..Default::default()
    };
    Ok(admin.list_all(&q).await?.items)
}

/// Creates namespace `ns` for a benchmark's objects.
async fn create_namespace(admin: &Client, ns: &str) -> Result<()> {
    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    admin.create("namespaces", "", &obj).await?;
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

/// Arguments of `bench pods`.
#[derive(clap::Args)]
pub struct PodsArgs {
    /// Pods whose start-up latency is measured.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Pods created per second (as Kubernetes' pod start-up SLO test does, at a steady
    /// rate; each pod is two containers, its sandbox and its container).
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Replicas of the Deployment timed from apply to all running (0: skip).
    #[arg(long, default_value_t = 30)]
    deployment: usize,
    /// The image (present on the agents' hosts).
    #[arg(long, default_value = "bosun/busybox:latest")]
    image: String,
    /// Also time `docker run -d` of the same image this many times (the floor; 0: skip).
    #[arg(long, default_value_t = 50)]
    docker_runs: usize,
}

fn all_running(pod: &serde_json::Value) -> bool {
    let want = pod
        .pointer("/spec/containers")
        .and_then(|c| c.as_array())
        .map_or(0, Vec::len);
    let running = pod
        .pointer("/status/containerStatuses")
        .and_then(|c| c.as_array())
        .map_or(0, |cs| {
            cs.iter()
                .filter(|c| c.pointer("/state/running").is_some())
                .count()
        });
    want > 0 && running == want
}

/// Pod start-up latency on the cluster's Docker agents: creation (the API's answer) to all
/// containers running (seen through a watch), and a Deployment's time to all running;
/// beside it `docker run -d` of the same image, the floor.
///
/// # Errors
/// When the cluster cannot be reached, has no agent node, or a request fails.
pub async fn pods(a: PodsArgs, config: Option<&Path>) -> Result<()> {
    let cfg = ClientConfig::find(config)?;
    let admin = Client::connect(&cfg.servers, &cfg.tls())?;
    let nodes = list_nodes(&admin, "!bosun.io/hollow").await?;
    if nodes.is_empty() {
        bail!("no Docker agent nodes: start one (scripts/cluster.sh up --agents 1)");
    }
    println!("{} agent nodes, image {}", nodes.len(), a.image);
    let ns = format!("bench-pods-{}", std::process::id());
    create_namespace(&admin, &ns).await?;
    let q = Query {
        resource: "pods".into(),
        namespace: ns.clone(),
        ..Default::default()
    };
    let mut events = Box::pin(admin.watch(&q, "", false).await?);
    // A grace period of 1 s, not 0: pods then go through graceful deletion, so a deleted
    // namespace is gone only once the agent has removed their containers, and no removal
    // runs into the next measurement.
    let pod = |i: usize| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "namespace": ns},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": a.image,
                "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}})
    };
    let mut created: std::collections::HashMap<String, Instant> = std::collections::HashMap::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut done = std::collections::HashSet::new();
    let gap = Duration::from_secs_f64(1.0 / a.rate.max(0.1));
    let mut next_create = Instant::now();
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.len() < a.pods {
        if Instant::now() > deadline {
            bail!("only {} of {} pods ran within 600 s", done.len(), a.pods);
        }
        if i < a.pods {
            let wait = next_create.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    admin.create("pods", &ns, &pod(i)).await?;
                    created.insert(format!("p{i}"), Instant::now());
                    i += 1;
                    next_create += gap;
                    continue;
                }
                ev = futures::StreamExt::next(&mut events) => {
                    let Some(ev) = ev else { bail!("the watch ended") };
                    note(&ev?.object, &created, &mut done, &mut latencies);
                }
            }
        } else {
            let Some(ev) = futures::StreamExt::next(&mut events).await else {
                bail!("the watch ended")
            };
            note(&ev?.object, &created, &mut done, &mut latencies);
        }
    }
    fn note(
        obj: &serde_json::Value,
        created: &std::collections::HashMap<String, Instant>,
        done: &mut std::collections::HashSet<String>,
        latencies: &mut Vec<Duration>,
    ) {
        let name = obj
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("");
        if let Some(t) = created.get(name) {
            if all_running(obj) && done.insert(name.to_string()) {
                latencies.push(t.elapsed());
            }
        }
    }
    latencies.sort();
    println!(
        "pod start-up ({} pods at {}/s): p50 {}, p99 {}, max {}",
        a.pods,
        a.rate,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    delete_namespace(&admin, &ns).await?;

    if a.deployment > 0 {
        let ns = format!("{ns}-d");
        create_namespace(&admin, &ns).await?;
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": a.deployment, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": a.image, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}}}});
        let q = Query {
            resource: "pods".into(),
            namespace: ns.clone(),
            ..Default::default()
        };
        let mut w = Box::pin(admin.watch(&q, "", false).await?);
        let t = Instant::now();
        admin.apply(&ns, &d).await?;
        let mut running = std::collections::HashSet::new();
        while running.len() < a.deployment {
            let Some(ev) = futures::StreamExt::next(&mut w).await else {
                bail!("the watch ended")
            };
            let ev = ev?;
            let name = ev
                .object
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_string();
            if all_running(&ev.object) {
                running.insert(name);
            }
            if t.elapsed() > Duration::from_secs(600) {
                bail!("the Deployment did not run within 600 s");
            }
        }
        println!(
            "deployment: {} replicas from apply to all running in {:.2} s",
            a.deployment,
            t.elapsed().as_secs_f64()
        );
        delete_namespace(&admin, &ns).await?;
    }

    if a.docker_runs > 0 {
        let mut floor = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..a.docker_runs {
            let t = Instant::now();
            let out = tokio::process::Command::new("docker")
                .args(["run", "-d", "--network", "bosun", &a.image, "sleep", "3600"])
                .output()
                .await
                .context("running docker (the floor needs the docker CLI on this host)")?;
            if !out.status.success() {
                bail!("docker run: {}", String::from_utf8_lossy(&out.stderr));
            }
            floor.push(t.elapsed());
            ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let mut rm = vec!["rm".to_string(), "-f".to_string()];
        rm.extend(ids);
        let _ = tokio::process::Command::new("docker")
            .args(&rm)
            .output()
            .await;
        floor.sort();
        println!(
            "floor: docker run -d of {} ({} runs, one at a time): p50 {}, p99 {}",
            a.image,
            a.docker_runs,
            ms(percentile(&floor, 0.5)),
            ms(percentile(&floor, 0.99))
        );
    }
    Ok(())
}
