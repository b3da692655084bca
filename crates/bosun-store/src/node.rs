//! One server's store: Raft, the RocksDB stores, and the paths every API takes into them —
//! writes (forwarded to the leader), linearizable reads, leases (expired by the leader),
//! membership changes, status and metrics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::command::{Command, CommandResult, Request, Response};
use crate::metrics::Metrics;
use crate::network::{decode, encode, Network, PeerConnector};
use crate::state_machine::{Shared, StateMachine};
use crate::types::typ::Raft;
use crate::types::Member;
use crate::{db, Error, LogStore, Result};

/// How long a write or a read barrier waits for a leader before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long one read-index round (a heartbeat to the followers on the leader, a ReadIndex
/// call to the leader on a follower) may take; its callers then ask again.
const READ_ROUND_DEADLINE: Duration = Duration::from_secs(2);
/// How long a follower waits for the leader's answer to a forwarded write.
const FORWARD_DEADLINE: Duration = Duration::from_secs(20);
/// Proposals waiting for a batch at most; callers wait for room beyond it.
const PROPOSAL_QUEUE: usize = 4096;
/// Requests folded into one log entry at most.
const MAX_BATCH: usize = 256;
/// Encoded bytes of one batch at most (a larger request goes alone).
const MAX_BATCH_BYTES: u64 = 1 << 20;
/// Forwarded batches a follower keeps in flight to the leader at most. The leader folds
/// every forwarded batch that reached it into its own next entry, so a follower that
/// waited for its previous forward's answer before sending the next made its clients wait
/// a whole extra leader round; several in flight cost a gRPC call each, not an entry.
/// Two measured best (docs/benchmarks.md, 2026-12-05): four sent smaller batches whose
/// calls cost more than the shorter wait saved.
const FORWARDS_IN_FLIGHT: usize = 2;

/// Smallest lease TTL granted, in seconds (as etcd, a lease must outlive an election).
pub const MIN_LEASE_TTL: i64 = 2;

/// Tuning and identity of one server's store.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Raft node id (unique, never reused).
    pub id: u64,
    /// This server.
    pub member: Member,
    /// Data directory.
    pub dir: PathBuf,
    /// Cluster name (part of the cluster id).
    pub cluster_name: String,
    /// Members to bootstrap with; empty to join an existing cluster (added by add-member).
    pub initial_members: BTreeMap<u64, Member>,
    /// Raft heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout, lower bound.
    pub election_min_ms: u64,
    /// Election timeout, upper bound.
    pub election_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot.
    pub keep_after_snapshot: u64,
    /// Largest value accepted by a put.
    pub max_value_bytes: usize,
    /// The leader compacts history older than this many revisions (0: never).
    pub compaction_retain: i64,
    /// How often the leader considers compacting.
    pub compaction_interval_ms: u64,
}

/// A failure of a forwarded call, as the leader reports it.
#[derive(Debug, Serialize, Deserialize)]
pub enum RemoteFailure {
    /// The callee is not the leader (the write was not proposed).
    NotLeader,
    /// Anything else.
    Failed(String),
}

/// Retries of a call that needs a leader: jittered back-off from 10 ms doubling to
/// 200 ms, woken early by any Raft change, for at most [`LEADER_WAIT`] and never past
/// shutdown.
struct LeaderRetry {
    deadline: Instant,
    backoff: Duration,
}

impl LeaderRetry {
    fn new() -> Self {
        LeaderRetry {
            deadline: Instant::now() + LEADER_WAIT,
            backoff: Duration::from_millis(10),
        }
    }

    /// Time left before giving up.
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits before the next attempt; `false` when time is up or the node shuts down.
    async fn wait(&mut self, node: &Node) -> bool {
        if node.cancel.is_cancelled() || Instant::now() + self.backoff > self.deadline {
            return false;
        }
        node.pause(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_millis(200));
        true
    }
}

/// A write waiting to be batched.
struct Proposal {
    req: Request,
    size: u64,
    reply: Waiter,
}

/// Who waits for a proposal's outcome.
enum Waiter {
    /// A client of this server: one request, one result.
    One(tokio::sync::oneshot::Sender<Result<(i64, CommandResult)>>),
    /// A follower's forwarded batch, on the leader: its requests are folded into the
    /// leader's own batch (one log entry per round instead of one per server), and it is
    /// answered with the outcomes of its requests, as if it had been proposed alone.
    Forwarded(tokio::sync::oneshot::Sender<Result<Response>>),
}

