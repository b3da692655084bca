//! Raft traffic between servers: openraft's network traits over tonic with mTLS (client
//! side), and the peer gRPC service (server side). Messages are bincode-encoded openraft
//! types inside a `Blob`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerConnector {
    /// A connector presenting our server certificate.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        PeerConnector {
            tls,
            channels: Arc::default(),
        }
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
                let c = bosun_pki::channel(addr, self.tls.clone())?;
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
    client: Option<RaftPeerClient<Channel>>,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Blob, Status> {
    bincode::serialize(v)
        .map(|data| Blob { data })
        .map_err(|e| Status::internal(format!("encode: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(b: &Blob) -> Result<T, Status> {
    bincode::deserialize(&b.data).map_err(|e| Status::invalid_argument(format!("decode: {e}")))
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        which: &'static str,
        req: &Req,
        option: &RPCOption,
        split_hint: Option<u64>,
    ) -> Result<Resp, RPCError<u64, Member, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable =
            |msg: String| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg)));
        let Some(client) = self.client.as_mut() else {
            return Err(unreachable(format!("bad peer address {}", self.addr)));
        };
        let blob = encode(req).map_err(|s| {
            RPCError::Network(NetworkError::new(&std::io::Error::other(
                s.message().to_string(),
            )))
        })?;
        // Over the peer message limit: ask openraft to send fewer entries (when it can).
        if let Some(hint) = split_hint.filter(|_| blob.data.len() + 4096 > PEER_MESSAGE_LIMIT) {
            return Err(RPCError::PayloadTooLarge(
                openraft::error::PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let ttl = option.hard_ttl().max(Duration::from_millis(50));
        let fut = async {
            match which {
                "append" => client.append_entries(blob).await,
                "vote" => client.vote(blob).await,
                _ => client.install_snapshot(blob).await,
            }
        };
        let resp = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                return Err(unreachable(format!(
                    "{which} to {} timed out after {ttl:?}",
                    self.target
                )))
            }
            Ok(Err(status)) => {
                return Err(unreachable(format!("{which} to {}: {status}", self.target)))
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let res: Result<Resp, RaftError<u64, E>> = decode(&resp).map_err(|s| {
            RPCError::Network(NetworkError::new(&std::io::Error::other(
                s.message().to_string(),
            )))
        })?;
        res.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        // One entry always fits (values are capped well below the limit); more can split.
        let split = (rpc.entries.len() > 1).then_some((rpc.entries.len() / 2) as u64);
        self.call("append", &rpc, &option, split).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option, None).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.call("vote", &rpc, &option, None).await
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
            client,
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
        let res = self.node.write_local(cmd).await.map_err(|e| match e {
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
