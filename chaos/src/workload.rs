//! Clients under fault: reads, writes and compare-and-sets of a few keys, through every
//! server's etcd API, each recorded in the [`History`].

use std::sync::Arc;
use std::time::Duration;

use bosun_api::etcd::compare::{CompareResult, CompareTarget, TargetUnion};
use bosun_api::etcd::kv_client::KvClient;
use bosun_api::etcd::request_op::Request as TxnOp;
use bosun_api::etcd::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use bosun_testkit::Cluster;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::history::{Call, History, Op, Outcome};

/// The key space every scenario uses.
pub const PREFIX: &str = "/chaos/";

/// How long a client waits after an operation without an answer.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct Config {
    /// Concurrent clients; client `i` starts on server `i mod servers`.
    pub clients: usize,
    /// Keys, each an independent register.
    pub keys: usize,
    /// How long an operation may take before it counts as unanswered.
    pub timeout: Duration,
    /// Pause between a client's operations (keeps each key's history small enough to
    /// check).
    pub gap: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clients: 6,
            keys: 16,
            timeout: Duration::from_secs(2),
            gap: Duration::from_millis(5),
        }
    }
}

/// The key with index `i`.
pub fn key(i: usize) -> String {
    format!("{PREFIX}{i:02}")
}

/// A small deterministic generator (SplitMix64): each client's choices can be replayed
/// from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Starts the clients; they run until `stop` is cancelled.
pub fn start(
    cluster: Arc<Cluster>,
    servers: Vec<String>,
    history: History,
    cfg: Config,
    seed: u64,
    stop: CancellationToken,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for client in 0..cfg.clients {
        let (cluster, servers, history, cfg, stop) = (
            cluster.clone(),
            servers.clone(),
            history.clone(),
            cfg.clone(),
            stop.clone(),
        );
        set.spawn(async move {
            let mut rng = Rng(seed ^ (client as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            run_client(client, &cluster, &servers, &history, &cfg, &mut rng, &stop).await;
        });
    }
    set
}

async fn run_client(
    client: usize,
    cluster: &Cluster,
    servers: &[String],
    history: &History,
    cfg: &Config,
    rng: &mut Rng,
    stop: &CancellationToken,
) {
    let mut server = client % servers.len().max(1);
    let mut kv: Option<KvClient<Channel>> = None;
    // The last value this client saw or wrote per key: what its compare-and-sets expect.
    let mut known: Vec<Option<String>> = vec![None; cfg.keys];
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        let Some(name) = servers.get(server) else {
            return;
        };
        if kv.is_none() {
            kv = cluster.kv(name).ok();
        }
        let Some(conn) = kv.as_mut() else {
            server = (server + 1) % servers.len();
            continue;
        };
        let k = rng.below(cfg.keys);
        seq += 1;
        let value = format!("c{client}-{seq}");
        let dice = rng.below(10);
        let call = match (&known[k], dice) {
            (_, 0..=4) => Call::Read,
            (Some(expect), 8..=9) => Call::Cas {
                expect: expect.clone(),
                new: value,
            },
            _ => Call::Write(value),
        };
        let invoked = history.now();
        let answer = tokio::time::timeout(cfg.timeout, perform(conn, &key(k), &call)).await;
        let completed = history.now();
        let mut pause = cfg.gap;
        let outcome = match answer {
            Ok(Ok(o)) => o,
            // No answer: the client moves to the next server (as etcd's clients do), and
            // waits a little first, so that a cluster that is down is not flooded with
            // operations that cannot be answered.
            _ => {
                kv = None;
                server = (server + 1) % servers.len();
                pause = RETRY_PAUSE;
                Outcome::Unknown
            }
        };
        match (&call, &outcome) {
            (_, Outcome::Read(v)) => known[k].clone_from(v),
            (Call::Write(v), Outcome::Written) | (Call::Cas { new: v, .. }, Outcome::Cas(true)) => {
                known[k] = Some(v.clone())
            }
            // A failed compare: what the key holds is unknown to this client now.
            (_, Outcome::Cas(false)) | (_, Outcome::Unknown) => known[k] = None,
            _ => {}
        }
        // An unanswered read took no effect and says nothing: not part of the history.
        if !(call == Call::Read && outcome == Outcome::Unknown) {
            history.record(Op {
                client,
                key: key(k),
                call,
                invoked,
                completed: (outcome != Outcome::Unknown).then_some(completed),
                outcome,
            });
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Sends one operation; an error is an operation without an answer.
pub async fn perform(
    kv: &mut KvClient<Channel>,
    key: &str,
    call: &Call,
) -> Result<Outcome, tonic::Status> {
    match call {
        Call::Read => {
            let r = kv
                .range(RangeRequest {
                    key: key.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(Outcome::Read(
                r.kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
            ))
        }
        Call::Write(v) => {
            kv.put(PutRequest {
                key: key.into(),
                value: v.clone().into_bytes(),
                ..Default::default()
            })
            .await?;
            Ok(Outcome::Written)
        }
        Call::Cas { expect, new } => {
            let r = kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: key.into(),
                        target_union: Some(TargetUnion::Value(expect.clone().into_bytes())),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(TxnOp::RequestPut(PutRequest {
                            key: key.into(),
                            value: new.clone().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: Vec::new(),
                })
                .await?
                .into_inner();
            Ok(Outcome::Cas(r.succeeded))
        }
    }
}

/// Reads every key once through each server (linearizably), recorded like any client's
/// reads: the history ends on what every server serves.
pub async fn final_reads(
    cluster: &Cluster,
    servers: &[String],
    history: &History,
    keys: usize,
    timeout: Duration,
) -> Result<(), String> {
    for (i, name) in servers.iter().enumerate() {
        let mut kv = cluster.kv(name)?;
        for k in 0..keys {
            let invoked = history.now();
            let answer = tokio::time::timeout(timeout, perform(&mut kv, &key(k), &Call::Read))
                .await
                .map_err(|_| format!("final read of {} on {name} timed out", key(k)))?
                .map_err(|e| format!("final read of {} on {name}: {e}", key(k)))?;
            history.record(Op {
                client: usize::MAX - i,
                key: key(k),
                call: Call::Read,
                invoked,
                completed: Some(history.now()),
                outcome: answer,
            });
        }
    }
    Ok(())
}