impl Waiter {
    /// Answers with `e` (the batch it was in failed as a whole).
    fn fail(self, e: &Error) {
        match self {
            Waiter::One(reply) => {
                let _ = reply.send(Err(e.duplicate()));
            }
            Waiter::Forwarded(reply) => {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}

impl Proposal {
    /// How many requests it adds to a batch.
    fn len(&self) -> usize {
        match (&self.reply, &self.req.command) {
            (Waiter::Forwarded(_), Command::Batch(reqs)) => reqs.len(),
            _ => 1,
        }
    }
}

/// Leader-side lease deadlines, valid for one leader term.
#[derive(Default)]
struct LeaseClock {
    term: u64,
    deadlines: HashMap<i64, Instant>,
}

/// One server's store.
pub struct Node {
    config: NodeConfig,
    raft: Raft,
    sm: Arc<Shared>,
    connector: PeerConnector,
    leases: Mutex<LeaseClock>,
    metrics: Arc<Metrics>,
    cluster_id: u64,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Keeps raft metrics cheap to read without awaiting.
    last_term: AtomicU64,
    /// Into the proposal batcher.
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    /// Into the read-index rounds that linearizable reads share ([`crate::read`]).
    reads: crate::read::Reads,
}

fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::thread_rng().gen_range(0..=ms / 2 + 1))
}

impl Node {
    /// Opens the stores and starts Raft; bootstraps the cluster when `initial_members` is
    /// set and this node has no state yet.
    ///
    /// # Errors
    /// When the database cannot be opened or Raft refuses the configuration.
    pub async fn start(
        config: NodeConfig,
        peer_tls: Arc<rustls::ClientConfig>,
    ) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.dir).map_err(Error::Load)?;
        {
            // The data dir holds every Secret of the cluster: owner only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(Error::Load)?;
        }
        let fresh = !config.dir.join("db/CURRENT").exists();
        let connector = PeerConnector::new(peer_tls).dialing_from(&config.member.peer_addr);
        if fresh && !config.initial_members.is_empty() {
            refuse_if_cluster_has_moved_on(&config, &connector).await?;
        }
        let db = db::open(&config.dir)?;
        let log = LogStore::new(db.clone());
        let sm = StateMachine::open(db, &config.dir).map_err(Error::Load)?;
        let shared = sm.shared();
        let raft_config = openraft::Config {
            cluster_name: config.cluster_name.clone(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_min_ms,
            election_timeout_max: config.election_max_ms,
            install_snapshot_timeout: 2000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            purge_batch_size: 256,
            // Entries are batches of up to ~1 MiB: 64 of them bound one AppendEntries (and
            // what a lagging follower's replication reads into memory) to about 64 MiB.
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Start(e.to_string()))?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            Network::new(connector.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| Error::Start(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::Start(e.to_string()))?;
        if !initialized && !config.initial_members.is_empty() {
            // Every initial member may call this with the same membership: it is idempotent
            // across the group, and whichever log wins the first election carries it.
            match raft.initialize(config.initial_members.clone()).await {
                Ok(()) => tracing::info!(
                    members = config.initial_members.len(),
                    "cluster bootstrapped"
                ),
                Err(e) => tracing::info!(error = %e, "bootstrap skipped"),
            }
        }
        let cluster_id = fnv1a(config.cluster_name.as_bytes());
        let (proposals, proposal_rx) = tokio::sync::mpsc::channel(PROPOSAL_QUEUE);
        let (reads, read_rx) = crate::read::Reads::new();
        let node = Arc::new(Node {
            config,
            raft,
            sm: shared,
            connector,
            leases: Mutex::default(),
            metrics: Arc::new(Metrics::default()),
            cluster_id,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            last_term: AtomicU64::new(0),
            proposals,
            reads,
        });
        node.tasks.spawn(node.clone().batcher(proposal_rx));
        node.tasks.spawn({
            let node = node.clone();
            async move {
                crate::read::rounds(read_rx, node.cancel.clone(), &node.metrics, || {
                    node.read_index_round()
                })
                .await
            }
        });
        node.tasks
            .spawn(node.clone().hold_candidacy_until_leader_seen());
        node.tasks.spawn(node.clone().lease_expiry_loop());
        node.tasks.spawn(node.clone().compaction_loop());
        node.tasks.spawn(node.clone().watch_metrics());
        Ok(node)
    }

    /// Stops background tasks and Raft.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The state machine's read side.
    pub fn state(&self) -> &Arc<Shared> {
        &self.sm
    }

    /// This node's config.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Metrics counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Cluster id reported in etcd response headers.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Current Raft term as last seen.
    pub fn term(&self) -> u64 {
        self.last_term.load(Ordering::Relaxed)
    }

    /// Whether this node currently believes it leads.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.config.id)
    }

