//! Raft traffic between servers: openraft's network traits over tonic with mTLS (client
//! side), and the peer gRPC service (server side). Messages are bincode-encoded openraft
//! types inside a `Blob`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bosun_api::peer::raft_peer_client::RaftPeerClient;
use bosun_api::peer::raft_peer_server::RaftPeer;
use bosun_api::peer::Blob;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::types::{Member, TypeConfig};

/// Largest peer message (both directions). One entry always fits: values are capped far
/// below it; a batch that does not fit is refused with `PayloadTooLarge`, and openraft
/// retries with fewer entries.
pub const PEER_MESSAGE_LIMIT: usize = 64 << 20;

/// Opens peer connections; one HTTP/2 connection per peer, shared by its streams.
#[derive(Clone)]
pub struct PeerConnector {
    tls: Arc<rustls::ClientConfig>,
    /// The local address connections come from (this server's own), when it has one.
    source: Option<std::net::IpAddr>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerConnector {
    /// A connector presenting our server certificate, dialling from the kernel's choice
    /// of local address.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        PeerConnector {
            tls,
            source: None,
            channels: Arc::default(),
        }
    }

    /// Connections from the host of `own_addr` (this server's peer address), so that
    /// peers, logs and firewall rules see which server a connection comes from. An
    /// address without a fixed IP (a name, or 0.0.0.0) leaves the choice to the kernel.
    pub fn dialing_from(mut self, own_addr: &str) -> Self {
        self.source = own_addr
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        self
    }

    /// Drops the connection to `addr`: the next [`client`](Self::client) opens a new one.
    /// Calls still running on the old one finish on it.
    pub fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }

    /// A client for the peer at `addr`.
    ///
    /// # Errors
    /// When the address is not usable.
    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, bosun_pki::Error> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let ch = match map.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = match self.source {
                    Some(ip) => bosun_pki::channel_from(addr, ip, self.tls.clone())?,
                    None => bosun_pki::channel(addr, self.tls.clone())?,
                };
                map.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(RaftPeerClient::new(ch)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }
}

/// openraft's network factory.
pub struct Network {
    connector: PeerConnector,
}

impl Network {
    /// A factory using `connector`.
    pub fn new(connector: PeerConnector) -> Self {
        Network { connector }
    }
}

/// A connection to one peer.
pub struct PeerConnection {
    target: u64,
    addr: String,
    connector: PeerConnector,
    client: Option<RaftPeerClient<Channel>>,
    /// The AppendEntries with entries being sent, if any.
    inflight: Option<InFlight>,
    /// When the first call after the last answer from the peer started (none: nothing
    /// asked since that answer).
    silent_since: Option<Instant>,
    /// When the connection was last replaced.
    replaced_at: Option<Instant>,
}

/// How long a peer may leave every call unanswered before its connection is replaced
/// (at most once per such period). Packets dropped for a while (a partition, a paused
/// process) leave TCP retransmitting with an exponential back-off: once the path is back,
/// the old connection may stay silent for seconds more, while a new one answers at once.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Blob, Status> {
    bincode::serialize(v)
        .map(|data| Blob { data })
        .map_err(|e| Status::internal(format!("encode: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(b: &Blob) -> Result<T, Status> {
    bincode::deserialize(&b.data).map_err(|e| Status::invalid_argument(format!("decode: {e}")))
}

/// What a Raft RPC to a peer returns.
type RpcResult<Resp, E> = Result<Resp, RPCError<u64, Member, RaftError<u64, E>>>;

/// Least time any peer RPC gets.
const MIN_RPC_TTL: Duration = Duration::from_millis(50);

/// Bytes of AppendEntries payload per extra millisecond its deadline grows by: 1 ms per
/// 4 KiB (about 250 ms per MiB) covers encoding, shipping, decoding and the follower's
/// fsync on a busy two-core machine, with room to spare.
const APPEND_BYTES_PER_MS: u64 = 4096;

/// Encoded size above which an AppendEntries with more than one entry is split: the size
/// of two batches ([`crate::node`] folds proposals into entries of about 1 MiB).
const APPEND_SOFT_BYTES: usize = 2 << 20;

/// How long an AppendEntries carrying `bytes` may run: the RPC budget plus time that grows
/// with the payload. Heartbeats (no entries) never get it; they keep the short deadline.
fn append_ttl(base: Duration, bytes: usize) -> Duration {
    base.max(MIN_RPC_TTL) + Duration::from_millis(bytes as u64 / APPEND_BYTES_PER_MS)
}

fn unreachable_error<E: std::error::Error>(
    msg: String,
) -> RPCError<u64, Member, RaftError<u64, E>> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg)))
}

