//! Runs one server: the store node, the peer port (servers only), the client port (etcd v3
//! and Admin APIs) and the admin HTTP port (`/metrics`, `/health`), until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bosun_api::admin::admin_server::AdminServer;
use bosun_api::etcd::cluster_server::ClusterServer;
use bosun_api::etcd::kv_server::KvServer;
use bosun_api::etcd::lease_server::LeaseServer;
use bosun_api::etcd::maintenance_server::MaintenanceServer;
use bosun_api::etcd::watch_server::WatchServer;
use bosun_api::peer::raft_peer_server::RaftPeerServer;
use bosun_pki::{TlsIncoming, TlsMaterial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::etcd::{
    admin::AdminService, cluster::ClusterService, kv::KvService, lease::LeaseService,
};
use crate::etcd::{maintenance::MaintenanceService, watch::WatchService};
use crate::metrics::Gauges;
use crate::network::PeerService;
use crate::{Error, Node, NodeConfig, Result};

/// Largest gRPC message accepted on the client port: the value limit plus room for the
/// envelope, so an oversized value gets etcd's "request is too large" rather than a
/// transport error.
fn client_message_limit(max_value: usize) -> usize {
    max_value + (512 << 10)
}

/// Streams a peer may reset before the server accepts them (see `run`).
const PEER_PENDING_RESETS: usize = 1000;

/// Where one server listens and what it presents.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Peer port.
    pub peer: SocketAddr,
    /// Client port.
    pub client: SocketAddr,
    /// Admin HTTP port (plain HTTP: metrics and health only).
    pub admin: Option<SocketAddr>,
    /// Our certificate, key and the cluster CA.
    pub tls: TlsMaterial,
}

/// Services that run on top of the store (the API server), added by the binary so that the
/// store knows nothing of them: given the started node, an in-process channel to this
/// server's client port (calls on it are in the server's own name; see
/// [`bosun_pki::local`]) and the shutdown token, they return their gRPC routes (served on
/// the client port) and their background tasks (awaited at shutdown, before the node
/// stops).
pub type Extension = Box<
    dyn FnOnce(
            Arc<Node>,
            tonic::transport::Channel,
            CancellationToken,
        ) -> (tonic::service::Routes, Vec<tokio::task::JoinHandle<()>>)
        + Send,
>;