    /// `Some(term)` while this server leads in `term`, `None` otherwise, updated on every
    /// Raft state change until `cancel`: what leader-only work (scheduler, controllers)
    /// starts and stops on, and fences its writes with.
    pub fn leadership(
        &self,
        cancel: CancellationToken,
    ) -> (
        tokio::sync::watch::Receiver<Option<u64>>,
        tokio::task::JoinHandle<()>,
    ) {
        let id = self.config.id;
        let mut metrics = self.raft.metrics();
        let read = move |m: &openraft::RaftMetrics<u64, Member>| {
            (m.state == ServerState::Leader && m.current_leader == Some(id))
                .then_some(m.current_term)
        };
        let first = read(&metrics.borrow_and_update());
        let (tx, rx) = tokio::sync::watch::channel(first);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = metrics.changed() => if r.is_err() { return },
                }
                let now = read(&metrics.borrow_and_update());
                tx.send_if_modified(|cur| {
                    let changed = *cur != now;
                    *cur = now;
                    changed
                });
            }
        });
        (rx, task)
    }

    /// The leader's id as this server knows it. A restarted ex-leader's persisted vote
    /// names itself until it hears from the others: only a server in the Leader state
    /// reports itself.
    pub fn leader_id(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        match m.current_leader {
            Some(id) if id == self.config.id && m.state != ServerState::Leader => None,
            other => other,
        }
    }

    /// The leader's id and member record, if known.
    pub fn leader(&self) -> Option<(u64, Member)> {
        let id = self.leader_id()?;
        let m = self.raft.metrics();
        let m = m.borrow();
        let member = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, member))
    }

    /// Proposes `req` and returns once it is applied, from whichever server: followers
    /// forward to the leader. Concurrent writes are folded into one log entry (see
    /// [`Node::batcher`]). Retries (bounded, with back-off) only when the write was
    /// certainly not proposed: no leader yet, or the callee was not the leader.
    ///
    /// # Errors
    /// [`Error::NoLeader`] when no leader accepted it in time; [`Error::Peer`] when the
    /// leader was lost mid-request (outcome unknown); [`Error::Apply`] when the state
    /// machine refused it.
    pub async fn write(&self, req: Request) -> Result<(i64, CommandResult)> {
        let started = Instant::now();
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.enqueue(req, Waiter::One(reply)).await?;
        let res = rx.await.map_err(|_| Error::ShuttingDown)?;
        self.metrics
            .observe_proposal(started.elapsed(), res.is_ok());
        res
    }

    /// On the leader, a write forwarded by a follower. A follower's batch (unfenced, as
    /// its batcher makes them) joins this server's next batch; anything else is proposed
    /// as it is. [`Error::NoLeader`] when this server does not lead: the follower retries
    /// elsewhere.
    ///
    /// # Errors
    /// As [`Node::write_local`].
    pub async fn write_forwarded(&self, req: Request) -> Result<Response> {
        if !self.is_leader()
            || req.fence_term.is_some()
            || !matches!(req.command, Command::Batch(_))
        {
            return self.write_local(req).await;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.enqueue(req, Waiter::Forwarded(reply)).await?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Queues a write for the batcher.
    async fn enqueue(&self, req: Request, reply: Waiter) -> Result<()> {
        let size = bincode::serialized_size(&req).unwrap_or(0);
        self.proposals
            .send(Proposal { req, size, reply })
            .await
            .map_err(|_| Error::ShuttingDown)
    }

    /// Folds queued writes into batches. openraft 0.9 stores, replicates and applies each
    /// proposal on its own; one entry for many requests turns N appends, N fsyncs, N
    /// replication messages (and N forwards from a follower) into one. One batch is in
    /// flight at a time: while it is, new requests queue up and form the next, larger one.
    /// One measured best (docs/benchmarks.md, 2026-12-03): Raft's cost is per entry, so
    /// two or more half-size batches in flight gave fewer writes per second.
    ///
    /// A follower forwards its batches to the leader, which folds them into its own
    /// entries: there up to [`FORWARDS_IN_FLIGHT`] batches are in flight, each sent as soon
    /// as it is formed, so that a follower's writes join the leader's next entry.
    async fn batcher(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<Proposal>) {
        // A proposal that did not fit in the previous batch: it starts the next one.
        let mut carried: Option<Proposal> = None;
        let forwards = Arc::new(tokio::sync::Semaphore::new(FORWARDS_IN_FLIGHT));
        loop {
            let first = match carried.take() {
                Some(p) => p,
                None => tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    p = rx.recv() => match p { Some(p) => p, None => return },
                },
            };
            // On a follower, wait for room among the forwards in flight (what queues
            // meanwhile joins this batch). The semaphore is never closed.
            let permit = match self.remote_leader() {
                Some(_) => tokio::select! {
                    // Dropped with the queue: their callers get ShuttingDown, not proposed.
                    _ = self.cancel.cancelled() => return,
                    p = forwards.clone().acquire_owned() => p.ok(),
                },
                None => None,
            };
            // Everything that queued while the previous batch was in flight joins this
            // one, as long as it stays within MAX_BATCH_BYTES; a larger request goes alone.
            let (mut bytes, mut count) = (first.size, first.len());
            let mut batch = vec![first];
            while count < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) if bytes + p.size > MAX_BATCH_BYTES || count + p.len() > MAX_BATCH => {
                        carried = Some(p);
                        break;
                    }
                    Ok(p) => {
                        bytes += p.size;
                        count += p.len();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            match permit {
                // A follower's forward runs in a task of its own, holding its permit.
                // Shutdown waits for the node's tasks, so its outcome is known too.
                Some(permit) => {
                    let node = self.clone();
                    self.tasks.spawn(async move {
                        node.propose_batch(batch).await;
                        drop(permit);
                    });
                }
                // One batch in flight, proposed from this task: no hand-off to another
                // task per batch. Shutdown waits for it (its outcome is then known), so
                // ShuttingDown always means "not proposed".
                None => self.propose_batch(batch).await,
            }
        }
    }

    async fn propose_batch(&self, mut batch: Vec<Proposal>) {
        // A lone request goes as it is, except on its way to the leader: there it goes as
        // a batch of one, which the leader folds into its next entry (a lone forwarded
        // request would be an entry of its own).
        if batch.len() == 1 && self.remote_leader().is_none() {
            if let Some(p) = batch.pop() {
                match p.reply {
                    Waiter::One(reply) => {
                        let _ = reply.send(self.write_now(p.req).await);
                    }
                    Waiter::Forwarded(reply) => {
                        let _ = reply.send(self.write_local(p.req).await);
                    }
                }
            }
            return;
        }
        // Flattened: a forwarded batch's requests take their places in this one, and
        // its waiter gets back as many outcomes as it sent.
        let mut reqs = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for p in batch {
            match (p.reply, p.req.command) {
                (Waiter::Forwarded(reply), Command::Batch(sub)) => {
                    self.metrics
                        .forwarded_folded
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    waiters.push((Waiter::Forwarded(reply), sub.len()));
                    reqs.extend(sub);
                }
                (reply, command) => {
                    waiters.push((reply, 1));
                    reqs.push(Request {
                        fence_term: p.req.fence_term,
                        command,
                    });
                }
            }
        }
        let sent = reqs.len();
        let res = self.write_inner(Request::new(Command::Batch(reqs))).await;
        let (revision, mut results) = match res {
            Ok(Response {
                revision,
                result: Some(Ok(CommandResult::Batch(results))),
            }) if results.len() == sent => (revision, results.into_iter()),
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(r) => Error::Raft(format!("unexpected batch result {:?}", r.result)),
                };
                for (w, _) in waiters {
                    w.fail(&e);
                }
                return;
            }
        };
        for (w, n) in waiters {
            match w {
                Waiter::One(reply) => {
                    if let Some((rev, r)) = results.next() {
                        let _ = reply.send(r.map(|c| (rev, c)).map_err(Error::Apply));
                    }
                }
                Waiter::Forwarded(reply) => {
                    let mine: Vec<_> = results.by_ref().take(n).collect();
                    let _ = reply.send(Ok(Response {
                        revision,
                        result: Some(Ok(CommandResult::Batch(mine))),
                    }));
                }
            }
        }
    }

    async fn write_now(&self, req: Request) -> Result<(i64, CommandResult)> {
        let resp = self.write_inner(req).await?;
        match resp.result {
            Some(Ok(r)) => Ok((resp.revision, r)),
            Some(Err(e)) => Err(Error::Apply(e)),
            None => Err(Error::Raft("entry applied without a result".into())),
        }
    }

    /// The leader, when it is another server.
    fn remote_leader(&self) -> Option<(u64, Member)> {
        self.leader().filter(|(id, _)| *id != self.config.id)
    }

    async fn write_inner(&self, req: Request) -> Result<Response> {
        let mut retry = LeaderRetry::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // A follower that knows the leader forwards at once; otherwise Raft says
            // whether this server leads (and who does when it does not).
            let mut remote = self.remote_leader();
            if remote.is_none() {
                match self.write_local(req.clone()).await {
                    Ok(r) => return Ok(r),
                    Err(Error::NoLeader(_)) => remote = self.remote_leader(),
                    Err(e) => return Err(e),
                }
            }
            if let Some((id, leader)) = remote {
                match self.forward(id, &leader, &req).await {
                    Ok(r) => return Ok(r),
                    Err(Error::NoLeader(why)) => {
                        tracing::debug!(leader = id, attempt, %why, "forward refused; retrying");
                    }
                    Err(e) => return Err(e),
                }
            }
            if self.cancel.is_cancelled() {
                return Err(Error::ShuttingDown);
            }
            if !retry.wait(self).await {
                return Err(Error::NoLeader(format!(
                    "no leader accepted the write within {LEADER_WAIT:?}"
                )));
            }
        }
    }

    /// Waits out one retry back-off, but wakes as soon as Raft reports a change (a new
    /// leader, a new term): after a failover, retries go out the moment a leader exists.
    async fn pause(&self, backoff: Duration) {
        let mut rx = self.raft.metrics();
        rx.borrow_and_update();
        tokio::select! {
            _ = tokio::time::sleep(jitter(backoff)) => {}
            _ = rx.changed() => {}
            _ = self.cancel.cancelled() => {}
        }
    }

    /// Proposes on this node; [`Error::NoLeader`] when it is not the leader.
    ///
    /// # Errors
    /// As described.
    pub async fn write_local(&self, req: Request) -> Result<Response> {
        let res = match tokio::time::timeout(LEADER_WAIT, self.raft.client_write(req)).await {
            Ok(r) => r,
            // Proposed but not known to be committed (e.g. the majority is gone).
            Err(_) => {
                return Err(Error::Peer {
                    peer: self.config.member.name.clone(),
                    reason: format!(
                        "outcome unknown: not committed within {LEADER_WAIT:?} (is a majority up?)"
                    ),
                })
            }
        };
        match res {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(Error::NoLeader(
                format!("not the leader (leader: {:?})", f.leader_id),
            )),
            Err(RaftError::APIError(e)) => Err(Error::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Completes once Raft knows a leader other than `id`: a new one was elected (this
    /// server, perhaps). Never completes while `id` leads, nobody is known to, or Raft
    /// has stopped (shutdown is noticed elsewhere).
    async fn leader_other_than(&self, id: u64) {
        let mut rx = self.raft.metrics();
        loop {
            if rx
                .borrow_and_update()
                .current_leader
                .is_some_and(|l| l != id)
            {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    async fn forward(&self, leader_id: u64, leader: &Member, req: &Request) -> Result<Response> {
        let peer = |reason: String| Error::Peer {
            peer: leader.peer_addr.clone(),
            reason,
        };
        let mut client = self
            .connector
            .client(&leader.peer_addr)
            .map_err(|e| peer(e.to_string()))?;
        let blob = encode(req).map_err(|s| peer(s.message().into()))?;
        // Not sent yet, so safe to retry: a leader elected since the caller looked.
        if self.leader_id().is_some_and(|l| l != leader_id) {
            return Err(Error::NoLeader(
                "a new leader was elected before the write was forwarded".into(),
            ));
        }
        // Bounded: a forward that never returns (a leader deposed meanwhile that forwards
        // it back to us while our batcher waits on this one) must not hold its writes
        // forever. The leader gives up on a proposal after LEADER_WAIT.
        let call = tokio::time::timeout(FORWARD_DEADLINE, client.forward(blob));
        // A leader that hangs (or is cut off) holds its forwards until the deadline while
        // the others elect a new one. Once there is a new leader, the answer is given up
        // on: the write may still commit (the old leader may have replicated it), so it
        // is not retried, but the forwards in flight no longer hold the follower's
        // batches back from the new leader.
        let answer = tokio::select! {
            // An answer that has arrived is taken, whatever else happened meanwhile.
            biased;
            a = call => match a {
                Ok(answer) => answer,
                Err(_) => {
                    return Err(peer(format!(
                        "outcome unknown: no answer within {FORWARD_DEADLINE:?}"
                    )))
                }
            },
            _ = self.leader_other_than(leader_id) => {
                return Err(peer(
                    "outcome unknown: a new leader was elected while the write was forwarded to the old one".into(),
                ))
            }
        };
        match answer {
            Ok(resp) => {
                let res: std::result::Result<Response, RemoteFailure> =
                    decode(resp.get_ref()).map_err(|s| peer(s.message().into()))?;
                match res {
                    Ok(r) => Ok(r),
                    Err(RemoteFailure::NotLeader) => Err(Error::NoLeader("leader changed".into())),
                    Err(RemoteFailure::Failed(m)) => Err(peer(m)),
                }
            }
            // Not connected at all: the write was never sent, so it is safe to retry.
            Err(status) if is_connect_error(&status) => {
                Err(Error::NoLeader(format!("leader unreachable: {status}")))
            }
            Err(status) => Err(peer(format!("outcome unknown: {status}"))),
        }
    }

    /// Waits until this node has applied everything committed before the call
    /// (linearizable read barrier). Concurrent barriers share one read-index round
    /// ([`crate::read`]): a heartbeat to a quorum on the leader, ReadIndex through the
    /// leader on a follower.
    ///
    /// # Errors
    /// [`Error::NoLeader`] when no leader confirmed in time; [`Error::ShuttingDown`].
    pub async fn read_barrier(&self) -> Result<()> {
        let mut retry = LeaderRetry::new();
        loop {
            match tokio::time::timeout(retry.remaining(), self.reads.index()).await {
                // Applied already (the usual case on the leader): no wait, which would
                // copy openraft's metrics.
                Ok(Some(Ok(index))) if self.sm.last_applied().is_some_and(|l| l.index >= index) => {
                    return Ok(())
                }
                Ok(Some(Ok(index))) => {
                    return self
                        .raft
                        .wait(Some(retry.remaining()))
                        .applied_index_at_least(Some(index), "read barrier")
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            Error::NoLeader(format!("waiting to apply index {index}: {e}"))
                        });
                }
                Ok(Some(Err(e))) => tracing::debug!(error = %e, "read index round failed"),
                Ok(None) => return Err(Error::ShuttingDown),
                // Out of time: the wait below says so.
                Err(_) => {}
            }
            if !retry.wait(self).await {
                return Err(Error::NoLeader(format!(
                    "no leader confirmed the read within {LEADER_WAIT:?}"
                )));
            }
        }
    }

    /// One read-index round: the index that every read queued before it must see
    /// applied. On the leader, confirmed by a heartbeat to a quorum; on a follower, asked
    /// of the leader, and given up when another leader is elected meanwhile (the read is
    /// safe to ask again, of the new one).
    async fn read_index_round(&self) -> crate::read::Answer {
        if self.is_leader() {
            return match tokio::time::timeout(READ_ROUND_DEADLINE, self.raft.get_read_log_id())
                .await
            {
                Ok(Ok((read, _))) => Ok(read.map_or(0, |l| l.index)),
                Ok(Err(e)) => Err(format!("read index on the leader: {e}")),
                Err(_) => Err("a quorum did not confirm the leader in time".into()),
            };
        }
        let Some((id, leader)) = self.leader() else {
            return Err("no leader known".into());
        };
        tokio::select! {
            biased;
            r = tokio::time::timeout(READ_ROUND_DEADLINE, self.remote_read_index(&leader)) => match r {
                Ok(Ok(index)) => Ok(index),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the leader did not answer the read index".into()),
            },
            _ = self.leader_other_than(id) => Err("the leader changed".into()),
        }
    }

    async fn remote_read_index(&self, leader: &Member) -> Result<u64> {
        let peer = |reason: String| Error::Peer {
            peer: leader.peer_addr.clone(),
            reason,
        };
        let mut client = self
            .connector
            .client(&leader.peer_addr)
            .map_err(|e| peer(e.to_string()))?;
        let resp = client
            .read_index(encode(&()).map_err(|s| peer(s.message().into()))?)
            .await
            .map_err(|s| peer(s.to_string()))?;
        let res: std::result::Result<u64, RemoteFailure> =
            decode(resp.get_ref()).map_err(|s| peer(s.message().into()))?;
        res.map_err(|f| peer(format!("{f:?}")))
    }

    /// On the leader: the index a follower's linearizable reads must wait for, from the
    /// next read-index round (shared with this server's own reads).
    ///
    /// # Errors
    /// [`RemoteFailure::NotLeader`] when this node does not lead.
    pub async fn leader_read_index(&self) -> std::result::Result<u64, RemoteFailure> {
        if !self.is_leader() {
            return Err(RemoteFailure::NotLeader);
        }
        match self.reads.index().await {
            Some(Ok(index)) => Ok(index),
            Some(Err(e)) => Err(RemoteFailure::Failed(e)),
            None => Err(RemoteFailure::Failed("shutting down".into())),
        }
    }

    /// Grants a lease (`id` 0: chosen here) and returns (id, ttl).
    ///
    /// # Errors
    /// Invalid TTL or id, lease exists, no leader.
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<(i64, i64)> {
        if id < 0 {
            return Err(Error::InvalidArgument(format!("lease id {id} is negative")));
        }
        if ttl > 9_000_000_000 {
            return Err(Error::InvalidArgument(
                "etcdserver: too large lease TTL".into(),
            ));
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        let id = if id == 0 {
            rand::thread_rng().gen_range(1..i64::MAX)
        } else {
            id
        };
        match self
            .write(Request::new(Command::LeaseGrant { id, ttl }))
            .await?
        {
            (_, CommandResult::LeaseGranted { id, ttl }) => Ok((id, ttl)),
            (_, other) => Err(Error::Raft(format!("unexpected result {other:?}"))),
        }
    }

    /// Refreshes (keep-alive) or reads (time-to-live) a lease's remaining TTL, on the
    /// leader. `Ok(None)` when the lease does not exist.
    ///
    /// # Errors
    /// No leader.
    pub async fn lease_ttl(&self, id: i64, refresh: bool) -> Result<Option<i64>> {
        let mut retry = LeaderRetry::new();
        loop {
            if self.is_leader() {
                match self.lease_ttl_local(id, refresh).await {
                    Ok(r) => return Ok(r),
                    Err(RemoteFailure::NotLeader) => {}
                    Err(RemoteFailure::Failed(m)) => return Err(Error::Raft(m)),
                }
            } else if let Some((_, leader)) = self.leader() {
                let peer = |reason: String| Error::Peer {
                    peer: leader.peer_addr.clone(),
                    reason,
                };
                let mut client = self
                    .connector
                    .client(&leader.peer_addr)
                    .map_err(|e| peer(e.to_string()))?;
                let blob = encode(&(id, refresh)).map_err(|s| peer(s.message().into()))?;
                if let Ok(resp) = client.lease_keep_alive(blob).await {
                    let res: std::result::Result<Option<i64>, RemoteFailure> =
                        decode(resp.get_ref()).map_err(|s| peer(s.message().into()))?;
                    match res {
                        Ok(r) => return Ok(r),
                        Err(RemoteFailure::NotLeader) => {}
                        Err(RemoteFailure::Failed(m)) => return Err(peer(m)),
                    }
                }
            }
            if !retry.wait(self).await {
                return Err(Error::NoLeader(
                    "no leader answered for the lease in time".into(),
                ));
            }
        }
    }

    /// The leader's side of [`Node::lease_ttl`].
    ///
    /// # Errors
    /// [`RemoteFailure::NotLeader`] when this node does not lead.
    pub async fn lease_ttl_local(
        &self,
        id: i64,
        refresh: bool,
    ) -> std::result::Result<Option<i64>, RemoteFailure> {
        if !self.is_leader() {
            return Err(RemoteFailure::NotLeader);
        }
        let Some((ttl, _)) = self.sm.lease(id) else {
            return Ok(None);
        };
        let now = Instant::now();
        let mut clock = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = clock
            .deadlines
            .entry(id)
            .or_insert(now + Duration::from_secs(ttl as u64));
        if refresh {
            *deadline = now + Duration::from_secs(ttl as u64);
            return Ok(Some(ttl));
        }
        let left = deadline.saturating_duration_since(now);
        Ok(Some(left.as_secs_f64().ceil() as i64))
    }

    /// A server that just started does not stand for election until it has heard from a
    /// leader, or until a few election rounds passed without one. Without this (openraft
    /// 0.9 has no pre-vote) a restarted follower times out before the leader reaches it,
    /// stands with a higher term and deposes a healthy leader. It still votes meanwhile.
    async fn hold_candidacy_until_leader_seen(self: Arc<Self>) {
        // A random part, so that servers started together do not all stand at the same
        // instant (their election timers expired long ago) and split the vote.
        let spread = rand::thread_rng().gen_range(0..=self.config.election_max_ms * 2);
        let wait = Duration::from_millis(
            4 * (self.config.election_max_ms + self.config.heartbeat_ms) + spread,
        );
        let mut rx = self.raft.metrics();
        let seen = async {
            loop {
                if rx.borrow_and_update().current_leader.is_some() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = self.cancel.cancelled() => return,
            _ = tokio::time::timeout(wait, seen) => {}
        }
        self.raft.runtime_config().elect(true);
    }

    /// Waits for the next tick at which this server leads, and returns the term it leads
    /// in; `None` at shutdown. The shared clock of leader-only periodic work.
    async fn tick_as_leader(&self, tick: &mut tokio::time::Interval) -> Option<u64> {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tick.tick() => {}
            }
            if self.is_leader() {
                return Some(self.raft.metrics().borrow().current_term);
            }
        }
    }

    /// On the leader, compacts history older than `compaction_retain` revisions, as
    /// kube-apiserver does for etcd: without it the event history, and every snapshot
    /// with it, grows without bound. Fenced by the term that decided it.
    async fn compaction_loop(self: Arc<Self>) {
        if self.config.compaction_retain <= 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(
            self.config.compaction_interval_ms.max(10),
        ));
        while let Some(term) = self.tick_as_leader(&mut tick).await {
            let target = self.sm.revision() - self.config.compaction_retain;
            if target <= self.sm.compact_revision() {
                continue;
            }
            match self
                .write_local(Request::fenced(term, Command::Compact(target)))
                .await
            {
                Ok(_) => tracing::info!(revision = target, "history compacted"),
                Err(e) => tracing::debug!(error = %e, "compaction not applied"),
            }
        }
    }

    /// Fast failure detection. When the leader's connection to our peer port ends, probe
    /// its peer port: a refused connection means its process is gone (a killed process
    /// resets its sockets at once), so stand for election now instead of waiting out the
    /// leader lease plus an election timeout. A live leader, or one behind a partition,
    /// never refuses a connection, so this cannot depose a healthy leader; elections still
    /// need a majority as always.
    pub async fn watch_leader_connections(
        self: Arc<Self>,
        mut closed: tokio::sync::mpsc::Receiver<bosun_pki::Identity>,
    ) {
        loop {
            let id = tokio::select! {
                _ = self.cancel.cancelled() => return,
                c = closed.recv() => match c { Some(c) => c, None => return },
            };
            let Some(name) = id.user.strip_prefix("system:server:") else {
                continue;
            };
            let Some((leader_id, leader)) = self.leader() else {
                continue;
            };
            if leader.name != name || leader_id == self.config.id {
                continue;
            }
            // A dying process closes its connections a moment before its listener: probe
            // a few times, 10 ms apart, while the leader stays the same.
            let mut refused = false;
            for _ in 0..8 {
                refused = matches!(
                    tokio::time::timeout(Duration::from_millis(100), tokio::net::TcpStream::connect(&leader.peer_addr)).await,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
                );
                if refused || self.leader_id() != Some(leader_id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if refused && self.leader_id() == Some(leader_id) {
                tracing::info!(leader = %leader.name, "leader's process is gone (connection refused): standing for election");
                if let Err(e) = self.raft.trigger().elect().await {
                    tracing::warn!(error = %e, "could not trigger an election");
                }
            }
        }
    }

    /// On the leader, revokes leases whose deadline passed. Deadlines start afresh (full
    /// TTL) whenever leadership changes hands, as in etcd, so a failover never expires a
    /// lease early. Revokes are fenced by the term they were decided in.
    async fn lease_expiry_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while let Some(term) = self.tick_as_leader(&mut tick).await {
            let leases = self.sm.leases();
            let now = Instant::now();
            let expired: Vec<i64> = {
                let mut clock = self.leases.lock().unwrap_or_else(|p| p.into_inner());
                if clock.term != term {
                    clock.term = term;
                    clock.deadlines.clear();
                }
                let live: BTreeSet<i64> = leases.iter().map(|(i, _)| *i).collect();
                clock.deadlines.retain(|id, _| live.contains(id));
                for (id, ttl) in &leases {
                    clock
                        .deadlines
                        .entry(*id)
                        .or_insert(now + Duration::from_secs(*ttl as u64));
                }
                clock
                    .deadlines
                    .iter()
                    .filter(|(_, d)| **d <= now)
                    .map(|(i, _)| *i)
                    .take(128)
                    .collect()
            };
            for id in expired {
                let req = Request::fenced(term, Command::LeaseRevoke { id });
                match self.write_local(req).await {
                    Ok(_) => tracing::info!(lease = id, "lease expired"),
                    Err(e) => {
                        tracing::debug!(lease = id, error = %e, "lease revoke failed");
                        break;
                    }
                }
            }
        }
    }

    async fn watch_metrics(self: Arc<Self>) {
        let mut rx = self.raft.metrics();
        let mut leader = None;
        loop {
            {
                let m = rx.borrow_and_update();
                self.last_term.store(m.current_term, Ordering::Relaxed);
                if m.current_leader != leader {
                    if m.current_leader.is_some() {
                        self.metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(leader = ?m.current_leader, term = m.current_term, state = ?m.state, "leader changed");
                    leader = m.current_leader;
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }

    /// Adds a member as a learner, waits for it to catch up, then (with `promote`) makes it
    /// a voter. Must run on the leader.
    ///
    /// # Errors
    /// Not the leader, duplicate id or name, Raft refusal.
    pub async fn add_member(
        &self,
        id: u64,
        member: Member,
        promote: bool,
        wait: bool,
    ) -> Result<()> {
        self.require_leader()?;
        let current = self.raft.metrics().borrow().membership_config.clone();
        for (nid, m) in current.membership().nodes() {
            if *nid == id {
                return Err(Error::FailedPrecondition(format!(
                    "member id {id} exists already ({})",
                    m.name
                )));
            }
            if m.name == member.name {
                return Err(Error::FailedPrecondition(format!(
                    "member name {} exists already (id {nid})",
                    m.name
                )));
            }
        }
        let name = member.name.clone();
        // With `wait`, the learner must catch up before it is promoted, bounded in time.
        match tokio::time::timeout(Duration::from_secs(60), self.raft.add_learner(id, member, wait)).await {
            Ok(r) => r.map(|_| ()).map_err(|e| Error::FailedPrecondition(e.to_string()))?,
            Err(_) => {
                return Err(Error::FailedPrecondition(format!(
                    "{name} was added as a learner but has not caught up within 60s: is it running? \
                     (it stays a learner; remove it with remove-member, or retry add-member once it runs)"
                )))
            }
        }
        if promote {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        }
        Ok(())
    }

    /// Promotes a learner to voter. Must run on the leader.
    ///
    /// # Errors
    /// Not the leader, unknown learner.
    pub async fn promote_member(&self, id: u64) -> Result<()> {
        self.require_leader()?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        Ok(())
    }

    /// Removes a member (voter or learner). Must run on the leader.
    ///
    /// # Errors
    /// Not the leader, unknown member, Raft refusal.
    pub async fn remove_member(&self, id: u64) -> Result<()> {
        self.require_leader()?;
        let current = self.raft.metrics().borrow().membership_config.clone();
        let is_voter = current.membership().voter_ids().any(|v| v == id);
        let known = current.membership().get_node(&id).is_some();
        if !known {
            return Err(Error::NotFound(format!("member {id:x} not found")));
        }
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        Ok(())
    }

    fn require_leader(&self) -> Result<()> {
        if self.is_leader() {
            return Ok(());
        }
        let hint = match self.leader() {
            Some((id, m)) => format!("leader is {} (id {id}) at {}", m.name, m.client_addr),
            None => "no leader elected".into(),
        };
        Err(Error::FailedPrecondition(format!("not the leader: {hint}")))
    }

    /// The members with whether each is a learner.
    pub fn members(&self) -> Vec<(u64, Member, bool)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = m.membership().voter_ids().collect();
        m.membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone(), !voters.contains(id)))
            .collect()
    }

    /// The committed log index.
    pub async fn committed_index(&self) -> Option<u64> {
        self.raft
            .with_raft_state(|st| st.committed.map(|c| c.index))
            .await
            .ok()
            .flatten()
    }
}

/// A server starting with an empty data dir asks its peers before bootstrapping. If one of
/// them has applied entries beyond the first election, the cluster has done work this
/// server may have acknowledged and lost: rejoining silently could lose committed data
/// (and its vote), so it refuses and says how to recover.
async fn refuse_if_cluster_has_moved_on(
    config: &NodeConfig,
    connector: &PeerConnector,
) -> Result<()> {
    // All peers at once, briefly: on a first start they are starting too and do not serve
    // yet, and a long wait here would start this server's Raft seconds after theirs.
    let probes = config
        .initial_members
        .iter()
        .filter(|(id, _)| **id != config.id)
        .map(|(_, m)| async move {
            let mut client = connector.client(&m.peer_addr).ok()?;
            let blob = encode(&()).ok()?;
            let resp = tokio::time::timeout(Duration::from_millis(500), client.probe(blob))
                .await
                .ok()?
                .ok()?;
            let applied: u64 = decode(resp.get_ref()).ok()?;
            Some((m.name.clone(), applied))
        });
    for (name, applied) in futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
    {
        if applied > 1 {
            return Err(Error::Start(format!(
                "data dir {} is empty, but member {name} has applied {applied} entries: this server lost its state. \
                 Recover it as a new member: `bosun cluster remove-member {}`, then start it with join = true \
                 and `bosun cluster add-member {} --address …`",
                config.dir.display(),
                config.member.name,
                config.member.name
            )));
        }
    }
    Ok(())
}

/// FNV-1a: a stable hash for ids derived from names (unlike `DefaultHasher`, it never
/// changes between Rust versions).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn is_connect_error(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    // Only a refused connection proves the request never left: a reset or closed
    // connection may have delivered it, and retrying would apply it twice.
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        if e.to_string()
            .to_ascii_lowercase()
            .contains("connection refused")
        {
            return true;
        }
        src = e.source();
    }
    status
        .message()
        .to_ascii_lowercase()
        .contains("connection refused")
}