fn network_error<E: std::error::Error>(msg: String) -> RPCError<u64, Member, RaftError<u64, E>> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
}

/// Sends one encoded RPC and decodes the answer, giving up after `ttl`.
async fn send<Resp, E>(
    mut client: RaftPeerClient<Channel>,
    which: &'static str,
    blob: Blob,
    ttl: Duration,
    target: u64,
) -> RpcResult<Resp, E>
where
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let fut = async {
        match which {
            "append" => client.append_entries(blob).await,
            "vote" => client.vote(blob).await,
            _ => client.install_snapshot(blob).await,
        }
    };
    let resp = match tokio::time::timeout(ttl, fut).await {
        Err(_) => {
            return Err(unreachable_error(format!(
                "{which} to {target} timed out after {ttl:?}"
            )))
        }
        Ok(Err(status)) => return Err(unreachable_error(format!("{which} to {target}: {status}"))),
        Ok(Ok(r)) => r.into_inner(),
    };
    let res: Result<Resp, RaftError<u64, E>> =
        decode(&resp).map_err(|s| network_error(s.message().to_string()))?;
    res.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(target, e)))
}

/// An AppendEntries with entries, running in a task of its own. openraft waits one
/// heartbeat interval for any AppendEntries and then drops the call, which would cancel a
/// large one mid-transfer every time: replication would retry forever and followers, hearing
/// nothing, would depose the leader. Detached, the transfer runs to its own deadline (which
/// grows with the payload, see [`append_ttl`]) while openraft's retries of the same
/// entries wait for it instead of sending them again. Dropping it cancels the RPC, so a
/// replication stream that ends (or moves on to other entries) leaves nothing behind.
struct InFlight {
    vote: openraft::Vote<u64>,
    prev: Option<openraft::LogId<u64>>,
    /// The log ids of the entries it carries, in order.
    ids: Vec<openraft::LogId<u64>>,
    task:
        tokio::task::JoinHandle<RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible>>,
}

impl InFlight {
    /// Whether its answer also answers `rpc`: same leader vote, same position, and the
    /// same entries up to the shorter of the two (log ids that agree at one index agree on
    /// everything before it).
    fn answers(&self, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
        let n = self.ids.len().min(rpc.entries.len());
        n > 0
            && self.vote == rpc.vote
            && self.prev == rpc.prev_log_id
            && rpc.entries.get(n - 1).map(|e| e.log_id) == self.ids.get(n - 1).copied()
    }

