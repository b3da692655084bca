//! `bosun bench kv` and `bosun bench failover`. Both speak only the etcd v3 API, so the
//! same command measures bosun and etcd.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bosun_api::etcd::cluster_client::ClusterClient;
use bosun_api::etcd::kv_client::KvClient;
use bosun_api::etcd::maintenance_client::MaintenanceClient;
use bosun_api::etcd::{MemberListRequest, PutRequest, RangeRequest, StatusRequest};
use bosun_pki::TlsMaterial;
use tonic::transport::Channel;

/// Bench verbs.
#[derive(clap::Subcommand)]
pub enum Bench {
    /// Throughput and latency of puts or reads.
    Kv(KvArgs),
    /// Kill (or pause) the leader repeatedly and measure write unavailability.
    Failover(FailoverArgs),
    /// Create throughput and list latency of pods through the resource API (bosun only).
    Api(super::bench_api::ApiArgs),
    /// Scheduling throughput and Deployment start-up on the cluster's (hollow) nodes.
    Schedule(super::bench_api::ScheduleArgs),
    /// Pod start-up latency on Docker agents, beside `docker run` (the floor).
    Pods(super::bench_api::PodsArgs),
}

/// Where to connect.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// Endpoints host:port, comma-separated (default: $ETCDCTL_ENDPOINTS).
    #[arg(long, env = "ETCDCTL_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// CA certificate.
    #[arg(long, env = "ETCDCTL_CACERT")]
    cacert: PathBuf,
    /// Client certificate.
    #[arg(long, env = "ETCDCTL_CERT")]
    cert: PathBuf,
    /// Client key.
    #[arg(long, env = "ETCDCTL_KEY")]
    key: PathBuf,
}

/// Arguments of `bench kv`.
#[derive(clap::Args)]
pub struct KvArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Connections the clients share, spread over the endpoints (default: one per client).
    /// etcd's `benchmark` tool has the same split (`--conns`, `--clients`).
    #[arg(long)]
    conns: Option<usize>,
    /// Total operations.
    #[arg(long, default_value_t = 10_000)]
    ops: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Put)]
    mode: Mode,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Operation measured.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Puts.
    Put,
    /// Linearizable single-key reads.
    Get,
    /// Serializable single-key reads.
    GetSerializable,
}