/// Runs a server until `shutdown` is cancelled.
///
/// # Errors
/// When TLS material is unusable, a port cannot be bound, or the store cannot start.
pub async fn run(
    config: NodeConfig,
    listen: Listen,
    extension: Option<Extension>,
    shutdown: CancellationToken,
) -> Result<()> {
    let tls_err = |e: bosun_pki::Error| Error::Start(format!("tls: {e}"));
    // One identity for both sides of every connection, reloaded when its files change.
    let identity = bosun_pki::ReloadingIdentity::load(&listen.tls).map_err(tls_err)?;
    let server_tls =
        bosun_pki::server_config_with(&listen.tls, identity.clone()).map_err(tls_err)?;
    let client_tls =
        bosun_pki::client_config_with(&listen.tls, identity.clone()).map_err(tls_err)?;
    let bind_err = |what: &str, addr: SocketAddr, e: std::io::Error| {
        Error::Start(format!("binding {what} port {addr}: {e}"))
    };
    let mut peer_in = TlsIncoming::bind(listen.peer, server_tls.clone(), true, "peer")
        .await
        .map_err(|e| bind_err("peer", listen.peer, e))?;
    let client_in = TlsIncoming::bind(listen.client, server_tls, false, "client")
        .await
        .map_err(|e| bind_err("client", listen.client, e))?;
    let me = identity
        .identity()
        .ok_or_else(|| Error::Start("tls: our own certificate names no one".into()))?;
    // Read once: a reloaded certificate names the same server.
    let (own, local_in) = bosun_pki::local(me);
    let client_in = bosun_pki::ClientIncoming::new(client_in, local_in);
    let admin = match listen.admin {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| bind_err("admin", a, e))?,
        ),
        None => None,
    };
    let max_value = config.max_value_bytes;
    let node = Node::start(config, client_tls).await?;
    if let Some(closed) = peer_in.closed() {
        tokio::spawn(node.clone().watch_leader_connections(closed));
    }
    tracing::info!(peer = %listen.peer, client = %listen.client, admin = ?listen.admin, "serving");

    let stop = shutdown.clone();
    let peer = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        // openraft drops every RPC that outlives its budget (one heartbeat interval), and
        // each drop resets a stream. Under load many are reset before they are accepted;
        // at h2's default limit (20) the whole connection is closed, failing every
        // transfer and forwarded write on it. Peers are authenticated servers.
        .http2_max_pending_accept_reset_streams(Some(PEER_PENDING_RESETS))
        .add_service(
            RaftPeerServer::new(PeerService::new(node.clone()))
                .max_decoding_message_size(crate::network::PEER_MESSAGE_LIMIT)
                .max_encoding_message_size(crate::network::PEER_MESSAGE_LIMIT),
        )
        .serve_with_incoming_shutdown(peer_in, stop.cancelled_owned());
    let limit = client_message_limit(max_value);
    let stop = shutdown.clone();
    let (routes, ext_tasks) = match extension {
        Some(ext) => {
            let (routes, tasks) = ext(node.clone(), own.channel(), shutdown.clone());
            (Some(routes), tasks)
        }
        None => (None, Vec::new()),
    };
    let mut builder =
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(10)));
    let router = match routes {
        Some(r) => builder.add_routes(r),
        None => builder.add_routes(tonic::service::Routes::default()),
    };
    let client = router
        .add_service(KvServer::new(KvService::new(node.clone())).max_decoding_message_size(limit))
        .add_service(WatchServer::new(WatchService::new(node.clone())))
        .add_service(LeaseServer::new(LeaseService::new(node.clone())))
        .add_service(ClusterServer::new(ClusterService::new(node.clone())))
        .add_service(
            MaintenanceServer::new(MaintenanceService::new(node.clone()))
                .max_encoding_message_size(8 << 20),
        )
        .add_service(AdminServer::new(AdminService::new(node.clone())))
        .serve_with_incoming_shutdown(client_in, {
            // tonic keeps serving while it drains: no new in-process connection from now.
            let own = own.clone();
            async move {
                stop.cancelled().await;
                own.close();
            }
        });
    let admin_task = admin.map(|l| tokio::spawn(serve_admin(l, node.clone(), shutdown.clone())));
    let reload_task = tokio::spawn(reload_certificates(identity, shutdown.clone()));
    let res = tokio::try_join!(peer, client);
    shutdown.cancel();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    let _ = reload_task.await;
    for t in ext_tasks {
        let _ = t.await;
    }
    node.shutdown().await;
    res.map(|_| ())
        .map_err(|e| Error::Start(format!("grpc server: {e}")))
}

/// How often certificate files are checked for changes.
const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Serves a renewed certificate without a restart: new connections present it.
async fn reload_certificates(
    identity: std::sync::Arc<bosun_pki::ReloadingIdentity>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(CERT_RELOAD_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match identity.reload_if_changed() {
            Ok(true) => tracing::info!("certificate reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "certificate files changed but cannot be used; keeping the current one")
            }
        }
    }
}

/// Gauges for `/metrics`.
async fn gauges(node: &Arc<Node>) -> Gauges {
    let commit = node.committed_index().await.unwrap_or(0);
    let m = node.raft().metrics();
    let m = m.borrow().clone();
    Gauges {
        term: m.current_term,
        is_leader: node.is_leader(),
        has_leader: node.leader_id().is_some(),
        last_log: m.last_log_index.unwrap_or(0),
        commit,
        applied: m.last_applied.map_or(0, |l| l.index),
        revision: node.state().revision(),
        db_bytes: crate::db::size_on_disk(&node.config().dir),
    }
}

/// A deliberately small HTTP/1.0 responder: GET /metrics and GET /health, one request per
/// connection. Plain HTTP, like etcd's metrics port: it exposes no data, only numbers.
async fn serve_admin(listener: TcpListener, node: Arc<Node>, shutdown: CancellationToken) {
    loop {
        let (mut sock, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let node = node.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", node.metrics().render(&gauges(&node).await)),
                "/health" => {
                    let g = gauges(&node).await;
                    if g.has_leader {
                        ("200 OK", "{\"health\":\"true\"}\n".to_string())
                    } else {
                        (
                            "503 Service Unavailable",
                            "{\"health\":\"false\",\"reason\":\"no leader\"}\n".to_string(),
                        )
                    }
                }
                _ => (
                    "404 Not Found",
                    "not found: try /metrics or /health\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