    /// Its answer, restated for a request (one it [`answers`](Self::answers)) that sends
    /// entries up to `last`.
    fn answer_for(
        &self,
        resp: AppendEntriesResponse<u64>,
        last: Option<openraft::LogId<u64>>,
    ) -> AppendEntriesResponse<u64> {
        let matched = match resp {
            AppendEntriesResponse::Success => self.ids.last().copied(),
            AppendEntriesResponse::PartialSuccess(m) => m,
            // Both depend only on the vote and the position, which are the same.
            conflict_or_higher_vote => return conflict_or_higher_vote,
        };
        if matched >= last {
            AppendEntriesResponse::Success
        } else {
            AppendEntriesResponse::PartialSuccess(matched)
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerConnection {
    /// Before each call: replaces the connection when every call since
    /// [`RECONNECT_AFTER`] ago has gone unanswered (at most once per such period). The
    /// start of a call is always seen; its end may not be, as openraft drops calls that
    /// outlive its own deadline.
    fn before_call(&mut self) {
        let now = Instant::now();
        let since = *self.silent_since.get_or_insert(now);
        let due = now.duration_since(since) >= RECONNECT_AFTER
            && self
                .replaced_at
                .is_none_or(|t| now.duration_since(t) >= RECONNECT_AFTER);
        if due {
            self.replaced_at = Some(now);
            self.connector.forget(&self.addr);
            self.client = self.connector.client(&self.addr).ok();
            tracing::info!(
                peer = self.target,
                addr = %self.addr,
                silent_ms = now.duration_since(since).as_millis() as u64,
                "peer silent: new connection"
            );
        }
    }

    /// After a call: an answer (even a refusal) shows the connection works.
    fn observe<T, E: std::error::Error>(&mut self, res: &RpcResult<T, E>) {
        if matches!(
            res,
            Ok(_) | Err(RPCError::RemoteError(_) | RPCError::PayloadTooLarge(_))
        ) {
            self.silent_since = None;
        }
    }

    /// The client, and `req` encoded; `PayloadTooLarge` (when `split_hint` allows fewer
    /// entries) if it does not fit in a peer message.
    fn prepare<Req, E>(
        &self,
        req: &Req,
        split_hint: Option<u64>,
    ) -> RpcResult<(RaftPeerClient<Channel>, Blob), E>
    where
        Req: Serialize,
        E: std::error::Error,
    {
        let Some(client) = self.client.clone() else {
            return Err(unreachable_error(format!("bad peer address {}", self.addr)));
        };
        let blob = encode(req).map_err(|s| network_error(s.message().to_string()))?;
        // Over the peer message limit: ask openraft to send fewer entries (when it can).
        if let Some(hint) = split_hint.filter(|_| blob.data.len() + 4096 > PEER_MESSAGE_LIMIT) {
            return Err(RPCError::PayloadTooLarge(
                openraft::error::PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        Ok((client, blob))
    }

    async fn call<Req, Resp, E>(
        &mut self,
        which: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let (client, blob) = self.prepare(req, None)?;
        let ttl = option.hard_ttl().max(MIN_RPC_TTL);
        send(client, which, blob, ttl, self.target).await
    }

    /// Starts sending `rpc` (which has entries) in its own task.
    fn start_append(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> RpcResult<InFlight, openraft::error::Infallible> {
        // One entry always fits (values are capped well below the limit); more can split.
        let split = (rpc.entries.len() > 1).then_some((rpc.entries.len() / 2) as u64);
        let (client, blob) = self.prepare(rpc, split)?;
        // Several large entries: fewer of them per message, so that each transfer (and
        // what openraft reads again for each of its retries) stays near APPEND_SOFT_BYTES.
        if rpc.entries.len() > 1 && blob.data.len() > APPEND_SOFT_BYTES {
            let fit = rpc.entries.len() * APPEND_SOFT_BYTES / blob.data.len();
            return Err(RPCError::PayloadTooLarge(
                openraft::error::PayloadTooLarge::new_entries_hint(fit.max(1) as u64),
            ));
        }
        let ttl = append_ttl(option.hard_ttl(), blob.data.len());
        Ok(InFlight {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            ids: rpc.entries.iter().map(|e| e.log_id).collect(),
            task: tokio::spawn(send(client, "append", blob, ttl, self.target)),
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.before_call();
        if rpc.entries.is_empty() {
            // A heartbeat keeps openraft's short deadline: it is what notices a lost peer.
            let res = self.call("append", &rpc, &option).await;
            self.observe(&res);
            return res;
        }
        // Cancellation-safe: the transfer lives in `self.inflight` across openraft's
        // timeouts; only a request it cannot answer replaces (and cancels) it.
        let (inflight, joined) = match self.inflight.take() {
            Some(f) if f.answers(&rpc) => (f, true),
            _ => (self.start_append(&rpc, &option)?, false),
        };
        // openraft sends nothing else to this peer while it retries these entries: a
        // heartbeat on each retry keeps the follower from standing for election while a
        // large transfer takes longer than its election timeout.
        let heartbeat = if joined {
            let hb = AppendEntriesRequest::<TypeConfig> {
                vote: rpc.vote,
                prev_log_id: rpc.prev_log_id,
                leader_commit: rpc.leader_commit,
                entries: Vec::new(),
            };
            let (client, blob) = self.prepare(&hb, None)?;
            let ttl = option.hard_ttl().max(MIN_RPC_TTL);
            Some(send::<
                AppendEntriesResponse<u64>,
                openraft::error::Infallible,
            >(client, "append", blob, ttl, self.target))
        } else {
            None
        };
        let target = self.target;
        let inflight = self.inflight.insert(inflight);
        let done = match heartbeat {
            None => Some((&mut inflight.task).await),
            Some(hb) => tokio::select! {
                r = &mut inflight.task => Some(r),
                r = hb => match r {
                    // Both depend only on the vote and the position, which are the same.
                    Ok(other @ (AppendEntriesResponse::HigherVote(_) | AppendEntriesResponse::Conflict)) => {
                        self.inflight = None;
                        return Ok(other);
                    }
                    _ => None,
                },
            },
        };
        let res = match done {
            Some(r) => r,
            None => (&mut inflight.task).await,
        };
        let last = rpc.entries.last().map(|e| e.log_id);
        let res = match res {
            Ok(r) => r.map(|resp| inflight.answer_for(resp, last)),
            Err(e) => Err(unreachable_error(format!("append to {target}: {e}"))),
        };
        self.inflight = None;
        self.observe(&res);
        res
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        self.before_call();
        let res = self.call("snapshot", &rpc, &option).await;
        self.observe(&res);
        res
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.before_call();
        let res = self.call("vote", &rpc, &option).await;
        self.observe(&res);
        res
    }

    /// Retries to an unreachable peer: 20, 40, 80, then every 100 ms. openraft's default
    /// (500 ms) lets a restarted follower time out and stand for election before the
    /// leader reaches it, which deposes a healthy leader.
    fn backoff(&self) -> openraft::network::Backoff {
        let steps = [20u64, 40, 80]
            .into_iter()
            .chain(std::iter::repeat(100))
            .map(Duration::from_millis);
        openraft::network::Backoff::new(steps)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &Member) -> PeerConnection {
        let client = match self.connector.client(&node.peer_addr) {
            Ok(c) => Some(c),
            Err(err) => {
                tracing::warn!(peer = target, addr = %node.peer_addr, error = %err, "bad peer address");
                None
            }
        };
        PeerConnection {
            target,
            addr: node.peer_addr.clone(),
            connector: self.connector.clone(),
            client,
            inflight: None,
            silent_since: None,
            replaced_at: None,
        }
    }
}

/// The peer gRPC service: Raft RPCs into the local Raft, plus forwarding.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    /// The service for `node`.
    pub fn new(node: Arc<Node>) -> Self {
        PeerService { node }
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        let res = self.node.raft().append_entries(rpc).await;
        Ok(Response::new(encode(&res)?))
    }

    async fn vote(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let rpc: VoteRequest<u64> = decode(req.get_ref())?;
        let res = self.node.raft().vote(rpc).await;
        Ok(Response::new(encode(&res)?))
    }

    async fn install_snapshot(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req.get_ref())?;
        let res = self.node.raft().install_snapshot(rpc).await;
        Ok(Response::new(encode(&res)?))
    }

    async fn forward(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let cmd: crate::command::Request = decode(req.get_ref())?;
        let res = self.node.write_forwarded(cmd).await.map_err(|e| match e {
            crate::Error::NoLeader(_) => crate::node::RemoteFailure::NotLeader,
            e => crate::node::RemoteFailure::Failed(e.to_string()),
        });
        Ok(Response::new(encode(&res)?))
    }

    async fn read_index(&self, _req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let res = self.node.leader_read_index().await;
        Ok(Response::new(encode(&res)?))
    }

    async fn lease_keep_alive(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let (id, refresh): (i64, bool) = decode(req.get_ref())?;
        let res = self.node.lease_ttl_local(id, refresh).await;
        Ok(Response::new(encode(&res)?))
    }

    async fn probe(&self, _req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let applied = self.node.state().last_applied().map_or(0, |l| l.index);
        Ok(Response::new(encode(&applied)?))
    }
}