/// Arguments of `bench failover`.
#[derive(clap::Args)]
pub struct FailoverArgs {
    /// Cluster directory made by scripts/cluster.sh or scripts/etcd-cluster.sh: its `env`
    /// file names endpoints and certificates, `<name>.pid` the processes, `ctl` restarts.
    #[arg(long)]
    dir: PathBuf,
    /// Leader kills.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Concurrent writers during the test.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Pause the leader (SIGSTOP: a hung process, its connections left open) instead of
    /// killing it, and resume it (SIGCONT) after writes resume.
    #[arg(long)]
    pause: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs a bench verb.
pub async fn run(b: Bench, config: Option<&Path>) -> Result<()> {
    match b {
        Bench::Kv(a) => kv(a).await,
        Bench::Failover(a) => failover(a).await,
        Bench::Api(a) => super::bench_api::run(a, config).await,
        Bench::Schedule(a) => super::bench_api::schedule(a, config).await,
        Bench::Pods(a) => super::bench_api::pods(a, config).await,
    }
}

fn channels(t: &Target, n: usize) -> Result<Vec<Channel>> {
    if t.endpoints.is_empty() {
        bail!("no endpoints: pass --endpoints or set ETCDCTL_ENDPOINTS");
    }
    let tls = TlsMaterial {
        ca: t.cacert.clone(),
        cert: t.cert.clone(),
        key: t.key.clone(),
    };
    let cfg = bosun_pki::client_config(&tls).context("loading client certificate")?;
    (0..n)
        .map(|i| {
            let ep = t.endpoints[i % t.endpoints.len()]
                .trim_start_matches("https://")
                .to_string();
            bosun_pki::channel(&ep, cfg.clone()).map_err(Into::into)
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn kv(a: KvArgs) -> Result<()> {
    let clients = a.clients.max(1);
    let conns = a.conns.unwrap_or(clients).clamp(1, clients);
    let chans = channels(&a.target, conns)?;
    let value = vec![b'x'; a.value_size];
    if a.mode != Mode::Put {
        // Reads need something to read.
        let mut c = KvClient::new(chans[0].clone());
        for k in 0..a.keys.min(1000) {
            c.put(PutRequest {
                key: format!("bench/{k:08}").into_bytes(),
                value: value.clone(),
                ..Default::default()
            })
            .await?;
        }
    }
    let per_client = a.ops.div_ceil(clients);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let ch = chans[i % conns].clone();
        let (value, next, mode, keys, total) = (value.clone(), next.clone(), a.mode, a.keys, a.ops);
        tasks.spawn(async move {
            let mut c = KvClient::new(ch).max_decoding_message_size(64 << 20);
            let mut lat = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let key = format!(
                    "bench/{:08}",
                    i % if mode == Mode::Put {
                        keys
                    } else {
                        keys.min(1000)
                    }
                )
                .into_bytes();
                let t = Instant::now();
                let r = match mode {
                    Mode::Put => c
                        .put(PutRequest {
                            key,
                            value: value.clone(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    Mode::Get | Mode::GetSerializable => c
                        .range(RangeRequest {
                            key,
                            serializable: mode == Mode::GetSerializable,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                };
                match r {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    lat.sort();
    let ops_s = lat.len() as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    if a.json {
        println!(
            "{{\"mode\":\"{:?}\",\"clients\":{},\"conns\":{conns},\"ops\":{},\"errors\":{},\"seconds\":{:.3},\"ops_per_sec\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
            a.mode, a.clients, lat.len(), errors, elapsed.as_secs_f64(), ops_s, p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3
        );
    } else {
        println!(
            "{:?}: {} clients on {conns} connections, {} ops ({} errors) in {:.2}s: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms",
            a.mode, a.clients, lat.len(), errors, elapsed.as_secs_f64(), ops_s, p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3
        );
    }
    if lat.is_empty() {
        bail!("no operation succeeded ({errors} errors)");
    }
    Ok(())
}

/// Reads `export KEY=VALUE` lines of a cluster's env file.
fn read_env(dir: &Path) -> Result<std::collections::HashMap<String, String>> {
    let path = dir.join("env");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
        .collect())
}

/// The leader's id and name, once the cluster is settled: every member answers, all agree
/// on the leader, and every member has applied to within a few entries of the others (a
/// member restarted by the previous round has caught up). Killing a leader while a
/// restarted member still lags measures a double failure, not a failover.
async fn settled_leader(chans: &[Channel]) -> Option<(u64, String)> {
    let mut leaders = std::collections::BTreeSet::new();
    let mut applied = Vec::new();
    for ch in chans {
        let mut m = MaintenanceClient::new(ch.clone());
        let st = tokio::time::timeout(Duration::from_millis(500), m.status(StatusRequest {}))
            .await
            .ok()?
            .ok()?
            .into_inner();
        if st.leader == 0 {
            return None;
        }
        leaders.insert(st.leader);
        applied.push(st.raft_applied_index);
    }
    let (lo, hi) = (applied.iter().min()?, applied.iter().max()?);
    if leaders.len() != 1 || hi - lo > 50 {
        return None;
    }
    let leader = *leaders.iter().next()?;
    let mut c = ClusterClient::new(chans[0].clone());
    let list = tokio::time::timeout(
        Duration::from_millis(500),
        c.member_list(MemberListRequest::default()),
    )
    .await
    .ok()?
    .ok()?;
    let name = list
        .into_inner()
        .members
        .into_iter()
        .find(|m| m.id == leader)?
        .name;
    Some((leader, name))
}

/// Whether a process exists and is not a zombie (Linux /proc).
fn process_alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: "pid (comm) S …".
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether process `pid` is stopped by a signal (state `T`).
fn process_stopped(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    })
}

async fn failover(a: FailoverArgs) -> Result<()> {
    let env = read_env(&a.dir)?;
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .with_context(|| format!("{k} missing from {}/env", a.dir.display()))
    };
    let target = Target {
        endpoints: get("ETCDCTL_ENDPOINTS")?
            .split(',')
            .map(str::to_string)
            .collect(),
        cacert: get("ETCDCTL_CACERT")?.into(),
        cert: get("ETCDCTL_CERT")?.into(),
        key: get("ETCDCTL_KEY")?.into(),
    };
    let n = target.endpoints.len();
    let chans = channels(&target, n)?;
    // Writers: each tries every endpoint in turn, and records the time of each success.
    let stop = tokio_util::sync::CancellationToken::new();
    // (sent, acknowledged) of every successful write.
    let acks = Arc::new(std::sync::Mutex::new(Vec::<(Instant, Instant)>::new()));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..a.writers {
        let (chans, stop, acks) = (chans.clone(), stop.clone(), acks.clone());
        writers.spawn(async move {
            let mut i = w;
            let mut seq = 0u64;
            while !stop.is_cancelled() {
                let mut c = KvClient::new(chans[i % chans.len()].clone());
                seq += 1;
                let put = PutRequest {
                    key: format!("failover/{w}").into_bytes(),
                    value: seq.to_string().into_bytes(),
                    ..Default::default()
                };
                let sent = Instant::now();
                match tokio::time::timeout(Duration::from_secs(2), c.put(put)).await {
                    Ok(Ok(_)) => acks
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((sent, Instant::now())),
                    _ => i += 1,
                }
            }
        });
    }
    let mut gaps = Vec::new();
    for k in 0..a.kills {
        // A settled cluster: a leader, every member caught up, writes flowing.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (leader_id, name) = loop {
            if let Some(l) = settled_leader(&chans).await {
                break l;
            }
            if Instant::now() > deadline {
                bail!("the cluster did not settle (a leader, every member caught up) within 30s before kill {k}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let pid_file = a.dir.join(format!("{name}.pid"));
        let pid = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?;
        let pid = pid.trim().to_string();
        let signal = if a.pause { "-STOP" } else { "-9" };
        let killed_at = Instant::now();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()?;
        if !status.success() {
            bail!("kill {signal} {pid} ({name}) failed");
        }
        // Neither signal takes effect at once: until the process is gone (or stopped) it
        // may still commit writes.
        let dead_at = loop {
            let done = if a.pause {
                process_stopped(&pid)
            } else {
                !process_alive(&pid)
            };
            if done {
                break Instant::now();
            }
            if killed_at.elapsed() > Duration::from_secs(10) {
                bail!("{name} (pid {pid}) still running 10s after kill {signal}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        // Unavailability: from the kill signal to the first acknowledgement of a write
        // sent after the process was gone (or stopped).
        let recovered = loop {
            let first = acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(sent, _)| *sent > dead_at)
                .map(|(_, acked)| *acked)
                .min();
            if let Some(t) = first {
                break t;
            }
            if killed_at.elapsed() > Duration::from_secs(60) {
                bail!("writes did not resume within 60s after killing {name}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let gap = recovered - killed_at;
        tracing::debug!(
            process_gone_ms = (dead_at - killed_at).as_secs_f64() * 1e3,
            first_ack_after_gone_ms = (recovered - dead_at).as_secs_f64() * 1e3,
            "failover timing"
        );
        gaps.push(gap);
        if !a.json {
            println!(
                "{} {}: leader {name} (id {leader_id:x}) -> writes resumed after {:.0} ms",
                if a.pause { "pause" } else { "kill" },
                k + 1,
                gap.as_secs_f64() * 1e3
            );
        }
        acks.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if a.pause {
            let st = std::process::Command::new("kill")
                .args(["-CONT", &pid])
                .status()?;
            if !st.success() {
                bail!("kill -CONT {pid} ({name}) failed");
            }
            continue;
        }
        let ctl = a.dir.join("ctl");
        let st = std::process::Command::new(&ctl)
            .args(["start", &name])
            .status()
            .with_context(|| format!("running {}", ctl.display()))?;
        if !st.success() {
            bail!("{} start {name} failed", ctl.display());
        }
    }
    stop.cancel();
    while writers.join_next().await.is_some() {}
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Every kill's gap in kill order, so that a slow one can be matched with the logs.
    let each = gaps
        .iter()
        .map(|g| format!("{:.0}", ms(*g)))
        .collect::<Vec<_>>()
        .join(",");
    gaps.sort();
    let median = percentile(&gaps, 0.5);
    let max = gaps.last().copied().unwrap_or_default();
    if a.json {
        println!(
            "{{\"fault\":\"{}\",\"kills\":{},\"median_ms\":{:.0},\"max_ms\":{:.0},\"min_ms\":{:.0},\"each_ms\":[{each}]}}",
            if a.pause { "pause" } else { "kill" },
            gaps.len(),
            ms(median),
            ms(max),
            ms(gaps.first().copied().unwrap_or_default())
        );
    } else {
        println!(
            "leader {}: {}; write unavailability median {:.0} ms, max {:.0} ms",
            if a.pause { "pauses" } else { "kills" },
            gaps.len(),
            ms(median),
            ms(max)
        );
    }
    Ok(())
}
